"""
The run report of an ``orch.upgrade`` or ``orch.rollback``: master-side code (it reads the
master's event journal and writes under its cache dir; never synced to minions).

:depends: the master's event journal (``event_return: rawfile_json``,
          ``event_return_whitelist: ['rollout/*']``, ``rawfile_json.filename``), psutil,
          matplotlib (the timeline picture, imported only when one is drawn)

Every host step of a run fires ``rollout/<kind>/<host>/<step>`` with ``run`` (the
orchestration's owner token) in its data; the master appends each of those events, stamped
with the time it saw it, as one JSON line to ``rawfile_json.filename``. The orchestrations'
last steps call :func:`write`, which keeps this run's events (``run`` == owner) and writes

    <master cachedir>/rollout/reports/<YYYYmmdd-HHMMSS>-<kind>-<run[:8]>.json   (machines)
    <master cachedir>/rollout/reports/<YYYYmmdd-HHMMSS>-<kind>-<run[:8]>.md     (people)
    <master cachedir>/rollout/reports/<YYYYmmdd-HHMMSS>-<kind>-<run[:8]>.svg    (timeline;
                                                                      none when no host had a step)

(the lab: ``.lab/master/var/cache/salt/master/rollout/reports/``), keeping the newest
``keep`` runs (pillar ``release:keep_reports``, default 20).

A step runs from the host's previous event to its own (events fire as each step ends; the
first, ``begin``, as the host's state run starts; ``end`` as it finishes). A host's
downtime runs from the start of its ``stopped`` step to the end of ``ready`` (or of
``rolled-back``); a rollback's is its ``restored`` step, an upper bound. Host results:
``ok``, ``FAILED`` (failed before its stop, nothing to roll back, or its rollback failed),
``rolled back``, ``no change``, ``no answer`` (the host's state run started but its ``end``
never came: the minion or the master went away), ``not run`` (no event: e.g. the partner of a
failed host).
"""

import datetime
import json
import logging
import os
import re
import subprocess
import sys
import time

import psutil
import salt.utils.atomicfile
import salt.utils.event
import salt.utils.user
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "rolloutreport"

REPORT_SUBDIR = os.path.join("rollout", "reports")
KEEP_DEFAULT = 20
# <YYYYmmdd-HHMMSS>-<kind>-<run prefix>.<ext>: only files of this shape are ever pruned.
REPORT_NAME = re.compile(
    r"^(\d{8}-\d{6}-(?:upgrade|rollback)-[0-9A-Za-z]{1,8})\.(json|md|svg(?:\.log|\.tmp)?)$")
# How long the report waits for the journal to hold its own marker event (all events
# fired before it are then on disk): the returner writes each event as it comes.
JOURNAL_WAIT = 5.0
JOURNAL_POLL = 0.05
# Steps drawn in the timeline, in the order a host goes through them, one colour each.
STEP_COLOURS = {
    "staged": "#9ecae1",
    "backed-up": "#3182bd",
    "stopped": "#fd8d3c",
    "swapped": "#e6550d",
    "ready": "#31a354",
    "verified": "#a1d99b",
    "failed": "#de2d26",
    "rolled-back": "#756bb1",
    "restored": "#756bb1",
}
BOTH_DOWN_COLOUR = "#cb181d"
TERMINAL = {"failed", "rolled-back"}


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------- reading


def _stamp(text):
    """Seconds since the epoch of an event's ``_stamp`` (ISO 8601, UTC), or None."""
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


def parse_event(line, run):
    """
    One journal line as ``{"kind", "host", "step", "at", "data"}`` when it is a host step of
    run ``run``, else None (other runs, other tags, a torn last line).
    """
    if run not in line:  # cheap skip of other runs' lines before parsing JSON
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    tag = str(record.get("tag") or "")
    outer = record.get("data") or {}
    data = outer.get("data", outer) if isinstance(outer, dict) else {}
    parts = tag.split("/")
    if len(parts) != 4 or parts[0] != "rollout" or not isinstance(data, dict):
        return None
    if data.get("run") != run:
        return None
    at = _stamp(outer.get("_stamp"))
    if at is None:
        return None
    return {"kind": parts[1], "host": parts[2], "step": parts[3], "at": at, "data": data}


