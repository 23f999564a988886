"""The lab's load balancer: one HAProxy (Debian's package) in front of every service's hosts,
each service on its own loopback address, with HAProxy's runtime API for drain and undrain,
and a small HTTP agent in front of that API: the lab pillar's drain/undrain hooks.

    python -m lab.balancer up              # idempotent; writes .lab/balancer/haproxy.cfg
    python -m lab.balancer status          # each backend server: state, sessions, checks
    python -m lab.balancer drain ecsc-1    # no new requests, wait until its sessions end
    python -m lab.balancer undrain ecsc-1  # back in rotation (after its health checks pass)
    python -m lab.balancer down

A service's balancer address is 127.0.3.<201 + its index in the inventory> on the service's
port; the backends are the lab hosts' own addresses. The agent (``serve``, started by ``up``)
answers ``POST http://127.0.3.200:9000/drain/<host>?timeout=S`` (and ``/undrain/``) with 200
once done, 503 and the reason otherwise: the same drain/undrain as the commands above, called
by the rollout's HTTP hooks (no interpreter started per hook: a hook costs milliseconds).
"""

import argparse
import csv
import http.server
import io
import os
import socket
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

# Run as a script too (`python /repo/lab/balancer.py drain ecsc-1`, from any cwd), so the
# repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab import labctl  # noqa: E402  pylint: disable=wrong-import-position

BALANCER_DIR = labctl.LAB / "balancer"
CONFIG = BALANCER_DIR / "haproxy.cfg"
PIDFILE = BALANCER_DIR / "haproxy.pid"
ADMIN_SOCKET = BALANCER_DIR / "admin.sock"
FIRST_OCTET = 201  # 127.0.3.201.. : above every lab host's address (extra hosts: .100-.199)
AGENT = ("127.0.3.200", 9000)  # the drain/undrain agent
AGENT_URL = f"http://{AGENT[0]}:{AGENT[1]}"
AGENT_PIDFILE = BALANCER_DIR / "agent.pid"
AGENT_LOG = BALANCER_DIR / "agent.log"
# Health checks every 100 ms (50 ms while a server changes state): a restarted host is UP
# again ~0.15 s after it answers, so undrain waits little; a stopped host leaves rotation
# within ~0.2 s even undrained, which is what the comparison "without drain" measures.
CHECK = "check inter 100ms fastinter 50ms fall 2 rise 2"
POLL = 0.02  # seconds between two looks at a server's sessions or state


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
        # A check's answer may take this long (a JVM on a busy machine) without the server
        # counting as down; without it the check timeout would be `inter` (100 ms).
        "    timeout check 1s",
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


def agent_pid():
    """The drain/undrain agent's pid if it runs (its pid file + `lab.balancer serve`)."""
    return labctl._daemon_pid(AGENT_PIDFILE, "lab.balancer serve")  # pylint: disable=protected-access


def _agent_answers():
    try:
        with socket.create_connection(AGENT, timeout=0.5):
            return True
    except OSError:
        return False


def up(hosts=None):
    """HAProxy (restarted only when its config changed) and the drain/undrain agent."""
    running = start_haproxy(hosts)
    if not agent_pid():
        # pylint: disable-next=protected-access
        labctl._spawn([str(labctl.VENV_BIN / "python"), "-m", "lab.balancer", "serve"],
                      AGENT_LOG)
        labctl.wait_for(_agent_answers, 10, f"the balancer agent on {AGENT_URL}", interval=POLL)
    return running


def start_haproxy(hosts=None):
    BALANCER_DIR.mkdir(parents=True, exist_ok=True)
    text = config_text(hosts)
    running = pid()
    if running and CONFIG.exists() and CONFIG.read_text() == text:
        return running
    if running:
        labctl.stop_pids([running])
    CONFIG.write_text(text)
    subprocess.run(["haproxy", "-c", "-q", "-f", str(CONFIG)], check=True)
    subprocess.run(["haproxy", "-D", "-f", str(CONFIG), "-p", str(PIDFILE)], check=True,
                   stdin=subprocess.DEVNULL)
    return labctl.wait_for(lambda: ADMIN_SOCKET.exists() and pid(), 10, "haproxy to start",
                           interval=POLL)


