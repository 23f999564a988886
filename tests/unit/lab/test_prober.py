"""lab/prober.py: the window and both-down logic on synthetic samples, and the polling threads
against a local HTTP server on 127.0.0.1 (no lab)."""

import http.server
import json
import threading
import time

import pytest

from lab import prober

UP, DOWN = True, False


def samples(*pairs):
    return [(t, ok) for t, ok in pairs]


def test_no_failure_no_window():
    assert prober.down_windows(samples((0.0, UP), (0.05, UP), (0.1, UP))) == []


def test_window_from_first_failure_to_first_success():
    windows = prober.down_windows(
        [(0.0, UP), (0.05, DOWN, "ConnectionRefusedError"), (0.1, DOWN), (0.15, UP), (0.2, UP)])
    assert windows == [{"start": 0.05, "end": 0.15, "seconds": 0.1, "open": False,
                        "reason": "ConnectionRefusedError"}]


def test_transitions_only_give_the_same_windows_as_every_sample():
    full = samples((0, UP), (1, DOWN), (2, DOWN), (3, UP), (4, UP), (5, DOWN), (6, UP))
    changes = samples((0, UP), (1, DOWN), (3, UP), (5, DOWN), (6, UP))
    assert prober.down_windows(full) == prober.down_windows(changes)
    assert [(w["start"], w["end"]) for w in prober.down_windows(full)] == [(1, 3), (5, 6)]


def test_window_still_open_at_the_end_ends_at_the_stop():
    windows = prober.down_windows(samples((0, UP), (2, DOWN)), end=5.0)
    assert windows == [{"start": 2, "end": 5.0, "seconds": 3.0, "open": True, "reason": None}]


def test_down_from_the_first_poll():
    windows = prober.down_windows(samples((0.5, DOWN), (1.5, UP)))
    assert [(w["start"], w["end"]) for w in windows] == [(0.5, 1.5)]


def w(start, end, is_open=False):
    return {"start": start, "end": end, "seconds": end - start, "open": is_open}


def test_overlaps_of_two_hosts():
    a = [w(1, 3), w(10, 12)]
    b = [w(2, 4), w(5, 6), w(11, 15)]
    assert [(x["start"], x["end"]) for x in prober.overlaps(a, b)] == [(2, 3), (11, 12)]


def test_touching_windows_are_not_both_down():
    # Host 1 answered again at the very poll where host 2 stopped answering.
    assert prober.overlaps([w(1, 3)], [w(3, 5)]) == []


def test_max_down_counts_hosts_down_at_one_instant():
    assert prober.max_down([[w(0, 2)], [w(2, 4)], [w(5, 6)]]) == 1
    assert prober.max_down([[w(0, 3)], [w(1, 4)], [w(2, 5)]]) == 3
    assert prober.max_down([[], []]) == 0


HOSTS = [
    {"id": "ecsc-1", "service": "ecsc", "url": "http://127.0.3.17:8080/ecsc/health"},
    {"id": "ecsc-2", "service": "ecsc", "url": "http://127.0.3.39:8080/ecsc/health"},
    {"id": "schedule-1", "service": "schedule", "url": "http://127.0.3.26:8090/health"},
    {"id": "schedule-2", "service": "schedule", "url": "http://127.0.3.38:8090/health"},
]


def test_rolling_upgrade_one_host_at_a_time_has_no_both_down():
    report = prober.summarise(HOSTS, {
        "ecsc-1": samples((0, UP), (1.0, DOWN), (3.5, UP)),
        "ecsc-2": samples((0, UP), (4.0, DOWN), (6.0, UP)),
        "schedule-1": samples((0, UP)),
        "schedule-2": samples((0, UP)),
    }, end=8.0)
    assert report["hosts"]["ecsc-1"]["down_s"] == 2.5
    assert report["hosts"]["ecsc-2"]["down_count"] == 1
    assert report["hosts"]["schedule-1"]["windows"] == []
    assert report["services"]["ecsc"]["both_down"] == 0
    assert report["services"]["ecsc"]["max_down"] == 1
    assert report["both_down"] == 0
    json.dumps(report)