def read_journal(path, run):
    """This run's host step events from the journal file ``path``, oldest first."""
    events = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                event = parse_event(line, run)
                if event:
                    events.append(event)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CommandExecutionError(f"cannot read the rollout event journal {path}: {exc}") from exc
    events.sort(key=lambda e: e["at"])
    return events


# --------------------------------------------------------------------------- the report


def _clock(ts, ms=False):
    text = time.strftime("%H:%M:%S", time.localtime(ts))
    return f"{text}.{int(ts % 1 * 1000):03d}" if ms else text


def _iso(ts):
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def _host(kind, host, events, release, tag, now):
    """One host's steps, result, releases and downtime from its events (oldest first)."""
    begin = next((e for e in events if e["step"] == "begin"), None)
    ended = any(e["step"] == "end" for e in events)
    before = (begin or {}).get("data", {}).get("from") if begin else None
    steps, previous = [], (begin["at"] if begin else None)
    for event in events:
        if event["step"] in ("begin", "end"):
            continue
        start = previous if previous is not None else event["at"]
        steps.append({"step": event["step"], "start": start, "end": event["at"],
                      "seconds": round(event["at"] - start, 3)})
        previous = event["at"]
    names = [s["step"] for s in steps]
    reached = [s for s in steps if s["step"] not in TERMINAL]
    last = reached[-1]["step"] if reached else ("begin" if begin else None)
    last_at = (reached[-1]["end"] if reached else (begin["at"] if begin else None))

    if not events:
        result = "not run"
    elif "rolled-back" in names:
        result = "rolled back"
    elif "failed" in names:
        result = "FAILED"
    elif not ended:
        result = "no answer"
    elif kind == "rollback":
        result = "ok" if "restored" in names else "no change"
    else:
        result = "ok" if steps else "no change"

    shown_before = before or "unrecorded"  # deployed by hand: no deployed record
    if result == "ok":
        after = release if kind == "upgrade" else f"backup {tag}"
    elif result == "no answer":
        after = "?"
    else:
        after = shown_before

    # Downtime: from the start of the stop to the end of ready (or of the rollback that put
    # the old tree back); still open when the host never came back in this run.
    down = None
    by_name = {s["step"]: s for s in steps}
    if kind == "rollback":
        went_down = by_name.get("restored", {}).get("start")
        up = by_name.get("restored")
    else:
        up = by_name.get("ready") or by_name.get("rolled-back")
        went_down = by_name.get("stopped", {}).get("start")
        if went_down is None and by_name.get("ready") and begin:
            # Started without being stopped by this run: it was down when the run began (a
            # resumed host).
            went_down = begin["at"]
        elif went_down is None and result == "no answer" and last == "backed-up":
            went_down = last_at  # the stop comes next: it may have begun (say so: open)
    if went_down is not None:
        end = up["end"] if up else None
        down = {"start": went_down, "end": end, "open": end is None}
    down_s = round(((down["end"] or now) - down["start"]), 3) if down else 0.0
    backup_tag = (tag if kind == "rollback" else release) if steps else None
    return {
        "host": host,
        "service": next((e["data"].get("service") for e in events if e["data"].get("service")),
                        None),
        "result": result,
        "before": shown_before,
        "after": after,
        "last_step": last,
        "last_step_at": last_at,
        "steps": steps,
        "backup_tag": backup_tag,
        "down": down,
        "down_s": down_s,
    }


def _intersect(windows):
    """The instants inside every window of ``windows`` (each ``(start, end)``) as one window."""
    start = max(w[0] for w in windows)
    end = min(w[1] for w in windows)
    return (start, end) if end > start else None


def both_down(pairs, hosts, now):
    """Per pair, the window when every host of it was down (by the steps' windows)."""
    found = []
    for pair in pairs or []:
        members = [h for h in pair.get("hosts", []) if h in hosts]
        windows = [hosts[h]["down"] for h in members]
        if len(members) < 2 or not all(windows):
            continue
        common = _intersect([(w["start"], w["end"] or now) for w in windows])
        if common:
            found.append({"service": pair.get("service"), "hosts": members,
                          "start": common[0], "end": common[1],
                          "seconds": round(common[1] - common[0], 3)})
    return found


