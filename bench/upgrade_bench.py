"""`make bench`: issue 10's figures on the lab, several runs each, medians with min-max, as a
table and as `.bench/latest.json` (details, raw runs and the profile in `.bench/detail.json`).

    .venv/bin/python bench/upgrade_bench.py [--runs 3] [--quick] [--skip-slow] [--skip-backup]

    BENCH_RUNS=1 make bench      # or make bench QUICK=1: one run of each

Every figure is a whole process (`salt-run ...`, `salt ...`, `python -m lab.floor`) timed
from outside. Each run of a measurement takes the lab lock (`/tmp/lab.lock`, flock) for
itself only, so other lab users wait minutes, not the whole bench:

- fast round: lab reset to v1 -> `orch.upgrade` v1->v2 with the availability prober and the
  JSON output (JVM stop and start-to-ready from its state changes) -> lab memory -> a no-op
  `orch.upgrade` -> `salt '*' test.ping` -> `orch.compliance` -> Salt's own minimum (below)
  -> reset -> the floor
  (`lab.floor`) under the same prober (its polls load the JVMs and the cores: both are timed
  under that load) -> reset -> `orch.upgrade pillar='{"parallel": false}'`;
- slow round: v2 rebuilt with services that take 20 s to become ready (lab/build.py
  --ready-delay), reset -> `orch.upgrade` -> reset -> the floor; the lab's normal v2 and
  pillar come back with the reset that ends the round;
- backup: bench/backup_bench.py (backup.create / cp -a, 200 MB, 5,000 files; no lab).
The bench ends with the lab reset to v1.

Salt's own minimum, timed in the fast round beside the figures it bounds, as whole `salt-run`
processes of `state.orchestrate_high` (no SLS of ours, no work on any host):
- `salt_state_round_s`: one no-op state job (`state.single test.nop`) on the first host of
  every service. Any orchestration that upgrades these hosts through SLS states runs at least
  this much before and around their work (the salt-run process, the orchestration, a state
  job's publish, pillar, compile and return), so `upgrade_minus_floor_s` cannot be below it;
- `salt_ping_round_s`: one `test.ping` on every host, the least an orchestration that asks
  every host once (`orch.compliance`) can take.
The table names a goal set below its minimum.
"""

import argparse
import contextlib
import fcntl
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab import build, labctl  # noqa: E402  pylint: disable=wrong-import-position
from lab.prober import Prober  # noqa: E402  pylint: disable=wrong-import-position

OUT_DIR = labctl.REPO / ".bench"
LOCK = "/tmp/lab.lock"
SLOW_READY_S = 20
# key: (goal as text, test of a median), in the order of the table.
GOALS = {
    "upgrade_minus_floor_s": ("<= 3", lambda v: v <= 3),
    "upgrade_over_floor": (None, None),
    "upgrade_over_floor_slow": ("<= 1.15", lambda v: v <= 1.15),
    "noop_upgrade_s": ("<= 4", lambda v: v <= 4),
    "noop_over_ping": ("<= 3", lambda v: v <= 3),
    "downtime_excess_s": ("<= 0.5", lambda v: v <= 0.5),
    "both_down": ("0", lambda v: v == 0),
    "serial_over_parallel": (None, None),
    "compliance_s": ("<= 3", lambda v: v <= 3),
    "lab_rss_mib": (None, None),
    "backup_over_cp": ("<= 1.3", lambda v: v <= 1.3),
    "salt_state_round_s": (None, None),
    "salt_ping_round_s": (None, None),
}
#: figure -> the figure of Salt's own minimum it cannot be below (see the docstring).
SALT_MINIMUM = {
    "upgrade_minus_floor_s": "salt_state_round_s",
    "compliance_s": "salt_ping_round_s",
}


_HELD = []


