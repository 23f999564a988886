"""Fault injectors of the rehearsal lab, and the fault suite's result table.

Used by ``tests/integration/test_faults.py`` (``make faults``). Every injector touches one lab
host (or the master) and is undone by the caller (context managers undo themselves):

- :func:`reset_hosts`: given hosts back to release v1 as deployed by hand, optionally with
  another release's tree put in by hand (e.g. a JVM that ignores SIGTERM);
- :func:`kill_minion` / :func:`minion_pid`: a lab host's salt-minion (and its job processes,
  never the service's JVM) killed by pid; :func:`minion_up` (or ``labctl up``) brings it back;
  :func:`kill_minion_once_stopped`: that kill the moment the run has stopped the host's JVM
  (the host left between stop and ready);
- :func:`kill_jobs_in`: SIGKILL of the minion job that has files open under a path (power
  loss in the middle of a copy);
- :func:`small_disk`: a small tmpfs mounted as a lab host's ``/home`` (ENOSPC), the host
  provisioned on it; unmounted when the block ends;
- :func:`fill_disk`: the rest of a filesystem taken by one file;
- :func:`flip_byte`: one byte of a file changed, put back when the block ends.

The table: each fault test appends its row to ``.lab/faults/results.json``;
``python -m lab.faults table`` prints them (``make faults`` does after the run).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import psutil

from lab import labctl

RESULTS = labctl.LAB / "faults" / "results.json"
COLUMNS = ("fault", "expected", "observed", "nothing lost", "both-down instants", "seconds")


# ---------------------------------------------------------------- hosts


def _wait_health(hosts, timeout=60):
    labctl.wait_for(lambda: all(labctl.health(h) for h in hosts), timeout,
                    "health of " + ", ".join(h["id"] for h in hosts))


def install_tree(host, release):
    """Put ``release``'s archive in place of the host's program dir by hand (no deployed
    record, like the runbook's ``tar xvf``), keeping the host-local ``conf/``."""
    install_dir = labctl.in_root(host, host["conf"]["install_dir"])
    for entry in install_dir.iterdir():
        if entry.name != "conf":
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    with tarfile.open(labctl.ARTIFACTS / release / f"{host['service']}.tar") as tar:
        tar.extractall(install_dir.parent, filter="data")


def stop_service(host):
    labctl.stop_pids(labctl.service_pids(host), timeout=5)


def reset_hosts(hosts, release=None):
    """Each host back to v1 as deployed by hand (fresh root, service restarted); with
    ``release``, that release's tree instead (by hand too). Other hosts are not touched."""
    for host in hosts:
        stop_service(host)
    for host in hosts:
        shutil.rmtree(host["root"], ignore_errors=True)
        labctl.provision(host)
        if release:
            install_tree(host, release)
        labctl.start_service(host)
    _wait_health(hosts)


# ---------------------------------------------------------------- salt processes


def minion_pid(host_id):
    return labctl._daemon_pid(labctl.minion_pidfile(host_id), str(labctl.minion_dir(host_id)))


def minion_tree(host_id):
    """The minion's processes (daemon and job processes), never a JVM it started."""
    pid = minion_pid(host_id)
    if not pid:
        return []
    main = psutil.Process(pid)
    return [main] + [p for p in main.children(recursive=True) if _name(p) != "java"]


def _name(proc):
    try:
        return proc.name()
    except psutil.Error:
        return None


def kill_minion(host_id, sig=signal.SIGKILL):
    """Signal a lab host's salt-minion and its job processes by pid; returns the pids."""
    procs = minion_tree(host_id)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)
    psutil.wait_procs(procs, timeout=10)
    return [p.pid for p in procs]


def stall_minion(host_id, seconds):
    """Stop a lab host's salt-minion and its job processes (SIGSTOP, by pid; never its JVM)
    for ``seconds``, then continue them: a host too loaded to answer the master for that
    long. Returns the pids."""
    procs = minion_tree(host_id)
    try:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
    finally:
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGCONT)
    return [proc.pid for proc in procs]


def kill_minion_once_stopped(host_id, jvm_pids, halt):
    """Wait until every pid of ``jvm_pids`` (the service's JVM before the run) has exited,
    then SIGKILL the host's minion at once: the run is cut between the stop and the ready
    gate (watching the pids is quicker than the bus's "stopped" event, after which the swap
    and the start follow within milliseconds). Gives up when ``halt`` is set. Returns the
    killed pids, or [] when halted first."""
    procs = []
    for pid in jvm_pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    while procs and not halt.is_set():
        _, procs = psutil.wait_procs(procs, timeout=0.2)
    return [] if procs else kill_minion(host_id)


