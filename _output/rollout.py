"""
The operator's view of this repo's orchestrations (``orch.upgrade``, ``orch.rollback``,
``orch.compliance``): a few lines instead of Salt's state-by-state listing.

:depends: none

The repo's ``Saltfile`` makes it the default of ``salt-run`` (``output: rollout``); the
master finds it in the repo's ``_output/`` (``outputter_dirs`` in ``etc/salt/master``; on
another master, ``salt-run saltutil.sync_output`` copies it into the extension modules).
``--out=highstate`` still prints Salt's full detail, ``--out=json`` the data. Anything that is
not an orchestration's return is handed unchanged to Salt's own outputter: ``highstate`` for
state returns, ``nested`` for the rest.

A run prints:

- one line per orchestration step that matters (it ran, failed or was skipped; the per-host
  steps ``upgrade-<host>`` / ``rollback-<host>`` are summarised per host instead);
- the run summary, one line per host (``<host>  <before> -> <after>  <result>  down <s>s
  [at <step>]``): the report runner's lines (``rolloutreport.write``, the step whose
  ``changes.return`` has ``summary``) when the orchestration has that step, else derived from
  the host steps' state returns;
- each host an interrupted run had left half-done, as ``release.resumed`` words it
  (``resuming <host>: an interrupted run left it at '<step>' (...)``);
- each failure: host, step, its comment (with the tails of the service's logs);
- the run's result and the report's paths.

Under ``test=True`` it prints the plan instead: one block per host, what would happen before
the stop, while the service is down, and after it.

CLI Example:

.. code-block:: bash

    salt-run state.orchestrate orch.upgrade --out=rollout
"""

import datetime
import logging
import os
import re

import salt.output
import salt.utils.color

log = logging.getLogger(__name__)

__virtualname__ = "rollout"

# Per-host steps of the orchestrations: `upgrade-<host>`, `rollback-<host>`.
HOST_STEP = re.compile(r"^(?:upgrade|rollback)-(?P<host>[0-9A-Za-z][0-9A-Za-z._-]*)$")
# The orchestration's own bookkeeping, not worth a line when it went well.
QUIET_STEPS = ("rollout-unlock", "rollout-unlock-after-failure")
NOT_RUN = "State was not run because"
# Lines of a failed step's comment printed (its head and the log tails).
FAILURE_LINES = 20
WIDTH = 100


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- reading the return


def _steps(data):
    """``(steps in run order, retcode)`` of an orchestration's return, else None.

    Orchestrate returns ``{"data": {<master id>: {<state key>: <state return>}},
    "outputter": "highstate", "retcode": n}``; a step is ``{"mod", "id", "fun", ...ret}``.
    """
    if not isinstance(data, dict):
        return None
    retcode = data.get("retcode", 0)
    if "data" in data and set(data) <= {"data", "outputter", "retcode"}:
        data = data["data"]
    if not isinstance(data, dict) or len(data) != 1:
        return None
    states = next(iter(data.values()))
    if not isinstance(states, dict) or not states:
        return None
    steps = []
    for key, ret in states.items():
        parts = str(key).split("_|-")
        if len(parts) != 4 or not isinstance(ret, dict) or "result" not in ret:
            return None
        steps.append({"mod": parts[0], "id": ret.get("__id__", parts[1]), "fun": parts[3],
                      **ret})
    if not any(s["mod"] == "salt" or _is_report_step(s) for s in steps):
        return None  # a state run of something else: not an orchestration
    steps.sort(key=lambda s: s.get("__run_num__", 0))
    return steps, retcode


def _is_report_step(step):
    """A step whose return is a runner's that words its own result: ``salt.runner``, or
    ``rollout.runner`` (the orchestrations' runners run in place)."""
    return step["fun"] == "runner"


def _pair_order(host_steps):
    """Host steps grouped by pair (``<name>-<n>``), pairs in the order their first host ran,
    hosts of a pair by number: the runbook's order, whatever order parallel steps ran in."""
    def split(host):
        name, _, number = host.rpartition("-")
        return (name, int(number)) if name and number.isdigit() else (host, 0)

    first = {}
    for host, step in host_steps:
        first.setdefault(split(host)[0], step.get("__run_num__", 0))
        first[split(host)[0]] = min(first[split(host)[0]], step.get("__run_num__", 0))
    return sorted(host_steps, key=lambda hs: (first[split(hs[0])[0]], split(hs[0])))