@contextlib.contextmanager
def lab_lock(what):
    """The lab lock (the same flock(2) lock as `flock /tmp/lab.lock ...`), for one round.

    Re-entrant within this process: a bench that must keep the lab for a whole series (the
    scale bench resizes it) holds it around rounds that take it themselves."""
    if _HELD:
        yield
        return
    with open(LOCK, "a", encoding="utf-8") as handle:
        waited = time.monotonic()
        fcntl.flock(handle, fcntl.LOCK_EX)
        print(f"  [{what}: lab lock after {time.monotonic() - waited:.0f}s wait, "
              f"load {os.getloadavg()[0]:.2f}]", flush=True)
        _HELD.append(what)
        try:
            yield
        finally:
            _HELD.pop()
            fcntl.flock(handle, fcntl.LOCK_UN)


def timed(*argv, timeout=1800):
    """(seconds, CompletedProcess) of one whole process run from the repo root."""
    env = labctl.salt_env()
    began = time.monotonic()
    proc = subprocess.run(list(argv), cwd=labctl.REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return time.monotonic() - began, proc


def must(seconds_proc, what):
    seconds, proc = seconds_proc
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"bench: {what} failed (exit {proc.returncode})")
    return seconds, proc


def reset():
    """Every lab host back to v1 (make lab-reset), its chatter kept off the table."""
    quiet(labctl.reset)


def quiet(func):
    """Call ``func(None)`` (a labctl command: args None) with its stdout thrown away."""
    with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.redirect_stdout(devnull):
        func(None)


def orchestrate(sls, *extra):
    return timed("salt-run", "--out=json", "state.orchestrate", sls, *extra)


def orchestrate_high(data):
    return timed("salt-run", "--out=json", "state.orchestrate_high", data)


def floor():
    return timed(str(labctl.VENV_BIN / "python"), "-m", "lab.floor")


def first_hosts(hosts):
    """The first host of every service, in the lab's order (the runbook's first wave)."""
    first = {}
    for host in hosts:
        first.setdefault(host["service"], host["id"])
    return list(first.values())


def minimal_orchestration(fun, targets, *args):
    """An orchestration of one job, ``fun`` on the minions ``targets``, as high data for
    `salt-run state.orchestrate_high` (nothing of ours renders or runs)."""
    # High data takes the state module and function apart ("salt.function" is SLS shorthand).
    step = ["function", {"name": fun}, {"tgt": list(targets)}, {"tgt_type": "list"}]
    if args:
        step.append({"arg": list(args)})
    return json.dumps({"minimum": {"salt": step}})


def minimal_step_passed(stdout):
    """Whether the one step of a minimal orchestration ran and passed (an orchestration of
    high data Salt does not take returns nothing, and would time only salt-run itself)."""
    steps = orch_steps(stdout)
    return set(steps) == {"minimum"} and steps["minimum"].get("result") is True


def salt_minimum(hosts):
    """(seconds of one no-op state job on the first wave's hosts, seconds of one test.ping
    on every host): each a whole `salt-run state.orchestrate_high` process."""
    found = []
    for what, data in (
            ("one no-op state job", minimal_orchestration(
                "state.single", first_hosts(hosts), "test.nop", "minimum")),
            ("one test.ping", minimal_orchestration("test.ping", [h["id"] for h in hosts]))):
        seconds, proc = must(orchestrate_high(data), f"orchestration of {what}")
        if not minimal_step_passed(proc.stdout):
            print(proc.stdout[-3000:], file=sys.stderr)
            raise SystemExit(f"bench: the orchestration of {what} did not run its step")
        found.append(seconds)
    return tuple(found)


def below_minimum(result):
    """Lines naming each goal set below Salt's own minimum measured in the same run."""
    lines = []
    for key, minimum in SALT_MINIMUM.items():
        row, floor_row = result.get(key) or {}, result.get(minimum) or {}
        goal, met = GOALS[key]
        least = floor_row.get("median")
        if not row or least is None:
            continue
        row["salt_minimum"] = least
        if not met(least):
            lines.append(f"{key}: goal {goal}, but {minimum} (Salt alone, no work) took "
                         f"{least:.3f} (median) in this run: the goal is below Salt's own "
                         "minimum on this machine")
    return lines


# ---------------------------------------------------------------- reading the run's JSON


def _state_id(key):
    return key.split("_|-")[1] if "_|-" in key else key


