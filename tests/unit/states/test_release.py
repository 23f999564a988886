"""Unit tests for _states/release.py (execution modules and javaservice states mocked)."""

from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module, repo_utils

release_state = load_repo_module("states", "release")

MINION = "ecsc-1"
NAME = "/home/ecsc"


@pytest.fixture
def configure_loader_modules():
    opts = {"id": MINION, "test": False}
    return {
        release_state: {
            "__opts__": opts, "__salt__": {}, "__states__": {}, "__utils__": repo_utils(opts),
        }
    }


def _host():
    return {
        "id": MINION, "service": "ecsc", "install_dir": NAME, "identity": {"catalina_base": "/b"},
        "stop": {"signal": "TERM", "timeout": 30}, "start": ["sh", "bin/startup.sh"],
        "start_cwd": "/home/apache tomcat", "logs": {"server": "/b/logs/catalina.out"},
        "output": "/b/logs/catalina.out", "ready": [], "fatal": [], "health_url": "http://x/",
        "ready_timeout": 60, "settle": 3,
    }


def _salt(restore):
    return {
        "inventory.host": MagicMock(return_value=_host()),
        "backup.restore": restore,
        "release.read_record": MagicMock(return_value={"release": "v1"}),
        "release.write_record": MagicMock(),
    }


def test_rolled_back_start_failure_says_host_down_what_is_in_place_and_how_to_start():
    """Issue 8.1: the restore worked, the start did not."""
    restore = MagicMock(side_effect=lambda name, tag, test=False, meta=None: {
        "changed": True, "from": f"{NAME}_v2", "files": 3, "meta": {"record": {"release": "v1"}},
        "held_by": f"{NAME}_v2.1"})
    dead = MagicMock(return_value={"result": True, "changes": {"stopped": 1}, "comment": "stopped"})
    running = MagicMock(return_value={"result": False, "changes": {}, "comment": "no JVM"})
    with patch.dict(release_state.__salt__, _salt(restore)), patch.dict(
        release_state.__states__, {"javaservice.dead": dead, "javaservice.running": running}
    ):
        ret = release_state.rolled_back(NAME, "v2")
    assert ret["result"] is False
    first = ret["comment"].splitlines()[0]
    assert first.startswith(f"HOST {MINION} IS DOWN")
    assert f"restored {NAME} (v1, from backup {NAME}_v2)" in first
    assert "Start it with: cd '/home/apache tomcat' && sh bin/startup.sh" in first
    assert f"the tree it replaced is held by {NAME}_v2.1" in ret["comment"]


def test_rolled_back_refuses_a_corrupt_backup_before_stopping_anything():
    """Issue 9.11: verified first; the service keeps running on its current release."""
    message = (f"backup on minion {MINION}: backup {NAME}_v2 does not verify against its "
               "manifest: 1 modified (lib/ecsc.jar); a restore would be refused")
    restore = MagicMock(side_effect=CommandExecutionError(message))
    dead, running = MagicMock(), MagicMock()
    with patch.dict(release_state.__salt__, _salt(restore)), patch.dict(
        release_state.__states__, {"javaservice.dead": dead, "javaservice.running": running}
    ):
        ret = release_state.rolled_back(NAME, "v2")
    assert ret["result"] is False and ret["comment"] == message
    restore.assert_called_once_with(NAME, "v2", test=True)
    dead.assert_not_called()
    running.assert_not_called()


def test_typed_errors_become_the_comment_and_others_keep_their_traceback():
    deployed = MagicMock(side_effect=CommandExecutionError("release on minion m: boom"))
    with patch.dict(release_state.__salt__, {"release.status": deployed}):
        ret = release_state.staged(NAME, "salt://x.tar", "a" * 64, "v2")
    assert ret["result"] is False and ret["comment"] == "release on minion m: boom"
    deployed.side_effect = KeyError("bug")
    with patch.dict(release_state.__salt__, {"release.status": deployed}):
        with pytest.raises(KeyError):
            release_state.staged(NAME, "salt://x.tar", "a" * 64, "v2")
