"""Unit tests of the master-side pre-flight runner (_runners/rollout.py): a minion that does
not answer stops the run before any host is touched, named, with the command for the rest."""

import json
import shlex
from unittest.mock import patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module

rollout = load_repo_module("runners", "rollout")
HOSTS = ["ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2"]


@pytest.fixture
def configure_loader_modules(tmp_path):
    return {rollout: {"__opts__": {"conf_file": str(tmp_path / "master")}}}


def test_every_minion_answers():
    with patch.object(rollout, "_ping", return_value={h: True for h in HOSTS}) as ping, \
            patch.object(rollout, "_cmd", return_value={h: [] for h in HOSTS}):
        assert rollout.answering(HOSTS, timeout=4) == {"answered": HOSTS, "waited_for": {}}
    ping.assert_called_once_with(HOSTS, 4)


def test_a_state_job_left_by_an_interrupted_run_is_waited_for():
    job = {"fun": "state.sls", "jid": "20261129", "pid": 42}
    running = iter([{"ecsc-1": [job, {"fun": "test.ping", "jid": "1"}]}, {"ecsc-1": [job]}, {}])
    with patch.object(rollout, "_ping", return_value={h: True for h in HOSTS}), \
            patch.object(rollout, "_cmd", side_effect=lambda *_: next(running)), \
            patch.object(rollout, "POLL_SECONDS", 0):
        ret = rollout.answering(HOSTS)
    assert ret["waited_for"] == {"ecsc-1": ["state.sls jid 20261129"]}


def test_a_state_job_that_does_not_end_stops_the_run():
    job = {"fun": "state.sls", "jid": "20261129"}
    with patch.object(rollout, "_ping", return_value={h: True for h in HOSTS}), \
            patch.object(rollout, "_cmd", return_value={"ecmc-2": [job]}):
        with pytest.raises(CommandExecutionError,
                           match="still running after 0s: ecmc-2: state.sls jid 20261129"):
            rollout.answering(HOSTS, wait=0)


def test_a_silent_minion_is_named_with_the_command_for_the_others():
    answers = {h: True for h in HOSTS if h != "ecmc-1"}
    with patch.object(rollout, "_ping", return_value=answers):
        with pytest.raises(CommandExecutionError) as err:
            rollout.answering(HOSTS, command="orch.rollback", timeout=4)
    message = str(err.value)
    assert message.startswith("ecmc-1: the minion did not answer test.ping within 4s")
    assert "no host was touched" in message
    command = message.split("without it: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:3] == ["salt-run", "state.orchestrate", "orch.rollback"]
    assert json.loads(argv[3].split("=", 1)[1]) == {"hosts": ["ecsc-1", "ecsc-2", "ecmc-2"]}


def test_no_minion_answers():
    with patch.object(rollout, "_ping", return_value={}):
        with pytest.raises(CommandExecutionError, match="no targeted minion answers"):
            rollout.answering(HOSTS[:2])


def test_hosts_required():
    with pytest.raises(SaltInvocationError):
        rollout.answering([])
