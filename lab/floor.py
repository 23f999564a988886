"""The floor: what `salt-run state.orchestrate orch.upgrade` does to the lab's hosts, in plain
Python with no Salt, as fast as the work itself allows (issue 10's yardstick).

    python -m lab.floor [--hosts ecsc-1,ecmc ...] [--release R] [--batch N] [--settle S]
                        [--json out.json]

Same work as the orchestration, nothing done twice:

1. pre-flight, every targeted host at once, before any host is touched: the program dir and
   the start program are there, the archive's sha256 is the pillar's, its members all lie in
   one top-level dir named like the program dir (no absolute names, no ``..``, only files,
   dirs and links that stay inside), the disk has room for backup + staging;
2. per host: back up the program dir to ``<parent>/<name>_<release>`` (temp dir, each file
   read once to copy and hash it, sha256 manifest, syncfs, rename) while the service runs;
   unpack into ``<parent>/.<name>.staging`` (tarfile's data filter) with the host-local
   ``keep`` files carried over; the service's ``drain`` hook (the pillar's, as the states run
   it: an HTTP call or a command, with its timeout; the lab's: its load balancer's agent);
   stop the JVM (its signal, wait, SIGKILL after its timeout);
   swap (two renames and the deployed record, Salt's format); start it with the runbook's
   command, detached; the ready gate (ready patterns searched after the byte offsets taken
   just before the start, no fatal pattern, health URL 200), the settle time during which the
   JVM must stay up and healthy, and meanwhile the fixed-issue checks (ecmc's balance 12.345
   over HTTP; two new ``log.money.*`` lines with a timestamp after the start and none
   without); then old backups pruned (``release:keep_backups``) and the ``undrain`` hook;
3. services side by side (one thread each), hosts of a service in batches of ``--batch``
   (default 1: the runbook's pairs, host 1 then host 2), a batch's hosts side by side; a host
   that fails stops its service's later batches (it is left as it is, not rolled back:
   the floor times the path where everything works). Exit status 1 if any host failed.

No fixed sleeps: every wait polls at ``POLL`` (50 ms). Hosts, paths and checks come from
``pillar/inventory.sls`` (through ``lab.labctl.load_hosts``: lab addresses and roots),
``pillar/release.sls`` and the lab's ``.lab/pillar.yaml`` (archive sha256, drain/undrain
hooks), resolved as ``inventory.host`` does (the hooks by ``_utils/rollout_policy.py``). The per-host step times are printed as a table.
"""

import argparse
import ctypes
import ctypes.util
import datetime
import hashlib
import http.client
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

import psutil
import yaml

from lab import labctl

POLL = 0.05  # seconds between two looks at anything we wait for
# As _modules/inventory.py DEFAULTS and javaservice.DEFAULT_FATAL (tests/unit/lab/test_floor.py
# checks they agree): the floor must do the same work as the states.
DEFAULT_SETTLE = 3
DEFAULT_READY_TIMEOUT = 120
DEFAULT_STOP = {"signal": "TERM", "timeout": 30}
DEFAULT_FATAL = (
    r"java\.lang\.OutOfMemoryError",
    r"java\.net\.BindException",
    r"Context \[[^\]]*\] startup failed",
    r'Exception in thread "main"',
    r"Error: Could not (find or load main class|create the Java Virtual Machine)",
)
CHECK_TIMEOUT = 15  # probe.log_lines / probe.http_ok's timeout
MONEY_LINES = 2  # probe.log_lines' count
MANIFEST = ".backup-manifest.json"
RELEASE_SLS = labctl.REPO / "pillar" / "release.sls"
LAB_PILLAR = labctl.LAB / "pillar.yaml"
STEPS = ("backup", "stage", "drain", "stop", "swap", "start", "ready", "settle+checks", "prune",
         "undrain")


class Failed(Exception):
    """A host's step failed: the message names the host and the step."""


# ---------------------------------------------------------------- the plan (no Salt)


def _fill(value, **fields):
    if isinstance(value, str):
        for key, sub in fields.items():
            value = value.replace("{" + key + "}", str(sub))
        return value
    if isinstance(value, list):
        return [_fill(v, **fields) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, **fields) for k, v in value.items()}
    return value


