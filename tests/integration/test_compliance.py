"""orch.compliance on the lab: a clean v2 lab passes every control, each injected drift is
caught and named with its host and control, and the check itself changes nothing."""

import hashlib
import json
import os
import subprocess

import psutil
import pytest

from lab import events, faults
from tests.integration.conftest import REPO_ROOT, VENV_BIN, http_get
from tests.integration.test_upgrade import V2, orchestrate, snapshot

pytestmark = pytest.mark.lab

CONTROLS = {"jvm-single", "health", "release", "tree-intact", "backup", "retention",
            "no-leftovers"}


def latest_report(lab):
    path = lab.MASTER_DIR / "var" / "cache" / "salt" / "master" / "compliance" / "latest.json"
    return json.loads(path.read_text())


def check(lab):
    """Run orch.compliance; (exit code, {(host, control): control report}, summary, events)."""
    with events.Listener() as bus:
        proc = orchestrate("orch.compliance")
    report = latest_report(lab)
    controls = {
        (host["host"], control["id"]): control
        for host in report["reports"] for control in host["controls"]
    }
    fired = [data for _, tag, data in bus.events if tag == "rollout/compliance/report"]
    return proc, controls, report["summary"], fired


def failed(controls):
    return {key for key, control in controls.items() if control["status"] == "failed"}


@pytest.fixture(scope="module")
def v2_lab(lab, hosts):
    """The lab upgraded to v2 by orch.upgrade, as after a release."""
    lab.reset(None)
    proc = orchestrate("orch.upgrade")
    assert proc.returncode == 0, proc.stdout[-3000:]
    return lab


def test_clean_lab_passes_every_control_and_changes_nothing(v2_lab, hosts):
    lab = v2_lab
    before = snapshot(lab, hosts)
    proc, controls, summary, fired = check(lab)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert {c for (_, c) in controls} == CONTROLS
    assert len({h for (h, _) in controls}) == 8
    assert failed(controls) == set()
    assert summary["status"] == "passed" and summary["passed"] == 8
    assert [f["status"] for f in fired if f["generated"] == summary["generated"]] == ["passed"]
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["pids"] == before[host_id]["pids"], host_id
        assert after[host_id]["tree"] == before[host_id]["tree"], host_id  # hashes and mtimes
        assert after[host_id]["home"] == before[host_id]["home"], host_id
    # The readable table sits next to the JSON.
    table = (lab.MASTER_DIR / "var/cache/salt/master/compliance/latest.txt").read_text()
    assert "ecmc-1" in table and "tree-intact" in table


def assert_caught(lab, host, control, found_text):
    proc, controls, summary, fired = check(lab)
    assert proc.returncode != 0
    assert (host, control) in failed(controls), failed(controls)
    assert found_text in json.dumps(controls[(host, control)]), controls[(host, control)]
    assert {h for (h, _) in failed(controls)} == {host}, failed(controls)
    assert summary["status"] == "failed"
    assert any(f["host"] == host and f["control"] == control for f in summary["failed_controls"])
    assert [f["status"] for f in fired if f["generated"] == summary["generated"]] == ["failed"]
    return controls


def program_dir(lab, hosts, host_id):
    host = hosts[host_id]
    return lab.in_root(host, host["conf"]["install_dir"])


def hash_cache(lab, host_id, root):
    """The minion's hash cache of the tree ``root`` (rollout_tree.scan): {rel: sha256}."""
    cache_dir = lab.LAB / "minions" / host_id / "var/cache/salt/minion/rollout_tree"
    for path in cache_dir.glob("*.json"):
        data = json.loads(path.read_text())
        if data["root"] == str(root):
            return {rel: entry[5] for rel, entry in data["files"].items()}
    return {}


