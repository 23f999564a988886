"""Unit tests of the master-side state rollout.runner (_states/rollout.py): the orchestration's
own steps run a repo runner in place, with salt.runner's return (changes.return, a raising
runner fails the step with its message, test=True runs nothing), master side only."""

from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module

rollout = load_repo_module("states", "rollout")


@pytest.fixture
def configure_loader_modules():
    return {rollout: {"__opts__": {"__role": "master", "test": False}, "__utils__": {}}}


def _loader(funcs):
    return patch.object(rollout.salt.loader, "runner", MagicMock(return_value=funcs))


def test_runs_the_runner_in_place_with_salt_runners_return():
    acquire = MagicMock(return_value={"owner": "abc", "stale": None})
    with _loader({"rolloutlock.acquire": acquire}) as loader:
        ret = rollout.runner("rolloutlock.acquire", kind="upgrade", owner="abc",
                             __id__="rollout-lock", __pub_user="root")
    assert ret == {"name": "rolloutlock.acquire", "result": True,
                   "changes": {"return": {"owner": "abc", "stale": None}},
                   "comment": "Runner function 'rolloutlock.acquire' executed."}
    acquire.assert_called_once_with(kind="upgrade", owner="abc")  # no Salt internals
    # The repo's runners only (a runner may call another), never Salt's whole runner set.
    assert loader.call_args.kwargs["whitelist"] == ["rollout", "rolloutlock", "rolloutreport",
                                                    "compliance"]


def test_a_raising_runner_fails_the_step_with_its_message():
    answering = MagicMock(side_effect=CommandExecutionError(
        "schedule-res-2: the minion did not answer within 10s; no host was touched"))
    with _loader({"rollout.answering": answering}):
        ret = rollout.runner("rollout.answering", hosts=["schedule-res-2"])
    assert ret["result"] is False
    assert ret["comment"] == "Runner function 'rollout.answering' failed."
    assert ret["changes"]["return"].startswith("Exception occurred in runner rollout.answering: ")
    assert "schedule-res-2: the minion did not answer" in ret["changes"]["return"]


def test_a_runner_not_synced_fails_and_says_how_to_sync():
    with _loader({}):
        ret = rollout.runner("rolloutreport.write", kind="upgrade")
    assert ret["result"] is False and "salt-run saltutil.sync_all" in ret["changes"]["return"]


def test_test_mode_runs_nothing():
    write = MagicMock()
    with _loader({"rolloutreport.write": write}), patch.dict(rollout.__opts__, {"test": True}):
        ret = rollout.runner("rolloutreport.write", kind="upgrade")
    assert ret["result"] is None and ret["changes"] == {}
    write.assert_not_called()


def test_master_side_only():
    assert rollout.__virtual__() == "rollout"
    with patch.dict(rollout.__opts__, {"__role": "minion"}):
        assert rollout.__virtual__()[0] is False


@pytest.mark.parametrize("drift", [False, True])
def test_a_runner_setting_a_non_zero_retcode_fails_the_step(drift):
    # compliance.report on drift: its return is the report, its verdict __context__["retcode"]
    # (what saltutil.runner reads for salt.runner), so orch.compliance exits non-zero.
    report = {"result": not drift, "summary": {}, "comment": "table", "retcode": int(drift)}

    def loader(opts, utils=None, context=None, whitelist=None):  # pylint: disable=unused-argument
        def run(**_):
            context["retcode"] = int(drift)
            return report
        return {"compliance.report": run}

    with patch.object(rollout.salt.loader, "runner", loader):
        ret = rollout.runner("compliance.report", tgt=["ecsc-1"], tgt_type="list")
    assert ret["changes"] == {"return": report}
    assert ret["result"] is (not drift)
    assert ret["comment"] == ("Runner function 'compliance.report' "
                              f"{'failed' if drift else 'executed'}.")
