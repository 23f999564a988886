"""Faults during a run, on the lab (issue 9): each test injects one fault that real rollouts
meet and proves that nothing is lost (tests/integration/faults_support.py) after the fault and
at most one re-run of the same command.

`make faults` runs only this file and prints one table (fault, expected, observed, nothing
lost, both-down instants, seconds) from the rows the tests write (lab/faults.py).

Cost: the four gate faults (1 SIGTERM ignored, 2 crash after ready, 12 fatal line with health
200, 13 an old started line) share ONE orchestration of all four services, one fault per pair;
the rollback with a corrupt backup (11) runs on the ecsc pair that run upgraded. Every other
fault targets one service or one host (`services` / `hosts` pillar) and resets only those.
"""

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from lab import build, events, faults, labctl
from lab.prober import Prober
from tests.integration.conftest import REPO_ROOT, VENV_BIN, run_cli
from tests.integration.faults_support import (
    file_map, install_dir, nothing_lost, snapshot, stopped_partners,
)

pytestmark = pytest.mark.lab

V1, V2 = labctl.RELEASE_V1, labctl.RELEASE_V2
R_IGNORE_TERM = "20170301"   # ecsc built with the ignore-term variant, put on ecsc-1 by hand
R_GATE = "20170305"          # ecsc v2, ecmc silent, schedule crashloop, schedule-res fatal-healthy
GATE_VARIANTS = {"ecsc": "v2", "ecmc": "silent", "schedule": "crashloop",
                 "schedule-res": "fatal-healthy"}
STOP_TIMEOUT = 5   # ecsc's stop timeout in the gate run: the ignore-term JVM gets this long
SETTLE = 4         # schedule's settle in the gate run: the crashloop JVM dies 1.5 s after ready
READY_TIMEOUT = 12


# ---------------------------------------------------------------- running salt-run


def _env():
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}


def _args(sls, pillar):
    args = [str(VENV_BIN / "salt-run"), "--out=json", "state.orchestrate", sls]
    return args + (["pillar=" + json.dumps(pillar)] if pillar is not None else [])


def orchestrate(sls, pillar=None, timeout=600, name=None):
    """Run salt-run to its end; with ``name`` its output is kept in .lab/faults/<name>.out."""
    t0 = time.monotonic()
    proc = run_cli(*_args(sls, pillar), timeout=timeout)
    RUN_SECONDS[name or sls] = round(time.monotonic() - t0, 1)
    if name:
        faults.save_output(name, proc.stdout, proc.stderr)
    return proc


RUN_SECONDS = {}  # salt-run wall time per run of the current test (results.json "phases")


class Run:
    """A salt-run in the background, in its own session (so it can be killed whole)."""

    def __init__(self, sls, pillar=None):
        self.proc = subprocess.Popen(_args(sls, pillar), cwd=REPO_ROOT, env=_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.stdout = self.stderr = ""

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout=600):
        self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    @property
    def returncode(self):
        return self.proc.returncode


def text_of(proc):
    return (proc.stdout or "") + (proc.stderr or "")


def steps_of(stdout):
    """{orchestration step id: its return} from `salt-run --out=json` output ({} if none)."""
    try:
        data = json.loads(stdout)
    except ValueError:
        return {}
    data = data.get("data", data) if isinstance(data, dict) else {}
    found = {}
    for minion_ret in data.values():
        if isinstance(minion_ret, dict):
            for key, ret in minion_ret.items():
                if "_|-" in key and isinstance(ret, dict):
                    found[key.split("_|-")[1]] = ret
    return found


def host_states(step, host):
    ret = (step or {}).get("changes", {}).get("ret", {}).get(host, {})
    return ret if isinstance(ret, dict) else {}


def state_of(steps, host, prefix):
    """One state's return in a host's upgrade step, by state id prefix ('javaservice_|-ready')."""
    for key, value in host_states(steps.get(f"upgrade-{host}"), host).items():
        if key.startswith(prefix) and isinstance(value, dict):
            return value
    return {}


def failed_comments(steps, host):
    """Comments of the failed states of a host (or of its step when it has none)."""
    step = steps.get(f"upgrade-{host}") or {}
    found = [v.get("comment", "") for v in host_states(step, host).values()
             if isinstance(v, dict) and v.get("result") is False
             and not str(v.get("comment", "")).startswith("One or more requisite failed")]
    return found or [str(step.get("comment", ""))]


