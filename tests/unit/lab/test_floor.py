"""lab/floor.py's logic without the lab: the plan from the pillar files, batches, the archive
check, backup with its manifest, staging with the keep files, swap, log following, prune, and
the drain/undrain hooks around each host (from the lab pillar, run as the states run them)."""

import hashlib
import http.server
import io
import json
import os
import tarfile
import threading

import pytest
import yaml

from lab import floor
from tests.conftest import load_repo_module


def _tar(path, top, entries):
    """entries: {name: bytes | ("link", target) | ("dir", None)}"""
    with tarfile.open(path, "w") as tar:
        for name, value in entries.items():
            info = tarfile.TarInfo(name)
            if isinstance(value, tuple) and value[0] == "link":
                info.type, info.linkname = tarfile.SYMTYPE, value[1]
                tar.addfile(info)
            elif isinstance(value, tuple):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(value), 0o644
                tar.addfile(info, io.BytesIO(value))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _host(tmp_path, archive=None, sha=""):
    live = tmp_path / "home" / "svc"
    (live / "conf").mkdir(parents=True)
    (live / "lib").mkdir()
    (live / "lib" / "old.jar").write_bytes(b"old jar")
    (live / "conf" / "host.properties").write_text("bind.address=127.0.0.9\n")
    os.symlink("lib/old.jar", live / "current.jar")
    return {"id": "svc-1", "install_dir": str(live), "release": "20170220",
            "archive": archive, "sha256": sha, "keep": ["conf/host.properties"],
            "keep_backups": 2}


def test_defaults_agree_with_the_modules():
    inventory = load_repo_module("modules", "inventory")
    javaservice = load_repo_module("modules", "javaservice")
    assert floor.DEFAULT_SETTLE == inventory.DEFAULTS["settle"]
    assert floor.DEFAULT_READY_TIMEOUT == inventory.DEFAULTS["ready_timeout"]
    assert floor.DEFAULT_STOP["signal"] == inventory.DEFAULTS["stop"]["signal"]
    assert floor.DEFAULT_STOP["timeout"] == inventory.DEFAULTS["stop"]["timeout"]
    assert tuple(floor.DEFAULT_FATAL) == tuple(javaservice.DEFAULT_FATAL)


def test_plan_from_the_pillar_files_and_batches():
    if not floor.LAB_PILLAR.exists():
        pytest.skip("no lab pillar (.lab/pillar.yaml): the lab was never brought up")
    hosts = floor.plan(["ecmc", "schedule-1"])
    assert [h["id"] for h in hosts] == ["ecmc-1", "ecmc-2", "schedule-1"]
    ecmc = hosts[0]
    assert ecmc["install_dir"].endswith("/.lab/hosts/ecmc-1/home/ecmc")
    assert ecmc["start_cwd"] == os.path.dirname(ecmc["install_dir"])
    assert ecmc["health_url"] == "http://127.0.3.27:8080/ecmc/health"
    assert ecmc["checks"][0]["http"]["url"] == "http://127.0.3.27:8080/ecmc/customers"
    assert ecmc["archive"].is_file() and len(ecmc["sha256"]) == 64
    assert all(rx.pattern.endswith("release=20170220") for _, rx in ecmc["ready"][1:])
    sched = hosts[2]
    assert sched["start_cwd"] == sched["install_dir"] and sched["start"] == ["sh", "startup.sh"]
    assert sched["checks"][0]["log"]["path"] == sched["logs"]["app"]
    assert {k: [[h["id"] for h in b] for b in v] for k, v in floor.batches(hosts, 1).items()} == {
        "ecmc": [["ecmc-1"], ["ecmc-2"]], "schedule": [["schedule-1"]]}
    assert [[h["id"] for h in b] for b in floor.batches(hosts, 2)["ecmc"]] == [["ecmc-1",
                                                                                "ecmc-2"]]
    with pytest.raises(floor.Failed, match="unknown host"):
        floor.plan(["nosuch-9"])