def _reason(hosts, failed, master):
    parts = []
    for name, host in hosts.items():
        at = f" ({_clock(host['last_step_at'])})" if host["last_step_at"] else ""
        if host["result"] == "no answer":
            parts.append(f"{name}: no answer after step '{host['last_step']}'{at}")
        elif host["result"] in ("FAILED", "rolled back"):
            back = ", rolled back" if host["result"] == "rolled back" else ""
            parts.append(f"{name}: failed after step '{host['last_step']}'{back}{at}")
    if master.get("restarted"):
        parts.append(
            f"the salt-master restarted during the run (at {_clock(master['started'])}); "
            "run the same command again to complete it"
        )
    elif master.get("down"):
        parts.append("the salt-master is not running; start it, then run the same command "
                     "again to complete the run")
    if not parts and failed:
        # True either way: hosts that reported steps may all have passed them (a step of
        # the orchestration failed, e.g. a gate or a wave whose return did not come).
        what = ("no host reported a failed step, but a step of the run failed"
                if any(host["last_step"] for host in hosts.values())
                else "the run failed before any host reported a step")
        parts.append(f"{what} (see the failed step's comment); run the same command again "
                     "once it is fixed")
    return "; ".join(parts) or None


def summary_lines(hosts):
    """One line per host: ``<host>  <before> -> <after>  <result>  down <s>s  [at <step>]``."""
    width = max((len(h) for h in hosts), default=0)
    lines = []
    for name, host in hosts.items():
        line = (f"{name.ljust(width)}  {host['before']} -> {host['after']}  {host['result']}  "
                f"down {host['down_s']:.1f}s")
        if host["result"] in ("FAILED", "rolled back", "no answer") and host["last_step"]:
            line += f"  at {host['last_step']}"
        lines.append(line)
    return lines


def build(kind, run, events, hosts, pairs=None, release=None, tag=None, started=None,
          ended=None, failed=False, operator=None, master=None, unchanged=None):
    """
    The report of one run from its events (pure: no file, no clock but ``ended``).

    Returns ``{"kind", "run", "release", "tag", "operator", "started", "ended", "seconds",
    "result", "hosts": {id: {...}}, "both_down": [...], "summary": [...], "reason", "master"}``;
    times are seconds since the epoch.
    """
    ended = ended if ended is not None else time.time()
    by_host = {}
    for event in events:
        if event["kind"] == kind:
            by_host.setdefault(event["host"], []).append(event)
    report_hosts = {
        h: _host(kind, h, sorted(by_host.get(h, []), key=lambda e: e["at"]), release, tag, ended)
        for h in hosts
    }
    for name in unchanged or []:
        # Found already on the release while the orchestration rendered: no job, no event.
        if report_hosts.get(name, {}).get("result") == "not run":
            report_hosts[name].update(result="no change", before=release, after=release)
    master = master or {}
    bad = any(h["result"] in ("FAILED", "rolled back", "no answer") for h in report_hosts.values())
    if started is None:
        started = min((e["at"] for e in events), default=ended)
    return {
        "kind": kind,
        "run": run,
        "release": release,
        "tag": tag,
        "operator": operator,
        "started": started,
        "ended": ended,
        "seconds": round(ended - started, 3),
        "result": "failed" if (failed or bad) else "ok",
        "hosts": report_hosts,
        "both_down": both_down(pairs, report_hosts, ended),
        "summary": summary_lines(report_hosts),
        "reason": _reason(report_hosts, failed, master),
        "master": master,
    }


# --------------------------------------------------------------------------- rendering


def to_json(report):
    """The report with every time as ISO 8601 (local offset), for the .json file."""
    def times(item, keys):
        return {k: (_iso(v) if k in keys else v) for k, v in item.items()}

    out = times(report, ("started", "ended"))
    out["hosts"] = {}
    for name, host in report["hosts"].items():
        host = times(host, ("last_step_at",))
        host["steps"] = [times(s, ("start", "end")) for s in host["steps"]]
        if host["down"]:
            host["down"] = times(host["down"], ("start", "end"))
        out["hosts"][name] = host
    out["both_down"] = [times(w, ("start", "end")) for w in report["both_down"]]
    out["master"] = times(report["master"], ("started",))
    return out


