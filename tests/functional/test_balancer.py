"""Functional test of the canary's soak (_states/balancer.py ``soaked``) on a real JVM: ready
first, then watched in rotation through javaservice.wait_ready's settle time (same JVM, health
200); a fatal line logged while it soaks fails the soak, and the host is drained again (its
drain hook, a real command run by the balancer module from the pillar)."""

import threading

import pytest
import yaml

from tests.conftest import REPO_ROOT

# The real JVMs of the javaservice tests (FakeService), and their clean-up by pid.
from tests.functional.test_javaservice import (  # noqa: F401  pylint: disable=unused-import
    FAKE_ADDR, classes, free_port, home, leftovers, logged_pid, alive, pytestmark,
    start_schedule,
)


@pytest.fixture
def pillar(tmp_path, minion_id, loaders, monkeypatch):
    """The repo's pillar with this minion as schedule's only host, and a drain hook (a real
    command, run by the balancer module) that leaves a mark."""
    found = {}
    for name in ("inventory", "release"):
        found.update(yaml.safe_load((REPO_ROOT / "pillar" / f"{name}.sls").read_text()))
    schedule = found["inventory"]["services"]["schedule"]
    schedule["hosts"] = {minion_id: {"address": FAKE_ADDR}}
    schedule["drain"] = {"cmd": ["touch", str(tmp_path / "drained-{host}")], "timeout": 10}
    found["inventory"]["order"] = [minion_id]
    found["inventory"]["services"] = {"schedule": schedule}
    monkeypatch.setitem(loaders.opts, "pillar", found)
    return found


def test_the_canary_soaks_on_the_same_jvm_and_a_fatal_line_fails_it_and_drains_it(
        modules, states, home, pillar, tmp_path, minion_id):
    port = free_port(FAKE_ADDR)
    url = f"http://{FAKE_ADDR}:{port}/health"
    app = str(home / "schedule")
    _, log = start_schedule(modules, home, "ready=Scheduler started", f"http={FAKE_ADDR}:{port}")
    # The ready gate (no settle), as the upgrade's ready state.
    modules.javaservice.wait_ready("schedule", ready=["Scheduler started"], url=url, timeout=30,
                                   settle=0, app_dir=app)
    soak = {"name": "schedule", "logs": [str(log)], "url": url, "timeout": 30, "app_dir": app}
    ret = states.balancer.soaked(seconds=1, **soak)
    assert ret.result is True, ret.comment
    assert ret.changes["soaked"]["pids"] == [logged_pid(log)]
    assert ret.changes["soaked"]["http_status"] == 200
    assert not (tmp_path / f"drained-{minion_id}").exists()
    # A longer soak meets the fatal line the service logs a second into it.
    later = threading.Timer(1.0, lambda: log.open("a").write(
        "2026-11-30T04:00:00 java.lang.OutOfMemoryError: Java heap space\n"))
    later.start()
    ret = states.balancer.soaked(seconds=30, **soak)
    later.join()
    assert ret.result is False
    assert "fatal pattern" in ret.comment and "OutOfMemoryError" in ret.comment
    assert ret.comment.endswith("; drained again"), ret.comment
    assert (tmp_path / f"drained-{minion_id}").exists()  # the drain hook ran
    assert alive(logged_pid(log))  # left running: the armed rollback replaces it
