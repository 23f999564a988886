"""The rehearsal lab: one salt-master and eight salt-minions on loopback, with real Tomcat and
real JVMs, each lab host in its own filesystem root under ``.lab/hosts/<id>``.

    python -m lab.labctl up        # idempotent: starts whatever is not running
    python -m lab.labctl up --hosts 32   # a scale lab: more hosts spread over the four services
    python -m lab.labctl status    # hosts, minions, services, releases, addresses
    python -m lab.labctl reset     # every host back to release v1 (daemons stay up)
    python -m lab.labctl down      # stops every process the lab started, and only those

Hosts, services and production addresses come from ``pillar/inventory.sls``; a lab host's
address is the runbook's with the first octet replaced by 127 (25.0.3.17 -> 127.0.3.17).
A scale lab adds hosts <service>-3, -4, ... round-robin over the services, at 127.0.3.100 and
up; its size is kept in .lab/scale.json until an `up` with another size (default: the eight).
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request

import psutil
import yaml

from lab import tomcat_base

REPO = pathlib.Path(__file__).resolve().parent.parent
LAB = REPO / ".lab"
HOSTS_DIR = LAB / "hosts"
MINIONS_DIR = LAB / "minions"
MASTER_DIR = LAB / "master"
MASTER_DAEMON_CONFIG_DIR = LAB / "master-config"
ARTIFACTS = LAB / "artifacts" / "releases"
VENV_BIN = REPO / ".venv" / "bin"
INVENTORY = REPO / "pillar" / "inventory.sls"
MASTER_CONFIG_DIR = REPO / "etc" / "salt"

# The lab's two releases: v1 carries the runbook's bugs, v2 (the runbook's 20170220) fixes them.
RELEASE_V1 = "20161201"
RELEASE_V2 = "20170220"
MASTER_PORTS = (14505, 14506)
SCALE_FILE = LAB / "scale.json"
EXTRA_OCTET = 100  # a scale lab's extra hosts: 127.0.3.100 and up
MAX_HOSTS = 8 + 100
SERVICE_PORTS = {"tomcat": 8080, "standalone": 8090}


def lab_address(address):
    """25.0.3.17 -> 127.0.3.17: the runbook's address moved onto loopback."""
    return ".".join(["127"] + address.split(".")[1:])


def lab_size():
    """The number of hosts of the lab as last brought up (None: the inventory's eight)."""
    try:
        return json.loads(SCALE_FILE.read_text())["hosts"]
    except (OSError, ValueError, KeyError):
        return None


def _host(host_id, service, conf, prod_address, address):
    return {"id": host_id, "service": service, "kind": conf["kind"], "prod_address": prod_address,
            "address": address, "root": HOSTS_DIR / host_id, "conf": conf}


def load_hosts(size=None):
    """[{id, service, kind, address, prod_address, root, ...service config}] in inventory order,
    then a scale lab's extra hosts (``size`` hosts in all; default: the lab's current size)."""
    inventory = yaml.safe_load(INVENTORY.read_text())["inventory"]["services"]
    hosts = [
        _host(host_id, service, conf, host["address"], lab_address(host["address"]))
        for service, conf in inventory.items()
        for host_id, host in conf["hosts"].items()
    ]
    size = size or lab_size() or len(hosts)
    if not len(hosts) <= size <= MAX_HOSTS:
        raise SystemExit(f"lab: --hosts must be {len(hosts)} to {MAX_HOSTS}, not {size}")
    services = list(inventory)
    for extra in range(size - len(hosts)):
        service = services[extra % len(services)]
        number = sum(h["service"] == service for h in hosts) + 1
        hosts.append(_host(f"{service}-{number}", service, inventory[service], "-",
                           f"127.0.3.{EXTRA_OCTET + extra}"))
    return hosts


def in_root(host, path):
    """A production path (/home/ecsc) inside the lab host's root."""
    return host["root"] / str(path).lstrip("/")


def app_log(host):
    return in_root(host, host["conf"]["logs"]["app"])


def health_url(host):
    return host["conf"]["health_url"].format(address=host["address"])


# ---------------------------------------------------------------- releases


def ensure_releases():
    """Build v1 and v2 archives (cached by the builder) into the master's file root."""
    from lab import build

    built = {}
    for variant, release in (("v1", RELEASE_V1), ("v2", RELEASE_V2)):
        built[release] = build.build_release(release, variant, ARTIFACTS)
    return built


