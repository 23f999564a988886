"""
Unit tests of the run report runner (_runners/rolloutreport.py): a report built from a run's
journal of events (steps, downtime, both-down, the reason a host gave no answer), the files
written (JSON, Markdown, a real SVG), retention of the last N runs, nothing written under
test=True.
"""

import json
import os
import time
import xml.etree.ElementTree as ET

import psutil
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module

rolloutreport = load_repo_module("runners", "rolloutreport")

RUN = "6f1c0c0ffee4"
T0 = 1796000000.0  # the run's start (seconds since the epoch)
PAIRS = [{"service": "ecsc", "hosts": ["ecsc-1", "ecsc-2"]}]


def line(host, step, at, run=RUN, kind="upgrade", **data):
    """One journal line as the master's rawfile_json returner writes it."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}+00:00"
    inner = {"host": host, "service": "ecsc", "release": "20170220", "step": step, "run": run,
             **data}
    tag = f"rollout/{kind}/{host}/{step}"
    return json.dumps({"tag": tag, "data": {"id": host, "cmd": "_minion_event", "data": inner,
                                            "tag": tag, "_stamp": stamp}})


def upgrade_lines(host, start, stop_at=None, run=RUN):
    """A host's full upgrade from ``start``; cut after step ``stop_at`` (no answer)."""
    steps = [("begin", 0.0), ("staged", 1.0), ("backed-up", 2.0), ("stopped", 3.0),
             ("swapped", 3.5), ("ready", 6.0), ("verified", 6.5), ("end", 7.0)]
    out = []
    for step, offset in steps:
        extra = {"from": "20161201"} if step == "begin" else {}
        out.append(line(host, step, start + offset, run=run, **extra))
        if step == stop_at:
            break
    return out


def events(lines, run=RUN):
    parsed = [rolloutreport.parse_event(text, run) for text in lines]
    return sorted((e for e in parsed if e), key=lambda e: e["at"])


def test_steps_downtime_and_summary_of_a_passed_host():
    report = rolloutreport.build(
        "upgrade", RUN, events(upgrade_lines("ecsc-1", T0)), ["ecsc-1"], pairs=PAIRS,
        release="20170220", started=T0, ended=T0 + 8,
    )
    host = report["hosts"]["ecsc-1"]
    assert [s["step"] for s in host["steps"]] == [
        "staged", "backed-up", "stopped", "swapped", "ready", "verified"]
    stopped = host["steps"][2]
    assert (stopped["start"], stopped["end"]) == (pytest.approx(T0 + 2), pytest.approx(T0 + 3))
    # Down from the start of the stop (end of the backup) to the end of ready.
    assert host["down_s"] == pytest.approx(4.0)
    assert (host["result"], host["before"], host["after"]) == ("ok", "20161201", "20170220")
    assert host["backup_tag"] == "20170220"
    assert report["summary"] == ["ecsc-1  20161201 -> 20170220  ok  down 4.0s"]
    assert report["reason"] is None and report["result"] == "ok"


def test_both_down_instants_are_found_by_the_steps_windows():
    # ecsc-2 stops 1 s after ecsc-1: both down from T0+3 (ecsc-2's stop begins) to T0+6.
    overlapping = upgrade_lines("ecsc-1", T0) + upgrade_lines("ecsc-2", T0 + 1)
    report = rolloutreport.build("upgrade", RUN, events(overlapping), ["ecsc-1", "ecsc-2"],
                                 pairs=PAIRS, release="20170220", started=T0, ended=T0 + 9)
    assert len(report["both_down"]) == 1
    window = report["both_down"][0]
    assert window["hosts"] == ["ecsc-1", "ecsc-2"]
    assert (window["start"], window["end"]) == (pytest.approx(T0 + 3), pytest.approx(T0 + 6))
    # In turn (host 2 starts after host 1 ended): none.
    in_turn = upgrade_lines("ecsc-1", T0) + upgrade_lines("ecsc-2", T0 + 7.5)
    report = rolloutreport.build("upgrade", RUN, events(in_turn), ["ecsc-1", "ecsc-2"],
                                 pairs=PAIRS, release="20170220", started=T0, ended=T0 + 16)
    assert report["both_down"] == []


