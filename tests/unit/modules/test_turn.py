"""Unit tests for _modules/turn.py and _states/turn.py: a host's turn, on real files."""

import threading

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module, repo_utils

turn = load_repo_module("modules", "turn")
turn_state = load_repo_module("states", "turn")


@pytest.fixture
def configure_loader_modules(tmp_path):
    opts = {"id": "unit-minion", "cachedir": str(tmp_path), "test": False}
    return {
        turn: {"__opts__": opts, "__utils__": repo_utils(opts)},
        turn_state: {"__opts__": opts, "__salt__": {"turn.wait": turn.wait}},
    }


def test_the_first_verdict_holds(tmp_path):
    assert turn.get("run1") is None
    assert turn.give("run1") == "go"
    # An abort sent when the run ends never overturns a go already given.
    assert turn.give("run1", "abort") == "go"
    assert (tmp_path / "rollout_turn" / "run1").read_text() == "go"
    assert turn.give("run2", "abort") == "abort" and turn.get("run2") == "abort"


def test_bad_run_or_verdict_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(SaltInvocationError, match=r"run must be a run token.*'\.\./x'"):
        turn.give("../x")
    with pytest.raises(SaltInvocationError, match="verdict must be one of go, abort"):
        turn.give("run1", "maybe")
    assert not (tmp_path / "rollout_turn" / "run1").exists()


def test_wait_returns_the_verdict_given_while_it_waits():
    timer = threading.Timer(0.2, turn.give, args=("run3",))
    timer.start()
    try:
        assert turn.wait("run3", timeout=5) == "go"
    finally:
        timer.cancel()


def test_wait_gives_up_after_its_timeout_naming_the_host_and_run():
    with pytest.raises(CommandExecutionError, match=r"unit-minion: no turn given in run run4 "
                       r"within 0.2s.*nothing was touched"):
        turn.wait("run4", timeout=0.2)


def test_taken_passes_on_go_and_fails_on_abort_or_timeout():
    turn.give("run5")
    assert turn_state.taken("run5", timeout=1)["result"] is True
    turn.give("run6", "abort")
    ret = turn_state.taken("run6", timeout=1)
    assert ret["result"] is False and "ended before its wave (verdict abort" in ret["comment"]
    ret = turn_state.taken("run7", timeout=0.1)
    assert ret["result"] is False and "no turn given in run run7" in ret["comment"]
    assert ret["changes"] == {}