def sha256_of(release, service):
    text = (ARTIFACTS / release / f"{service}.tar.sha256").read_text()
    return text.split()[0]


def write_pillar(hosts):
    """The lab's pillar overrides (read by pillar/lab.sls): addresses, roots, archive sums,
    and every service's drain/undrain hooks on the lab's load balancer (lab/balancer.py)."""
    from lab import balancer  # imports this module: loaded only when used

    hooks = {verb: balancer.hook(verb) for verb in balancer.VERBS}
    services = {}
    for host in hosts:
        entry = services.setdefault(
            host["service"], {"hosts": {}, **{verb: dict(h) for verb, h in hooks.items()}})
        entry["hosts"][host["id"]] = {"address": host["address"], "root": str(host["root"])}
    inventory = {"services": services}
    if any(h["prod_address"] == "-" for h in hosts):
        # A scale lab's extra hosts join the rollout order (a list: replaced, not merged).
        inventory["order"] = [h["id"] for h in hosts]
    data = {
        "inventory": inventory,
        "release": {"sha256": {h["service"]: sha256_of(RELEASE_V2, h["service"]) for h in hosts}},
    }
    (LAB / "pillar.yaml").write_text(
        "# Written by lab/labctl.py: the lab's overrides of the production inventory.\n"
        + yaml.safe_dump(data, sort_keys=True)
    )


# ---------------------------------------------------------------- host roots


def provision(host):
    """Lay out one host's root as the runbook's /home at release v1 (as deployed by hand)."""
    conf = host["conf"]
    service = host["service"]
    install_dir = in_root(host, conf["install_dir"])
    install_dir.parent.mkdir(parents=True, exist_ok=True)
    for log in conf["logs"].values():
        in_root(host, log).parent.mkdir(parents=True, exist_ok=True)
    archive = ARTIFACTS / RELEASE_V1 / f"{service}.tar"
    with tarfile.open(archive) as tar:
        tar.extractall(install_dir.parent, filter="data")
    if host["kind"] == "tomcat":
        tomcat_base.write(
            in_root(host, conf["catalina_base"]),
            host["address"],
            SERVICE_PORTS["tomcat"],
            install_dir,
            f"/{service}",
            parameters={"logFile": app_log(host)},
        )
    else:
        conf_dir = install_dir / "conf"
        conf_dir.mkdir(exist_ok=True)
        (conf_dir / "host.properties").write_text(
            f"# host-local config of {host['id']} (not carried by the release archive)\n"
            f"bind.address={host['address']}\n"
            f"http.port={SERVICE_PORTS['standalone']}\n"
            f"log.file={app_log(host)}\n"
        )


def java_processes():
    """(process, cmdline, cwd) of every live java process, read afresh: psutil.process_iter()
    caches names, and `sh startup.sh` becomes java under the same pid."""
    for pid in psutil.pids():
        try:
            proc = psutil.Process(pid)
            if proc.name() != "java" or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            yield proc, proc.cmdline(), proc.cwd()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue


def service_pids(host):
    """Pids of the JVM(s) running this lab host's service: matched by the host's own root."""
    conf = host["conf"]
    pids = []
    if host["kind"] == "tomcat":
        want = f"-Dcatalina.base={in_root(host, conf['catalina_base'])}"
    else:
        want = None
        app_dir = str(in_root(host, conf["install_dir"]))
    for proc, cmdline, cwd in java_processes():
        if (want is not None and want in cmdline) or (want is None and cwd == app_dir):
            pids.append(proc.pid)
    return pids


def lab_jvm_pids():
    """Every JVM whose base or working dir is inside the lab's host roots (test leftovers too)."""
    prefix = str(HOSTS_DIR) + os.sep
    pids = []
    for proc, cmdline, cwd in java_processes():
        if cwd.startswith(prefix) or any(a.startswith("-Dcatalina.base=" + prefix) for a in cmdline):
            pids.append(proc.pid)
    return pids


def start_service(host):
    conf = host["conf"]
    if host["kind"] == "tomcat":
        cmd = [str(in_root(host, conf["start"][0]))]
        cwd = in_root(host, "/home")
    else:
        cmd = list(conf["start"])
        cwd = in_root(host, conf["install_dir"])
    with open(os.devnull, "rb") as devnull, open(app_log(host), "ab") as out:
        subprocess.Popen(
            cmd, cwd=cwd, stdin=devnull, stdout=out, stderr=out, start_new_session=True
        )