def _paths_line(paths):
    """``Report: <dir>/<stem>.{json,md,svg}`` when the files share a directory and stem."""
    found = [str(p) for p in paths.values() if p]
    stems = {os.path.splitext(p)[0] for p in found}
    if len(found) > 1 and len(stems) == 1:
        exts = ",".join(os.path.splitext(p)[1][1:] for p in found)
        return f"Report: {stems.pop()}.{{{exts}}}"
    return "Report: " + ", ".join(found)


def _host_of(step):
    match = HOST_STEP.match(str(step["id"]))
    return match.group("host") if match else None


def _states(step, host):
    """The state returns of ``host`` in a salt.state step, in run order (not the events)."""
    ret = (step.get("changes") or {}).get("ret")
    states = ret.get(host) if isinstance(ret, dict) else None
    if not isinstance(states, dict):
        return []
    found = []
    for key, state in states.items():
        parts = str(key).split("_|-")
        if len(parts) != 4 or parts[0] == "event" or not isinstance(state, dict):
            continue
        found.append({"mod": parts[0], "id": state.get("__id__", parts[1]), **state})
    found.sort(key=lambda s: s.get("__run_num__", 0))
    return found


def _ran(state):
    return not str(state.get("comment", "")).startswith(NOT_RUN)


def _no_answer(step, host):
    changes = step.get("changes") or {}
    return changes.get(host) is False or "did not return" in str(step.get("comment", ""))


def _report(steps):
    """The report runner's return (``summary``, ``reason``, ``paths``), or None."""
    for step in steps:
        ret = (step.get("changes") or {}).get("return")
        if isinstance(ret, dict) and isinstance(ret.get("summary"), list):
            return ret
    return None


# ---------------------------------------------------------------- one host, derived


def _clock(text):
    try:
        return datetime.datetime.strptime(str(text), "%H:%M:%S.%f")
    except ValueError:
        return None


def _downtime(states):
    """Seconds from the stop's start until the service was ready again: the start's own
    start-to-ready time, or the end of the rollback that brought it back (None: not stopped,
    or the return does not say)."""
    by_id = {s["id"]: s for s in states}
    stop, ready, rolled = by_id.get("stopped"), by_id.get("ready"), by_id.get("rolled-back")
    if not stop or not (stop.get("changes") or {}).get("stopped"):
        return None
    begun = _clock(stop.get("start_time"))
    started = ((ready or {}).get("changes") or {}).get("started") or {}
    if rolled and rolled.get("result") and rolled.get("changes"):
        up = _clock(rolled.get("start_time"))
        up = up and up + datetime.timedelta(milliseconds=float(rolled.get("duration") or 0))
    elif ready and started.get("seconds") is not None and _clock(ready.get("start_time")):
        up = _clock(ready["start_time"]) + datetime.timedelta(seconds=float(started["seconds"]))
    else:
        return None
    if begun is None or up is None:
        return None
    return max(0.0, (up - begun).total_seconds())


def _releases(step, states):
    """``(before, after)`` release ids of a host (``?`` when the return does not say)."""
    for state in states:
        for value in (state.get("changes") or {}).values():
            if isinstance(value, dict) and "new" in value and "old" in value:
                return value.get("old") or "unrecorded", value.get("new") or "?"
    for state in states:  # a rollback: the release the restored backup holds
        restored = (state.get("changes") or {}).get("restored")
        if isinstance(restored, dict) and restored.get("release"):
            return "?", restored["release"]
    already = re.search(r"already on ([0-9A-Za-z][0-9A-Za-z._-]*)", str(step.get("comment")))
    if already:
        return already.group(1), already.group(1)
    return "?", "?"