def test_a_host_with_no_answer_is_named_with_its_last_step():
    lines = upgrade_lines("ecsc-1", T0) + upgrade_lines("ecsc-2", T0 + 8, stop_at="stopped")
    report = rolloutreport.build("upgrade", RUN, events(lines), ["ecsc-1", "ecsc-2"],
                                 pairs=PAIRS, release="20170220", started=T0, ended=T0 + 30)
    host = report["hosts"]["ecsc-2"]
    assert host["result"] == "no answer" and host["last_step"] == "stopped"
    assert host["down"]["open"] is True and host["down_s"] == pytest.approx(20.0)
    clock = time.strftime("%H:%M:%S", time.localtime(T0 + 11))
    assert report["reason"] == f"ecsc-2: no answer after step 'stopped' ({clock})"
    assert report["summary"][1] == "ecsc-2  20161201 -> ?  no answer  down 20.0s  at stopped"
    assert report["result"] == "failed"


def test_failed_rolled_back_no_change_and_not_run_hosts():
    lines = [
        line("ecsc-1", "begin", T0, **{"from": "20161201"}),
        line("ecsc-1", "staged", T0 + 1), line("ecsc-1", "backed-up", T0 + 2),
        line("ecsc-1", "stopped", T0 + 3), line("ecsc-1", "swapped", T0 + 4),
        line("ecsc-1", "failed", T0 + 9), line("ecsc-1", "rolled-back", T0 + 12),
        line("ecsc-1", "end", T0 + 12.5),
        line("ecmc-1", "begin", T0, **{"from": "20170220"}), line("ecmc-1", "end", T0 + 0.5),
        line("ecmc-2", "begin", T0, **{"from": "20161201"}), line("ecmc-2", "failed", T0 + 1),
        line("ecmc-2", "end", T0 + 1.2),
    ]
    report = rolloutreport.build("upgrade", RUN, events(lines),
                                 ["ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2", "schedule-1"],
                                 pairs=PAIRS, release="20170220", started=T0, ended=T0 + 13,
                                 failed=True, unchanged=["schedule-1"])
    hosts = report["hosts"]
    assert hosts["ecsc-1"]["result"] == "rolled back"
    assert hosts["ecsc-1"]["after"] == "20161201" and hosts["ecsc-1"]["last_step"] == "swapped"
    assert hosts["ecsc-1"]["down_s"] == pytest.approx(10.0)  # T0+2 .. rolled back at T0+12
    assert hosts["ecsc-2"]["result"] == "not run" and hosts["ecsc-2"]["steps"] == []
    assert hosts["ecmc-1"]["result"] == "no change"
    assert hosts["ecmc-1"]["before"] == hosts["ecmc-1"]["after"] == "20170220"
    assert hosts["ecmc-2"]["result"] == "FAILED" and hosts["ecmc-2"]["last_step"] == "begin"
    # Found on the release at render: no state job, no event.
    assert (hosts["schedule-1"]["result"], hosts["schedule-1"]["after"]) == ("no change", "20170220")
    assert report["reason"].split("; ") == [
        f"ecsc-1: failed after step 'swapped', rolled back "
        f"({time.strftime('%H:%M:%S', time.localtime(T0 + 4))})",
        f"ecmc-2: failed after step 'begin' ({time.strftime('%H:%M:%S', time.localtime(T0))})",
    ]


def test_parse_event_keeps_only_this_runs_host_steps():
    assert rolloutreport.parse_event(line("ecsc-1", "staged", T0), RUN)["step"] == "staged"
    assert rolloutreport.parse_event(line("ecsc-1", "staged", T0, run="other"), RUN) is None
    assert rolloutreport.parse_event('{"tag": "rollout/upgr', RUN) is None  # torn last line
    marker = json.dumps({"tag": f"rollout/report/{RUN}", "data": {"run": RUN, "_stamp": "x"}})
    assert rolloutreport.parse_event(marker, RUN) is None