def health(host, timeout=1.0):
    try:
        with urllib.request.urlopen(health_url(host), timeout=timeout) as resp:
            return json.loads(resp.read().decode())
    except (OSError, ValueError):
        return None


def stop_pids(pids, timeout=15):
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.send_signal(signal.SIGTERM)
            procs.append(proc)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=5)


# ---------------------------------------------------------------- salt daemons


def _daemon_pid(pidfile, marker):
    """The pid in pidfile if that process is alive and its cmdline carries marker."""
    try:
        pid = int(pidfile.read_text().strip())
        if marker in " ".join(psutil.Process(pid).cmdline()):
            return pid
    except (OSError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def master_pidfile():
    return MASTER_DIR / "var" / "run" / "salt-master.pid"


def minion_dir(host_id):
    return MINIONS_DIR / host_id


def minion_pidfile(host_id):
    return minion_dir(host_id) / "var" / "run" / "salt-minion.pid"


def write_minion_config(host):
    cfg_dir = minion_dir(host["id"])
    cfg_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "id": host["id"],
        "root_dir": str(cfg_dir),
        "master": "127.0.0.1",
        "publish_port": MASTER_PORTS[0],
        "master_port": MASTER_PORTS[1],
        "user": "root",
        "acceptance_wait_time": 1,
        "random_reauth_delay": 0,
        "recon_default": 200,
        "recon_max": 2000,
        "log_level_logfile": "info",
        # The lab host's address and root, for humans reading grains.
        "grains": {"lab": {"address": host["address"], "root": str(host["root"])}},
    }
    (cfg_dir / "minion").write_text(yaml.safe_dump(config, sort_keys=True))


def salt_env():
    """The environment of the lab's Salt daemons and CLIs: the venv first on PATH, and
    Python's bytecode cache on, as under a salt-minion service (a shell or CI runner may set
    PYTHONDONTWRITEBYTECODE; then every job process would compile the synced modules again,
    about 0.25 s of CPU per job)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '')}"
    return env


def _spawn(args, log):
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(os.devnull, "rb") as devnull, open(log, "ab") as out:
        subprocess.Popen(
            args, cwd=REPO, stdin=devnull, stdout=out, stderr=out, start_new_session=True,
            env=salt_env(),
        )


def write_master_config():
    """The daemon's copy of etc/salt/master with every path made absolute.

    The salt-master changes to / at start, so the repo-relative paths that serve the CLIs
    (run from the repo root through the Saltfile) must be anchored for the daemon.
    """
    config = yaml.safe_load((MASTER_CONFIG_DIR / "master").read_text())

    def anchor(path):
        return str((REPO / path).resolve())

    for key in ("root_dir", "lab_dir", "rawfile_json.filename"):
        if key in config:
            config[key] = anchor(config[key])
    for key in ("file_roots", "pillar_roots"):
        config[key] = {env: [anchor(p) for p in paths] for env, paths in config[key].items()}
    MASTER_DAEMON_CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    path = MASTER_DAEMON_CONFIG_DIR / "master"
    text = ("# Generated by lab/labctl.py from etc/salt/master (paths made absolute).\n"
            + yaml.safe_dump(config, sort_keys=False))
    changed = not path.exists() or path.read_text() != text
    path.write_text(text)
    return changed


def stop_master():
    pid = _daemon_pid(master_pidfile(), "salt-master")
    if pid:
        # The master's worker processes are its children: stop the whole tree.
        try:
            children = psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        stop_pids([pid])
        stop_pids([c.pid for c in children if c.is_running()])


def start_master():
    """Start the master, or restart it when etc/salt/master changed (e.g. its schedule)."""
    changed = write_master_config()
    if _daemon_pid(master_pidfile(), "salt-master"):
        if not changed:
            return False
        print("lab: etc/salt/master changed: restarting the salt-master")
        stop_master()
    _spawn(
        [str(VENV_BIN / "salt-master"), "-c", str(MASTER_DAEMON_CONFIG_DIR), "-l", "warning"],
        MASTER_DIR / "master.out",
    )
    return True


def start_minion(host_id):
    if _daemon_pid(minion_pidfile(host_id), str(minion_dir(host_id))):
        return False
    _spawn(
        [str(VENV_BIN / "salt-minion"), "-c", str(minion_dir(host_id)), "-l", "warning"],
        minion_dir(host_id) / "minion.out",
    )
    return True


def salt_cmd(*args, timeout=60):
    """Run a salt CLI from the repo root (the Saltfile points it at etc/salt)."""
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env=salt_env(),
    )


def wait_for(predicate, timeout, what, interval=0.5):
    """predicate()'s first true result, polled every ``interval`` s; SystemExit naming
    ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise SystemExit(f"lab: timed out after {timeout:g}s waiting for {what}")


