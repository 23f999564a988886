"""Unit tests for _utils/rollout_http.py: the one GET, against a local HTTP server."""

import http.server
import socket
import threading

import pytest

from tests.conftest import load_repo_module

rollout_http = load_repo_module("utils", "rollout_http")


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # pylint: disable=invalid-name
        port = self.server.server_address[1]
        routes = {
            "/ok": (200, {}, b"ok"),
            "/down": (503, {}, b"starting"),
            "/here": (302, {"Location": f"http://127.0.0.1:{port}/ok"}, b""),
            # the same port on another loopback address is another host
            "/away": (302, {"Location": f"http://127.0.0.2:{port}/ok"}, b""),
        }
        code, headers, body = routes.get(self.path, (404, {}, b"no"))
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_get_status_and_body(server):
    assert rollout_http.get(f"{server}/ok") == {
        "url": f"{server}/ok", "status": 200, "body": "ok", "error": None,
    }
    down = rollout_http.get(f"{server}/down")
    assert (down["status"], down["body"]) == (503, "starting")


def test_redirects_only_on_the_same_host(server):
    assert rollout_http.get(f"{server}/here")["status"] == 200
    away = rollout_http.get(f"{server}/away")
    assert away["status"] == 302  # not followed to 127.0.0.2: the 3xx is the answer


def test_no_answer_is_none_with_a_reason():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        ret = rollout_http.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert ret["status"] is None and "refused" in ret["error"].lower()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)  # accepts, never answers
        ret = rollout_http.get(f"http://127.0.0.1:{sock.getsockname()[1]}/", timeout=0.3)
    assert ret["status"] is None and "timed out" in ret["error"]
    assert rollout_http.get("file:///etc/passwd")["error"] == "not an http(s) URL"