def minion_jobs(host_id):
    pid = minion_pid(host_id)
    if not pid:
        return []
    return [p for p in psutil.Process(pid).children(recursive=True) if _name(p) != "java"]


def kill_jobs_in(host_id, path):
    """SIGKILL the minion job processes of ``host_id`` that have a file open under ``path``;
    returns their pids (empty when none has, e.g. between two files)."""
    prefix = str(path)
    killed = []
    for proc in minion_jobs(host_id):
        try:
            if any(f.path.startswith(prefix) for f in proc.open_files()):
                proc.kill()
                killed.append(proc.pid)
        except psutil.Error:
            continue
    return killed


def lab_up():
    """`labctl up` (starts what is not running: a stopped minion, the master)."""
    return subprocess.run([sys.executable, "-m", "lab.labctl", "up"], cwd=labctl.REPO,
                          capture_output=True, text=True, timeout=300)


def minion_up(host_id, timeout=60):
    """Start a lab host's stopped minion (what ``labctl up`` does for it) and wait until it
    answers the master."""
    labctl.start_minion(host_id)
    wait_minions([host_id], timeout)


def wait_minions(ids=None, timeout=90):
    ids = ids or [h["id"] for h in labctl.load_hosts()]
    labctl.wait_for(lambda: labctl.ping_all(ids), timeout, "minions to answer: " + ", ".join(ids))


def all_daemons_up():
    """Whether the master and every lab minion run."""
    return bool(labctl._daemon_pid(labctl.master_pidfile(), "salt-master")) and all(
        minion_pid(h["id"]) for h in labctl.load_hosts())


def restart_master():
    labctl.stop_master()
    labctl.start_master()


# ---------------------------------------------------------------- disks and files


@contextlib.contextmanager
def small_disk(host, size):
    """The host's ``/home`` on a tmpfs of ``size`` (e.g. "8m"), the host provisioned at v1 on it
    and its service started; on exit the service is stopped, the tmpfs unmounted and the host
    reset on the real disk."""
    home = labctl.in_root(host, "/home")
    stop_service(host)
    shutil.rmtree(host["root"], ignore_errors=True)
    home.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(home)],
                   check=True)
    try:
        labctl.provision(host)
        labctl.start_service(host)
        _wait_health([host])
        yield home
    finally:
        stop_service(host)
        umount = subprocess.run(["umount", str(home)], capture_output=True, text=True)
        if umount.returncode != 0:  # something still holds it: detach it all the same
            subprocess.run(["umount", "-l", str(home)], check=True)
        reset_hosts([host])


def fill_disk(directory, leave=0):
    """Take all free space of ``directory``'s filesystem (but ``leave`` bytes) with one file;
    returns its path (remove it to give the space back)."""
    path = os.path.join(directory, ".fault-filler")
    st = os.statvfs(directory)
    size = st.f_bavail * st.f_frsize - leave
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        if size > 0:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
    return path


@contextlib.contextmanager
def flip_byte(path, offset=None):
    """One byte of ``path`` inverted (default: the middle one); put back on exit."""
    original = path.read_bytes()
    data = bytearray(original)
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    try:
        yield at
    finally:
        path.write_bytes(original)


# ---------------------------------------------------------------- the table


def clear_results():
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("[]\n")
    for old in RESULTS.parent.glob("*.out"):
        old.unlink()


def save_output(name, *texts):
    """Keep a run's output for whoever reads the table: ``.lab/faults/<name>.out``."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    (RESULTS.parent / f"{name}.out").write_text("\n".join(t or "" for t in texts))


def add_result(row):
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    rows.append({k: row.get(k) for k in COLUMNS + ("phases",)})
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


def format_table(rows):
    def cell(value):
        if value is True:
            return "yes"
        if value is False:
            return "no"
        if isinstance(value, float):
            return f"{value:.1f}"
        # One line per row: whitespace (tracebacks, JSON) collapsed, long text cut.
        text = "-" if value is None else " ".join(str(value).split())
        return text if len(text) <= 300 else text[:297] + "..."

    def number(row):  # rows in fault order, whatever order the tests ran in
        head = str(row.get("fault", "")).split(" ", 1)[0]
        return int(head) if head.isdigit() else 999

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in sorted(rows, key=number):
        lines.append("| " + " | ".join(cell(row.get(k)).replace("|", "/") for k in COLUMNS)
                     + " |")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["table"]:
        print("usage: python -m lab.faults table", file=sys.stderr)
        return 2
    if not RESULTS.exists():
        print(f"lab.faults: no results ({RESULTS}): run make faults", file=sys.stderr)
        return 1
    print(format_table(json.loads(RESULTS.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