def to_markdown(report, svg_name=None):
    """The report as Markdown: header, one row per host, each host's steps, both-down."""
    what = report["release"] if report["kind"] == "upgrade" else f"backup {report['tag']}"
    lines = [
        f"# orch.{report['kind']} to {what}: {report['result']}",
        "",
        f"- run: `{report['run']}`",
        f"- operator: {report['operator']}",
        f"- start: {_iso(report['started'])}, end: {_iso(report['ended'])} "
        f"({report['seconds']:.1f} s)",
        f"- both hosts of a pair down at once: {len(report['both_down'])} instant(s)",
    ]
    if report["reason"]:
        lines.append(f"- reason: {report['reason']}")
    lines += ["", "| host | service | before -> after | result | down (s) | backup tag | at step |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, host in report["hosts"].items():
        lines.append(f"| {name} | {host['service'] or ''} | {host['before']} -> {host['after']} "
                     f"| {host['result']} | {host['down_s']:.1f} | {host['backup_tag'] or ''} "
                     f"| {host['last_step'] or ''} |")
    for name, host in report["hosts"].items():
        if not host["steps"]:
            continue
        lines += ["", f"## {name}", "", "| step | start | end | seconds |", "| --- | --- | --- | --- |"]
        for step in host["steps"]:
            lines.append(f"| {step['step']} | {_clock(step['start'], True)} "
                         f"| {_clock(step['end'], True)} "
                         f"| {step['seconds']:.2f} |")
    if report["both_down"]:
        lines += ["", "## Both hosts of a pair down", ""]
        for window in report["both_down"]:
            lines.append(f"- {window['service']} ({', '.join(window['hosts'])}): "
                         f"{_clock(window['start'])} for {window['seconds']:.2f} s")
    if svg_name:
        lines += ["", f"![timeline]({svg_name})"]
    return "\n".join(lines) + "\n"


def draw_timeline(report, path):
    """The timeline as SVG: one row per host, one colour per step, both-down windows in red."""
    # Imported here: only a run that writes a report pays for matplotlib, and Agg needs no
    # display.
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    from matplotlib.backends.backend_svg import (  # pylint: disable=import-outside-toplevel
        FigureCanvasSVG,
    )
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
    from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel

    names = list(report["hosts"])
    t0 = report["started"]
    fig = Figure(figsize=(11, 1.8 + 0.45 * max(len(names), 1)))
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    row = {name: len(names) - 1 - i for i, name in enumerate(names)}
    used = {}
    for name, host in report["hosts"].items():
        for step in host["steps"]:
            colour = STEP_COLOURS.get(step["step"], "#bdbdbd")
            used[step["step"]] = colour
            ax.broken_barh([(step["start"] - t0, max(step["end"] - step["start"], 0.01))],
                           (row[name] - 0.35, 0.7), facecolors=colour, edgecolor="white",
                           linewidth=0.5)
        if host["down"]:
            end = host["down"]["end"] or report["ended"]
            ax.plot([host["down"]["start"] - t0, end - t0], [row[name] - 0.42] * 2,
                    color="black", linewidth=1.5)
    for window in report["both_down"]:
        for name in window["hosts"]:
            ax.broken_barh([(window["start"] - t0, max(window["seconds"], 0.01))],
                           (row[name] - 0.5, 1.0), facecolors="none", edgecolor=BOTH_DOWN_COLOUR,
                           hatch="///", linewidth=1.0)
    ax.set_yticks(range(len(names)), labels=list(reversed(names)))
    ax.set_ylim(-0.7, max(len(names), 1) - 0.3)
    ax.set_xlim(0, max(report["ended"] - t0, 1.0))
    ax.set_xlabel("seconds since the run started (black line: host down)")
    count = len(report["both_down"])
    ax.set_title(f"orch.{report['kind']} {report['release'] or report['tag']} "
                 f"({report['result']}): both hosts of a pair down: {count}",
                 color=BOTH_DOWN_COLOUR if count else "black")
    ax.grid(axis="x", alpha=0.3)
    handles = [Patch(facecolor=c, label=s) for s, c in used.items()]
    handles.append(Patch(facecolor="none", edgecolor=BOTH_DOWN_COLOUR, hatch="///",
                         label="both down"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize="small", frameon=False)
    fig.tight_layout()
    # Written aside, then renamed: a reader never sees half a picture.
    fig.savefig(f"{path}.tmp", format="svg", metadata={"Date": None})
    try:
        os.unlink(f"{path}.log")  # the detached drawer's (empty) error log
    except FileNotFoundError:
        pass
    os.replace(f"{path}.tmp", path)


# The timeline is drawn by a child process, so the orchestration (its unlock, its exit) does
# not wait for matplotlib's import (~1 s): it reads the report on stdin and runs this file.
_DRAW_CHILD = (
    "import importlib.util, json, sys\n"
    "spec = importlib.util.spec_from_file_location('rolloutreport_timeline', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.draw_timeline(json.load(sys.stdin), sys.argv[2])\n"
)


def _draw_detached(report, path):
    """Start the child that draws ``path``; its errors go to ``<path>.log``."""
    with open(f"{path}.log", "wb") as errors:
        child = subprocess.Popen(
            [sys.executable, "-c", _DRAW_CHILD, os.path.abspath(__file__), path],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
            start_new_session=True, close_fds=True,
        )
    try:
        child.stdin.write(json.dumps(report).encode())
        child.stdin.close()
    except BrokenPipeError:
        log.error("rolloutreport: the timeline drawer of %s exited early: see %s.log", path, path)
    return child


# --------------------------------------------------------------------------- files


def prune(directory, keep):
    """Remove all but the newest ``keep`` runs' report files of ``directory``; the removed names."""
    runs = {}
    for name in os.listdir(directory):
        match = REPORT_NAME.match(name)
        if match:
            runs.setdefault(match.group(1), []).append(name)
    removed = []
    for stem in sorted(runs)[:-keep] if len(runs) > keep else []:
        for name in runs[stem]:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return sorted(removed)


def _check_keep(keep):
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise SaltInvocationError(
            f"pillar release:keep_reports must be a whole number >= 1, got {keep!r}"
        )
    return keep


def _journal_path():
    returners = __opts__.get("event_return") or []
    if isinstance(returners, str):
        returners = [returners]
    if "rawfile_json" not in returners or not __opts__.get("rawfile_json.filename"):
        raise CommandExecutionError(
            "no rollout event journal on this master: add to its config "
            "`event_return: rawfile_json`, `event_return_whitelist: ['rollout/*']` and "
            "`rawfile_json.filename: <path>`, then restart the salt-master"
        )
    return __opts__["rawfile_json.filename"]


def _master_state(started):
    """``{"pid", "started", "restarted", "down"}`` of the salt-master (its pid file)."""
    try:
        with open(__opts__["pidfile"], encoding="utf-8") as fh:
            pid = int(fh.read().strip())
        begun = psutil.Process(pid).create_time()
    except (OSError, ValueError, KeyError, psutil.Error):
        return {"pid": None, "started": None, "restarted": False, "down": True}
    return {"pid": pid, "started": begun, "restarted": bool(started and begun > started),
            "down": False}


def _wait_for_journal(path, run):
    """
    Fire a marker event and wait until the journal holds it: the events fired before it are
    then on disk too. Returns False when it does not arrive (master down, journal lagging).
    """
    tag = f"rollout/report/{run}"
    try:
        with salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"],
                                               listen=False) as bus:
            bus.fire_event({"run": run}, tag)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("rolloutreport: cannot fire the journal marker: %s", exc)
        return False
    deadline = time.monotonic() + JOURNAL_WAIT
    needle = f'"tag": "{tag}"'
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as fh:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 65536))
                if needle.encode() in fh.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(JOURNAL_POLL)
    log.warning("rolloutreport: the journal %s did not show run %s's marker in %ss",
                path, run, JOURNAL_WAIT)
    return False