def test_prune_keeps_the_newest_runs_only(tmp_path):
    tmp_path = tmp_path / "reports"
    tmp_path.mkdir()
    for i in range(25):
        for ext in ("json", "md", "svg"):
            (tmp_path / f"20261130-0100{i:02d}-upgrade-{i:08x}.{ext}").write_text("x")
    (tmp_path / "notes.txt").write_text("not a report")
    removed = rolloutreport.prune(str(tmp_path), 20)
    assert len(removed) == 15  # 5 oldest runs x 3 files
    left = sorted(p.name for p in tmp_path.iterdir())
    assert "notes.txt" in left and len(left) == 61
    assert not (tmp_path / "20261130-010004-upgrade-00000004.json").exists()
    assert (tmp_path / "20261130-010005-upgrade-00000005.json").exists()


@pytest.fixture
def journal(tmp_path):
    return tmp_path / "events.jsonl"


@pytest.fixture
def configure_loader_modules(tmp_path, journal):
    pidfile = tmp_path / "salt-master.pid"
    pidfile.write_text(str(os.getpid()))  # stands for the master: this test process
    return {rolloutreport: {"__opts__": {
        "cachedir": str(tmp_path / "cache"), "sock_dir": str(tmp_path / "sock"),
        "pidfile": str(pidfile), "event_return": "rawfile_json",
        "rawfile_json.filename": str(journal),
    }}}


@pytest.fixture
def no_bus(monkeypatch):
    # No master in a unit test: the marker wait is the lab's (integration) business.
    monkeypatch.setattr(rolloutreport, "_wait_for_journal", lambda path, run: True)


def test_write_gives_json_markdown_and_a_real_svg(journal, tmp_path, no_bus):
    journal.write_text("\n".join(upgrade_lines("ecsc-1", T0) + upgrade_lines("ecsc-2", T0 + 8)
                                 + upgrade_lines("ecsc-1", T0, run="another-run")) + "\n")
    ret = rolloutreport.write("upgrade", RUN, ["ecsc-1", "ecsc-2"], pairs=PAIRS,
                              release="20170220", started=time.time(), keep=5, detach=False)
    directory = tmp_path / "cache" / "rollout" / "reports"
    assert set(ret) >= {"summary", "reason", "paths"}
    assert all(os.path.dirname(p) == str(directory) for p in ret["paths"].values())
    data = json.loads(open(ret["paths"]["json"]).read())
    assert data["run"] == RUN and data["operator"]
    for host in ("ecsc-1", "ecsc-2"):
        assert [s["step"] for s in data["hosts"][host]["steps"]][:3] == [
            "staged", "backed-up", "stopped"]
        assert data["hosts"][host]["down_s"] == pytest.approx(4.0)
    assert data["both_down"] == [] and ret["reason"] is None
    assert ret["summary"][0].startswith("ecsc-1  20161201 -> 20170220  ok  down 4.0s")
    root = ET.parse(ret["paths"]["svg"]).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    md = open(ret["paths"]["md"]).read()
    assert "| ecsc-2 | ecsc | 20161201 -> 20170220 | ok | 4.0 |" in md
    assert os.path.basename(ret["paths"]["svg"]) in md


def test_write_says_the_master_restarted_during_the_run(journal, no_bus):
    journal.write_text("\n".join(upgrade_lines("ecsc-1", T0, stop_at="stopped")) + "\n")
    master_start = psutil.Process().create_time()  # the "master" (this process) began after
    ret = rolloutreport.write("upgrade", RUN, ["ecsc-1"], release="20170220",
                              started=master_start - 60, test=True)
    assert ret["reason"].startswith("ecsc-1: no answer after step 'stopped' (")
    assert ret["reason"].endswith(
        f"; the salt-master restarted during the run (at "
        f"{time.strftime('%H:%M:%S', time.localtime(master_start))}); "
        "run the same command again to complete it")


def test_test_mode_writes_nothing(journal, tmp_path, no_bus):
    journal.write_text("\n".join(upgrade_lines("ecsc-1", T0)) + "\n")
    ret = rolloutreport.write("upgrade", RUN, ["ecsc-1"], release="20170220", test=True)
    assert ret["paths"] == {"json": None, "md": None, "svg": None}
    assert not (tmp_path / "cache").exists()
    assert ret["summary"] == ["ecsc-1  20161201 -> 20170220  ok  down 4.0s"]


