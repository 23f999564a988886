"""The lab's load balancer: one HAProxy (Debian's package) in front of every service's hosts,
each service on its own loopback address, with HAProxy's runtime API for drain and undrain.

    python -m lab.balancer up              # idempotent; writes .lab/balancer/haproxy.cfg
    python -m lab.balancer status          # each backend server: state, sessions, checks
    python -m lab.balancer drain ecsc-1    # no new requests, wait until its sessions end
    python -m lab.balancer undrain ecsc-1  # back in rotation (after its health checks pass)
    python -m lab.balancer down

A service's balancer address is 127.0.3.<201 + its index in the inventory> on the service's
port; the backends are the lab hosts' own addresses. The drain/undrain commands are what the
lab pillar's rollout hooks call.
"""

import argparse
import csv
import io
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

# Run as a script too (`python /repo/lab/balancer.py drain ecsc-1`: the rollout's hooks run
# it from any cwd), so the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab import labctl  # noqa: E402  pylint: disable=wrong-import-position

BALANCER_DIR = labctl.LAB / "balancer"
CONFIG = BALANCER_DIR / "haproxy.cfg"
PIDFILE = BALANCER_DIR / "haproxy.pid"
ADMIN_SOCKET = BALANCER_DIR / "admin.sock"
FIRST_OCTET = 201  # 127.0.3.201.. : above every lab host's address
# Health checks every 200 ms: a stopped host leaves rotation within ~0.4 s even undrained,
# which is what the comparison "without drain" measures.
CHECK = "check inter 200ms fastinter 100ms fall 2 rise 2"


def services(hosts=None):
    """{service: {"address", "port", "health_path", "hosts": [host...]}} in inventory order."""
    hosts = hosts if hosts is not None else labctl.load_hosts()
    found = {}
    for host in hosts:
        entry = found.get(host["service"])
        if entry is None:
            url = urlsplit(labctl.health_url(host))
            entry = found[host["service"]] = {
                "address": f"127.0.3.{FIRST_OCTET + len(found)}",
                "port": url.port,
                "health_path": url.path,
                "hosts": [],
            }
        entry["hosts"].append(host)
    return found


def url(service, hosts=None):
    """The URL a client uses for a service: its health path on the balancer's address."""
    entry = services(hosts)[service]
    return f"http://{entry['address']}:{entry['port']}{entry['health_path']}"


def config_text(hosts=None):
    """haproxy.cfg: one frontend + backend per service; retries go to the other host."""
    lines = [
        "# Written by lab/balancer.py: the lab's load balancer (one frontend per service).",
        "global",
        f"    stats socket {ADMIN_SOCKET} mode 600 level admin",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        # A connection refused by a stopping host is retried on the other one.
        "    retries 2",
        "    option redispatch",
    ]
    for name, entry in services(hosts).items():
        lines += [
            f"frontend {name}",
            f"    bind {entry['address']}:{entry['port']}",
            f"    default_backend {name}",
            f"backend {name}",
            f"    option httpchk GET {entry['health_path']}",
            "    http-check expect status 200",
        ]
        lines += [
            f"    server {h['id']} {h['address']}:{entry['port']} {CHECK}" for h in entry["hosts"]
        ]
    return "\n".join(lines) + "\n"


def pid():
    """HAProxy's pid if the lab's balancer runs (pid file + our config on its command line)."""
    return labctl._daemon_pid(PIDFILE, str(CONFIG))  # pylint: disable=protected-access


def up(hosts=None):
    BALANCER_DIR.mkdir(parents=True, exist_ok=True)
    text = config_text(hosts)
    running = pid()
    if running and CONFIG.exists() and CONFIG.read_text() == text:
        return running
    if running:
        down()
    CONFIG.write_text(text)
    subprocess.run(["haproxy", "-c", "-q", "-f", str(CONFIG)], check=True)
    subprocess.run(["haproxy", "-D", "-f", str(CONFIG), "-p", str(PIDFILE)], check=True,
                   stdin=subprocess.DEVNULL)
    labctl.wait_for(lambda: pid() and ADMIN_SOCKET.exists(), 10, "haproxy to start")
    return pid()


def down():
    running = pid()
    if running:
        labctl.stop_pids([running])
    for path in (PIDFILE, ADMIN_SOCKET):
        path.unlink(missing_ok=True)


def command(line, timeout=5.0):
    """One runtime-API command on the admin socket; its answer as text."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(ADMIN_SOCKET))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def stats():
    """{host id: {"service", "status", "sessions"}} from `show stat` (servers only)."""
    text = command("show stat").lstrip("# ")
    found = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row["svname"] in ("FRONTEND", "BACKEND"):
            continue
        found[row["svname"]] = {
            "service": row["pxname"],
            "status": row["status"],
            "sessions": int(row["scur"] or 0),
        }
    return found


def _backend(host_id):
    server = stats().get(host_id)
    if server is None:
        raise SystemExit(f"balancer: no server {host_id!r} in {CONFIG}")
    return server["service"]


def drain(host_id, timeout=10.0):
    """Take a host out of rotation and wait until it has no session left (bounded)."""
    backend = _backend(host_id)
    answer = command(f"set server {backend}/{host_id} state drain").strip()
    if answer:
        raise SystemExit(f"balancer: drain {host_id}: {answer}")
    deadline = time.monotonic() + timeout
    while (left := stats()[host_id]["sessions"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        raise SystemExit(f"balancer: {host_id} still has {left} sessions after {timeout:g}s")


def undrain(host_id, timeout=10.0):
    """Put a host back in rotation and wait until HAProxy's checks see it UP (bounded): the
    partner must not be drained while this host still counts as down."""
    backend = _backend(host_id)
    answer = command(f"set server {backend}/{host_id} state ready").strip()
    if answer:
        raise SystemExit(f"balancer: undrain {host_id}: {answer}")
    deadline = time.monotonic() + timeout
    while (status := stats()[host_id]["status"]) != "UP" and time.monotonic() < deadline:
        time.sleep(0.05)
    if status != "UP":
        raise SystemExit(f"balancer: {host_id} is {status}, not UP, {timeout:g}s after undrain")


def hook(verb, timeout=10):
    """The lab pillar's drain/undrain hook: this script's command line for a host."""
    return {"cmd": [sys.executable, os.path.abspath(__file__), verb, "{host}",
                    "--timeout", str(timeout)],
            "timeout": timeout + 5}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.balancer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    for verb in ("drain", "undrain"):
        one = sub.add_parser(verb)
        one.add_argument("host")
        one.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.verb == "up":
        print(f"balancer: up (pid {up()}); {', '.join(url(s) for s in services())}")
    elif args.verb == "down":
        down()
        print("balancer: down")
    elif args.verb == "status":
        for host_id, server in stats().items():
            print(f"{host_id:16} {server['service']:14} {server['status']:10} "
                  f"sessions {server['sessions']}")
    elif args.verb == "drain":
        drain(args.host, args.timeout)
    else:
        undrain(args.host, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