@pytest.mark.parametrize("entries, why", [
    ({"svc/a": b"x", "other/b": b"y"}, "other/b"),
    ({"svc/../x": b"x"}, "svc/../x"),
    ({"svc/l": ("link", "../../etc/passwd")}, "svc/l"),
    ({"svc/l": ("link", "/etc/passwd")}, "svc/l"),
])
def test_verify_refuses_bad_members(tmp_path, entries, why):
    archive = tmp_path / "svc.tar"
    sha = _tar(archive, "svc", entries)
    with pytest.raises(floor.Failed, match="refused") as exc:
        floor.verify_archive(_host(tmp_path, archive, sha))
    assert why in str(exc.value)


def test_verify_refuses_a_wrong_sha256(tmp_path):
    archive = tmp_path / "svc.tar"
    _tar(archive, "svc", {"svc/a": b"x"})
    with pytest.raises(floor.Failed, match="sha256"):
        floor.verify_archive(_host(tmp_path, archive, "0" * 64))


def test_backup_stage_swap_prune(tmp_path):
    archive = tmp_path / "svc.tar"
    sha = _tar(archive, "svc", {"svc": ("dir", None), "svc/lib": ("dir", None),
                                "svc/lib/new.jar": b"new jar", "svc/startup.sh": b"exec java"})
    host = _host(tmp_path, archive, sha)
    tar, files, links, size = floor.verify_archive(host)
    assert files == {"lib/new.jar": hashlib.sha256(b"new jar").hexdigest(),
                     "startup.sh": hashlib.sha256(b"exec java").hexdigest()}
    assert links == {} and size == archive.stat().st_size

    dest = floor.backup(host)
    assert os.path.basename(dest) == "svc_20170220"
    manifest = json.loads((tmp_path / "home" / "svc_20170220" / floor.MANIFEST).read_text())
    assert manifest["files"]["lib/old.jar"]["sha256"] == hashlib.sha256(b"old jar").hexdigest()
    assert manifest["symlinks"] == {"current.jar": "lib/old.jar"}
    assert (tmp_path / "home" / "svc_20170220" / "lib" / "old.jar").read_bytes() == b"old jar"
    assert not [p for p in os.listdir(tmp_path / "home") if ".tmp-" in p]
    with pytest.raises(floor.Failed, match="exists"):
        floor.backup(host)

    pre = {"tar": tar, "files": files, "links": links}
    staging = floor.stage(host, pre)
    assert sorted(os.listdir(staging)) == ["conf", "lib", "startup.sh"]
    assert pre["local"] == {"conf/host.properties": hashlib.sha256(
        b"bind.address=127.0.0.9\n").hexdigest()}
    previous = floor.swap(host, staging, pre)
    live = tmp_path / "home" / "svc"
    assert (live / "lib" / "new.jar").read_bytes() == b"new jar"
    assert (live / "conf" / "host.properties").read_text() == "bind.address=127.0.0.9\n"
    assert (tmp_path / "home" / ".svc.previous" / "lib" / "old.jar").exists()
    record = json.loads((tmp_path / "home" / ".svc.release.json").read_text())
    assert record["release"] == "20170220" and record["files"] == files
    assert floor._deployed_release(host) == "20170220"
    assert previous.endswith(".svc.previous")

    for tag in ("20160101", "20160202"):  # older backups: only keep_backups (2) stay
        floor.backup({**host, "release": tag})
    os.utime(tmp_path / "home" / "svc_20160101", (1, 1))
    assert floor.prune(host) == ["svc_20160101"]
    assert sorted(p for p in os.listdir(tmp_path / "home") if p.startswith("svc_")) == [
        "svc_20160202", "svc_20170220"]