def why_failed(stdout):
    """The first failed step's own reason (not a requisite's); a runner step's is in its
    changes.return; of a traceback, its last line."""
    for step in steps_of(stdout).values():
        comment = str(step.get("comment", ""))
        if step.get("result") is False and not comment.startswith("One or more requisite"):
            said = str((step.get("changes") or {}).get("return") or "") or comment
            if "Traceback" in said:
                lines = [ln for ln in said.splitlines() if ln.strip()]
                said = said.split("Traceback")[0] + " ... " + (lines[-1] if lines else "")
            return said
    return ""


def excerpt(text, limit=160):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- table rows


class Row(dict):
    """One row of the table; expectations collected softly so the row says what failed."""

    def __init__(self, fault, expected):
        super().__init__(fault=fault, expected=expected)
        self.failed = []
        self.done = False

    def expect(self, ok, what):
        if not ok:
            self.failed.append(what)
        return ok

    def lost(self, problems):
        self["nothing lost"] = not problems
        for problem in problems:
            self.failed.append("lost: " + problem)

    def finish(self, known_gaps=None):
        """Fail with every unmet expectation; when each of them is a known product gap
        (``{expectation: reason}``), xfail with the reasons instead."""
        self.done = True
        if self.failed and known_gaps and all(f in known_gaps for f in self.failed):
            self["observed"] = f"{self.get('observed', '')} | XFAIL: " + "; ".join(self.failed)
            pytest.xfail("; ".join(known_gaps[f] for f in self.failed))
        if self.failed:
            self["observed"] = f"{self.get('observed', '')} | FAILED: " + "; ".join(self.failed)
            pytest.fail("\n".join(self.failed) + f"\nobserved: {self.get('observed')}")


@pytest.fixture
def row(request):
    made = []

    def new(fault, expected):
        made.append(Row(fault, expected))
        made[-1].t0 = time.monotonic()
        return made[-1]

    RUN_SECONDS.clear()
    yield new
    for r in made:
        r["phases"] = dict(RUN_SECONDS)
        r.setdefault("seconds", round(time.monotonic() - r.t0, 1))
        if not r.done:
            r["observed"] = f"{r.get('observed', '')} | test stopped early (see pytest output)"
        faults.add_result(r)


def both_down(probe, service):
    return probe.report()["services"].get(service, {}).get("both_down")


# ---------------------------------------------------------------- lab state


@pytest.fixture(scope="module", autouse=True)
def suite(lab, hosts):
    """Fresh table; afterwards every host back at v1 and every daemon up."""
    faults.clear_results()
    yield
    if not faults.all_daemons_up():
        faults.lab_up()
    faults.reset_hosts(list(hosts.values()))


def pair(hosts, service):
    return [h for h in hosts.values() if h["service"] == service]


# ---------------------------------------------------------------- the gate run (1, 2, 12, 13)


class Gate:
    pass


@pytest.fixture(scope="module")
def gate(lab, hosts):
    """One upgrade of all eight hosts to R_GATE, each pair meeting one fault (see module doc);
    ecsc-1 runs the ignore-term build (deployed by hand) when it starts; ecmc-1's logs already
    hold start lines for R_GATE from 'an earlier start'."""
    build.build_release(R_IGNORE_TERM, "ignore-term", lab.ARTIFACTS, services=["ecsc"])
    sums = {}
    for service, variant in GATE_VARIANTS.items():
        built = build.build_release(R_GATE, variant, lab.ARTIFACTS, services=[service])
        sums[service] = built[service][1]
    all_hosts = list(hosts.values())
    faults.reset_hosts([h for h in all_hosts if h["id"] != "ecsc-1"])
    faults.reset_hosts([hosts["ecsc-1"]], release=R_IGNORE_TERM)
    ecmc1 = hosts["ecmc-1"]
    with open(labctl.in_root(ecmc1, ecmc1["conf"]["logs"]["server"]), "a") as fh:
        fh.write("01-Dec-2016 00:00:00.000 INFO [main] org.apache.catalina.startup.Catalina"
                 ".start Server startup in [1234] milliseconds\n")
    with open(labctl.app_log(ecmc1), "a") as fh:
        fh.write(f"2016-12-01T00:00:00.000Z INFO ecmc started release={R_GATE}\n")
    g = Gate()
    g.before = snapshot(all_hosts)
    g.pillar = {
        "release": {"id": R_GATE, "sha256": sums},
        "inventory": {"services": {
            "ecsc": {"stop": {"signal": "TERM", "timeout": STOP_TIMEOUT}},
            "ecmc": {"ready_timeout": READY_TIMEOUT},
            "schedule": {"settle": SETTLE},
        }},
    }
    t0 = time.monotonic()
    with Prober([h["id"] for h in all_hosts]) as probe:
        g.proc = orchestrate("orch.upgrade", g.pillar, name="gate")
    g.seconds = round(time.monotonic() - t0, 1)
    g.probe = probe
    g.steps = steps_of(g.proc.stdout)
    g.after = snapshot(all_hosts)
    return g


