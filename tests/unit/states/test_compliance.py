"""Unit tests for _states/compliance.py: orch.compliance's step runs the compliance.report
runner in place (the runner's own tests: tests/unit/runners/test_compliance.py)."""

import copy
from unittest.mock import MagicMock, patch

import pytest
import salt.config

from tests.conftest import REPO_ROOT, load_repo_module

state = load_repo_module("states", "compliance")

HOSTS = ["ecsc-1", "ecsc-2"]
PILLAR = {"release": {"id": "20170220"}}


def master_opts(tmp_path, **extra):
    opts = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
    opts.update({"__role": "master", "id": "master", "test": False,
                 "cachedir": str(tmp_path / "cache"), "extension_modules": str(tmp_path / "ext"),
                 "runner_dirs": [str(REPO_ROOT / "_runners")]}, **extra)
    return opts


@pytest.fixture
def configure_loader_modules(tmp_path):
    return {state: {"__opts__": master_opts(tmp_path), "__utils__": {}}}


def test_only_the_master_loads_it():
    with patch.dict(state.__opts__, {"__role": "minion"}):
        assert state.__virtual__()[0] is False
    assert state.__virtual__() == "compliance"


def test_the_runner_comes_from_the_synced_runners_without_a_runner_client():
    # The repo's runner, loaded with the orchestration's opts: compliance.report, and the
    # rolloutlock runner it calls through __salt__ in the same loader.
    runners = state._runners()
    assert "compliance.report" in runners and "rolloutlock.holder" in runners
    assert callable(state._runner("compliance.report"))


def test_a_runner_that_is_not_synced_fails_the_step(tmp_path):
    with patch.dict(state.__opts__, {"runner_dirs": [str(tmp_path)]}):
        ret = state.reported("compliance.report", HOSTS)
    assert ret["result"] is False
    assert "compliance.report is not available on the master" in ret["comment"]


def test_test_mode_runs_nothing():
    report = MagicMock()
    with patch.object(state, "_runner", return_value=report), \
            patch.dict(state.__opts__, {"test": True}):
        ret = state.reported("compliance.report", HOSTS, pillar=PILLAR)
    report.assert_not_called()
    assert ret["result"] is None and ret["changes"] == {}
    assert "would be executed on 2 hosts" in ret["comment"]


@pytest.mark.parametrize("passed", [True, False])
def test_the_runner_return_is_the_step_result(passed):
    out = {"result": passed, "summary": {"status": "passed" if passed else "failed"},
           "comment": "the table", "retcode": 0 if passed else 1}
    report = MagicMock(return_value=out)
    with patch.object(state, "_runner", return_value=report) as runner:
        ret = state.reported("compliance.report", HOSTS, pillar=PILLAR, timeout=30)
    runner.assert_called_once_with("compliance.report")
    report.assert_called_once_with(tgt=HOSTS, tgt_type="list", pillar=PILLAR, timeout=30)
    assert ret["result"] is passed
    assert ret["changes"] == {"return": out}
    assert ret["comment"] == "Runner function 'compliance.report' {}.".format(
        "executed" if passed else "failed")


def test_a_report_that_cannot_be_written_fails_the_step():
    report = MagicMock(side_effect=RuntimeError("cannot write the compliance report to /x"))
    with patch.object(state, "_runner", return_value=report):
        ret = state.reported("compliance.report", HOSTS)
    assert ret["result"] is False
    assert "cannot write the compliance report to /x" in ret["comment"]
