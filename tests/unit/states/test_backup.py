"""Unit tests for _states/backup.py (the execution module mocked)."""

from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module

backup_state = load_repo_module("states", "backup")


@pytest.fixture
def configure_loader_modules():
    return {backup_state: {"__opts__": {"id": "unit-minion", "test": False}, "__salt__": {}}}


# ------------------------------------------------------------------ states (module mocked)


def test_state_present_test_mode_reports_plan():
    create = MagicMock(
        return_value={"path": "/home/ecsc_1", "created": True, "files": 3, "bytes": 42}
    )
    with patch.dict(backup_state.__salt__, {"backup.create": create}), patch.dict(
        backup_state.__opts__, {"test": True}
    ):
        ret = backup_state.present("/home/ecsc", "1")
    create.assert_called_once_with("/home/ecsc", "1", meta=None, test=True)
    assert ret["result"] is None
    assert ret["comment"] == "would back up /home/ecsc to /home/ecsc_1 (3 files, 42 bytes)"


def test_state_present_existing_backup_is_no_change():
    create = MagicMock(
        return_value={"path": "/home/ecsc_1", "created": False, "files": 3, "bytes": 42}
    )
    with patch.dict(backup_state.__salt__, {"backup.create": create}):
        ret = backup_state.present("/home/ecsc", "1")
    assert ret["result"] is True and ret["changes"] == {}


def test_state_exception_is_result_false_with_message():
    create = MagicMock(side_effect=CommandExecutionError("backup on minion m: boom"))
    restore = MagicMock(side_effect=SaltInvocationError("bad tag"))
    with patch.dict(backup_state.__salt__, {"backup.create": create, "backup.restore": restore}):
        ret = backup_state.present("/home/ecsc", "1")
        assert ret["result"] is False and ret["comment"] == "backup on minion m: boom"
        ret = backup_state.restored("/home/ecsc", "1")
        assert ret["result"] is False and ret["comment"] == "bad tag"
