"""Unit tests for _modules/probe.py: HTTP checks (the GET faked) and new log lines (real files)."""

import threading
from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module, repo_utils

probe = load_repo_module("modules", "probe")


@pytest.fixture
def configure_loader_modules():
    opts = {"id": "unit-minion"}
    return {probe: {"__opts__": opts, "__salt__": {}, "__utils__": repo_utils(opts)}}


def _answer(status, body="", error=None):
    return MagicMock(return_value={"url": "u", "status": status, "body": body, "error": error})


def test_http_status_and_contains():
    with patch.dict(probe.__utils__, {"rollout_http.get": _answer(200, '{"balance":12.345}')}):
        ret = probe.http("http://127.0.0.1:1/c", contains='"balance":12.345', timeout=2)
        assert ret == {"url": "http://127.0.0.1:1/c", "status": 200, "body": '{"balance":12.345}'}
        probe.__utils__["rollout_http.get"].assert_called_once_with("http://127.0.0.1:1/c",
                                                                    timeout=2.0)
        with pytest.raises(CommandExecutionError, match=r"answered 200 without '12\.35,'"):
            probe.http("http://127.0.0.1:1/c", contains="12.35,")
    with patch.dict(probe.__utils__, {"rollout_http.get": _answer(503)}):
        with pytest.raises(CommandExecutionError, match="unit-minion: GET .* answered 503, expected 200"):
            probe.http("http://127.0.0.1:1/")
    with patch.dict(probe.__utils__, {"rollout_http.get": _answer(None, error="refused")}):
        with pytest.raises(CommandExecutionError, match=r"answered None \(refused\), expected 200"):
            probe.http("http://127.0.0.1:1/")


def test_log_counts_only_new_lines_and_refuses_forbidden(tmp_path):
    path = tmp_path / "schedule.log"
    path.write_text("log.money.success old\n2017-02-20T10:00:00Z log.money.success old\n")

    def later(text):
        timer = threading.Timer(0.2, lambda: path.open("a").write(text))
        timer.start()
        return timer

    timer = later("2017-02-20T10:00:01Z log.money.success 1\nnoise\n"
                  "2017-02-20T10:00:02Z log.money.failed 2\n")
    ret = probe.log(str(path), r"^\d{4}-\S+ log\.money\.", forbidden=r"^log\.money\.",
                    timeout=10, interval=0.05)
    timer.join()
    assert ret["matched"] == ["2017-02-20T10:00:01Z log.money.success 1",
                              "2017-02-20T10:00:02Z log.money.failed 2"]
    timer = later("log.money.success 3\n")
    with pytest.raises(CommandExecutionError, match="new line matches forbidden"):
        probe.log(str(path), r"^\d{4}", forbidden=r"^log\.money\.", timeout=10, interval=0.05)
    timer.join()
    with pytest.raises(CommandExecutionError, match=r"0 of 2 new lines matched"):
        probe.log(str(path), "never", timeout=0.1, interval=0.05)
    with pytest.raises(CommandExecutionError, match="cannot read log"):
        probe.log(str(tmp_path / "missing.log"), "x")
    with pytest.raises(SaltInvocationError, match="bad regex"):
        probe.log(str(path), "(")


def test_log_since_start_counts_the_lines_the_new_jvm_wrote_before_the_check(tmp_path):
    """Lines written after the service's recorded start offset count at once (an upgrade's
    check does not wait for more); lines before it never do; without a recorded offset the
    check reads from now on."""
    path = tmp_path / "schedule.log"
    old = "log.money.success old release\n"
    path.write_text(old + "2017-02-20T10:00:01Z log.money.success 1\n"
                    "2017-02-20T10:00:03Z log.money.failed 2\n")
    started = {"offsets": {str(path): len(old)}, "inodes": {str(path): path.stat().st_ino}}
    last_start = MagicMock(return_value=started)
    with patch.dict(probe.__salt__, {"javaservice.last_start": last_start}):
        ret = probe.log(str(path), r"^\d{4}-\S+ log\.money\.", forbidden=r"^log\.money\.",
                        timeout=0.1, interval=0.05, since_start="schedule")
        assert ret["matched"] == ["2017-02-20T10:00:01Z log.money.success 1",
                                  "2017-02-20T10:00:03Z log.money.failed 2"]
        last_start.assert_called_once_with("schedule")
        # From offset 0 the old release's line is new: refused.
        last_start.return_value = {"offsets": {str(path): 0}}
        with pytest.raises(CommandExecutionError, match="new line matches forbidden"):
            probe.log(str(path), r"^\d{4}", forbidden=r"^log\.money\.", timeout=0.1,
                      since_start="schedule")
        last_start.return_value = {}  # never started here: from now on, nothing new yet
        with pytest.raises(CommandExecutionError, match=r"0 of 2 new lines matched"):
            probe.log(str(path), r"^\d{4}", timeout=0.1, interval=0.05, since_start="schedule")