def last_json_document(stdout):
    """The last JSON document a `salt-run --out=json` printed (a document starts at a "{"
    line; Salt may print other lines, such as "No minions matched the target", between)."""
    decoder, found, at = json.JSONDecoder(), None, 0
    while True:
        at = stdout.find("{", at)
        if at < 0:
            break
        if at == 0 or stdout[at - 1] == "\n":
            try:
                found, at = decoder.raw_decode(stdout, at)
                continue
            except ValueError:
                pass
        at += 1
    if not isinstance(found, dict):
        raise ValueError(f"no JSON document in salt-run's output: {stdout[-300:]!r}")
    return found


def orch_steps(stdout):
    """{orchestration step id: ret} from `salt-run --out=json state.orchestrate` (or
    `state.orchestrate_high`, which prints a progress document before its return)."""
    data = last_json_document(stdout)
    data = data.get("data", data)
    steps = {}
    for minion_ret in data.values():
        if isinstance(minion_ret, dict):
            for key, ret in minion_ret.items():
                if isinstance(ret, dict):
                    steps[_state_id(key)] = ret
    return steps


def host_states(step):
    """{minion: {state id: ret}} of one salt.state step."""
    ret = (step.get("changes") or {}).get("ret") or {}
    return {minion: {_state_id(k): v for k, v in states.items()}
            for minion, states in ret.items() if isinstance(states, dict)}


def jvm_seconds(steps):
    """{host: the JVM's own stop (signal to gone) + start-to-ready seconds} from the states'
    own changes (``seconds`` of the stop also holds the scan before the signal: tool time)."""
    found = {}
    for sid, step in steps.items():
        if not sid.startswith("upgrade-"):
            continue
        for minion, states in host_states(step).items():
            stop = ((states.get("stopped") or {}).get("changes") or {}).get("stopped") or {}
            ready = ((states.get("ready") or {}).get("changes") or {}).get("started") or {}
            stop_s = stop.get("signal_seconds", stop.get("seconds"))
            if stop_s is not None and "seconds" in ready:
                found[minion] = stop_s + ready["seconds"]
    return found


def profile(steps):
    """Where the orchestration's seconds go: each orchestration step (start offset and
    duration) and, per host, the minion's states against the salt.state step around them."""
    def start_s(ret):
        text = ret.get("start_time") or "00:00:00.0"
        h, m, s = text.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    if not steps:
        return {}
    t0 = min(start_s(r) for r in steps.values())
    rows = []
    for sid, ret in steps.items():
        row = {"step": sid, "start_s": round(start_s(ret) - t0, 3),
               "seconds": round((ret.get("duration") or 0) / 1000, 3), "result": ret.get("result")}
        states = host_states(ret)
        if states and sid.startswith(("upgrade-", "preflight")):
            work = {}
            for minion, minion_states in states.items():
                per = {k: round((v.get("duration") or 0) / 1000, 3)
                       for k, v in minion_states.items() if isinstance(v, dict)}
                work[minion] = {"states_s": round(sum(per.values()), 3), "per_state": per}
            row["minions"] = work
            if len(work) == 1:
                only = next(iter(work.values()))
                row["salt_overhead_s"] = round(row["seconds"] - only["states_s"], 3)
        rows.append(row)
    rows.sort(key=lambda r: r["start_s"])
    return {"steps": rows}


def format_profile(prof):
    """The profile as text: one line per orchestration step; for a host's salt.state step
    the minion's own state time, the Salt overhead around it and its slowest states."""
    lines = [f"{'STEP':<30} {'START':>7} {'SECONDS':>8} {'STATES':>7} {'OVERHEAD':>8}  "
             "SLOWEST STATES (s)"]
    for row in prof.get("steps", []):
        states = overhead = slowest = ""
        minions = row.get("minions") or {}
        if len(minions) == 1:
            only = next(iter(minions.values()))
            states = f"{only['states_s']:.2f}"
            overhead = f"{row['salt_overhead_s']:.2f}"
            top = sorted(only["per_state"].items(), key=lambda kv: -kv[1])[:4]
            slowest = ", ".join(f"{k} {v:.2f}" for k, v in top)
        elif minions:
            states = f"{max(m['states_s'] for m in minions.values()):.2f}"
            slowest = "max over " + str(len(minions)) + " minions"
        lines.append(f"{row['step']:<30} {row['start_s']:>7.2f} {row['seconds']:>8.2f} "
                     f"{states:>7} {overhead:>8}  {slowest}")
    return "\n".join(lines)


