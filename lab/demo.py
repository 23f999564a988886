"""`make demo`: the lab at release v1, then the real upgrade to v2 with live progress, a per-host
result table and the two fixed issues shown on the running services.

    python -m lab.demo

The progress lines are the orchestration's own events (tags ``rollout/upgrade/<host>/<step>``)
read from the master's event bus, as an operator would with ``salt-run state.event``. Each
host's downtime is what the availability prober (lab/prober.py) saw from outside: its health URL
polled every 50 ms during the whole run; its full report goes to ``.lab/demo-prober.json``.
"""

import json
import os
import sys
import time

from lab import events, labctl
from lab.prober import Prober

PROBER_REPORT = labctl.LAB / "demo-prober.json"


def event_printer():
    """A callback printing each rollout event as a progress line, timed from now."""
    t0 = time.monotonic()

    def show(tag, data):
        _, kind, host, step = (tag.split("/") + ["", "", "", ""])[:4]
        if kind not in ("upgrade", "rollback") or step in events.MARKERS:
            return  # the report's marker, a host's begin/end: no step to show
        print(f"  [{time.monotonic() - t0:5.1f}s] {kind:<8} {host:<15} {step:<12}"
              f" {data.get('service', '')} {data.get('release', data.get('tag', ''))}",
              flush=True)

    return show


def show_issues():
    """#9427 as ecmc-1 answers it now, and schedule-1's newest money lines."""
    ecmc = next(h for h in labctl.load_hosts() if h["id"] == "ecmc-1")
    url = f"http://{ecmc['address']}:8080/ecmc/customers"
    status, body = _get(url)
    balance = next((c["balance"] for c in json.loads(body, parse_float=str)["customers"]
                    if c["id"] == 1), None) if status == 200 else body
    print(f"  #9427  GET {url} -> customer 1 balance {balance} (stored: 12.345)")
    sched = next(h for h in labctl.load_hosts() if h["id"] == "schedule-1")
    money = [line for line in labctl.app_log(sched).read_text().splitlines()
             if "log.money." in line]
    print("  log.money lines on schedule-1, newest two:")
    for line in money[-2:]:
        print("    " + line)


def host_snapshot():
    rows = {}
    for host in labctl.load_hosts():
        info = labctl.health(host) or {}
        rows[host["id"]] = {"release": info.get("release"), "pids": labctl.service_pids(host)}
    return rows


def orchestrate(sls, *extra):
    return labctl.salt_cmd("salt-run", "--out=json", "state.orchestrate", sls, *extra,
                           timeout=1800)


def _steps(proc):
    """(step id, its return) of each orchestration step, from the JSON output."""
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        return
    data = data.get("data", data)
    for minion_ret in data.values():
        if not isinstance(minion_ret, dict):
            continue
        for key, ret in minion_ret.items():
            yield (key.split("_|-")[1] if "_|-" in key else key), (ret or {})


def step_results(proc):
    """{host: (result, seconds, comment)} from the orchestration's JSON output."""
    return {
        sid[len("upgrade-"):]: (
            ret.get("result"), (ret.get("duration") or 0) / 1000.0, ret.get("comment", ""))
        for sid, ret in _steps(proc) if sid.startswith("upgrade-")
    }


def report_paths(proc):
    """{"json", "md", "svg"}: the run report the orchestration's report step wrote."""
    for sid, ret in _steps(proc):
        returned = (ret.get("changes") or {}).get("return")
        if sid.startswith("rollout-report") and isinstance(returned, dict):
            return returned.get("paths") or {}
    return {}


def main():
    print("== 1. the rehearsal lab, at release v1 (as deployed by hand)")
    labctl.up(None)
    if any(row["release"] != labctl.RELEASE_V1 for row in host_snapshot().values()):
        labctl.reset(None)
    print("  the two issues as the runbook describes them (v1):")
    show_issues()
    before = host_snapshot()

    print(f"\n== 2. salt-run state.orchestrate orch.upgrade  (v1 {labctl.RELEASE_V1}"
          f" -> v2 {labctl.RELEASE_V2}), live progress from the event bus:")
    with events.Listener(on_event=event_printer()), Prober() as probe:
        t0 = time.monotonic()
        proc = orchestrate("orch.upgrade")
        elapsed = time.monotonic() - t0
    availability = probe.report()
    PROBER_REPORT.write_text(json.dumps(availability, indent=2) + "\n")
    after = host_snapshot()
    results = step_results(proc)

    print(f"\n== 3. result per host (orchestration exit code {proc.returncode},"
          f" {elapsed:.0f}s wall)")
    fmt = "{:<15} {:<13} {:<21} {:<17} {:<7} {:<10} {}"
    print(fmt.format("HOST", "SERVICE", "RELEASE", "JVM PID", "RESULT", "STEP TIME",
                     "DOWNTIME (prober)"))
    for host in labctl.load_hosts():
        hid = host["id"]
        result, seconds, _ = results.get(hid, (None, 0, ""))
        down = availability["hosts"][hid]
        print(fmt.format(
            hid, host["service"],
            f"{before[hid]['release']} -> {after[hid]['release']}",
            f"{before[hid]['pids'][:1]} -> {after[hid]['pids'][:1]}",
            {True: "ok", False: "FAILED", None: "-"}[result], f"{seconds:.1f}s",
            f"{down['down_s']:.2f}s in {down['down_count']} window(s)",
        ))
    print("  both hosts of a pair down at once: " + ", ".join(
        f"{service} {row['both_down']}" for service, row in availability["services"].items())
        + f"  (prober report: {PROBER_REPORT.relative_to(labctl.REPO)})")
    if proc.returncode != 0:
        failed = {h: c for h, (r, _, c) in results.items() if r is False}
        print("\nFAILED:", json.dumps(failed, indent=2)[:4000] or proc.stdout[-4000:],
              proc.stderr[-2000:])

    print("\n== 4. the fixed issues, on the running services (v2)")
    show_issues()

    print("\nThe lab stays up. Next:")
    print("  . .venv/bin/activate && salt-run state.orchestrate orch.rollback   # back to v1")
    print("  salt-run state.event pretty=True                                   # watch events")
    print("  make lab-status    make lab-reset    make lab-down")
    paths = report_paths(proc)
    print("\nThe run report (runner rolloutreport; the last runs are kept on the master):")
    for kind, what in (("md", "readable"), ("json", "for scripts"), ("svg", "timeline")):
        print(f"  {what:<12} {paths.get(kind) or '(not written: see the report step above)'}")
    return proc.returncode


def _get(url):
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except OSError as exc:
        return None, str(exc)


if __name__ == "__main__":
    os.chdir(labctl.REPO)
    sys.exit(main())