def _host_line(host, step):
    """A summary row derived from a host step: ``(host, before, after, result, down, at)``."""
    states = _states(step, host)
    before, after = _releases(step, states)
    failed = [s for s in states if s.get("result") is False]
    rolled = next((s for s in states if s["id"] == "rolled-back" and s.get("result")
                   and s.get("changes")), None)
    down = _downtime(states)
    comment = str(step.get("comment", ""))
    if _no_answer(step, host):
        result, at = "no answer", None
    elif comment.startswith("One or more requisite failed"):
        failed_first = comment.split(":", 1)[-1].strip().split(".")[-1]
        result, at = f"not run ({failed_first} failed)", None
        before = after = "-"
    elif failed:
        result, at = ("rolled back" if rolled else "FAILED"), failed[0]["id"]
        after = before if rolled else after
    elif step.get("result") is False:
        result, at = "FAILED", None
    elif not step.get("changes") or not any(s.get("changes") for s in states):
        result, at = "no change", None
    else:
        result, at = "ok", None
    return host, before, after, result, down, at


def _derived_reason(host_steps):
    """What went wrong, from the host steps (when there is no report runner's reason)."""
    parts = []
    for host, step in host_steps:
        _, _, _, result, _, at = _host_line(host, step)
        if result in ("FAILED", "rolled back", "no answer"):
            parts.append(f"{host} {result}" + (f" at {at}" if at else ""))
    return "; ".join(parts) or None


def _derived_summary(host_steps):
    rows = [_host_line(host, step) for host, step in host_steps]
    width = max((len(r[0]) for r in rows), default=0)
    lines = []
    for host, before, after, result, down, at in rows:
        # A host whose step reports nothing (no change) does not say its release.
        change = "" if before == after == "?" else f"{before} -> {after}  "
        line = f"{host.ljust(width)}  {change}{result}"
        if down is not None:
            line += f"  down {down:.1f}s"
        if at:
            line += f"  at {at}"
        lines.append(line)
    return lines


# ---------------------------------------------------------------- the plan (test=True)


def _short_path(text):
    """Absolute paths reduced to their last component (the plan names; the full ones are in
    --out=highstate)."""
    return re.sub(r"(?<![\w:/])/(?:[^\s,;:'\"()\[\]]+/)+([^\s,;:'\"()\[\]/]+)", r"\1", text)


def _bytes(n):
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _plan_item(state):
    """What a would-change state would do, in a few words."""
    sid, changes = str(state["id"]), state.get("changes") or {}
    comment = str(state.get("comment", ""))
    if sid == "staged" and isinstance(changes.get("staged"), dict):
        staged = changes["staged"]
        count = staged.get("members", staged.get("files"))
        return f"stage {staged.get('release')}" + (f" ({count} members)" if count else "")
    if sid == "backed-up" and isinstance(changes.get("backup"), dict):
        backup = changes["backup"]
        return (f"back up to {os.path.basename(str(backup.get('path')))} "
                f"({backup.get('files')} files, {_bytes(backup.get('bytes') or 0)})")
    if sid == "swapped":
        return "swap"
    stop = re.search(r"pid\(s\) ([\d, ]+) with (SIG\w+)(?:, (SIG\w+) after (\d+)s)?", comment)
    if sid == "stopped" and stop:
        then = f", {stop.group(3)[3:]} after {stop.group(4)}s" if stop.group(3) else ""
        return f"stop pid {stop.group(1).strip()} ({stop.group(2)[3:]}{then})"
    start = re.search(r"would start (.+?) in /.*?\(timeout (\d+)s\)", comment)
    if sid in ("plan-start", "ready") and start:
        return f"start {_short_path(start.group(1))}, ready within {start.group(2)}s"
    if sid.startswith("verified-"):
        return "verify " + sid[len("verified-"):]
    text = _short_path(re.sub(r"^would (?:be )?", "", comment)).split(";")[0]
    return text if len(text) <= 60 else text[:59] + "…"