def test_edited_jar_is_named(v2_lab, hosts):
    # The clean check before this one left the jar's sha in the minion's hash cache (its
    # inode unchanged since the upgrade). An edit of the same size with the mtime put back
    # is still seen: the cache is keyed by ctime too.
    root = program_dir(v2_lab, hosts, "ecmc-1")
    jar = root / "WEB-INF" / "lib" / "ecmc.jar"
    original, st = jar.read_bytes(), jar.stat()
    assert hash_cache(v2_lab, "ecmc-1", root)["WEB-INF/lib/ecmc.jar"] == hashlib.sha256(
        original).hexdigest()
    jar.write_bytes(original[:-15] + b"patched by hand")
    os.utime(jar, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (jar.stat().st_size, jar.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    try:
        assert_caught(v2_lab, "ecmc-1", "tree-intact", "WEB-INF/lib/ecmc.jar")
    finally:
        jar.write_bytes(original)
        os.utime(jar, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_extra_file_is_named(v2_lab, hosts):
    extra = program_dir(v2_lab, hosts, "schedule-2") / "lib" / "hotfix.jar"
    extra.write_bytes(b"not from the release")
    try:
        assert_caught(v2_lab, "schedule-2", "tree-intact", "lib/hotfix.jar")
    finally:
        extra.unlink()


def test_stopped_service(v2_lab, hosts):
    lab, host = v2_lab, hosts["schedule-res-1"]
    lab.stop_pids(lab.service_pids(host))
    try:
        controls = assert_caught(lab, "schedule-res-1", "jvm-single", "not running")
        assert controls[("schedule-res-1", "health")]["status"] == "failed"
    finally:
        lab.start_service(host)
        lab.wait_for(lambda: lab.health(host), 60, "schedule-res-1 health")


def test_second_jvm_of_the_same_service(v2_lab, hosts, tmp_path):
    lab, host = v2_lab, hosts["schedule-1"]
    app = program_dir(lab, hosts, "schedule-1")
    conf = tmp_path / "second.properties"
    conf.write_text(f"bind.address=127.0.3.230\nhttp.port=8090\nlog.file={tmp_path}/second.log\n")
    # Someone ran the service a second time from its own directory.
    second = subprocess.Popen(
        ["java", "-Xmx16m", "-XX:+UseSerialGC", "-Dservice.name=schedule", "-cp", "lib/schedule.jar",
         "lab.standalone.Main", str(conf)],
        cwd=app, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        lab.wait_for(lambda: http_get("http://127.0.3.230:8090/health")[0] == 200, 30,
                     "the second JVM")
        assert len(lab.service_pids(host)) == 2
        assert_caught(lab, "schedule-1", "jvm-single", str(second.pid))
    finally:
        second.terminate()
        second.wait(30)


def test_deleted_backup(v2_lab, hosts):
    backup = program_dir(v2_lab, hosts, "ecsc-2").with_name(f"ecsc_{V2}")
    aside = v2_lab.LAB / "aside-backup"
    backup.rename(aside)
    try:
        assert_caught(v2_lab, "ecsc-2", "backup", f"no backup {backup}")
    finally:
        aside.rename(backup)


def test_corrupted_backup(v2_lab, hosts):
    jar = program_dir(v2_lab, hosts, "ecmc-2").with_name(f"ecmc_{V2}") / "WEB-INF/lib/ecmc.jar"
    original, st = jar.read_bytes(), jar.stat()
    jar.write_bytes(b"\0" * len(original))
    try:
        assert_caught(v2_lab, "ecmc-2", "backup", "WEB-INF/lib/ecmc.jar")
    finally:
        jar.write_bytes(original)
        os.utime(jar, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_one_host_of_a_pair_on_the_wrong_release(v2_lab, hosts):
    proc = orchestrate("orch.rollback", {"hosts": ["ecsc-1"]})
    assert proc.returncode == 0, proc.stdout[-3000:]
    try:
        controls = assert_caught(v2_lab, "ecsc-1", "release", V2)
        assert controls[("ecsc-2", "release")]["status"] == "passed"
    finally:
        proc = orchestrate("orch.upgrade", {"hosts": ["ecsc-1"]})
        assert proc.returncode == 0, proc.stdout[-3000:]


def test_back_to_clean(v2_lab):
    proc, controls, summary, _ = check(v2_lab)
    assert proc.returncode == 0 and failed(controls) == set(), failed(controls)


def test_hosts_under_an_upgrade_are_skipped_not_drift(v2_lab, hosts):
    """The scheduled check meeting an upgrade: the hosts the upgrade holds are reported
    "skipped: upgrade in progress", not as drift."""
    lock = v2_lab.MASTER_DIR / "var" / "cache" / "salt" / "master" / "rollout.lock"
    # ecmc back on v1 (by hand): the upgrade has real work and holds the lock for its whole
    # length (on v2 already it would have nothing to do and give the lock back at once).
    faults.reset_hosts([hosts["ecmc-1"], hosts["ecmc-2"]])
    upgrade = subprocess.Popen(
        [str(VENV_BIN / "salt-run"), "state.orchestrate", "orch.upgrade",
         'pillar={"services": ["ecmc"]}'],
        cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
    )
    try:
        v2_lab.wait_for(lambda: lock_held(lock), 30, "the upgrade to take the rollout lock")
        proc, controls, summary, _ = check(v2_lab)
    finally:
        assert upgrade.wait(300) == 0
    assert not lock.exists()  # a passed run gives the lock back in its last step
    assert proc.returncode == 0, proc.stdout[-3000:]
    skipped = {h for (h, _), c in controls.items() if c["status"] == "skipped"}
    assert skipped == {"ecmc-1", "ecmc-2"}
    assert "upgrade in progress" in controls[("ecmc-1", "jvm-single")]["found"]
    assert summary["skipped"] == 2 and summary["passed"] == 6


def lock_held(path):
    """True while a live run holds the rollout lock (its record names a running pid)."""
    try:
        record = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and psutil.pid_exists(record.get("pid") or 0)
