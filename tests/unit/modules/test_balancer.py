"""Unit tests for _modules/balancer.py: the drain/undrain hooks run for real (a command, an HTTP
call to a local server) and a failure names the host, the hook and what it said."""

import http.server
import subprocess
import threading

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module, repo_utils

balancer = load_repo_module("modules", "balancer")


def _run_all(cmd, timeout=None, **_):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return {"retcode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


HOOKS = {}


@pytest.fixture
def configure_loader_modules():
    HOOKS.clear()
    funcs = {"inventory.host": lambda *a, **k: dict(HOOKS), "cmd.run_all": _run_all}
    return {balancer: {"__opts__": {"id": "ecsc-1"}, "__salt__": funcs,
                       "__utils__": repo_utils({"id": "ecsc-1"})}}


@pytest.fixture
def server():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's name)
            seen.append(self.path)
            self.send_response(200 if self.path.startswith("/ok") else 503)
            self.end_headers()
            self.wfile.write(b"lb says no" if not self.path.startswith("/ok") else b"")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen
    httpd.shutdown()


def test_no_hook_does_nothing():
    assert balancer.drain() == {"host": "ecsc-1", "hook": None, "seconds": 0.0}


def test_a_command_hook_runs_and_its_failure_is_named(tmp_path):
    mark = tmp_path / "drained"
    HOOKS["drain"] = {"cmd": ["touch", str(mark)], "timeout": 5}
    assert balancer.drain()["hook"] == f"touch {mark}"
    assert mark.exists()
    HOOKS["drain"] = {"cmd": ["sh", "-c", "echo no such server >&2; exit 3"], "timeout": 5}
    with pytest.raises(CommandExecutionError, match=r"ecsc-1: drain hook .* exited 3 .*no such server"):
        balancer.drain()


def test_an_http_hook_posts_and_a_non_2xx_answer_fails(server):
    url, seen = server
    HOOKS["undrain"] = {"http": f"{url}/ok/ecsc-1", "method": "POST", "timeout": 5}
    assert balancer.undrain()["hook"] == f"POST {url}/ok/ecsc-1"
    HOOKS["undrain"] = {"http": f"{url}/busy", "method": "POST", "timeout": 5}
    with pytest.raises(CommandExecutionError, match="ecsc-1: undrain hook POST .* answered 503"):
        balancer.undrain()
    assert seen == ["/ok/ecsc-1", "/busy"]
