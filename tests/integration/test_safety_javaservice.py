"""Issue 8.2 on the lab: a decoy JVM on schedule-1 that runs another main class with the
service's jar on its class path (`java -cp <other>:<program dir>/lib/schedule.jar SomeTool`) is
never the service: `javaservice.status` lists it as a stranger, `javaservice.stop` stops only
the service's JVM, and the decoy is alive afterwards. Only the decoy's pid is killed at the
end; the service is started again the lab's way."""

import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import salt_json

SUPPORT = REPO_ROOT / "tests" / "functional" / "javaservice_support"
HOST = "schedule-1"


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def is_java(pid):
    """A live (not zombie: the lab's init may not reap) java process."""
    try:
        proc = psutil.Process(pid)
        return proc.name() == "java" and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def decoy(hosts, tmp_path):
    """The issue's decoy JVM, started by this test and killed by its pid at the end."""
    app = hosts[HOST]["root"] / "home" / "schedule"
    subprocess.run(["javac", "-nowarn", "-d", str(tmp_path), str(SUPPORT / "SomeTool.java")],
                   check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen(
        ["java", "-Xmx16m", "-XX:+UseSerialGC", "-cp", f"{tmp_path}:{app}/lib/schedule.jar",
         "SomeTool"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        wait_until(lambda: is_java(proc.pid), 30, "the decoy JVM")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_decoy_jvm_is_a_stranger_and_survives_the_stop(lab, hosts, decoy):
    host = hosts[HOST]
    app = host["root"] / "home" / "schedule"
    status = salt_json(HOST, "javaservice.status", "schedule", f"app_dir={app}")[HOST]
    assert status["running"] is True, status
    service_pids = status["pids"]
    assert decoy.pid not in service_pids
    strangers = {s["pid"]: s for s in status["strangers"]}
    assert strangers[decoy.pid]["why"] == "runs SomeTool, not lab.standalone.Main"
    assert strangers[decoy.pid]["cmdline"].endswith("SomeTool")

    try:
        stopped = salt_json(HOST, "javaservice.stop", "schedule", f"app_dir={app}", "timeout=30")
        stopped = stopped[HOST]
        assert stopped["pids"] == service_pids and stopped["outcome"] == "graceful", stopped
        assert stopped["summary"].startswith("SIGTERM, exited after ")
        assert decoy.pid in [s["pid"] for s in stopped["strangers"]]
        assert not any(is_java(pid) for pid in service_pids)
        assert decoy.poll() is None and is_java(decoy.pid)  # the decoy was never signalled
    finally:
        # the service back the lab's way (idempotent: starts what is not running)
        up = subprocess.run([sys.executable, "-m", "lab.labctl", "up"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
    again = salt_json(HOST, "javaservice.status", "schedule", f"app_dir={app}")[HOST]
    assert again["running"] is True and decoy.pid not in again["pids"]
