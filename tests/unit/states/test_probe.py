"""Unit tests for _states/probe.py: read-only checks, test mode, failures named."""

from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module

probe_state = load_repo_module("states", "probe")


@pytest.fixture
def configure_loader_modules():
    funcs = {"probe.http": MagicMock(return_value={"status": 200}),
             "probe.log": MagicMock(side_effect=CommandExecutionError("m: 0 of 2 new lines"))}
    return {probe_state: {"__opts__": {"test": False}, "__salt__": funcs}}


def test_http_ok_passes_and_log_lines_fails_with_the_reason():
    ret = probe_state.http_ok("bug-9427", "http://127.0.0.1:1/c", contains="12.345")
    assert ret == {"name": "bug-9427", "changes": {}, "result": True,
                   "comment": "passed bug-9427: {'status': 200}"}
    ret = probe_state.log_lines("money", "/x.log", "p")
    assert ret["result"] is False and ret["comment"] == "FAILED money: m: 0 of 2 new lines"


def test_test_mode_checks_nothing():
    probe_state.__opts__["test"] = True
    ret = probe_state.http_ok("bug-9427", "http://127.0.0.1:1/c")
    assert ret["result"] is None and ret["comment"] == "would check: bug-9427"
    probe_state.__salt__["probe.http"].assert_not_called()
