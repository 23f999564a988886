"""Unit tests for _states/balancer.py: nothing to do without a hook, test mode runs nothing, a
failed hook fails the state with the module's reason; a canary's soak (javaservice's settle
time, in rotation) drains the host again when it fails; salt/release/upgrade.sls puts the soak
after the undrain and arms the rollback on it."""

import types
from unittest.mock import MagicMock

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import REPO_ROOT, load_repo_module

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


# ---------------------------------------------------------------- the canary's soak


def test_soaked_watches_the_jvm_through_javaservice_for_the_soak_time():
    wait_ready = MagicMock(return_value={"pids": [4242], "http_status": 200})
    balancer_state.__salt__["javaservice.wait_ready"] = wait_ready
    ret = balancer_state.soaked("ecsc", 30, logs=["/l/app.log"], fatal=None,
                                url="http://h/health", timeout=120, catalina_base="/b")
    assert ret["result"] is True and ret["changes"]["soaked"]["pids"] == [4242]
    # javaservice's settle time is the soak: no ready pattern (the gate found them).
    wait_ready.assert_called_once_with("ecsc", logs=["/l/app.log"], ready=[], fatal=None,
                                       url="http://h/health", timeout=120, settle=30,
                                       catalina_base="/b")
    balancer_state.__salt__["balancer.drain"].assert_not_called()


def test_a_failed_soak_drains_the_host_again_and_fails():
    balancer_state.__salt__["javaservice.wait_ready"] = MagicMock(side_effect=CommandExecutionError(
        "ecsc-1: ecsc: fatal pattern 'OutOfMemoryError' in /l/app.log during the settle time"))
    ret = balancer_state.soaked("ecsc", 30, url="http://h/health")
    assert ret["result"] is False
    assert "soak failed" in ret["comment"] and "OutOfMemoryError" in ret["comment"]
    assert ret["comment"].endswith("; drained again")
    assert ret["changes"]["drained"]["hook"] == "lb"
    balancer_state.__salt__["balancer.drain"].assert_called_once()
    # The drain failing too is said as well; the soak fails either way.
    balancer_state.__salt__["balancer.drain"].side_effect = CommandExecutionError("lb down")
    ret = balancer_state.soaked("ecsc", 30)
    assert ret["result"] is False and ret["comment"].endswith("; ecsc: drain failed: lb down")


def test_soaked_in_test_mode_or_without_a_soak_touches_nothing():
    wait_ready = balancer_state.__salt__["javaservice.wait_ready"] = MagicMock()
    assert balancer_state.soaked("ecsc", 0)["result"] is True
    balancer_state.__opts__["test"] = True
    assert balancer_state.soaked("ecsc", 30)["result"] is None
    wait_ready.assert_not_called()


HOST = {
    "id": "ecsc-1", "service": "ecsc", "install_dir": "/home/ecsc", "release": "20170220",
    "identity": {"catalina_base": "/home/apache-tomcat-7.0.67"}, "source": "salt://r/ecsc.tar",
    "sha256": "0" * 64, "keep": [], "stop": {"signal": "TERM", "timeout": 30,
                                             "thread_dump": False},
    "start": ["/home/apache-tomcat-7.0.67/bin/startup.sh"], "start_cwd": "/home",
    "logs": {"app": "/home/ecsclog/app.log"}, "output": "/home/ecsclog/app.log",
    "ready": [{"pattern": "TOMCAT_READY"}], "fatal": None,
    "health_url": "http://127.0.3.17:8080/ecsc/health", "ready_timeout": 120, "settle": 3,
    "checks": [], "keep_backups": 3, "keep_reports": 20,
    "drain": {"http": "http://lb/drain/ecsc-1", "method": "POST", "timeout": 15},
    "undrain": {"http": "http://lb/undrain/ecsc-1", "method": "POST", "timeout": 15},
}


def _render_upgrade(pillar):
    """salt/release/upgrade.sls (#!py) rendered for HOST with this pillar."""
    module = types.ModuleType("release_upgrade")
    text = (REPO_ROOT / "salt" / "release" / "upgrade.sls").read_text().split("\n", 1)[1]
    exec(compile(text, "upgrade.sls", "exec"), module.__dict__)  # pylint: disable=exec-used
    module.__salt__ = {"inventory.host": lambda **_: dict(HOST),
                       "release.read_record": lambda target: {"release": "20161201"}}
    module.__pillar__ = pillar
    module.__opts__ = {"test": False}
    return module.run()


def _args(state):
    return {k: v for arg in next(iter(state.values())) for k, v in arg.items()}


def test_the_canary_soaks_after_undrain_and_a_failed_soak_rolls_back():
    states = _render_upgrade({"rollout_soak": {"ecsc-1": 30}})
    order = list(states)
    assert order.index("in-rotation") < order.index("soaked") < order.index("rolled-back")
    soaked = _args(states["soaked"])
    assert soaked["seconds"] == 30 and soaked["require"] == [{"balancer": "in-rotation"}]
    assert soaked["url"] == HOST["health_url"] and soaked["catalina_base"] == (
        "/home/apache-tomcat-7.0.67")
    # The ready gate keeps its own settle time: the soak is not spent out of rotation.
    assert _args(states["ready"])["settle"] == 3
    assert {"balancer": "soaked"} in _args(states["rolled-back"])["onfail"]
    assert {"balancer": "soaked"} in _args(states["event-failed"])["onfail"]
    # Rolled back: back in rotation on the old release.
    assert _args(states["in-rotation-after-rollback"])["onchanges"] == [
        {"release": "rolled-back"}]
    # Hosts of later waves (no rollout_soak, or not theirs): no soak.
    assert "soaked" not in _render_upgrade({})
    assert "soaked" not in _render_upgrade({"rollout_soak": {"ecsc-2": 30}})


def test_a_job_published_ahead_waits_for_its_turn_before_anything_else():
    """With pillar rollout_turn (orch.upgrade publishes every host's job ahead), the first
    state waits for the host's turn and nothing else runs without it: no progress event, no
    resume, no rollback, no undrain (an aborted job touches nothing)."""
    states = _render_upgrade({"rollout_turn": {"run": "abc123", "timeout": 900}})
    assert list(states)[0] == "turn"
    assert _args(states["turn"]) == {"name": "abc123", "timeout": 900}
    for sid in ("event-begin", "resumed", "event-failed", "event-end",
                "in-rotation-after-failed-drain"):
        if sid in states:
            assert {"turn": "turn"} in _args(states[sid])["require"], sid
    # Without it (a dry run, or salt.state straight): no wait.
    assert "turn" not in _render_upgrade({})
