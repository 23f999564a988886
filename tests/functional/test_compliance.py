"""
Functional tests of the compliance check through Salt's loader, on real files: a program dir
deployed with the real ``release.unpack`` from a tar made here, a real ``backup.create``, a
health URL served by a tiny ``http.server`` on 127.0.3.220, real JVMs for ``jvm-single``.
Each drift is injected for real and must be caught by the right control and named; the check
must change nothing (tree hashes, modes, mtimes and ctimes compared before/after).
"""

import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import tarfile
import threading
from unittest import mock

import pytest

from tests.conftest import load_repo_module

RELEASE = "20170220"
ADDRESS = "127.0.3.220"
SERVICE = "schedule"
OTHER_CONTROLS_PASS = {
    "health": "passed",
    "release": "passed",
    "tree-intact": "passed",
    "backup": "passed",
    "retention": "passed",
    "no-leftovers": "passed",
}
ARCHIVE_FILES = {
    "startup.sh": b"#!/bin/sh\nexec java -cp lib/schedule.jar lab.Main\n",
    "lib/schedule.jar": b"PK\x03\x04 schedule " + bytes(range(256)) * 40,
    "conf/app.properties": b"money.log.timestamp=true\n",
}


# --------------------------------------------------------------------------- helpers


def snapshot(root):
    """Everything the check could change under ``root``: content, type, mode, mtime, ctime."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entry = [stat.S_IFMT(st.st_mode), st.st_mode, st.st_mtime_ns, st.st_ctime_ns,
                     st.st_size, st.st_uid]
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as fh:
                    entry.append(hashlib.sha256(fh.read()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(path))
            state[os.path.relpath(path, root)] = entry
    return state


def make_archive(path, files, top=SERVICE):
    with tarfile.open(path, "w") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            info.mode = 0o755 if rel.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


class HealthServer:
    """GET /health answers ``self.status`` with ``self.body``; ``hang`` never answers."""

    def __init__(self):
        owner = self
        self.status = 200
        self.body = json.dumps({"service": SERVICE, "release": RELEASE, "status": "UP"})
        self.hang = threading.Event()
        self.stop_hanging = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if owner.hang.is_set():
                    owner.stop_hanging.wait(30)
                    return
                data = owner.body.encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((ADDRESS, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.stop_hanging.set()
        self.server.shutdown()
        self.server.server_close()


def loaded_globals(loaded_func):
    """The module globals of a function loaded by Salt's loader (to patch its helpers)."""
    return loaded_func.loader._dict[loaded_func.name].__globals__  # pylint: disable=protected-access


def statuses(report):
    return {c["id"]: c["status"] for c in report["controls"]}


def control(report, cid):
    return next(c for c in report["controls"] if c["id"] == cid)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def health():
    server = HealthServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def host(modules, tmp_path, health, minion_id):
    """A deployed, backed-up program dir and the pillar describing it."""
    root = tmp_path / "root"
    home = root / "home"
    target = home / SERVICE
    # The live tree before the first automated deploy, with its host-local config.
    (target / "conf").mkdir(parents=True)
    (target / "conf" / "host.properties").write_text("node=1\n")
    (target / "old.jar").write_bytes(b"stale")
    (root / "home" / "schedulelog").mkdir()
    upload = tmp_path / "upload"
    upload.mkdir()
    archive = upload / f"{SERVICE}.tar"
    sha256 = make_archive(archive, ARCHIVE_FILES)
    modules.release.unpack(str(archive), str(target), sha256, RELEASE,
                           keep=["conf/host.properties"])
    modules.backup.create(str(target), RELEASE)
    pillar = {
        "inventory": {
            "services": {
                SERVICE: {
                    "kind": "standalone",
                    "hosts": {minion_id: {"address": ADDRESS, "root": str(root)}},
                    "install_dir": f"/home/{SERVICE}",
                    "start": ["sh", "startup.sh"],
                    "logs": {"app": "/home/schedulelog/schedule.log"},
                    "ready": [{"log": "app", "pattern": "INFO Started schedule release={release}"}],
                    "health_url": f"http://{{address}}:{health.port}/health",
                    "stop": {"signal": "TERM", "timeout": 30},
                    "keep": ["conf/host.properties"],
                }
            }
        },
        "release": {
            "id": RELEASE,
            "source": "salt://releases/{release}/{service}.tar",
            "sha256": {},
            "keep_backups": 3,
        },
    }
    return {"root": root, "home": home, "target": target, "pillar": pillar, "health": health}


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    """Two compiled Java programs that just sleep: ``Sleeper`` (the service's main class in
    the pillar) and ``Tool`` (another main class run from the program dir: a stranger)."""
    javac = shutil.which("javac")
    if not javac:
        pytest.skip("no javac on this machine")
    src = tmp_path_factory.mktemp("java")
    for name in ("Sleeper", "Tool"):
        (src / f"{name}.java").write_text(
            f"public class {name} {{ public static void main(String[] a) throws Exception "
            "{ System.out.println(\"up\"); System.out.flush(); Thread.sleep(600000); } }\n"
        )
    subprocess.run([javac, "-d", str(src), str(src / "Sleeper.java"), str(src / "Tool.java")],
                   check=True)
    return src