def _plan_block(host, step):
    """A host's plan: its release change, then what happens before the stop, while the
    service is down, and after it."""
    states = _states(step, host)
    before, after = _releases(step, states)
    todo = [s for s in states if s.get("result") is None or str(s["id"]).startswith("plan-")]
    if step.get("result") is False:
        return [f"{host}  cannot be planned: {_first_line(step.get('comment'))}"]
    if not todo:
        return [f"{host}  {before} -> {after}  nothing to do"]
    if any(s["id"] == "plan-start" for s in todo):
        todo = [s for s in todo if s["id"] != "ready"]
    phases = {"before stop": [], "down": [], "after": []}
    phase = "before stop"
    for state in todo:
        if state["id"] == "stopped":
            phase = "down"
        elif phase == "down" and state["id"] not in ("swapped", "plan-start", "ready"):
            phase = "after"
        phases[phase].append(_plan_item(state))
    lines = [f"{host}  {before} -> {after}"]
    for name, items in phases.items():
        if items:
            lines.append(_fit(f"  {name + ':':<13} " + "; ".join(items)))
    return lines


# ---------------------------------------------------------------- printing


def _first_line(text):
    return (str(text or "").strip().splitlines() or [""])[0]


def _fit(line):
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def _seconds(step):
    duration = step.get("duration")
    return f"{float(duration) / 1000:.1f}s" if isinstance(duration, (int, float)) else ""


def _step_line(step, colors):
    comment = str(step.get("comment", ""))
    if step.get("result") is False:
        word = "not run" if comment.startswith("One or more requisite failed") else "FAILED"
    elif step.get("result") is None:
        word = "would run"
    else:
        word = "ok"
    color = colors["RED"] if word == "FAILED" else colors["LIGHT_YELLOW"] if word != "ok" else ""
    note = ""
    if step["fun"] == "state" and not _host_of(step):
        hosts = re.search(r"(?:to|Updating|on minions:) (.+?)\.?$", _first_line(comment))
        if hosts:
            note = f"{len(hosts.group(1).split(','))} hosts"
    if step["fun"] == "configurable_test_state":
        note = _first_line(comment)
    return _fit(f"  {color}{word:<9}{colors['ENDC'] if color else ''} {step['id']:<28} "
                f"{_seconds(step):>7}  {note}".rstrip())


def _failure_lines(step, host=None):
    """The failed states of a step: host, state id, comment (its log tails)."""
    lines = []
    ret = (step.get("changes") or {}).get("ret")
    hosts = [host] if host else sorted(ret) if isinstance(ret, dict) else []
    for name in hosts:
        for state in _states(step, name):
            if state.get("result") is False and _ran(state) and not str(
                    state.get("comment", "")).startswith("One or more requisite failed"):
                lines.append(f"{name} at {state['id']}:")
                lines += [f"    {line}" for line in _head_and_tail(state.get("comment"))]
            if state["id"] == "rolled-back" and state.get("result") and state.get("changes"):
                restored = [line for line in str(state.get("comment", "")).splitlines()
                            if line.startswith("restored:")]
                lines.append(_fit(f"{name} rolled back: "
                                  + _short_path(restored[0] if restored else "done")))
    if not lines:
        text = str(step.get("comment", "")).strip()
        result = (step.get("changes") or {}).get("return")
        if isinstance(result, str) and result.strip():
            text += "\n" + result.strip()
        lines.append(f"{host or step['id']}:")
        lines += [f"    {line}" for line in _head_and_tail(text)]
    return lines


def _head_and_tail(text):
    """A failure comment's first lines (what failed) and last lines (the log tails)."""
    lines = str(text or "").strip().splitlines()
    if len(lines) <= FAILURE_LINES:
        return lines
    head = FAILURE_LINES // 3
    return lines[:head] + [f"... ({len(lines) - FAILURE_LINES} lines; --out=highstate)"] + \
        lines[-(FAILURE_LINES - head):]


def _failures(host_steps, other):
    """The ``Failures`` section: each failed step (not those skipped for another's failure)."""
    failures = []
    for host, step in host_steps:
        if step.get("result") is False and not str(step.get("comment", "")).startswith(
                "One or more requisite failed"):
            failures += _failure_lines(step, host)
    for step in other:
        if step.get("result") is False and _ran(step) and not str(
                step.get("comment", "")).startswith("One or more requisite failed"):
            failures += _failure_lines(step)
    return ["Failures"] + [f"  {line}" for line in failures] if failures else []