def load_release(release=None):
    """pillar/release.sls with the lab's sha256 overrides; ``release`` replaces the id."""
    rel = yaml.safe_load(RELEASE_SLS.read_text())["release"]
    if LAB_PILLAR.exists():
        lab = (yaml.safe_load(LAB_PILLAR.read_text()) or {}).get("release") or {}
        rel["sha256"] = {**(rel.get("sha256") or {}), **(lab.get("sha256") or {})}
    if release:
        rel["id"] = release
    return rel


def _rollout_policy():
    """_utils/rollout_policy.py (pure functions, no Salt): the hooks checked and filled in
    exactly as inventory.host does."""
    spec = importlib.util.spec_from_file_location(
        "rollout_policy", labctl.REPO / "_utils" / "rollout_policy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_hooks(service, conf, total):
    """{"drain": hook, "undrain": hook} of a service (None: none), from its inventory entry
    with the lab pillar's overrides (.lab/pillar.yaml wires them to the lab's balancer)."""
    given = {verb: conf.get(verb) for verb in ("drain", "undrain")}
    if LAB_PILLAR.exists():
        lab = (yaml.safe_load(LAB_PILLAR.read_text()) or {}).get("inventory") or {}
        lab_conf = (lab.get("services") or {}).get(service) or {}
        given.update({verb: lab_conf[verb] for verb in given if verb in lab_conf})
    policy, problems = _rollout_policy().resolve(
        {k: v for k, v in given.items() if v is not None}, total,
        f"inventory:services:{service}")
    if problems:
        raise Failed("; ".join(f"{key}: {why}" for key, why in problems))
    return {verb: policy[verb] for verb in given}


def archive_path(source):
    """salt://releases/R/S.tar -> the file under the master's file_roots (etc/salt/master)."""
    master = yaml.safe_load((labctl.MASTER_CONFIG_DIR / "master").read_text())
    rel = source[len("salt://"):]
    for root in master["file_roots"]["base"]:
        candidate = labctl.REPO / root / rel
        if candidate.is_file():
            return candidate
    raise Failed(f"{source}: not under any file_roots of etc/salt/master")


def plan(hosts=None, release=None, settle=None):
    """Resolved hosts in rollout order: paths in the lab host's root, as inventory.host does."""
    rel = load_release(release)
    order = yaml.safe_load(labctl.INVENTORY.read_text())["inventory"].get("order") or []
    rank = {h: i for i, h in enumerate(order)}
    chosen = []
    lab_hosts = labctl.load_hosts()
    hooks, policy = {}, _rollout_policy()
    for lab_host in lab_hosts:
        svc = lab_host["service"]
        if svc not in hooks:
            hooks[svc] = load_hooks(svc, lab_host["conf"],
                                    sum(h["service"] == svc for h in lab_hosts))
    for lab_host in lab_hosts:
        if hosts and lab_host["id"] not in hosts and lab_host["service"] not in hosts:
            continue
        conf, svc = lab_host["conf"], lab_host["service"]
        fields = {"release": rel["id"], "service": svc, "address": lab_host["address"]}

        def at(path):
            return str(labctl.in_root(lab_host, path))

        logs = {name: at(path) for name, path in conf["logs"].items()}
        install_dir = at(conf["install_dir"])
        ready_fields = {**fields, "release": re.escape(rel["id"])}
        checks = []
        for check in _fill((rel.get("checks") or {}).get(svc) or [], **fields):
            if "log" in check:
                check["log"]["path"] = logs[check["log"].pop("log")]
            checks.append(check)
        fatal = conf.get("fatal")
        source = _fill(rel["source"], **fields)
        chosen.append({
            "id": lab_host["id"],
            "service": svc,
            "lab": lab_host,
            "install_dir": install_dir,
            "start": [at(a) if a.startswith("/") else a for a in conf["start"]],
            "start_cwd": os.path.dirname(install_dir) if conf["kind"] == "tomcat" else install_dir,
            "logs": logs,
            "output": logs.get("app") or next(iter(logs.values())),
            "ready": [(logs[r["log"]], re.compile(_fill(r["pattern"], **ready_fields)))
                      for r in conf["ready"]],
            "fatal": [(logs[f["log"]], re.compile(_fill(f["pattern"], **ready_fields)))
                      for f in fatal] if fatal is not None
            else [(None, re.compile(p)) for p in DEFAULT_FATAL],
            "health_url": _fill(conf["health_url"], **fields),
            "stop": {**DEFAULT_STOP, **(conf.get("stop") or {})},
            "ready_timeout": conf.get("ready_timeout", DEFAULT_READY_TIMEOUT),
            "settle": conf.get("settle", DEFAULT_SETTLE) if settle is None else settle,
            "keep": list(conf.get("keep") or []),
            "release": rel["id"],
            "archive": archive_path(source),
            "sha256": str((rel.get("sha256") or {}).get(svc) or ""),
            "keep_backups": int(rel.get("keep_backups", 3)),
            "checks": checks,
            # The service's hooks for this host ({host}, {address}, {service} filled in).
            **{verb: policy.fill(hook, lab_host["id"], lab_host["address"], svc) if hook
               else None for verb, hook in hooks[svc].items()},
        })
    if hosts:
        unknown = set(hosts) - {h["id"] for h in chosen} - {h["service"] for h in chosen}
        if unknown:
            raise Failed(f"unknown host or service: {', '.join(sorted(unknown))}")
    chosen.sort(key=lambda h: rank.get(h["id"], len(rank)))
    return chosen


def batches(hosts, size):
    """{service: [[host, ...], ...]}: each service's hosts in rollout order, in batches."""
    per_service = {}
    for host in hosts:
        per_service.setdefault(host["service"], []).append(host)
    return {svc: [items[i:i + size] for i in range(0, len(items), size)]
            for svc, items in per_service.items()}


# ---------------------------------------------------------------- pre-flight


def _deployed_release(host):
    parent, name = os.path.split(host["install_dir"])
    try:
        with open(os.path.join(parent, f".{name}.release.json"), encoding="utf-8") as fh:
            return json.load(fh).get("release")
    except (OSError, ValueError):
        return None


def verify_archive(host):
    """The archive read once: sha256, then its members from the same bytes.
    Returns (open TarFile, {member rel path: sha256}, {link rel path: target}, size)."""
    data = host["archive"].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != host["sha256"]:
        raise Failed(f"{host['id']}: {host['archive']}: sha256 {digest}, pillar says "
                     f"{host['sha256'] or 'nothing'}")
    top = os.path.basename(host["install_dir"])
    files, links = {}, {}
    tar = tarfile.open(fileobj=io.BytesIO(data))  # kept open: stage() extracts from it
    for member in tar:
        parts = member.name.split("/")
        bad = (member.name.startswith("/") or ".." in parts or parts[0] != top
               or not (member.isfile() or member.isdir() or member.issym())
               or member.mode & 0o7000)
        if member.issym():
            inside = os.path.normpath(os.path.join(os.path.dirname(member.name),
                                                   member.linkname))
            bad = bad or member.linkname.startswith("/") or inside.split("/")[0] != top
        if bad:
            raise Failed(f"{host['id']}: {host['archive']}: member {member.name!r} refused")
        rel = "/".join(parts[1:])
        if member.isfile():
            files[rel] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
        elif member.issym():
            links[rel] = member.linkname
    return tar, files, links, len(data)


def tree_size(path):
    total = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def preflight(host):
    """Read-only checks; returns what the upgrade needs (archive bytes, member hashes, JVM)."""
    if _deployed_release(host) == host["release"]:
        return None  # already on the release: left alone, as the states do
    for path in (host["install_dir"], host["start_cwd"]):
        if not os.path.isdir(path):
            raise Failed(f"{host['id']}: {path} is not a directory")
    program = host["start"][1] if host["start"][0] == "sh" else host["start"][0]
    if not os.path.isfile(os.path.join(host["start_cwd"], program)):
        raise Failed(f"{host['id']}: start program {program} not found in {host['start_cwd']}")
    tar, files, links, size = verify_archive(host)
    need = tree_size(host["install_dir"]) + size
    if shutil.disk_usage(os.path.dirname(host["install_dir"])).free < 2 * need:
        raise Failed(f"{host['id']}: no room for backup and staging next to "
                     f"{host['install_dir']}")
    # The running JVM, found now (outside the downtime); psutil checks at the stop that
    # each pid is still the same process (its create time).
    jvms = [psutil.Process(pid) for pid in labctl.service_pids(host["lab"])]
    return {"tar": tar, "files": files, "links": links, "jvms": jvms}


# ---------------------------------------------------------------- the steps of one host

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(host):
    """Copy the program dir to <name>_<release> (each file read once: copied and hashed),
    with a sha256 manifest; on disk (syncfs) before it takes its name."""
    src = host["install_dir"]
    parent, name = os.path.split(src)
    dest = os.path.join(parent, f"{name}_{host['release']}")
    if os.path.lexists(dest):
        raise Failed(f"{host['id']}: backup {dest} exists already")
    tmp = tempfile.mkdtemp(prefix=f".{name}_{host['release']}.tmp-", dir=parent)
    files, links, dirs = {}, {}, {}
    for dirpath, dirnames, names in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        out_dir = os.path.join(tmp, rel_dir) if rel_dir != "." else tmp
        for dname in dirnames:
            full = os.path.join(dirpath, dname)
            st = os.lstat(full)
            rel = os.path.normpath(os.path.join(rel_dir, dname))
            if os.path.islink(full):
                links[rel] = os.readlink(full)
                os.symlink(links[rel], os.path.join(out_dir, dname))
                continue
            os.mkdir(os.path.join(out_dir, dname), st.st_mode & 0o7777)
            dirs[rel] = {"mode": oct(st.st_mode & 0o7777)}
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
        for fname in names:
            full, rel = os.path.join(dirpath, fname), os.path.normpath(os.path.join(rel_dir, fname))
            if os.path.islink(full):
                links[rel] = os.readlink(full)
                os.symlink(links[rel], os.path.join(out_dir, fname))
                continue
            st = os.lstat(full)
            digest = hashlib.sha256()
            with open(full, "rb") as fin, open(os.path.join(out_dir, fname), "wb") as fout:
                while chunk := fin.read(1 << 20):
                    digest.update(chunk)
                    fout.write(chunk)
            os.chmod(os.path.join(out_dir, fname), st.st_mode & 0o7777)
            os.utime(os.path.join(out_dir, fname), ns=(st.st_atime_ns, st.st_mtime_ns))
            files[rel] = {"sha256": digest.hexdigest(), "size": st.st_size,
                          "mode": oct(st.st_mode & 0o7777)}
    with open(os.path.join(tmp, MANIFEST), "x", encoding="utf-8") as fh:
        json.dump({"source": src, "tag": host["release"], "files": files, "symlinks": links,
                   "dirs": dirs, "created": _now(), "host": host["id"]}, fh,
                  sort_keys=True, separators=(",", ":"))
    fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
    os.rename(tmp, dest)
    _fsync_dir(parent)
    return dest


def stage(host, pre):
    """Unpack the verified archive bytes into .<name>.staging; carry the keep files over."""
    parent, name = os.path.split(host["install_dir"])
    staging = os.path.join(parent, f".{name}.staging")
    if os.path.lexists(staging):
        shutil.rmtree(staging)
    os.mkdir(staging, 0o755)
    prefix = name + "/"
    with pre["tar"] as tar:  # the members verify_archive checked, without the top dir
        members = [m.replace(name=m.name[len(prefix):], deep=False)
                   for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(staging, members=members, filter="data")
    local = {}
    for rel in host["keep"]:
        src = os.path.join(host["install_dir"], rel)
        if os.path.isfile(src) and rel not in pre["files"]:
            os.makedirs(os.path.dirname(os.path.join(staging, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(staging, rel))
            with open(src, "rb") as fh:
                local[rel] = hashlib.file_digest(fh, "sha256").hexdigest()
    pre["local"] = local
    return staging


def _alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _wait_gone(procs, timeout):
    """Poll until the processes are gone (a zombie is gone: the lab's init reaps late)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in procs if _alive(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(POLL / 5)


def stop(host, pre):
    """The JVM found at pre-flight: its signal, wait (polled), SIGKILL after its timeout."""
    procs = [p for p in pre["jvms"] if _alive(p)]
    sig = getattr(signal, "SIG" + str(host["stop"]["signal"]).upper().removeprefix("SIG"))
    for proc in procs:
        proc.send_signal(sig)
    alive = _wait_gone(procs, host["stop"]["timeout"])
    outcome = sig.name
    if alive:
        for proc in alive:
            proc.kill()
        alive = _wait_gone(alive, 10)
        outcome = f"{sig.name} ignored, SIGKILL"
    if alive:
        raise Failed(f"{host['id']}: pid(s) {[p.pid for p in alive]} survive SIGKILL")
    return outcome


def swap(host, staging, pre):
    """live -> .<name>.previous, staging -> live, deployed record (release.swap's format)."""
    parent, name = os.path.split(host["install_dir"])
    previous = os.path.join(parent, f".{name}.previous")
    os.rename(host["install_dir"], previous)
    os.rename(staging, host["install_dir"])
    record = os.path.join(parent, f".{name}.release.json")
    with open(record + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"format": 1, "release": host["release"], "archive_sha256": host["sha256"],
                   "deployed": _now(), "host": host["id"], "files": pre["files"],
                   "links": pre["links"], "local": pre["local"]}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(record + ".tmp", record)
    return previous


def start(host):
    """Offsets of every log, then the start command detached (new session, /dev/null in)."""
    offsets = {}
    for path in set(host["logs"].values()):
        try:
            offsets[path] = os.stat(path).st_size
        except FileNotFoundError:
            offsets[path] = 0
    with open(os.devnull, "rb") as devnull, open(host["output"], "ab") as out:
        launcher = subprocess.Popen(host["start"], cwd=host["start_cwd"], stdin=devnull,
                                    stdout=out, stderr=out, start_new_session=True)
    return offsets, launcher


class Logs:
    """The lines appended to a host's logs after the start offsets, read incrementally."""

    def __init__(self, offsets):
        self.pos = dict(offsets)
        self.rest = {path: b"" for path in offsets}

    def new_lines(self):
        for path, pos in self.pos.items():
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            self.pos[path] = pos + len(chunk)
            *lines, self.rest[path] = (self.rest[path] + chunk).split(b"\n")
            for line in lines:
                yield path, line.decode("utf-8", "replace")


def http_get(url, timeout=1.0, method="GET"):
    """(status, body) of one request (no body) on a fresh connection; (None, why) when
    nothing answers."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as exc:
        return None, type(exc).__name__
    finally:
        conn.close()


def run_hook(host, verb):
    """The host's drain or undrain hook, as balancer.drain/undrain run it: a command (exit 0
    within its timeout) or an HTTP call (2xx within its timeout). No hook: nothing."""
    hook = host.get(verb)
    if hook is None:
        return None
    if "cmd" in hook:
        try:
            done = subprocess.run(hook["cmd"], capture_output=True, text=True, check=False,
                                  stdin=subprocess.DEVNULL, timeout=hook["timeout"])
        except subprocess.TimeoutExpired as exc:
            raise Failed(f"{host['id']}: {verb} hook {hook['cmd']} timed out") from exc
        if done.returncode != 0:
            raise Failed(f"{host['id']}: {verb} hook {hook['cmd']} exited {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-300:]}")
        return None
    status, body = http_get(hook["http"], hook["timeout"], hook["method"])
    if status is None or not 200 <= status < 300:
        raise Failed(f"{host['id']}: {verb} hook {hook['method']} {hook['http']} answered "
                     f"{status}: {body.strip()[:300]}")
    return None


def _fatal(host, path, line):
    for log, regex in host["fatal"]:
        if (log is None or log == path) and regex.search(line):
            raise Failed(f"{host['id']}: fatal line in {path}: {line[:300]}")


def ready_gate(host, logs, launcher):
    """Poll until every ready pattern was logged after the offsets and health answers 200."""
    deadline = time.monotonic() + host["ready_timeout"]
    missing = list(host["ready"])
    while True:
        for path, line in logs.new_lines():
            _fatal(host, path, line)
            missing = [(log, rx) for log, rx in missing if not (log == path and rx.search(line))]
        if not missing and http_get(host["health_url"])[0] == 200:
            return
        # sh startup.sh becomes the JVM: its exit is a failed start (Tomcat's exits at once;
        # poll() also reaps it).
        if launcher.poll() is not None and host["start"][0] == "sh":
            raise Failed(f"{host['id']}: the JVM exited ({launcher.returncode}) before ready")
        if time.monotonic() > deadline:
            raise Failed(f"{host['id']}: not ready within {host['ready_timeout']}s; "
                         f"missing {[rx.pattern for _, rx in missing]}")
        time.sleep(POLL)


def settle_and_check(host, logs, launcher):
    """Through the settle time: JVM alive, health 200, no fatal line; meanwhile the fixed
    issues: HTTP checks once, money lines counted from the start offset."""
    settle_end = time.monotonic() + host["settle"]
    # The JVM that answered (found once, after the downtime ended).
    jvms = [psutil.Process(pid) for pid in labctl.service_pids(host["lab"])]
    if not jvms:
        raise Failed(f"{host['id']}: ready, but no JVM of the service found")
    deadline = settle_end + CHECK_TIMEOUT
    pending = {c["id"]: c for c in host["checks"]}
    counts = {cid: 0 for cid in pending}
    http_checks = {cid for cid, c in pending.items() if "http" in c}
    while True:
        for path, line in logs.new_lines():
            _fatal(host, path, line)
            for cid, check in list(pending.items()):
                spec = check.get("log")
                if spec and spec["path"] == path:
                    if spec.get("forbidden") and re.search(spec["forbidden"], line):
                        raise Failed(f"{host['id']}: {cid}: forbidden line {line!r}")
                    if re.search(spec["pattern"], line):
                        counts[cid] += 1
                        if counts[cid] >= MONEY_LINES:
                            del pending[cid]
        for cid in [c for c in http_checks if c in pending]:
            spec = pending[cid]["http"]
            status, body = http_get(spec["url"], timeout=5)
            if status != 200 or spec.get("contains", "") not in body:
                raise Failed(f"{host['id']}: {cid}: GET {spec['url']} -> {status} {body[:200]}")
            del pending[cid]
        now = time.monotonic()
        if now < settle_end:
            if launcher.poll() is not None and host["start"][0] == "sh" or not all(
                    _alive(p) for p in jvms):
                raise Failed(f"{host['id']}: the JVM exited during the settle time")
            if http_get(host["health_url"])[0] != 200:
                raise Failed(f"{host['id']}: health stopped answering during the settle time")
        if now >= settle_end and not pending:
            return
        if now > deadline:
            raise Failed(f"{host['id']}: fixed-issue checks not passed: {sorted(pending)}")
        time.sleep(POLL)


def prune(host):
    """Keep the newest keep_backups backups of the program dir, never this release's."""
    parent, name = os.path.split(host["install_dir"])
    found = [e for e in os.scandir(parent) if e.name.startswith(f"{name}_")
             and os.path.isfile(os.path.join(e.path, MANIFEST))]
    found.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    removed = []
    for entry in found[host["keep_backups"]:]:
        if entry.name != f"{name}_{host['release']}":
            shutil.rmtree(entry.path)
            removed.append(entry.name)
    return removed


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def upgrade_host(host, pre, t0):
    """One host, step by step; returns {step: seconds, ..., "downtime"}."""
    times = {"began": round(time.monotonic() - t0, 3)}

    def timed(step, func, *args):
        began = time.monotonic()
        try:
            result = func(*args)
        except Failed:
            raise
        except Exception as exc:  # pylint: disable=broad-except
            raise Failed(f"{host['id']}: {step}: {type(exc).__name__}: {exc}") from exc
        times[step] = round(time.monotonic() - began, 3)
        return result

    timed("backup", backup, host)
    staging = timed("stage", stage, host, pre)
    timed("drain", run_hook, host, "drain")
    down_from = time.monotonic()
    times["stop_signal"] = timed("stop", stop, host, pre)
    previous = timed("swap", swap, host, staging, pre)
    offsets, launcher = timed("start", start, host)
    shutil.rmtree(previous)  # while the JVM starts, outside the downtime's critical path
    logs = Logs(offsets)
    timed("ready", ready_gate, host, logs, launcher)
    times["downtime"] = round(time.monotonic() - down_from, 3)
    timed("settle+checks", settle_and_check, host, logs, launcher)
    times["pruned"] = timed("prune", prune, host)
    timed("undrain", run_hook, host, "undrain")
    times["ended"] = round(time.monotonic() - t0, 3)
    return times


# ---------------------------------------------------------------- the run


def run(hosts, batch=1, t0=None):
    """Pre-flight all, then services side by side, batches in turn. Returns the report."""
    t0 = time.monotonic() if t0 is None else t0
    report = {"hosts": {}, "failed": {}}
    pres, errors = {}, {}

    def check(host):
        try:
            pres[host["id"]] = preflight(host)
        except (Failed, OSError, tarfile.TarError) as exc:
            errors[host["id"]] = str(exc)

    threads = [threading.Thread(target=check, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report["preflight_s"] = round(time.monotonic() - t0, 3)
    if errors:
        report["failed"] = {h: f"pre-flight: {e}" for h, e in errors.items()}
        return report

    def one(host):
        if pres[host["id"]] is None:
            report["hosts"][host["id"]] = {"unchanged": True}
            return
        try:
            report["hosts"][host["id"]] = upgrade_host(host, pres[host["id"]], t0)
        except Exception as exc:  # pylint: disable=broad-except  # a thread must not die mute
            report["failed"][host["id"]] = str(exc) if isinstance(exc, Failed) else repr(exc)

    def service(groups):
        for group in groups:
            workers = [threading.Thread(target=one, args=(h,)) for h in group]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            if any(h["id"] in report["failed"] for h in group):
                return  # later batches of this service stay on the old release

    lanes = [threading.Thread(target=service, args=(groups,))
             for groups in batches(hosts, batch).values()]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    report["wall_s"] = round(time.monotonic() - t0, 3)
    return report


def format_report(report, hosts):
    cols = ("began",) + STEPS + ("downtime", "ended")
    lines = ["HOST            " + " ".join(f"{c:>9}" for c in cols)]
    for host in hosts:
        row = report["hosts"].get(host["id"])
        if row is None:
            lines.append(f"{host['id']:<15} FAILED: {report['failed'].get(host['id'], 'not run')}")
        elif row.get("unchanged"):
            lines.append(f"{host['id']:<15} already on the release: left alone")
        else:
            lines.append(f"{host['id']:<15} " + " ".join(
                f"{row[c]:>9.3f}" if isinstance(row.get(c), float) else f"{'-':>9}"
                for c in cols))
    lines.append(f"pre-flight {report['preflight_s']:.3f}s, whole run "
                 f"{report.get('wall_s', float('nan')):.3f}s (seconds; began/ended from the "
                 "floor's start)")
    return "\n".join(lines)


def main(argv=None):
    t0 = time.monotonic()
    parser = argparse.ArgumentParser(prog="python -m lab.floor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", nargs="+", help="host ids or service names (default: all; "
                        "commas work too)")
    parser.add_argument("--release", help="release id (default: pillar release:id)")
    parser.add_argument("--batch", type=int, default=1, help="hosts of a service at once")
    parser.add_argument("--settle", type=float, help="settle seconds (default: the pillar's)")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    wanted = [w for item in args.hosts or [] for w in item.split(",") if w] or None
    try:
        hosts = plan(wanted, args.release, args.settle)
    except Failed as exc:
        print(f"floor: {exc}", file=sys.stderr)
        return 2
    report = run(hosts, args.batch, t0)
    report["release"] = hosts[0]["release"] if hosts else None
    report["batch"] = args.batch
    print(format_report(report, hosts))
    for host_id, why in report["failed"].items():
        print(f"FAILED {host_id}: {why}", file=sys.stderr)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