def ping_all(ids):
    """True once every minion in ``ids`` answers test.ping; False (ask again) otherwise,
    also when the salt CLI itself did not finish within salt_cmd's timeout (32 minions
    starting at once on two cores kept it busy for more than 60 s)."""
    try:
        proc = salt_cmd("salt", "--out=json", "--static", "-t", "5", "*", "test.ping")
    except subprocess.TimeoutExpired:
        return False
    try:
        answered = json.loads(proc.stdout or "{}")
    except ValueError:
        return False
    return all(answered.get(i) is True for i in ids)


# ---------------------------------------------------------------- commands


def _resize(size):
    """Make the lab ``size`` hosts: hosts a smaller size drops are stopped and their roots
    removed (their minion keys go once the master runs: ``_drop_stale_keys``); the size is
    kept for status, reset and down."""
    before = load_hosts()
    hosts = load_hosts(size)
    kept = {h["id"] for h in hosts}
    for host in before:
        if host["id"] in kept:
            continue
        pid = _daemon_pid(minion_pidfile(host["id"]), str(minion_dir(host["id"])))
        stop_pids(([pid] if pid else []) + service_pids(host))
        shutil.rmtree(host["root"], ignore_errors=True)
        shutil.rmtree(minion_dir(host["id"]), ignore_errors=True)
    LAB.mkdir(parents=True, exist_ok=True)
    SCALE_FILE.write_text(json.dumps({"hosts": len(hosts)}) + "\n")
    return hosts


def _drop_stale_keys(hosts):
    """Delete the accepted minion keys of hosts that are no longer in the lab (a larger lab's
    extra hosts, also when it was resized while the master was down): `salt '*'` would
    otherwise wait for minions that no longer exist."""
    listed = salt_cmd("salt-key", "--out=json", "-l", "acc")
    accepted = [] if listed.returncode else json.loads(listed.stdout or "{}").get("minions", [])
    for minion_id in sorted(set(accepted) - {h["id"] for h in hosts}):
        salt_cmd("salt-key", "-y", "-d", minion_id)


def up(args):
    t0 = time.monotonic()
    hosts = _resize(getattr(args, "hosts", None) or len(load_hosts(8)))
    for sub in (HOSTS_DIR, MINIONS_DIR, MASTER_DIR, ARTIFACTS):
        sub.mkdir(parents=True, exist_ok=True)
    ensure_releases()
    write_pillar(hosts)
    start_master()
    _drop_stale_keys(hosts)
    for host in hosts:
        write_minion_config(host)
        start_minion(host["id"])
    for host in hosts:
        if not in_root(host, host["conf"]["install_dir"]).exists():
            provision(host)
        if not service_pids(host):
            start_service(host)
    ids = [h["id"] for h in hosts]
    wait_for(lambda: ping_all(ids), 90 + 5 * len(ids), f"all {len(ids)} minions to answer test.ping")
    # -t: a sync of eight minions on a loaded 2-core machine outlasts the CLI's 5 s default,
    # and the CLI then gives up with "No return received" while the minions are still syncing.
    sync = salt_cmd("salt", "--out=json", "--static", "-t", "120", "*", "saltutil.sync_all",
                    timeout=180)
    if sync.returncode != 0:
        raise SystemExit(f"lab: saltutil.sync_all failed:\n{sync.stdout}{sync.stderr}")
    salt_cmd("salt-run", "saltutil.sync_all")
    wait_for(lambda: all(health(h) for h in hosts), 90 + 5 * len(hosts),
             f"all {len(hosts)} services to answer health")
    from lab import balancer  # imports this module: loaded only when used

    balancer.up(hosts)
    print(f"lab: up in {time.monotonic() - t0:.1f}s")
    status(args)


def down(args):
    hosts = load_hosts()
    for host in hosts:
        pid = _daemon_pid(minion_pidfile(host["id"]), str(minion_dir(host["id"])))
        if pid:
            stop_pids([pid])
    stop_master()
    from lab import balancer

    balancer.down()
    stop_pids(lab_jvm_pids())
    left = listening_lab_ports()
    if left:
        raise SystemExit(f"lab: still listening after down: {left}")
    print("lab: down (no lab process, no lab port listening)")