def _render(steps, retcode, colors):
    test = any(s.get("result") is None for s in steps)
    host_steps = _pair_order([(_host_of(s), s) for s in steps if _host_of(s)])
    other = [s for s in steps if not _host_of(s)]
    out = []
    if test:
        out.append("Plan (test=True: nothing was changed)")
        for step in other:
            if step.get("result") is False:
                out.append(_step_line(step, colors))
        for host, step in host_steps:
            out += _plan_block(host, step)
        out += _failures(host_steps, other)
        failed = any(s.get("result") is False for s in steps)
        out.append(f"Result: {'FAILED' if failed else 'plan ok'} "
                   f"({len(host_steps)} hosts; full detail: --out=highstate)")
        return out

    out.append("Steps")
    for step in other:
        ran = _ran(step)
        quiet = step["id"] in QUIET_STEPS and (step.get("result") is not False or str(
            step.get("comment", "")).startswith("One or more requisite failed"))
        if not ran or quiet:
            continue
        out.append(_step_line(step, colors))
        # A runner that words its own result (compliance.report's table) is printed as it is.
        ret = (step.get("changes") or {}).get("return")
        if _is_report_step(step) and isinstance(ret, dict) and not isinstance(
                ret.get("summary"), list) and isinstance(ret.get("comment"), str):
            out += [f"    {line}" for line in ret["comment"].strip().splitlines()]
    report = _report(steps)
    if report or host_steps:
        out.append("Hosts")
    if report:
        out += [f"  {line}" for line in report["summary"]]
    else:
        out += [f"  {line}" for line in _derived_summary(host_steps)]
    # A host an interrupted run had left half-done: release.resumed says where it was taken up.
    resumed = [f"  {_first_line(state.get('comment'))}" for host, step in host_steps
               for state in _states(step, host)
               if state["mod"] == "release" and state["id"] == "resumed" and state.get("changes")]
    if resumed:
        out.append("Resumed")
        out += resumed
    out += _failures(host_steps, other)
    failed = retcode not in (0, None) or any(s.get("result") is False for s in steps)
    word = f"{colors['RED']}FAILED{colors['ENDC']}" if failed else "ok"
    reason = (report or {}).get("reason") if report else _derived_reason(host_steps)
    out.append(f"Result: {word}" + (f": {reason}" if reason else "")
               + (f" (exit {retcode})" if failed and retcode else ""))
    paths = (report or {}).get("paths") or {}
    if any(paths.values()):
        out.append(_paths_line(paths))
    return out


def output(data, **kwargs):  # pylint: disable=unused-argument
    """
    Print an orchestration's return as the operator's summary (or, under test=True, the
    plan); hand any other data to Salt's ``highstate`` or ``nested`` outputter unchanged.
    """
    found = _steps(data)
    if found is None:
        return _delegate(data, **kwargs)
    colors = salt.utils.color.get_colors(__opts__.get("color"), __opts__.get("color_theme"))
    try:
        return "\n".join(_render(*found, colors))
    except Exception:  # pylint: disable=broad-except
        # A return shaped in a way this view does not know must still be printed in full.
        log.debug("rollout outputter: falling back to highstate", exc_info=True)
        return _delegate(data, **kwargs)


def _delegate(data, **kwargs):
    """Salt's own outputter for ``data``: highstate for state returns, else nested. The
    options name it as ``output``, so Salt does not hand the data back to this one."""
    name = "nested"
    if isinstance(data, dict) and set(data) <= {"data", "outputter", "retcode"} and isinstance(
            data.get("outputter"), str) and data["outputter"] != __virtualname__:
        name = data["outputter"]  # what the runner asked for (orchestrate: highstate)
    elif _looks_like_states(data):
        name = "highstate"
    return salt.output.out_format(data, name, {**__opts__, "output": name}, **kwargs)


def _looks_like_states(data):
    if not isinstance(data, dict) or not data:
        return False
    return all(isinstance(v, dict) and v and all("_|-" in str(k) for k in v)
               for v in data.values())
