"""
Unit tests of the rollout lock runner (_runners/rolloutlock.py) on real files and real
processes: one holder at a time, the holder named, stale locks (dead pid, reused pid) taken
over and reported, release by the owner only, no symlink followed.
"""

import json
import os
import subprocess
import sys

import psutil
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module

rolloutlock = load_repo_module("runners", "rolloutlock")


@pytest.fixture
def configure_loader_modules(tmp_path):
    return {rolloutlock: {"__opts__": {"cachedir": str(tmp_path / "cache")}}}


@pytest.fixture
def lock_path(tmp_path):
    return tmp_path / "cache" / "rollout.lock"


def write_record(path, **record):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


@pytest.fixture
def other_process():
    """A live process that is not this one (the holder of another run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_acquire_records_this_process_and_release_removes_it(lock_path):
    ret = rolloutlock.acquire("upgrade", owner="run-1", hosts=["ecsc-1", "ecsc-2"])
    assert ret["acquired"] is True and ret["took_over"] is None
    record = json.loads(lock_path.read_text())
    me = psutil.Process()
    assert record["pid"] == me.pid
    assert record["pid_started"] == pytest.approx(me.create_time(), abs=0.05)
    assert (record["kind"], record["owner"], record["hosts"]) == ("upgrade", "run-1", ["ecsc-1", "ecsc-2"])
    assert oct(lock_path.stat().st_mode & 0o777) == "0o600"
    assert rolloutlock.holder()["owner"] == "run-1"
    # the same run taking it again is a no-op
    assert rolloutlock.acquire("upgrade", owner="run-1")["holder"]["owner"] == "run-1"

    assert rolloutlock.release("run-1")["released"] is True
    assert not lock_path.exists()
    assert rolloutlock.holder() is None


def test_a_live_holder_refuses_the_next_run_by_name(lock_path, other_process):
    write_record(lock_path, kind="rollback", owner="run-1", pid=other_process.pid,
                 pid_started=other_process.create_time(), started="2017-02-20T10:00:00+00:00",
                 hosts=["ecmc-1"])
    before = lock_path.read_bytes()
    with pytest.raises(CommandExecutionError) as err:
        rolloutlock.acquire("upgrade", owner="run-2")
    message = str(err.value)
    assert f"rollback pid {other_process.pid}" in message
    assert "ecmc-1" in message and "run-1" in message and str(lock_path) in message
    assert lock_path.read_bytes() == before
    assert rolloutlock.holder()["owner"] == "run-1"


def test_a_lock_of_a_dead_process_is_taken_over_and_reported(lock_path, dead_pid):
    write_record(lock_path, kind="upgrade", owner="killed-run", pid=dead_pid,
                 pid_started=1.0, started="2017-02-20T10:00:00+00:00", hosts=["ecsc-1"])
    # a stale lock blocks nothing, not even the compliance check
    assert rolloutlock.holder() is None
    ret = rolloutlock.acquire("upgrade", owner="run-2", hosts=["ecsc-1"])
    assert ret["took_over"]["owner"] == "killed-run"
    assert ret["took_over"]["stale"] == f"process {dead_pid} is gone"
    assert f"stale rollout lock taken over: process {dead_pid} is gone" in ret["comment"]
    assert json.loads(lock_path.read_text())["owner"] == "run-2"


def test_a_reused_pid_is_a_stale_lock(lock_path, other_process):
    """The recorded pid runs, but it is another process (started at another time)."""
    write_record(lock_path, kind="upgrade", owner="killed-run", pid=other_process.pid,
                 pid_started=other_process.create_time() - 3600)
    assert rolloutlock.holder() is None
    ret = rolloutlock.acquire("upgrade", owner="run-2")
    assert "now belongs to another process" in ret["took_over"]["stale"]


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"owner": "x"}'])
def test_an_empty_or_broken_record_is_free(lock_path, content):
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text(content)
    ret = rolloutlock.acquire("upgrade", owner="run-2")
    assert ret["acquired"] is True
    assert json.loads(lock_path.read_text())["owner"] == "run-2"


def test_release_leaves_another_runs_lock(lock_path, other_process):
    write_record(lock_path, kind="upgrade", owner="run-1", pid=other_process.pid,
                 pid_started=other_process.create_time())
    ret = rolloutlock.release("run-2")
    assert ret["released"] is False and "another run" in ret["comment"]
    assert json.loads(lock_path.read_text())["owner"] == "run-1"


def test_release_without_a_lock_is_not_an_error(lock_path):
    assert rolloutlock.release("run-1")["released"] is False
    assert not lock_path.exists()


def test_a_symlinked_lock_is_never_followed(lock_path, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    lock_path.parent.mkdir(parents=True)
    lock_path.symlink_to(victim)
    for call in (lambda: rolloutlock.acquire("upgrade", owner="run-1"),
                 rolloutlock.holder, lambda: rolloutlock.release("run-1")):
        with pytest.raises(CommandExecutionError, match="symbolic link"):
            call()
    assert victim.read_text() == "precious"
    assert lock_path.is_symlink()


def test_a_lock_owned_by_another_user_is_refused(lock_path):
    lock_path.parent.mkdir(parents=True)
    lock_path.write_text("")
    os.chown(lock_path, 65534, 65534)
    with pytest.raises(CommandExecutionError, match="not a regular file owned by"):
        rolloutlock.acquire("upgrade", owner="run-1")


def test_owner_is_required():
    with pytest.raises(SaltInvocationError, match="owner"):
        rolloutlock.acquire("upgrade", owner="")