def _operator():
    user = salt.utils.user.get_user()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (as {user})" if sudo and sudo != user else user


def write(kind, owner, hosts, pairs=None, release=None, tag=None, started=None, keep=KEEP_DEFAULT,
          failed=False, unchanged=None, report_dir=None, detach=True, test=False):
    """
    Write the report of the run ``owner`` (an orchestration's last steps call this) and
    return ``{"summary": [one line per host], "reason": str|None, "paths": {"json", "md",
    "svg"}, "result": "ok"|"failed"}``.

    kind
        ``upgrade`` or ``rollback``.

    owner
        The run's token (the ``run`` of its events, the rollout lock's owner).

    hosts
        The run's minion ids, in rollout order (one report row each).

    pairs
        ``[{"service", "hosts"}]``: the hosts that must never be down together.

    release / tag
        The release upgraded to; the backup tag a rollback restores.

    started
        When the run started (seconds since the epoch; the orchestration's render): a
        salt-master started after it restarted during the run.

    keep
        How many runs' reports to keep (pillar ``release:keep_reports``, default 20).

    failed
        True when called after a failed step (the run failed even if no host did).

    unchanged
        Hosts the orchestration found already on the release (given no state job).

    report_dir
        Default ``<master cachedir>/rollout/reports``.

    detach
        True (default): the SVG is drawn by a child process and appears a moment after this
        returns (the run does not wait for matplotlib; a drawing error goes to
        ``<svg>.log``); False: drawn before this returns.

    test
        True: nothing is written (the paths are None).

    Summary line: ``<host>  <before> -> <after>  <result>  down <s>s  [at <step>]``, result
    one of ok, FAILED, rolled back, no change, no answer, not run; ``at`` names the last
    step the host reached. ``reason`` (None when all went well), parts joined by ``; ``:
    ``<host>: no answer after step '<step>' (<HH:MM:SS>)``,
    ``<host>: failed after step '<step>'[, rolled back] (<HH:MM:SS>)``,
    ``the salt-master restarted during the run (at <HH:MM:SS>); run the same command again
    to complete it``.

    CLI Example:

    .. code-block:: bash

        salt-run rolloutreport.write upgrade owner=6f1c... hosts='[ecsc-1, ecsc-2]' \\
            pairs='[{"service": "ecsc", "hosts": ["ecsc-1", "ecsc-2"]}]' release=20170220
    """
    if kind not in ("upgrade", "rollback"):
        raise SaltInvocationError(f"kind must be upgrade or rollback, got {kind!r}")
    if not owner:
        raise SaltInvocationError("owner is required: the run's token")
    keep = _check_keep(keep)
    hosts = [str(h) for h in (hosts or [])]
    test = test or bool(__opts__.get("test"))
    path = _journal_path()
    if not test:
        _wait_for_journal(path, str(owner))
    events = read_journal(path, str(owner))
    report = build(kind, str(owner), events, hosts, pairs=pairs, release=release, tag=tag,
                   started=started, failed=failed, operator=_operator(),
                   master=_master_state(started), unchanged=unchanged)
    paths = {"json": None, "md": None, "svg": None}
    if not test:
        directory = os.path.abspath(
            report_dir or os.path.join(__opts__["cachedir"], REPORT_SUBDIR))
        stem = time.strftime("%Y%m%d-%H%M%S", time.localtime(report["started"]))
        stem = f"{stem}-{kind}-{str(owner)[:8]}"
        paths = {ext: os.path.join(directory, f"{stem}.{ext}") for ext in ("json", "md", "svg")}
        if not any(host["steps"] for host in report["hosts"].values()):
            # Nothing to draw (e.g. every host already on the release): no timeline, and a
            # no-op run does not pay for importing matplotlib.
            paths["svg"] = None
        try:
            os.makedirs(directory, exist_ok=True)
            if paths["svg"] and detach:
                _draw_detached(report, paths["svg"])
            elif paths["svg"]:
                draw_timeline(report, paths["svg"])
            with salt.utils.atomicfile.atomic_open(paths["md"], "w") as fh:
                fh.write(to_markdown(report, paths["svg"] and os.path.basename(paths["svg"])))
            with salt.utils.atomicfile.atomic_open(paths["json"], "w") as fh:
                json.dump({**to_json(report), "paths": paths}, fh, indent=2, sort_keys=True)
            prune(directory, keep)
        except OSError as exc:
            raise CommandExecutionError(f"cannot write the run report in {directory}: {exc}") \
                from exc
    return {"summary": report["summary"], "reason": report["reason"], "paths": paths,
            "result": report["result"]}
