"""lab/balancer.py's HAProxy config, its drain/undrain agent on a real HAProxy in tmp_path
(the lab pillar's HTTP hooks, called as the rollout calls them), the lab pillar's wiring of
the hooks, and lab/loadclient.py's loopback-only rule (no lab needed)."""

import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request

import pytest
import yaml

from lab import balancer, labctl, loadclient
from tests.conftest import load_repo_module

rollout_http = load_repo_module("utils", "rollout_http")
rollout_policy = load_repo_module("utils", "rollout_policy")

HOSTS = [
    {"id": "ecsc-1", "service": "ecsc", "address": "127.0.3.17",
     "conf": {"health_url": "http://{address}:8080/ecsc/health"}},
    {"id": "ecsc-2", "service": "ecsc", "address": "127.0.3.18",
     "conf": {"health_url": "http://{address}:8080/ecsc/health"}},
    {"id": "schedule-1", "service": "schedule", "address": "127.0.3.26",
     "conf": {"health_url": "http://{address}:8090/health"}},
]


def test_each_service_gets_its_own_address_port_and_health_check():
    found = balancer.services(HOSTS)
    assert found["ecsc"]["address"] == "127.0.3.201"
    assert found["schedule"]["address"] == "127.0.3.202"
    assert (found["ecsc"]["port"], found["ecsc"]["health_path"]) == (8080, "/ecsc/health")
    assert balancer.url("schedule", HOSTS) == "http://127.0.3.202:8090/health"
    text = balancer.config_text(HOSTS)
    assert "bind 127.0.3.201:8080" in text
    assert "server ecsc-2 127.0.3.18:8080 check" in text
    assert "option httpchk GET /ecsc/health" in text
    assert f"stats socket {balancer.ADMIN_SOCKET}" in text


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make deps)")
def test_haproxy_accepts_the_config(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(balancer.config_text(HOSTS))
    done = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_load_client_refuses_a_target_off_loopback():
    with pytest.raises(SystemExit, match="only loopback"):
        loadclient.Load({"ecsc": "http://10.0.0.1:8080/ecsc/health"})
    load = loadclient.Load({"ecsc": "http://127.0.3.201:8080/ecsc/health"}, seconds=10_000)
    assert load.seconds == loadclient.MAX_SECONDS


# ---------------------------------------------------------------- drain/undrain on real HAProxy


class _Backend(http.server.ThreadingHTTPServer):
    """One lab host's service: /health answers 200; /slow holds its request until released."""

    daemon_threads = True

    def __init__(self, address, port):
        self.release = threading.Event()
        self.served = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (http.server's name)
                if self.path == "/slow":
                    self.server.release.wait(10)
                    self.server.served.append(self.path)  # the answer is sent after this
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__((address, port), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live(tmp_path, monkeypatch):
    """A real HAProxy (the lab's config) in front of two 'hosts' on 127.0.0.1/.2, and the
    drain/undrain agent on a free port; all in tmp_path, nothing of the lab touched."""
    for name, value in {"BALANCER_DIR": tmp_path, "CONFIG": tmp_path / "haproxy.cfg",
                        "PIDFILE": tmp_path / "haproxy.pid",
                        "ADMIN_SOCKET": tmp_path / "admin.sock"}.items():
        monkeypatch.setattr(balancer, name, value)
    port = _free_port()
    backends = {"web-1": _Backend("127.0.0.1", port), "web-2": _Backend("127.0.0.2", port)}
    hosts = [{"id": h, "service": "web", "address": b.server_address[0],
              "conf": {"health_url": f"http://{{address}}:{port}/health"}}
             for h, b in backends.items()]
    balancer.start_haproxy(hosts)
    agent = http.server.ThreadingHTTPServer(("127.0.0.1", 0), balancer._Agent)  # pylint: disable=protected-access
    threading.Thread(target=agent.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setattr(balancer, "AGENT_URL", f"http://127.0.0.1:{agent.server_port}")
    labctl.wait_for(lambda: all(s["status"] == "UP" for s in balancer.stats().values()), 10,
                    "both servers UP", interval=0.05)
    yield {"backends": backends, "front": f"http://127.0.3.201:{port}"}
    agent.shutdown()
    for backend in backends.values():
        backend.release.set()
        backend.shutdown()
    # Not labctl.stop_pids: it waits until this machine's init reaps the exited HAProxy.
    os.kill(balancer.pid(), signal.SIGTERM)


def _hook(verb, host, timeout=10):
    """The lab pillar's hook for ``host``, called as the rollout calls it (rollout_http)."""
    found = balancer.hook(verb, timeout)
    return rollout_http.request(found["http"].format(host=host), found["method"],
                                found["timeout"])


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make deps)")
def test_drain_hook_returns_once_the_hosts_request_in_flight_ended(live):
    slow = {}
    # A request through the balancer, held by whichever host it reached.
    client = threading.Thread(target=lambda: slow.update(
        status=urllib.request.urlopen(live["front"] + "/slow", timeout=10).status))
    client.start()
    labctl.wait_for(lambda: sum(s["sessions"] for s in balancer.stats().values()), 5,
                    "the slow request to reach a host", interval=0.02)
    busy = next(h for h, s in balancer.stats().items() if s["sessions"])
    done = {}
    drain = threading.Thread(target=lambda: done.update(_hook("drain", busy)))
    drain.start()
    labctl.wait_for(lambda: balancer.stats()[busy]["status"] in ("DRAIN", "NOLB"), 5,
                    f"{busy} drained", interval=0.02)
    assert drain.is_alive() and not done  # still waiting for the request in flight
    live["backends"][busy].release.set()
    drain.join(10)
    client.join(10)
    assert done["status"] == 200, done
    assert live["backends"][busy].served == ["/slow"] and slow["status"] == 200
    # Drained: new requests go to the other host only.
    for _ in range(4):
        assert urllib.request.urlopen(live["front"] + "/health", timeout=5).status == 200
    assert balancer.stats()[busy]["status"] in ("DRAIN", "NOLB")
    assert _hook("undrain", busy)["status"] == 200
    assert balancer.stats()[busy]["status"] == "UP"


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make deps)")
def test_undrain_hook_fails_naming_the_host_its_checks_do_not_see_up(live):
    live["backends"]["web-2"].shutdown()
    live["backends"]["web-2"].server_close()
    assert _hook("drain", "web-2")["status"] == 200
    labctl.wait_for(lambda: balancer.stats()["web-2"]["status"].startswith("DOWN"), 5,
                    "the checks to see web-2 down", interval=0.02)
    answer = _hook("undrain", "web-2", timeout=0.5)
    assert answer["status"] == 503
    assert "web-2 UP" in answer["body"] and "timed out after 0.5s" in answer["body"]
    assert _hook("drain", "web-9")["status"] == 503  # no such server: said, not hung


def test_the_lab_pillar_wires_every_services_hooks_to_the_agent(tmp_path, monkeypatch):
    monkeypatch.setattr(labctl, "LAB", tmp_path)
    monkeypatch.setattr(labctl, "sha256_of", lambda release, service: "0" * 64)
    labctl.write_pillar(labctl.load_hosts(8))
    pillar = yaml.safe_load((tmp_path / "pillar.yaml").read_text())["inventory"]["services"]
    assert set(pillar) == {"ecsc", "ecmc", "schedule", "schedule-res"}
    for service, conf in pillar.items():
        policy, problems = rollout_policy.resolve(conf, 2, f"inventory:services:{service}")
        assert problems == []
        for verb in ("drain", "undrain"):
            assert policy[verb]["http"].startswith(f"{balancer.AGENT_URL}/{verb}/{{host}}")
            assert policy[verb]["method"] == "POST"