# ---------------------------------------------------------------- rounds


def fast_round(figures, detail, keep_json, last):
    with lab_lock("fast round"):
        quiet(labctl.up)  # idempotent: starts whatever of the lab is not running
        reset()
        with Prober() as probe:
            up_s, up = must(orchestrate("orch.upgrade"), "orch.upgrade")
        seen = probe.report()
        steps = orch_steps(up.stdout)
        jvm = jvm_seconds(steps)
        excess = {h: round(seen["hosts"][h]["down_s"] - s, 3) for h, s in jvm.items()}
        mem = labctl.memory()
        noop_s, _ = must(orchestrate("orch.upgrade"), "no-op orch.upgrade")
        ping_s, _ = must(timed("salt", "*", "test.ping"), "salt '*' test.ping")
        comp_s, comp = orchestrate("orch.compliance")
        state_round_s, ping_round_s = salt_minimum(labctl.load_hosts())
        reset()
        # The floor runs under the same prober: its polls (20 per second per host) take CPU
        # from the JVMs and tools alike (+2.9 s on the floor's 14.4 s, 3 runs each, on the
        # lab's 2 cores), so the two are timed under the same load.
        with Prober() as floor_probe:
            floor_s, fl = must(floor(), "lab.floor")
        floor_seen = floor_probe.report()
        reset()
        serial_s, _ = must(orchestrate("orch.upgrade", 'pillar={"parallel": false}'),
                           "orch.upgrade parallel: false")
        if last:
            reset()  # the bench leaves the lab at v1
    figures["upgrade_minus_floor_s"].append(up_s - floor_s)
    figures["upgrade_over_floor"].append(up_s / floor_s)
    figures["noop_upgrade_s"].append(noop_s)
    figures["noop_over_ping"].append(noop_s / ping_s)
    figures["downtime_excess_s"].append(max(excess.values()) if excess else float("nan"))
    figures["both_down"].append(seen["both_down"])
    figures["serial_over_parallel"].append(serial_s / up_s)
    figures["compliance_s"].append(comp_s)
    figures["lab_rss_mib"].append(mem["total"]["rss_mib"])
    figures["salt_state_round_s"].append(state_round_s)
    figures["salt_ping_round_s"].append(ping_round_s)
    detail["runs"].append({
        "round": "fast", "load": os.getloadavg()[0], "upgrade_s": up_s, "floor_s": floor_s,
        "noop_s": noop_s, "ping_s": ping_s, "compliance_s": comp_s,
        "compliance_rc": comp.returncode, "serial_s": serial_s, "memory": mem,
        "downtime_by_prober": {h: r["down_s"] for h, r in seen["hosts"].items()},
        "floor_downtime_by_prober": {h: r["down_s"] for h, r in floor_seen["hosts"].items()},
        "floor_both_down": floor_seen["both_down"],
        "jvm_stop_plus_ready": jvm, "downtime_excess": excess, "floor_stdout": fl.stdout,
        "profile": profile(steps)})
    if keep_json:
        (OUT_DIR / "upgrade-run.json").write_text(up.stdout)


def slow_build():
    """v2 rebuilt with services that take SLOW_READY_S to become ready; pillar to match."""
    build.build_release(labctl.RELEASE_V2, "v2", labctl.ARTIFACTS, ready_delay=SLOW_READY_S)
    labctl.write_pillar(labctl.load_hosts())


def slow_round(figures, detail):
    with lab_lock("slow round"):
        try:
            reset()
            slow_build()
            up_s, _ = must(orchestrate("orch.upgrade"), "orch.upgrade (slow services)")
            reset()
            slow_build()
            floor_s, _ = must(floor(), "lab.floor (slow services)")
        finally:
            reset()  # the normal v2 archives and the pillar's sha256 come back with it
    figures["upgrade_over_floor_slow"].append(up_s / floor_s)
    detail["runs"].append({"round": "slow", "ready_delay_s": SLOW_READY_S, "upgrade_s": up_s,
                           "floor_s": floor_s, "load": os.getloadavg()[0]})