@pytest.fixture
def jvms():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


def start_jvm(jvms, classes, cwd, main="Sleeper"):
    java = shutil.which("java")
    if not java:
        pytest.skip("no java on this machine")
    proc = subprocess.Popen(
        [java, "-Xmx16m", "-XX:TieredStopAtLevel=1", "-cp", str(classes), main],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    jvms.append(proc)
    assert proc.stdout.readline().strip() == b"up", "the test JVM did not start"
    return proc.pid


def check(modules, host):
    before = snapshot(host["root"])
    report = modules.compliance.check(pillar=host["pillar"])
    assert snapshot(host["root"]) == before, "the compliance check changed the host"
    return report


# --------------------------------------------------------------------------- tests


def test_clean_host_passes_every_control_but_the_missing_jvm(modules, host, minion_id):
    report = check(modules, host)
    assert report["host"] == minion_id
    assert report["service"] == SERVICE
    assert report["release_expected"] == RELEASE
    assert statuses(report) == {"jvm-single": "failed", **OTHER_CONTROLS_PASS}
    assert control(report, "jvm-single")["found"] == "not running"
    assert control(report, "health")["found"] == f"200 with release {RELEASE}"
    assert control(report, "backup")["found"] == f"{host['target']}_{RELEASE} verifies"
    assert control(report, "retention")["found"] == f"1 backups: {RELEASE}"
    assert report["status"] == "failed"
    json.dumps(report)  # travels back to the master as is


def test_jvm_single_with_real_jvms(modules, host, jvms, classes):
    host["pillar"]["inventory"]["services"][SERVICE]["main"] = "Sleeper"
    first = start_jvm(jvms, classes, host["target"])
    # Another main class run from the program dir is not the service (issue 8.2).
    tool = start_jvm(jvms, classes, host["target"], main="Tool")
    report = check(modules, host)
    assert statuses(report) == {"jvm-single": "passed", **OTHER_CONTROLS_PASS}
    assert report["status"] == "passed"
    jvm = control(report, "jvm-single")
    assert jvm["found"].startswith(f"1 JVM: pid {first}; not the service: pid {tool} ")
    assert jvm["evidence"]["pids"] == [first]
    assert [s["pid"] for s in jvm["evidence"]["strangers"]] == [tool]

    second = start_jvm(jvms, classes, host["target"])
    report = check(modules, host)
    jvm = control(report, "jvm-single")
    assert jvm["status"] == "failed"
    assert str(first) in jvm["found"] and str(second) in jvm["found"]
    assert sorted(jvm["evidence"]["pids"]) == sorted([first, second])


def _edit(host):
    (host["target"] / "lib" / "schedule.jar").write_bytes(b"patched by hand")


def _add(host):
    (host["target"] / "lib" / "debug.jar").write_bytes(b"debug")


def _remove(host):
    (host["target"] / "conf" / "app.properties").unlink()


def _edit_host_local(host):
    (host["target"] / "conf" / "host.properties").write_text("node=2\n")


def _corrupt_backup(host):
    (host["home"] / f"{SERVICE}_{RELEASE}" / "lib" / "schedule.jar").write_bytes(b"rot")


def _delete_backup(host):
    shutil.rmtree(host["home"] / f"{SERVICE}_{RELEASE}")


def _hand_made_backup(host):
    _delete_backup(host)
    shutil.copytree(host["target"], host["home"] / f"{SERVICE}_{RELEASE}", symlinks=True)


def _staging_leftover(host):
    (host["home"] / f".{SERVICE}.staging" / "lib").mkdir(parents=True)


def _uploaded_tar(host):
    (host["home"] / f"{SERVICE}.tar").write_bytes(b"tar")


def _too_many_backups(host, modules):
    for tag in ("20161101", "20161201", "20170101"):
        modules.backup.create(str(host["target"]), tag)


def _deployed_by_hand(host):
    (host["home"] / f".{SERVICE}.release.json").unlink()


def _health_other_release(host):
    host["health"].body = json.dumps({"service": SERVICE, "release": "20161201"})


def _health_503(host):
    host["health"].status = 503


def _health_down(host):
    host["health"].close()


DRIFTS = {
    # name: (inject, {control: expected status}, [texts that must be in that control's found])
    "edited file": (_edit, {"tree-intact": "failed"}, ["modified lib/schedule.jar"]),
    "added file": (_add, {"tree-intact": "failed"}, ["added lib/debug.jar"]),
    "removed file": (_remove, {"tree-intact": "failed"}, ["removed conf/app.properties"]),
    "host-local file edited": (_edit_host_local, {}, ["conf/host.properties"]),
    "corrupt backup": (_corrupt_backup, {"backup": "failed"}, ["lib/schedule.jar"]),
    "deleted backup": (_delete_backup, {"backup": "failed", "retention": "passed"},
                       [f"no backup "]),
    "hand-made backup": (_hand_made_backup, {"backup": "failed"}, ["hand-made"]),
    "staging leftover": (_staging_leftover, {"no-leftovers": "failed"}, [f".{SERVICE}.staging"]),
    "uploaded tar": (_uploaded_tar, {"no-leftovers": "failed"}, [f"{SERVICE}.tar"]),
    "too many backups": (_too_many_backups, {"retention": "failed"}, ["4 backups"]),
    "deployed by hand": (_deployed_by_hand, {"release": "failed", "tree-intact": "skipped"},
                         ["deployed by hand?"]),
    "health other release": (_health_other_release, {"health": "failed"},
                             ["200 with release 20161201"]),
    "health 503": (_health_503, {"health": "failed"}, ["answered 503"]),
    "health down": (_health_down, {"health": "failed"}, ["expected 200"]),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_drift_is_caught_and_named(modules, host, drift):
    inject, expected, texts = DRIFTS[drift]
    if inject is _too_many_backups:
        inject(host, modules)
    else:
        inject(host)
    report = check(modules, host)
    want = {"jvm-single": "failed", **OTHER_CONTROLS_PASS, **expected}
    assert statuses(report) == want
    named = next(iter(expected), "tree-intact")
    found = control(report, named)["found"]
    for text in texts:
        assert text in found, f"{drift}: {text!r} not in {named} found {found!r}"
    assert report["status"] == "failed"


def test_drift_evidence_lists_every_file(modules, host):
    _edit(host)
    _add(host)
    _remove(host)
    evidence = control(check(modules, host), "tree-intact")["evidence"]
    assert evidence["modified"] == ["lib/schedule.jar"]
    assert evidence["added"] == ["lib/debug.jar"]
    assert evidence["removed"] == ["conf/app.properties"]


def test_health_that_hangs_is_bounded(modules, host):
    host["health"].hang.set()
    globs = loaded_globals(modules.compliance.check)
    with mock.patch.dict(globs, {"HEALTH_TIMEOUT": 0.5}):
        report = check(modules, host)
    assert control(report, "health")["status"] == "failed"
    found = control(report, "health")["found"].lower()
    assert "timeout" in found or "timed out" in found, control(report, "health")
    assert report["seconds"] < 10  # bounded by probe.http's timeout, not the server
    assert statuses(report)["tree-intact"] == "passed"


def test_missing_program_dir_is_drift(modules, host):
    shutil.rmtree(host["target"])
    report = check(modules, host)
    tree = control(report, "tree-intact")
    assert tree["status"] == "failed"
    assert "removed" in tree["found"] and "lib/schedule.jar" in tree["found"]


def test_host_not_in_inventory(modules, host):
    pillar = json.loads(json.dumps(host["pillar"]))
    pillar["inventory"]["services"][SERVICE]["hosts"] = {"other-1": {"address": ADDRESS}}
    report = modules.compliance.check(pillar=pillar)
    assert report["status"] == "failed"
    assert [c["id"] for c in report["controls"]] == ["inventory"]


# --------------------------------------------------------------------------- master runner


class LoopbackClient:
    """Stands in for the master's LocalClient: runs the real compliance.check here."""

    def __init__(self, modules, minion_id):
        self.modules, self.minion_id, self.calls = modules, minion_id, []

    def cmd(self, tgt, fun, kwarg=None, **kwargs):
        self.calls.append((list(tgt), fun, kwargs))
        assert fun == "compliance.check"
        return {
            mid: {"ret": self.modules.compliance.check(**(kwarg or {})), "retcode": 0}
            for mid in tgt
            if mid == self.minion_id
        }

    def destroy(self):
        pass


class FakeEvent:
    def __init__(self, fired):
        self.fired = fired

    def fire_event(self, data, tag):
        self.fired.append((tag, data))
        return True

    def destroy(self):
        pass


def test_report_runner_end_to_end(modules, host, minion_id, tmp_path):
    """
    The master's compliance.report runner with the real minion check behind a stand-in
    LocalClient, the real rollout lock runner, real report files; the event bus is a
    stand-in (no master here).
    """
    runner = load_repo_module("runners", "compliance")
    lock = load_repo_module("runners", "rolloutlock")
    lock.__opts__ = {"cachedir": str(tmp_path / "cache")}
    runner.__opts__ = {"cachedir": str(tmp_path / "cache"), "sock_dir": str(tmp_path),
                       "conf_file": str(tmp_path / "master"), "test": False}
    runner.__context__ = {}
    runner.__salt__ = {"rolloutlock.holder": lock.holder}
    master_modules = {"compliance.controls": modules.compliance.controls,
                      "inventory.host": modules.inventory.host}
    (host["target"] / "lib" / "debug.jar").write_bytes(b"debug")
    client = LoopbackClient(modules, minion_id)
    fired = []
    report_dir = tmp_path / "reports"
    args = {"tgt_type": "list", "report_dir": str(report_dir),
            "pillar": host["pillar"], "timeout": 5}
    with mock.patch("salt.client.get_local_client", return_value=client), \
            mock.patch("salt.utils.event.get_master_event", return_value=FakeEvent(fired)), \
            mock.patch.object(runner, "_execution_modules", return_value=master_modules):
        before = snapshot(host["root"])
        ret = runner.report(tgt=[minion_id, "gone-1"], **args)
        assert snapshot(host["root"]) == before
        assert ret["result"] is False and ret["retcode"] == 1
        latest = json.loads((report_dir / "latest.json").read_text())
        summary = latest["summary"]
        assert fired == [("rollout/compliance/report", summary)]
        assert (summary["hosts"], summary["failed"]) == (2, 2)
        failed = {(f["host"], f["control"]) for f in summary["failed_controls"]}
        assert failed == {(minion_id, "jvm-single"), (minion_id, "tree-intact"),
                          ("gone-1", "minion")}
        text = (report_dir / "latest.txt").read_text()
        assert (f"{minion_id} tree-intact: expected no modified, added or removed file; "
                "found added lib/debug.jar") in text
        assert ("gone-1 minion: expected a compliance.check report; "
                "found did not return within 5s") in text
        assert text in ret["comment"]

        # An upgrade holds the rollout lock and names this host: skipped, not checked.
        lock.acquire("upgrade", owner="run-1", hosts=[minion_id])
        try:
            ret = runner.report(tgt=[minion_id], **args)
        finally:
            lock.release("run-1")
        assert ret["result"] is True
        assert len(client.calls) == 1  # no second check
        assert fired[-1][1]["status"] == "skipped"
        skipped = json.loads((report_dir / "latest.json").read_text())["reports"][0]
        assert skipped["service"] == SERVICE
        assert all(c["found"].startswith("upgrade in progress: upgrade pid")
                   for c in skipped["controls"])

        # test=True checks again but leaves the last report and fires nothing.
        stamp = (report_dir / "latest.json").stat().st_mtime_ns
        ret = runner.report(tgt=[minion_id], test=True, **args)
        assert ret["result"] is False
        assert len(client.calls) == 2
        assert len(fired) == 2
        assert (report_dir / "latest.json").stat().st_mtime_ns == stamp
        assert "test=True" in ret["comment"]
