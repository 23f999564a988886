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
    with patch.dict(release_state.__salt__, {"release.read_record": deployed}):
        ret = release_state.staged(NAME, "salt://x.tar", "a" * 64, "v2")
    assert ret["result"] is False and ret["comment"] == "release on minion m: boom"
    deployed.side_effect = KeyError("bug")
    with patch.dict(release_state.__salt__, {"release.read_record": deployed}):
        with pytest.raises(KeyError):
            release_state.staged(NAME, "salt://x.tar", "a" * 64, "v2")


# --------------------------------------------------------------------------- resumed (issue 9.4)

LEFT = [f"/home/.ecsc.{n}" for n in ("staging", "staging.json")]


def _resume_salt(swap=None, staged="v2", leftovers=(), running=True, on_release=False,
                 backups=()):
    leftovers = list(leftovers) + (["/home/.ecsc.previous"] if swap else [])
    status = {"release": "v2" if on_release else None, "intact": True, "archive_sha256": None}
    manifest = {"files": {"a.jar": {"sha256": "1" * 64}}, "symlinks": {}}
    return {
        "release.interrupted": MagicMock(return_value={
            "target": NAME, "swap": swap, "staged": staged if leftovers else None,
            "leftovers": sorted(leftovers)}),
        "release.status": MagicMock(return_value=status),
        "release.read_record": MagicMock(return_value={"release": "v2"} if on_release else None),
        "javaservice.status": MagicMock(return_value={"running": running}),
        "backup.list": MagicMock(return_value=[
            {"tag": t, "family": t.split(".")[0], "path": f"{NAME}_{t}"} for t in backups]),
        "backup.manifest": MagicMock(return_value=manifest),
        "backup.verify": MagicMock(return_value={"ok": True}),
        "release.clean": MagicMock(return_value={
            "target": NAME, "swap": swap, "removed": sorted(leftovers), "restored": None,
            "kept": []}),
    }


@pytest.mark.parametrize("kwargs, step", [
    ({}, None),                                               # a first run: nothing left
    ({"backups": ["v2"]}, None),                              # upgraded and rolled back before
    ({"leftovers": LEFT}, "staged"),
    ({"leftovers": LEFT, "backups": ["v2"]}, "backed-up"),
    ({"leftovers": LEFT, "backups": ["v1"]}, "staged"),       # another release's backup
    ({"leftovers": LEFT, "backups": ["v2"], "running": False}, "stopped"),
    ({"backups": ["v2"], "running": False}, "stopped"),
    ({"swap": "between-renames", "running": False}, "swapped"),
    ({"swap": "after-record", "running": False, "on_release": True, "backups": ["v2"]},
     "swapped"),
    ({"running": False, "on_release": True}, "swapped"),      # swapped, killed before start
    ({"running": False}, None),                               # down, but no run left it so
])
def test_resumed_names_the_step_an_interrupted_run_reached(kwargs, step):
    salt = _resume_salt(**kwargs)
    scan = MagicMock(return_value={"files": {}, "symlinks": {}, "dirs": {}, "other": []})
    with patch.dict(release_state.__salt__, salt), patch.dict(
            release_state.__utils__, {"rollout_tree.scan": scan}):
        ret = release_state.resumed(NAME, "v2", service="ecsc", identity={"catalina_base": "/b"})
    assert ret["result"] is True
    salt["javaservice.status"].assert_called_once_with("ecsc", catalina_base="/b")
    if step is None:
        assert ret["changes"] == {} and "nothing left by an interrupted run" in ret["comment"]
        salt["release.clean"].assert_not_called()
        return
    assert ret["changes"]["resumed"]["step"] == step
    assert ret["comment"].startswith(
        f"resuming {MINION}: an interrupted run left it at '{step}' (")
    salt["release.clean"].assert_called_once_with(NAME, drop_previous=True)


@pytest.mark.parametrize("held", [True, False])
def test_resumed_drops_previous_only_when_a_verified_backup_holds_it(held):
    salt = _resume_salt(swap="after-record", running=False, on_release=True, backups=["v2"])
    files = {"a.jar": {"sha256": ("1" if held else "2") * 64}}
    scan = MagicMock(return_value={"files": files, "symlinks": {}, "other": []})
    with patch.dict(release_state.__salt__, salt), patch.dict(
            release_state.__utils__, {"rollout_tree.scan": scan}):
        ret = release_state.resumed(NAME, "v2", service="ecsc")
    scan.assert_called_once_with("/home/.ecsc.previous")
    salt["release.clean"].assert_called_once_with(NAME, drop_previous=held)
    if held:
        assert f"/home/.ecsc.previous is held by {NAME}_v2" in ret["comment"]
    else:
        assert "kept /home/.ecsc.previous: no verified backup holds all of it" in ret["comment"]
        salt["backup.verify"].assert_not_called()


def test_resumed_test_mode_touches_nothing_and_errors_are_the_comment():
    salt = _resume_salt(leftovers=LEFT, backups=["v2"])
    with patch.dict(release_state.__salt__, salt), patch.dict(release_state.__opts__,
                                                              {"test": True}):
        ret = release_state.resumed(NAME, "v2")
    assert ret["result"] is None and ret["comment"].startswith(
        f"would be resuming {MINION}: an interrupted run left it at 'backed-up'")
    salt["release.clean"].assert_not_called()
    salt["javaservice.status"].assert_not_called()  # no service named: not asked
    salt["release.interrupted"].side_effect = CommandExecutionError("release on minion m: bad")
    with patch.dict(release_state.__salt__, salt):
        ret = release_state.resumed(NAME, "v2")
    assert ret == {"name": NAME, "changes": {}, "result": False,
                   "comment": "release on minion m: bad"}


# --------------------------------------------------------------------------- issue 10 (c)


def test_on_release_rehashes_the_tree_only_when_its_record_names_the_release():
    """The swap runs while the service is down: a record of another release (or of another
    archive) says 'not on it' without hashing the live tree."""
    status = MagicMock(return_value={"release": "v2", "intact": True, "archive_sha256": "a" * 64})
    for record, expected in [(None, (None, False)), ({"release": "v1"}, ("v1", False)),
                             ({"release": "v2", "archive_sha256": "b" * 64}, ("v2", False))]:
        salt = {"release.read_record": MagicMock(return_value=record), "release.status": status}
        with patch.dict(release_state.__salt__, salt):
            assert release_state._on_release(NAME, "v2", "a" * 64) == expected
    status.assert_not_called()
    salt["release.read_record"].return_value = {"release": "v2", "archive_sha256": "a" * 64}
    with patch.dict(release_state.__salt__, salt):
        assert release_state._on_release(NAME, "v2", "A" * 64) == ("v2", True)
    status.assert_called_once_with(NAME)
    status.return_value = {"release": "v2", "intact": False, "archive_sha256": "a" * 64}
    with patch.dict(release_state.__salt__, salt):
        assert release_state._on_release(NAME, "v2", None) == ("v2", False)