def test_bad_keep_and_missing_journal_config_are_refused(configure_loader_modules, no_bus):
    with pytest.raises(SaltInvocationError, match="release:keep_reports"):
        rolloutreport.write("upgrade", RUN, ["ecsc-1"], keep=0)
    opts = configure_loader_modules[rolloutreport]["__opts__"]
    opts.pop("event_return")
    with pytest.raises(CommandExecutionError, match="event_return: rawfile_json"):
        rolloutreport.write("upgrade", RUN, ["ecsc-1"])


def test_a_run_without_any_host_step_has_no_timeline(journal, tmp_path, no_bus):
    journal.write_text("\n".join([line("ecsc-1", "begin", T0, **{"from": "20170220"}),
                                  line("ecsc-1", "end", T0 + 0.4)]) + "\n")
    ret = rolloutreport.write("upgrade", RUN, ["ecsc-1", "ecsc-2"], release="20170220",
                              unchanged=["ecsc-2"])
    assert ret["paths"]["svg"] is None and os.path.exists(ret["paths"]["json"])
    assert ret["summary"] == ["ecsc-1  20170220 -> 20170220  no change  down 0.0s",
                              "ecsc-2  20170220 -> 20170220  no change  down 0.0s"]
    assert len(os.listdir(tmp_path / "cache" / "rollout" / "reports")) == 2


def test_downtime_of_a_host_cut_before_its_stop_event_and_of_a_resumed_host():
    # The minion died right after the JVM stopped, before the "stopped" event: the stop may
    # have begun at the end of the backup, so the host counts as down (open) from there.
    cut = upgrade_lines("ecsc-1", T0, stop_at="backed-up")
    report = rolloutreport.build("upgrade", RUN, events(cut), ["ecsc-1"], release="20170220",
                                 started=T0, ended=T0 + 12)
    host = report["hosts"]["ecsc-1"]
    assert (host["result"], host["down"]["open"]) == ("no answer", True)
    assert host["down_s"] == pytest.approx(10.0)  # T0+2 .. the report at T0+12
    # The re-run resumes it: started (ready) without a stop: down from its begin.
    resumed = [line("ecsc-1", "begin", T0 + 20, **{"from": None}),
               line("ecsc-1", "resumed", T0 + 20.5), line("ecsc-1", "staged", T0 + 21),
               line("ecsc-1", "swapped", T0 + 21.5), line("ecsc-1", "ready", T0 + 25),
               line("ecsc-1", "verified", T0 + 25.5), line("ecsc-1", "end", T0 + 26)]
    report = rolloutreport.build("upgrade", RUN, events(resumed), ["ecsc-1"],
                                 release="20170220", started=T0 + 19, ended=T0 + 27)
    host = report["hosts"]["ecsc-1"]
    assert (host["result"], host["down_s"]) == ("ok", pytest.approx(5.0))


def test_the_timeline_is_drawn_by_a_detached_child(journal, tmp_path, no_bus):
    journal.write_text("\n".join(upgrade_lines("ecsc-1", T0)) + "\n")
    ret = rolloutreport.write("upgrade", RUN, ["ecsc-1"], release="20170220", started=T0)
    svg = ret["paths"]["svg"]
    assert os.path.exists(ret["paths"]["json"]) and os.path.exists(ret["paths"]["md"])
    deadline = time.monotonic() + 120
    while not os.path.exists(svg) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    # Renamed into place once whole; the drawer's empty error log removed.
    assert not os.path.exists(svg + ".tmp") and not os.path.exists(svg + ".log")


def test_a_failed_run_whose_hosts_all_passed_says_a_step_of_the_run_failed():
    # 32 hosts at load 35: every host that ran passed its steps, but a wave's step had
    # called two of them gone; the reason must not say that no host reported a step.
    report = rolloutreport.build(
        "upgrade", RUN, events(upgrade_lines("ecsc-1", T0)), ["ecsc-1", "ecsc-2"],
        pairs=PAIRS, release="20170220", started=T0, ended=T0 + 8, failed=True)
    assert report["hosts"]["ecsc-1"]["result"] == "ok"
    assert report["reason"] == (
        "no host reported a failed step, but a step of the run failed (see the failed "
        "step's comment); run the same command again once it is fixed")
    silent = rolloutreport.build("upgrade", RUN, [], ["ecsc-1"], pairs=PAIRS,
                                 release="20170220", started=T0, ended=T0 + 1, failed=True)
    assert silent["reason"].startswith("the run failed before any host reported a step")
