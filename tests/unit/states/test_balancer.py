"""Unit tests for _states/balancer.py: nothing to do without a hook, test mode runs nothing, a
failed hook fails the state with the module's reason."""

from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module

balancer_state = load_repo_module("states", "balancer")


@pytest.fixture
def configure_loader_modules():
    funcs = {"balancer.hook": MagicMock(return_value={"cmd": ["lb"], "timeout": 5}),
             "balancer.drain": MagicMock(return_value={"host": "ecsc-1", "hook": "lb",
                                                       "seconds": 0.2}),
             "balancer.undrain": MagicMock(side_effect=CommandExecutionError("lb exited 1"))}
    return {balancer_state: {"__opts__": {"test": False}, "__salt__": funcs, "__pillar__": {}}}


def test_drained_runs_the_hook_and_in_rotation_failure_is_reported():
    ret = balancer_state.drained("ecsc")
    assert ret["result"] is True and ret["changes"]["drained"]["hook"] == "lb"
    ret = balancer_state.in_rotation("ecsc")
    assert ret["result"] is False and ret["comment"] == "ecsc: undrain failed: lb exited 1"


def test_no_hook_and_test_mode_run_nothing():
    balancer_state.__salt__["balancer.hook"].return_value = None
    assert balancer_state.drained("ecsc")["result"] is True
    balancer_state.__salt__["balancer.hook"].return_value = {"cmd": ["lb"], "timeout": 5}
    balancer_state.__opts__["test"] = True
    assert balancer_state.drained("ecsc")["result"] is None
    balancer_state.__salt__["balancer.drain"].assert_not_called()