def down():
    labctl.stop_pids([p for p in (agent_pid(), pid()) if p])  # both at once: one wait
    for path in (PIDFILE, ADMIN_SOCKET, AGENT_PIDFILE):
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


def _set_state(host_id, state):
    backend = _backend(host_id)
    answer = command(f"set server {backend}/{host_id} state {state}").strip()
    if answer:
        raise SystemExit(f"balancer: {state} {host_id}: {answer}")


def drain(host_id, timeout=10.0):
    """Take a host out of rotation and wait until it has no session left (bounded)."""
    _set_state(host_id, "drain")
    labctl.wait_for(lambda: stats()[host_id]["sessions"] == 0, timeout,
                    f"{host_id}'s sessions on the balancer to end", interval=POLL)


def undrain(host_id, timeout=10.0):
    """Put a host back in rotation and wait until HAProxy's checks see it UP (bounded): the
    partner must not be drained while this host still counts as down."""
    _set_state(host_id, "ready")
    # "UP 1/2": up, one check failed since: still in rotation.
    labctl.wait_for(lambda: stats()[host_id]["status"].startswith("UP"), timeout,
                    f"the balancer's checks to see {host_id} UP", interval=POLL)


VERBS = {"drain": drain, "undrain": undrain}


def hook(verb, timeout=10):
    """The lab pillar's drain/undrain hook (an HTTP call to the agent) for every host."""
    return {"http": f"{AGENT_URL}/{verb}/{{host}}?timeout={timeout:g}", "method": "POST",
            "timeout": timeout + 5}


class _Agent(http.server.BaseHTTPRequestHandler):
    """POST /drain/<host>?timeout=S, POST /undrain/<host>: 200 when done, 503 and why not;
    GET /status: every server's state. One thread per request: a wave's hosts at once."""

    def do_POST(self):  # pylint: disable=invalid-name
        parts = urlsplit(self.path)
        verb, _, host_id = parts.path.strip("/").partition("/")
        if verb not in VERBS or not host_id or "/" in host_id:
            self._answer(404, f"no such hook: {parts.path} (POST /drain/<host>, /undrain/<host>)")
            return
        try:
            timeout = float(parse_qs(parts.query).get("timeout", ["10"])[0])
        except ValueError:
            self._answer(400, f"timeout must be seconds: {parts.query}")
            return
        began = time.monotonic()
        try:
            VERBS[verb](host_id, timeout)
        except SystemExit as exc:  # drain/undrain fail as the command line does: say why
            self._answer(503, str(exc))
        except OSError as exc:  # HAProxy's runtime API not there (the balancer is down)
            self._answer(503, f"balancer: {ADMIN_SOCKET}: {exc}")
        else:
            self._answer(200, f"{verb} {host_id}: done in {time.monotonic() - began:.3f}s")

    def do_GET(self):  # pylint: disable=invalid-name
        self._answer(200, "\n".join(f"{h} {s['service']} {s['status']} sessions {s['sessions']}"
                                    for h, s in stats().items()))

    def _answer(self, status, text):
        body = (text + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {format % args}\n")


class _AgentServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # every host of a large wave may call at once (default 5)


def serve(address=AGENT):
    """Run the agent (foreground; `up` starts it detached, its pid in agent.pid)."""
    server = _AgentServer(address, _Agent)
    if address == AGENT:
        AGENT_PIDFILE.write_text(f"{os.getpid()}\n")
    server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.balancer", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    sub.add_parser("serve", help="the drain/undrain agent (foreground; `up` starts it)")
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
    elif args.verb == "serve":
        serve()
    else:
        VERBS[args.verb](args.host, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