def _first_host_rolled_back(r, g, first, second):
    """Expectations of a pair whose first host meets a gate fault."""
    r.expect(g.proc.returncode != 0, "run exit status 0")
    r.expect(state_of(g.steps, first, "release_|-rolled-back").get("result") is True,
             f"{first} not rolled back")
    r.expect(g.after[first]["release"] == V1, f"{first} answers {g.after[first]['release']}")
    r.expect(g.after[first]["tree"] == g.before[first]["tree"], f"{first} tree is not v1's")
    r.expect(g.after[second]["release"] == V1, f"{second} was upgraded")


def test_f01_jvm_ignoring_sigterm_is_killed_within_the_timeout(gate, hosts, row):
    r = row("1 JVM ignores SIGTERM",
            f"TERM, then SIGKILL within stop timeout {STOP_TIMEOUT}s; comment says so; upgraded")
    stopped = state_of(gate.steps, "ecsc-1", "javaservice_|-stopped")
    comment = str(stopped.get("comment", ""))
    r["observed"] = f"ecsc-1 stop: {excerpt(comment)}; now {gate.after['ecsc-1']['release']}"
    r["both-down instants"], r["seconds"] = both_down(gate.probe, "ecsc"), gate.seconds
    r.expect(stopped.get("result") is True, "stop state did not succeed")
    r.expect("KILL" in comment, "the stop comment does not say SIGKILL")
    r.expect(not set(gate.before["ecsc-1"]["pids"]) & set(labctl.service_pids(hosts["ecsc-1"])),
             "the ignore-term JVM still runs")
    r.expect(gate.after["ecsc-1"]["release"] == R_GATE, "ecsc-1 not upgraded")
    r.lost(nothing_lost(hosts, gate.before, ["ecsc-1"]))
    r.finish()


def test_f02_crash_right_after_ready_is_caught_by_the_settle_time(gate, hosts, row):
    r = row("2 JVM exits right after ready",
            f"caught during settle ({SETTLE}s); schedule-1 rolled back; schedule-2 untouched")
    why = failed_comments(gate.steps, "schedule-1")
    r["observed"] = (f"rc={gate.proc.returncode}; schedule-1: {excerpt(why[0])}; now "
                     f"{gate.after['schedule-1']['release']}")
    r["both-down instants"], r["seconds"] = both_down(gate.probe, "schedule"), gate.seconds
    _first_host_rolled_back(r, gate, "schedule-1", "schedule-2")
    r.lost(stopped_partners(hosts, gate.before, ["schedule-2"])
           + nothing_lost(hosts, gate.before, ["schedule-1", "schedule-2"]))
    r.finish()


def test_f12_health_200_with_a_fatal_log_line_is_not_ready(gate, hosts, row):
    r = row("12 health 200 + fatal log line",
            "not ready (OutOfMemoryError); schedule-res-1 rolled back; partner untouched")
    why = failed_comments(gate.steps, "schedule-res-1")
    r["observed"] = (f"rc={gate.proc.returncode}; schedule-res-1: {excerpt(why[0])}; now "
                     f"{gate.after['schedule-res-1']['release']}")
    r["both-down instants"], r["seconds"] = both_down(gate.probe, "schedule-res"), gate.seconds
    _first_host_rolled_back(r, gate, "schedule-res-1", "schedule-res-2")
    r.expect(any("OutOfMemoryError" in c for c in why), "the comment does not quote the fatal line")
    r.lost(stopped_partners(hosts, gate.before, ["schedule-res-2"])
           + nothing_lost(hosts, gate.before, ["schedule-res-1", "schedule-res-2"]))
    r.finish()


