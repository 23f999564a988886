"""The rollout lock of orch.upgrade/orch.rollback on the lab (issue 8.4): rendering
(`salt-run state.orchestrate_show_sls`) and dry runs (test=True) take no lock and touch nothing; a lock held by a live run refuses the next run by name;
a lock left by a killed run is reported and taken over; the lock is gone after a failed run.

Nothing here changes a host: every real run is stopped by the lock or by the pre-flight.
"""

import json
import subprocess
import sys

import psutil
import pytest

from tests.integration.conftest import run_cli
from tests.integration.test_upgrade import orchestrate, steps_of

pytestmark = pytest.mark.lab

HOST = "schedule-1"


@pytest.fixture
def lock(lab):
    """The master's rollout lock file; no lock before and after each test."""
    path = lab.MASTER_DIR / "var" / "cache" / "salt" / "master" / "rollout.lock"
    path.unlink(missing_ok=True)
    yield path
    path.unlink(missing_ok=True)


@pytest.fixture
def untouched(lab, hosts):
    """Asserts, after the test, that no service was restarted and no deployed record moved."""
    def state():
        return {
            host_id: (sorted(lab.service_pids(host)),
                      sorted(p.name for p in lab.in_root(host, host["conf"]["install_dir"]).parent.iterdir()))
            for host_id, host in hosts.items()
        }

    before = state()
    yield
    assert state() == before


def write_record(path, pid, pid_started, owner="other-run"):
    path.write_text(json.dumps({
        "kind": "upgrade", "owner": owner, "pid": pid, "pid_started": pid_started,
        "started": "2017-02-20T10:00:00+00:00", "hosts": ["ecsc-1", "ecsc-2"],
    }))


# A release no host is on: orch.upgrade has work whatever release the lab is on (a run that
# finds every host already on its release takes no lock at all).
WORK = {"orch.upgrade": {"release": {"id": "20991231"}}, "orch.rollback": {}}


def test_render_and_dry_runs_take_no_lock(lock, untouched):
    for sls in ("orch.upgrade", "orch.rollback"):
        proc = run_cli("salt-run", "--out=json", "state.orchestrate_show_sls", sls,
                       "pillar=" + json.dumps(WORK[sls]))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        shown = json.loads(proc.stdout)
        assert "rolloutlock.acquire" in json.dumps(shown)  # the lock is a step of the run ...
        assert not lock.exists(), sls  # ... not something rendering does
    for sls in ("orch.upgrade", "orch.rollback"):
        proc = orchestrate(sls, {"hosts": [HOST], **WORK[sls]}, test=True)
        steps = steps_of(proc)
        assert steps["rollout-lock"]["result"] is None, steps["rollout-lock"]
        assert not lock.exists(), sls


def test_a_live_holder_refuses_the_run_by_name(lock, untouched):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        write_record(lock, holder.pid, psutil.Process(holder.pid).create_time())
        before = lock.read_bytes()
        proc = orchestrate("orch.upgrade", {"hosts": [HOST]})
        assert proc.returncode != 0
        steps = steps_of(proc)
        assert steps["rollout-lock"]["result"] is False
        refusal = json.dumps(steps["rollout-lock"])
        assert f"upgrade pid {holder.pid}" in refusal and "other-run" in refusal
        assert steps["preflight"]["result"] is False  # never ran: its requisite failed
        # The other run's lock is still there, untouched by this run's last step.
        assert lock.read_bytes() == before
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_reported_taken_over_and_released_after_a_failed_run(lock, untouched):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    write_record(lock, gone.pid, 1.0, owner="killed-run")
    # A wrong archive sum: the run fails in its pre-flight, after taking the lock and before
    # any host is touched.
    proc = orchestrate("orch.upgrade", {"hosts": [HOST], "release": {"sha256": {"schedule": "0" * 64}}})
    assert proc.returncode != 0
    steps = steps_of(proc)
    taken = steps["rollout-lock"]
    assert taken["result"] is True, taken
    assert f"stale rollout lock taken over: process {gone.pid} is gone" in json.dumps(taken)
    assert steps["preflight"]["result"] is False
    assert steps["rollout-unlock-after-failure"]["result"] is True
    assert not lock.exists()
