"""Integration tests run on the rehearsal lab: a real salt-master, eight real salt-minions,
real Tomcat and real JVMs. The session brings the lab up (idempotent) and the salt CLIs are
run the operator's way: from the repo root, through the Saltfile. The session takes the lab
down at its end (``LAB_KEEP=1`` leaves it up)."""

import hashlib
import json
import os
import subprocess
import sys
import urllib.request

import psutil
import pytest

from lab import labctl
from tests.conftest import REPO_ROOT

VENV_BIN = REPO_ROOT / ".venv" / "bin"


def run_cli(*args, timeout=600):
    """Run a salt CLI from the repo root; returns the CompletedProcess (text)."""
    env = labctl.salt_env()
    return subprocess.run(
        [str(a) for a in args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


def salt_json(*args, timeout=300):
    """`salt --out=json --static ...` parsed."""
    proc = run_cli("salt", "--out=json", "--static", *args, timeout=timeout)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def http_get(url, timeout=5):
    """(status, body) of a GET on a lab address; (None, error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return None, str(exc)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_state(path):
    """{relpath: (sha256, mode, mtime_ns)} of every file and link below path."""
    state = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            st = os.lstat(full)
            if os.path.islink(full):
                state[rel] = ("link:" + os.readlink(full), st.st_mode, st.st_mtime_ns)
            elif os.path.isfile(full):
                state[rel] = (sha256_file(full), st.st_mode, st.st_mtime_ns)
            else:
                state[rel] = ("dir", st.st_mode, None)
    return state


def lab_processes():
    """What the lab runs now: the master's pid, each minion's pid, the lab JVMs' pids."""
    minions = {}
    for host in labctl.load_hosts():
        host_id = host["id"]
        minions[host_id] = labctl._daemon_pid(labctl.minion_pidfile(host_id),
                                              str(labctl.minion_dir(host_id)))
    return {
        "master": labctl._daemon_pid(labctl.master_pidfile(), "salt-master"),
        "minions": {k: v for k, v in minions.items() if v},
        "jvms": labctl.lab_jvm_pids(),
    }


def take_lab_down():
    """`labctl.down`, then proof that no lab pid, JVM or port is left; raises naming what is."""
    before = lab_processes()
    try:
        labctl.down(None)
    except SystemExit as exc:  # labctl.down exits when a lab port still listens
        raise AssertionError(f"lab teardown: {exc}") from None
    pids = [before["master"], *before["minions"].values(), *before["jvms"]]
    left = {
        "pids still alive": [pid for pid in pids if pid and psutil.pid_exists(pid)],
        "lab JVMs": labctl.lab_jvm_pids(),
        "daemons": {k: v for k, v in lab_processes().items() if k != "jvms" and v},
        "listening ports": labctl.listening_lab_ports(),
    }
    left = {k: v for k, v in left.items() if v}
    assert not left, f"lab teardown left processes or ports behind: {left}"


@pytest.fixture(scope="session")
def lab():
    """The lab, up (brought up if needed). Yields labctl for its hosts and helpers.

    At the end of the session the lab is taken down (``labctl.down``) and the teardown fails
    if any lab pid, JVM or listening port is left. ``LAB_KEEP=1`` leaves it up (debugging, or
    while others use the shared lab)."""
    proc = subprocess.run(
        [sys.executable, "-m", "lab.labctl", "up"], cwd=REPO_ROOT, capture_output=True,
        text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield labctl
    if os.environ.get("LAB_KEEP", "") not in ("", "0"):
        return
    take_lab_down()


@pytest.fixture(scope="session")
def hosts(lab):
    return {h["id"]: h for h in lab.load_hosts()}