def test_f13_an_old_started_line_is_never_the_new_start(gate, hosts, row):
    r = row("13 old 'Server startup'/'started' lines",
            "new JVM never logs its start: not ready (timeout); ecmc-1 rolled back")
    why = failed_comments(gate.steps, "ecmc-1")
    r["observed"] = (f"rc={gate.proc.returncode}; ecmc-1: {excerpt(why[0])}; now "
                     f"{gate.after['ecmc-1']['release']}")
    r["both-down instants"], r["seconds"] = both_down(gate.probe, "ecmc"), gate.seconds
    _first_host_rolled_back(r, gate, "ecmc-1", "ecmc-2")
    r.expect(state_of(gate.steps, "ecmc-1", "javaservice_|-ready").get("result") is False,
             "ecmc-1's ready gate passed on an old line")
    r.lost(stopped_partners(hosts, gate.before, ["ecmc-2"])
           + nothing_lost(hosts, gate.before, ["ecmc-1", "ecmc-2"]))
    r.finish()


def test_f11_rollback_with_one_corrupt_backup(gate, hosts, row):
    """After the gate run the ecsc pair runs R_GATE with backups ecsc_<R_GATE>: ecsc-2's is
    damaged; the rollback restores ecsc-1 and refuses ecsc-2, which keeps running."""
    r = row("11 rollback, one backup corrupt",
            "ecsc-2 refuses, keeps running R_GATE, named; ecsc-1 rolled back")
    if not r.expect(gate.after["ecsc-2"]["release"] == R_GATE, "ecsc pair not upgraded"):
        r.finish()
    ecsc = pair(hosts, "ecsc")
    before = snapshot(ecsc)
    backup = install_dir(hosts["ecsc-2"]).with_name(f"ecsc_{R_GATE}")
    jar = backup / "WEB-INF" / "lib" / "ecsc.jar"
    data = bytearray(jar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot in the backup
    jar.write_bytes(bytes(data))
    pillar = {"services": ["ecsc"], "release": {"id": R_GATE},
              "inventory": {"services": {"ecsc": {"stop": {"signal": "TERM",
                                                           "timeout": STOP_TIMEOUT}}}}}
    with Prober([h["id"] for h in ecsc]) as probe:
        proc = orchestrate("orch.rollback", pillar, name="f11")
    after = snapshot(ecsc)
    steps = steps_of(proc.stdout)
    why = [c for s, v in steps.items() if "ecsc-2" in s
           for c in [str(v.get("comment", ""))]] or [text_of(proc)[-300:]]
    r["observed"] = (f"rc={proc.returncode}; ecsc-1 now {after['ecsc-1']['release']}; ecsc-2 "
                     f"now {after['ecsc-2']['release']}: {excerpt(why[0])}")
    r["both-down instants"] = both_down(probe, "ecsc")
    r.expect(proc.returncode != 0, "rollback exit status 0")
    r.expect("ecsc-2" in text_of(proc), "ecsc-2 not named in the output")
    r.expect(after["ecsc-1"]["release"] == R_IGNORE_TERM, "ecsc-1 not rolled back")
    r.expect(after["ecsc-2"]["release"] == R_GATE, "ecsc-2 left its release")
    r.lost(stopped_partners(hosts, before, ["ecsc-2"])
           + nothing_lost(hosts, before, ["ecsc-1", "ecsc-2"],
                          bad_backups={"ecsc-2": [R_GATE]}))
    r.finish()


# ---------------------------------------------------------------- daemons


def test_f03_a_minion_down_before_the_run_refuses_before_anything(lab, hosts, row):
    r = row("3 minion down before the run",
            "pre-flight names schedule-res-2, says how to run the rest; nothing touched; rc!=0")
    res = pair(hosts, "schedule-res")
    faults.reset_hosts(res)
    before = snapshot(res)
    homes = {h["id"]: sorted(p.name for p in install_dir(h).parent.iterdir()) for h in res}
    faults.kill_minion("schedule-res-2", signal.SIGTERM)
    try:
        with Prober([h["id"] for h in res]) as probe:
            proc = orchestrate("orch.upgrade", {"services": ["schedule-res"]}, name="f03")
    finally:
        faults.minion_up("schedule-res-2")
    after = snapshot(res)
    # A failed master-side step (salt.runner) carries its message in changes.return.
    said = [f"{v.get('comment', '')} {(v.get('changes') or {}).get('return', '')}"
            for v in steps_of(proc.stdout).values() if v.get("result") is False]
    named = [text for text in said if "schedule-res-2" in text]
    r["observed"] = f"rc={proc.returncode}: {excerpt(why_failed(proc.stdout), 260)}"
    r["both-down instants"] = both_down(probe, "schedule-res")
    r.expect(proc.returncode != 0, "exit status 0")
    r.expect(bool(named), "no step names schedule-res-2")
    r.expect(any("hosts" in c or "services" in c for c in named),
             "the message does not say how to run the rest (hosts/services pillar)")
    for h in res:
        r.expect(after[h["id"]]["pids"] == before[h["id"]]["pids"], f"{h['id']} was stopped")
        r.expect(after[h["id"]]["tree"] == before[h["id"]]["tree"], f"{h['id']} tree changed")
        r.expect(sorted(p.name for p in install_dir(h).parent.iterdir()) == homes[h["id"]],
                 f"{h['id']}: files appeared beside the program dir")
    r.lost(nothing_lost(hosts, before, [h["id"] for h in res]))
    r.finish()


def _beside(host):
    """Names beside a host's program dir that belong to it (staging, .previous, record,
    backups and their temp dirs)."""
    target = install_dir(host)
    return sorted(p.name for p in target.parent.iterdir()
                  if p.name.startswith((f".{target.name}", f"{target.name}_")))


def _where_left(host):
    """What a host looks like on disk and in its process list (read without its minion)."""
    return f"JVMs {labctl.service_pids(host)}, beside the program dir {_beside(host)}"


def run_report(stdout):
    """The run report's return (H1's report step: {"summary", "reason", "paths"}), or None
    when the output holds no report step."""
    for step in steps_of(stdout).values():
        said = (step.get("changes") or {}).get("return")
        if isinstance(said, dict) and "summary" in said and "reason" in said:
            return said
    return None


RESUMED_RE = re.compile(r"resuming (\S+): an interrupted run left it at '([a-z-]+)'")


def test_f04_minion_killed_between_stop_and_ready(lab, hosts, row):
    r = row("4 minion killed between stop and ready",
            "run fails naming schedule-1 and the step; minion back, one re-run resumes it "
            "(says so), no leftovers")
    sched = pair(hosts, "schedule")
    faults.reset_hosts(sched)
    before = snapshot(sched)
    halt, killed = threading.Event(), {}

    def killer():
        killed["pids"] = faults.kill_minion_once_stopped(
            "schedule-1", before["schedule-1"]["pids"], halt)

    thread = threading.Thread(target=killer, daemon=True)
    pillar = {"services": ["schedule"]}
    with Prober([h["id"] for h in sched]) as probe:
        thread.start()
        proc = orchestrate("orch.upgrade", pillar, name="f04")
        halt.set()
        thread.join(10)
        left = _where_left(hosts["schedule-1"])
        partners = stopped_partners(hosts, before, ["schedule-2"])
        faults.minion_up("schedule-1")
        with events.Listener() as listener:
            again = orchestrate("orch.upgrade", pillar, name="f04-rerun")
    beside = _beside(hosts["schedule-1"])
    leftovers = [n for n in beside if n.startswith(".") and n != ".schedule.release.json"]
    report = run_report(proc.stdout) or {}
    reason = str(report.get("reason") or why_failed(proc.stdout))
    resumed = RESUMED_RE.search(text_of(again))
    resumed_events = [data for _, tag, data in listener.events
                      if tag == "rollout/upgrade/schedule-1/resumed"]
    r["observed"] = (f"killed {killed.get('pids') or 'NEVER'} once the JVM had stopped; "
                     f"rc={proc.returncode}: {excerpt(reason, 140)}; left: {left}; re-run "
                     f"rc={again.returncode}: "
                     f"{excerpt(resumed.group(0) if resumed else 'no resume message')}; then "
                     f"beside {beside}")
    r["both-down instants"] = both_down(probe, "schedule")
    r.expect(bool(killed.get("pids")), "the minion was not killed (its JVM never stopped)")
    r.expect(proc.returncode != 0, "run exit status 0")
    r.expect(report != {}, "the failed run has no run report")
    r.expect("schedule-1: no answer after step '" in reason,
             "the failed run's reason does not name schedule-1 and its last step")
    r.expect(again.returncode == 0, f"re-run failed: {excerpt(text_of(again)[-400:])}")
    r.expect(bool(resumed) and resumed.group(1) == "schedule-1",
             "the re-run does not say it resumed schedule-1")
    r.expect(bool(resumed_events) and bool(resumed_events[0].get("run")),
             "no rollout/upgrade/schedule-1/resumed event carrying the run's token")
    r.expect(not leftovers, f"leftovers beside the program dir after the re-run: {leftovers}")
    r.lost(partners + nothing_lost(hosts, before, ["schedule-1", "schedule-2"]))
    r.finish()


STALL = 25  # seconds: past Salt's liveness ping (timeout 5 s + gather_job_timeout 10 s)


def test_f14_a_minion_too_loaded_to_answer_mid_wave_is_waited_for(lab, hosts, row):
    r = row("14 minion stalled 25 s mid-wave (Salt's liveness ping unanswered)",
            "the wave step asks again and waits: exit 0, both hosts on v2, nothing lost")
    sched = pair(hosts, "schedule")
    faults.reset_hosts(sched)
    before = snapshot(sched)
    stalled = {}

    def on_event(tag, _data):
        # Once schedule-1 began its states: its minion and job process stop answering.
        if tag == "rollout/upgrade/schedule-1/begin" and "thread" not in stalled:
            stalled["thread"] = threading.Thread(target=lambda: stalled.update(
                pids=faults.stall_minion("schedule-1", STALL)), daemon=True)
            stalled["thread"].start()

    with Prober([h["id"] for h in sched]) as probe, events.Listener(on_event):
        proc = orchestrate("orch.upgrade", {"services": ["schedule"]}, name="f14")
    if "thread" in stalled:
        stalled["thread"].join(STALL + 5)
    after = snapshot(sched)
    asked = "schedule-1 still running job" in proc.stderr
    r["observed"] = (f"stalled {stalled.get('pids') or 'NEVER'} for {STALL}s; "
                     f"rc={proc.returncode} in {RUN_SECONDS.get('f14')}s; asked again: {asked}; "
                     f"now on {after['schedule-1']['release']}, {after['schedule-2']['release']}")
    r["both-down instants"] = both_down(probe, "schedule")
    r.expect(bool(stalled.get("pids")), "schedule-1's minion was never stalled")
    r.expect(asked, "Salt's liveness ping did not give up on schedule-1 (nothing shown)")
    r.expect(proc.returncode == 0, f"run failed: {excerpt(why_failed(proc.stdout))}")
    r.expect(after["schedule-1"]["release"] == V2 and after["schedule-2"]["release"] == V2,
             "a host of the pair is not on v2")
    r.lost(nothing_lost(hosts, before, ["schedule-1", "schedule-2"]))
    r.finish()


def test_f05_salt_run_killed_mid_run(lab, hosts, row):
    r = row("5 salt-run SIGKILLed mid-run",
            "lock not stuck (stale lock recognised and reported); re-run completes")
    res = pair(hosts, "schedule-res")
    faults.reset_hosts(res)
    before = snapshot(res)
    pillar = {"services": ["schedule-res"]}
    run = Run("orch.upgrade", pillar)
    killed = threading.Event()

    def on_event(tag, _data):
        if tag == "rollout/upgrade/schedule-res-1/staged" and not killed.is_set():
            run.kill()
            killed.set()

    with Prober([h["id"] for h in res]) as probe:
        with events.Listener(on_event):
            rc = run.wait(timeout=600)
        # At once: the killed run's minion job may still be running (it is not killed with
        # salt-run); the re-run has to cope with that as well as with the lock.
        again = orchestrate("orch.upgrade", pillar, name="f05-rerun")
    out = text_of(again)
    stale = [line for line in out.splitlines() if "stale" in line.lower()]
    r["observed"] = (f"killed at staged: {killed.is_set()} (rc {rc}); re-run rc="
                     f"{again.returncode}: {excerpt(stale[0] if stale else out[-300:])}")
    r["both-down instants"] = both_down(probe, "schedule-res")
    r.expect(killed.is_set(), "salt-run was not killed (no staged event)")
    r.expect(again.returncode == 0, "re-run failed")
    r.expect("another upgrade is running" not in out, "re-run blocked by the dead run's lock")
    r.expect(bool(stale), "the stale lock is not reported")
    r.lost(nothing_lost(hosts, before, ["schedule-res-1", "schedule-res-2"]))
    r.finish()


def test_f06_master_restarted_mid_run(lab, hosts, row):
    r = row("6 salt-master restarted mid-run", "run fails clearly or completes; re-run completes")
    sched = pair(hosts, "schedule")
    faults.reset_hosts(sched)
    before = snapshot(sched)
    pillar = {"services": ["schedule"]}
    restarted = threading.Event()

    def on_event(tag, _data):
        if tag == "rollout/upgrade/schedule-1/staged" and not restarted.is_set():
            restarted.set()
            # Not from the listener's thread: the restart ends the bus it reads.
            threading.Thread(target=faults.restart_master, daemon=True).start()

    with Prober([h["id"] for h in sched]) as probe:
        run = Run("orch.upgrade", pillar)
        with events.Listener(on_event):
            try:
                rc = run.wait(timeout=300)
            except subprocess.TimeoutExpired:
                run.kill()
                rc = "hung (killed after 300 s)"
                run.wait(timeout=30)
        faults.wait_minions()  # every minion back with the new master
        again = orchestrate("orch.upgrade", pillar, name="f06-rerun")
    faults.save_output("f06", run.stdout, run.stderr)
    out = run.stdout + run.stderr
    reason = str((run_report(run.stdout) or {}).get("reason") or why_failed(run.stdout))
    resumed = RESUMED_RE.search(text_of(again))
    r["observed"] = (f"restarted at staged: {restarted.is_set()}; rc={rc}: "
                     f"{excerpt(reason or out[-200:])}; re-run rc={again.returncode}"
                     + (f": {resumed.group(0)}" if resumed else ""))
    r["both-down instants"] = both_down(probe, "schedule")
    r.expect(restarted.is_set(), "master not restarted (no staged event)")
    r.expect(rc == 0 or (isinstance(rc, int) and out.strip()), "the run hung or said nothing")
    r.expect(rc == 0 or ("master" in reason.lower() and "restart" in reason.lower()),
             "the failed run's reason does not say the master restarted")
    r.expect(again.returncode == 0, f"re-run failed: {excerpt(text_of(again)[-400:])}")
    r.lost(nothing_lost(hosts, before, ["schedule-1", "schedule-2"]))
    r.finish()


# ---------------------------------------------------------------- disks and files


def test_f07_disk_full_at_backup_time(lab, hosts, row):
    r = row("7 disk full at backup time",
            "refused before the stop; no partial backup; schedule-1 keeps running")
    host = hosts["schedule-1"]
    with faults.small_disk(host, "8m") as home:
        before = snapshot([host])
        with Prober(["schedule-1"]) as probe:
            proc = orchestrate("orch.upgrade", {"hosts": ["schedule-1"]}, name="f07")
        after = snapshot([host])
        partial = sorted(p.name for p in home.iterdir() if p.name.startswith(("schedule_",
                                                                              ".schedule_")))
        why = failed_comments(steps_of(proc.stdout), "schedule-1")
        if "preflight" in steps_of(proc.stdout) and steps_of(proc.stdout)["preflight"].get(
                "result") is False:
            why = [str(steps_of(proc.stdout)["preflight"].get("comment"))] + why
        r["observed"] = f"rc={proc.returncode}: {excerpt(why[0])}; left {partial}"
        r["both-down instants"] = both_down(probe, "schedule")
        r.expect(proc.returncode != 0, "exit status 0")
        r.expect(after["schedule-1"]["pids"] == before["schedule-1"]["pids"],
                 "schedule-1 was stopped")
        r.expect(after["schedule-1"]["tree"] == before["schedule-1"]["tree"], "tree changed")
        r.expect(not partial, f"partial backup left: {partial}")
        r.lost(nothing_lost(hosts, before, ["schedule-1"]))
    r.finish()


def test_f08_disk_full_during_the_swap(lab, hosts, row):
    r = row("8 disk full during the swap",
            "live tree whole (old or new), never a mix; one re-run (space back) finishes")
    host = hosts["schedule-1"]
    v2_tree = None
    with faults.small_disk(host, "100m") as home:
        before = snapshot([host])
        filled = {}

        def on_event(tag, _data):
            if tag == "rollout/upgrade/schedule-1/backed-up" and not filled:
                filled["path"] = faults.fill_disk(home)

        with Prober(["schedule-1"]) as probe:
            with events.Listener(on_event):
                proc = orchestrate("orch.upgrade", {"hosts": ["schedule-1"]}, name="f08")
            live = file_map(install_dir(host))
            if filled:
                os.unlink(filled["path"])
            again = orchestrate("orch.upgrade", {"hosts": ["schedule-1"]}, name="f08-rerun")
            v2_tree = file_map(install_dir(host))
        whole = ("old" if live == before["schedule-1"]["tree"] else
                 "new" if live == v2_tree else "MIXED")
        why = failed_comments(steps_of(proc.stdout), "schedule-1")
        r["observed"] = (f"filled at backed-up: {bool(filled)}; rc={proc.returncode}: "
                         f"{excerpt(why[0], 120)}; live tree {whole}; re-run rc={again.returncode}")
        r["both-down instants"] = both_down(probe, "schedule")
        r.expect(bool(filled), "disk not filled (no backed-up event)")
        r.expect(whole != "MIXED", "the live tree is a mix of two releases")
        r.expect(again.returncode == 0, f"re-run failed: {excerpt(text_of(again)[-400:])}")
        r.lost(nothing_lost(hosts, before, ["schedule-1"]))
    r.finish()


def test_f09_corrupt_artifact_stops_no_host_of_its_service(lab, hosts, row):
    r = row("9 corrupt artifact on the master", "pre-flight refuses (sha256); no schedule host stops")
    sched = pair(hosts, "schedule")
    faults.reset_hosts(sched)
    before = snapshot(sched)
    with faults.flip_byte(labctl.ARTIFACTS / V2 / "schedule.tar"):
        with Prober([h["id"] for h in sched]) as probe:
            proc = orchestrate("orch.upgrade", {"services": ["schedule"]}, name="f09")
    after = snapshot(sched)
    pre = steps_of(proc.stdout).get("preflight", {})
    why = [v.get("comment", "") for h in sched for v in host_states(pre, h["id"]).values()
           if isinstance(v, dict) and v.get("result") is False]
    r["observed"] = (f"rc={proc.returncode}; pre-flight: {excerpt(pre.get('comment', ''))}: "
                     f"{excerpt(why[0] if why else '', 200)}")
    r["both-down instants"] = both_down(probe, "schedule")
    r.expect(proc.returncode != 0, "exit status 0")
    r.expect(pre.get("result") is False, "pre-flight did not refuse")
    r.expect("sha256" in json.dumps(pre), "sha256 mismatch not named")
    for h in sched:
        r.expect(after[h["id"]]["pids"] == before[h["id"]]["pids"], f"{h['id']} stopped")
        r.expect(after[h["id"]]["tree"] == before[h["id"]]["tree"], f"{h['id']} tree changed")
    r.lost(nothing_lost(hosts, before, [h["id"] for h in sched]))
    r.finish()


def test_f10_backup_killed_mid_copy_leaves_no_false_backup(lab, hosts, row):
    r = row("10 backup killed mid-copy (power loss)",
            "no dir a later run takes for a good backup; service untouched; re-run finishes")
    host = hosts["schedule-1"]
    faults.reset_hosts([host])
    big = install_dir(host) / "lib" / "big.dat"
    with open(big, "wb") as fh:  # sparse: instant to make, slow enough to copy
        fh.truncate(768 << 20)
    before = snapshot([host])
    parent = install_dir(host).parent
    killed, halt = {}, threading.Event()

    def killer():
        while not halt.is_set() and not killed:
            for tmp in parent.glob(f".schedule_{V2}.tmp-*"):
                pids = faults.kill_jobs_in("schedule-1", tmp)
                if pids:
                    killed.update(pids=pids, tmp=tmp.name)
            time.sleep(0.01)

    thread = threading.Thread(target=killer, daemon=True)
    pillar = {"hosts": ["schedule-1"]}
    with Prober(["schedule-1"]) as probe:
        thread.start()
        proc = orchestrate("orch.upgrade", pillar, name="f10")
        halt.set()
        thread.join(5)
        mid = snapshot([host])
        listed = [p.name for p in parent.iterdir() if p.name.startswith(("schedule_", ".schedule_"))]
        again = orchestrate("orch.upgrade", pillar, name="f10-rerun")
    r["observed"] = (f"killed {killed.get('pids')} copying into {killed.get('tmp')}; "
                     f"rc={proc.returncode}; beside: {sorted(listed)}; re-run rc={again.returncode}")
    r["both-down instants"] = both_down(probe, "schedule")
    r.expect(bool(killed), "no job was killed mid-copy")
    r.expect(proc.returncode != 0, "exit status 0")
    r.expect(mid["schedule-1"]["pids"] == before["schedule-1"]["pids"], "service was stopped")
    r.expect(f"schedule_{V2}" not in listed, "a final-named backup exists after the kill")
    r.expect(again.returncode == 0, f"re-run failed: {excerpt(text_of(again)[-400:])}")
    r.lost(nothing_lost(hosts, before, ["schedule-1"]))
    r.finish()
