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
    with patch.object(rollout, "_ping", return_value={h: True for h in HOSTS}) as ping:
        assert rollout.answering(HOSTS, timeout=4) == {"answered": HOSTS}
    ping.assert_called_once_with(HOSTS, 4)


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