def listening_lab_ports():
    """Lab sockets still listening: master ports on 127.0.0.1, services, balancers and the
    balancer's agent on lab addresses."""
    from lab import balancer

    hosts = load_hosts()
    addresses = {h["address"] for h in hosts}
    addresses |= {entry["address"] for entry in balancer.services(hosts).values()}
    addresses.add(balancer.AGENT[0])
    found = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        # A JVM's listener shows as ::ffff:127.0.3.17 (IPv4-mapped IPv6).
        ip, port = conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port
        if (ip == "127.0.0.1" and port in MASTER_PORTS) or ip in addresses:
            found.append(f"{ip}:{port} (pid {conn.pid})")
    return found


def reset(args):
    """Every host back to release v1 as deployed by hand: fresh roots, services restarted."""
    hosts = load_hosts()
    stop_pids(lab_jvm_pids())
    ensure_releases()
    write_pillar(hosts)  # a rebuilt archive (changed sources) gets its sha256 in the pillar
    for host in hosts:
        shutil.rmtree(host["root"], ignore_errors=True)
        provision(host)
        start_service(host)
    wait_for(lambda: all(health(h) for h in hosts), 90 + 5 * len(hosts),
             f"all {len(hosts)} services to answer health")
    print("lab: reset to release", RELEASE_V1)
    status(args)


def collect_status():
    rows = []
    master = _daemon_pid(master_pidfile(), "salt-master")
    for host in load_hosts():
        info = health(host)
        rows.append(
            {
                "host": host["id"],
                "address": host["address"],
                "runbook_address": host["prod_address"],
                "minion_pid": _daemon_pid(minion_pidfile(host["id"]), str(minion_dir(host["id"]))),
                "service": host["service"],
                "jvm_pids": service_pids(host),
                "health": health_url(host),
                "release": (info or {}).get("release"),
                "root": str(host["root"]),
            }
        )
    return {"master_pid": master, "hosts": rows}


def memory():
    """Resident memory of the lab's processes (salt daemons and JVMs): RSS and PSS totals.

    RSS counts pages shared between forked salt processes once per process; PSS splits them,
    so it is what the lab really costs."""
    groups = {"salt": [], "jvm": lab_jvm_pids()}
    pidfiles = [master_pidfile()] + [minion_pidfile(h["id"]) for h in load_hosts()]
    for pidfile in pidfiles:
        pid = _daemon_pid(pidfile, "salt-")
        if pid:
            proc = psutil.Process(pid)
            groups["salt"] += [pid] + [c.pid for c in proc.children(recursive=True)]
    report = {}
    for name, pids in groups.items():
        rss = pss = 0
        for pid in pids:
            try:
                info = psutil.Process(pid).memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rss, pss = rss + info.rss, pss + info.pss
        report[name] = {"processes": len(pids), "rss_mib": rss // 2**20, "pss_mib": pss // 2**20}
    report["total"] = {k: sum(report[g][k] for g in groups)
                       for k in ("processes", "rss_mib", "pss_mib")}
    return report


def status(args):
    data = collect_status()
    if getattr(args, "json", False):
        data["memory"] = memory()
        print(json.dumps(data, indent=2))
        return
    print(f"salt-master: {'pid ' + str(data['master_pid']) if data['master_pid'] else 'DOWN'}"
          f" (127.0.0.1:{MASTER_PORTS[0]}/{MASTER_PORTS[1]})")
    fmt = "{:<15} {:<12} {:<12} {:<13} {:<9} {:<10} {}"
    print(fmt.format("HOST", "ADDRESS", "RUNBOOK", "SERVICE", "MINION", "RELEASE", "HEALTH"))
    for row in data["hosts"]:
        print(fmt.format(
            row["host"], row["address"], row["runbook_address"], row["service"],
            "up" if row["minion_pid"] else "DOWN", row["release"] or "DOWN", row["health"],
        ))
    mem = memory()
    print("memory: " + ", ".join(
        f"{name} {m['processes']} procs RSS {m['rss_mib']} MiB / PSS {m['pss_mib']} MiB"
        for name, m in mem.items())
        + f"; per host (PSS, master shared) {mem['total']['pss_mib'] / len(data['hosts']):.0f} MiB")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="labctl", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "reset"])
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.add_argument("--hosts", type=int, help="up: the lab's size (default 8, the runbook's)")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    {"up": up, "down": down, "status": status, "reset": reset}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