def backup_round(figures, detail, runs):
    out = OUT_DIR / "backup.json"
    _, proc = timed(str(labctl.VENV_BIN / "python"), "bench/backup_bench.py", "--runs",
                    str(runs), "--json", str(out))
    data = json.loads(out.read_text())
    figures["backup_over_cp"].extend(data["ratios"])
    detail["backup"] = {**data, "stdout": proc.stdout}


# ---------------------------------------------------------------- report


def summarise(figures):
    result = {}
    for key, (goal, test) in GOALS.items():
        values = [v for v in figures.get(key, []) if v == v]  # drop NaN
        if not values:
            result[key] = {"median": None, "min": None, "max": None, "runs": 0, "goal": goal,
                           "met": None}
            continue
        median = statistics.median(values)
        result[key] = {"median": round(median, 3), "min": round(min(values), 3),
                       "max": round(max(values), 3), "runs": len(values), "goal": goal,
                       "met": bool(test(median)) if test else None}
    return result


def table(result, load):
    lines = [f"{'FIGURE':<25} {'MEDIAN':>9} {'MIN-MAX':>19} {'GOAL':>8}  MET  RUNS"]
    for key, row in result.items():
        if row["median"] is None:
            lines.append(f"{key:<25} {'-':>9} {'-':>19} {row['goal'] or '-':>8}  -    0")
            continue
        met = {True: "yes", False: "NO", None: "-"}[row["met"]]
        lines.append(f"{key:<25} {row['median']:>9.3f} {row['min']:>9.3f}-{row['max']:<9.3f}"
                     f" {row['goal'] or '-':>8}  {met:<4} {row['runs']}")
    lines.append(f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} "
                 f"on {os.cpu_count()} cpus")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", 3)))
    parser.add_argument("--quick", action="store_true", help="one run of each")
    parser.add_argument("--skip-slow", action="store_true", help="no 20 s-services round")
    parser.add_argument("--skip-backup", action="store_true", help="no backup/cp round")
    parser.add_argument("--profile", metavar="JSON",
                        help="only print the profile of a saved `salt-run --out=json "
                        "state.orchestrate orch.upgrade` output (e.g. .bench/upgrade-run.json)")
    args = parser.parse_args(argv)
    if args.profile:
        print(format_profile(profile(orch_steps(pathlib.Path(args.profile).read_text()))))
        return 0
    runs = 1 if args.quick else max(args.runs, 1)
    os.chdir(labctl.REPO)
    OUT_DIR.mkdir(exist_ok=True)
    load_start = os.getloadavg()[0]
    figures = {key: [] for key in GOALS}
    detail = {"runs": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for run in range(runs):
        print(f"run {run + 1}/{runs}: fast round", flush=True)
        # The slow round ends with a reset; without it the last fast round does.
        fast_round(figures, detail, keep_json=run == 0, last=args.skip_slow and run == runs - 1)
        if not args.skip_slow:
            print(f"run {run + 1}/{runs}: slow round ({SLOW_READY_S} s services)", flush=True)
            (OUT_DIR / "partial.json").write_text(json.dumps(figures, indent=2) + "\n")
            slow_round(figures, detail)
        (OUT_DIR / "partial.json").write_text(json.dumps(figures, indent=2) + "\n")
    if not args.skip_backup:
        print("backup.create / cp -a", flush=True)
        backup_round(figures, detail, runs)
    result = summarise(figures)
    limits = below_minimum(result)
    load = (load_start, os.getloadavg()[0])
    detail.update(figures=figures, load=load, summary=result)
    (OUT_DIR / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT_DIR / "detail.json").write_text(json.dumps(detail, indent=2, default=str) + "\n")
    print(table(result, load))
    for line in limits:
        print(line)
    if detail["runs"] and detail["runs"][0].get("profile"):
        print("\nwhere the first orch.upgrade's seconds went (.bench/upgrade-run.json):")
        print(format_profile(detail["runs"][0]["profile"]))
    print(f"written: {OUT_DIR / 'latest.json'} (details: {OUT_DIR / 'detail.json'})")
    return 0 if all(r["met"] is not False for r in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