def test_logs_reads_only_lines_after_the_offset(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("old line\n")
    logs = floor.Logs({str(log): log.stat().st_size})
    assert list(logs.new_lines()) == []
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("new one\nhalf")
    assert list(logs.new_lines()) == [(str(log), "new one")]
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(" done\n")
    assert list(logs.new_lines()) == [(str(log), "half done")]


# ---------------------------------------------------------------- drain/undrain (issue 11)


@pytest.fixture
def lb():
    """A stand-in load balancer API: POST /drain|/undrain/<host> answers 200 (503 for bad-*)."""
    calls = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's name)
            calls.append((self.command, self.path))
            self.send_response(503 if "/bad-" in self.path else 200)
            self.send_header("Content-Length", "7")
            self.end_headers()
            self.wfile.write(b"lb said")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", calls
    server.shutdown()


def test_hooks_come_from_the_lab_pillar_filled_for_each_host(tmp_path, monkeypatch, lb):
    url, calls = lb
    pillar = tmp_path / "pillar.yaml"
    pillar.write_text(yaml.safe_dump({"inventory": {"services": {"ecsc": {
        "drain": {"http": url + "/drain/{host}?timeout=10", "method": "POST", "timeout": 15},
        "undrain": {"cmd": "touch " + str(tmp_path / "{host}.undrained")}}}}}))
    monkeypatch.setattr(floor, "LAB_PILLAR", pillar)
    hooks = floor.load_hooks("ecsc", {}, 2)
    host = {"id": "ecsc-1", **{verb: floor._rollout_policy().fill(hook, "ecsc-1", "127.0.3.17",
                                                                   "ecsc")
                               for verb, hook in hooks.items()}}
    floor.run_hook(host, "drain")
    assert calls == [("POST", "/drain/ecsc-1?timeout=10")]
    floor.run_hook(host, "undrain")
    assert (tmp_path / "ecsc-1.undrained").exists()
    assert floor.load_hooks("ecmc", {}, 2) == {"drain": None, "undrain": None}
    assert floor.run_hook({"id": "ecmc-1", "drain": None}, "drain") is None
    with pytest.raises(floor.Failed, match=r"bad-1: drain hook POST .*/drain/bad-1.* 503: lb said"):
        floor.run_hook({"id": "bad-1", "drain": {"http": url + "/drain/bad-1", "method": "POST",
                                                 "timeout": 5}}, "drain")
    with pytest.raises(floor.Failed, match="ecsc-1: undrain hook .* exited 1"):
        floor.run_hook({"id": "ecsc-1", "undrain": {"cmd": ["false"], "timeout": 5}}, "undrain")
    pillar.write_text(yaml.safe_dump({"inventory": {"services": {"ecsc": {"drain": {}}}}}))
    with pytest.raises(floor.Failed, match="inventory:services:ecsc:drain"):
        floor.load_hooks("ecsc", {}, 2)


def test_a_host_is_drained_before_its_stop_and_undrained_after_its_gates(monkeypatch):
    done = []
    for step in ("backup", "stop", "prune"):
        monkeypatch.setattr(floor, step, lambda *a, step=step: done.append(step))
    monkeypatch.setattr(floor, "stage", lambda *a: done.append("stage") or "staging")
    monkeypatch.setattr(floor, "swap", lambda *a: done.append("swap") or "/nonexistent")
    monkeypatch.setattr(floor, "start", lambda *a: done.append("start") or ({}, None))
    monkeypatch.setattr(floor, "ready_gate", lambda *a: done.append("ready"))
    monkeypatch.setattr(floor, "settle_and_check", lambda *a: done.append("settle"))
    monkeypatch.setattr(floor.shutil, "rmtree", lambda path: None)
    monkeypatch.setattr(floor, "run_hook", lambda host, verb: done.append(verb))
    times = floor.upgrade_host({"id": "ecsc-1"}, {}, 0.0)
    assert done == ["backup", "stage", "drain", "stop", "swap", "start", "ready", "settle",
                    "prune", "undrain"]
    assert "drain" in times and "undrain" in times
