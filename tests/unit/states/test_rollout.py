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
    assert loader.call_args.kwargs["whitelist"] == ["rolloutlock"]  # only that module


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