def test_both_hosts_of_a_pair_down_is_counted_per_service():
    report = prober.summarise(HOSTS, {
        "ecsc-1": samples((0, UP)),
        "ecsc-2": samples((0, UP)),
        "schedule-1": samples((0, UP), (1.0, DOWN), (3.0, UP), (5.0, DOWN)),
        "schedule-2": samples((0, UP), (2.0, DOWN), (2.5, UP), (6.0, DOWN)),
    }, end=7.0)
    sched = report["services"]["schedule"]
    assert sched["both_down"] == 2
    assert [(x["start"], x["end"], x["open"]) for x in sched["pairs"]["schedule-1+schedule-2"]["windows"]] == [
        (2.0, 2.5, False), (6.0, 7.0, True)]
    assert sched["both_down_s"] == 1.5
    assert sched["max_down"] == 2
    assert report["services"]["ecsc"]["both_down"] == 0
    assert report["both_down"] == 2


def test_a_host_that_never_answered_is_down_for_the_whole_run():
    report = prober.summarise(HOSTS[:2], {"ecsc-1": samples((0.01, DOWN)), "ecsc-2": []}, end=2.0)
    assert report["hosts"]["ecsc-1"]["windows"][0]["open"] is True
    assert report["hosts"]["ecsc-1"]["down_s"] == 1.99
    assert report["hosts"]["ecsc-2"]["down_s"] == 0


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/health", "http://25.0.3.17:8080/ecsc/health", "http://example.org/",
    "file:///etc/passwd", "https://127.0.0.1/",
])
def test_only_loopback_http_is_probed(url):
    with pytest.raises(ValueError, match="prober"):
        prober.Prober([{"id": "x", "service": "x", "url": url}])


def test_unknown_lab_host_is_refused():
    with pytest.raises(ValueError, match="nosuch"):
        prober.targets(["nosuch"])


def test_lab_targets_by_service_name_use_the_pillar_health_urls():
    got = prober.targets(["ecmc"])
    assert [t["id"] for t in got] == ["ecmc-1", "ecmc-2"]
    assert got[0]["url"] == "http://127.0.3.27:8080/ecmc/health"


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(type(self).status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    handler = type("Health", (_Health,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def wait_until(predicate, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def test_prober_records_a_503_window_and_a_refused_connection(health_server):
    server, handler = health_server
    port = server.server_address[1]
    hosts = [{"id": "a", "service": "svc", "url": f"http://127.0.0.1:{port}/health"},
             # Nothing listens on this loopback port: every poll is refused.
             {"id": "b", "service": "svc2", "url": "http://127.0.0.2:9/health"}]
    with prober.Prober(hosts) as probe:
        assert probe.is_down("a") is False
        handler.status = 503
        wait_until(lambda: probe.is_down("a"))
        handler.status = 200
        wait_until(lambda: probe.is_down("a") is False)
    report = probe.report()
    windows = report["hosts"]["a"]["windows"]
    assert len(windows) == 1 and windows[0]["reason"] == "HTTP 503" and not windows[0]["open"]
    assert report["hosts"]["b"]["windows"][0]["open"] is True
    assert report["hosts"]["b"]["windows"][0]["reason"] == "ConnectionRefusedError"
    assert report["hosts"]["a"]["polls"] >= 3
    json.dumps(report)


def test_cli_runs_a_command_while_probing_and_writes_json(health_server, tmp_path, monkeypatch):
    server, _ = health_server
    url = f"http://127.0.0.1:{server.server_address[1]}/health"
    monkeypatch.setattr(prober, "targets",
                        lambda hosts: [{"id": "a", "service": "svc", "url": url}])
    out = tmp_path / "probe.json"
    code = prober.main(["--out", str(out), "--", "sh", "-c", "exit 3"])
    assert code == 3
    report = json.loads(out.read_text())
    assert report["returncode"] == 3 and report["hosts"]["a"]["down_s"] == 0
    assert report["both_down"] == 0
