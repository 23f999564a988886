"""
The compliance report of the inventory's hosts: master-side code (this runner uses the
master's LocalClient, its rollout lock, cache dir and event bus, and is never synced to
minions).

.. code-block:: bash

    salt-run compliance.report                                  # what the master's schedule runs
    salt-run compliance.report services='[ecmc]'
    salt-run compliance.report hosts='[ecsc-1]'
    salt-run compliance.report test=True                        # check; report not saved
    salt-run state.orchestrate orch.compliance                  # the same from an orchestration

What it does, in order:

1. The hosts: ``tgt``/``tgt_type`` when given (orch.compliance passes the inventory's hosts
   as a list), else every host of the inventory in the master's pillar (``services`` and
   ``hosts`` narrow it, as for orch.upgrade). The minions check against the inventory and
   release the master planned with.
2. ``rolloutlock.holder()``: while an upgrade or rollback holds the lock, the hosts it names
   (all targeted hosts if it names none) are reported ``skipped`` ("upgrade in progress")
   instead of being checked - a host mid-upgrade is not drift.
3. One ``compliance.check`` job on all other targeted minions at once (``timeout``
   seconds). A minion that does not return, or returns no report (e.g. ``compliance`` not
   synced to it), is a failed host with the pseudo-control ``minion``.
4. Aggregates the summary::

       {"generated": "<ISO-8601 UTC>", "status": "passed"|"failed"|"skipped",
        "hosts": n, "passed": n, "failed": n, "skipped": n,
        "failed_controls": [{"host", "control", "found"}],
        "report": "<path of latest.json>" (None under test=True)}

5. Writes the report (replacing the previous one, atomically) to ``report_dir``, default
   ``<master cachedir>/compliance/`` (the lab: ``.lab/master/var/cache/salt/master/compliance``):

   - ``latest.json``: ``{"summary": {...}, "reports": [<per-host compliance.check report>]}``
   - ``latest.txt``: a table host x control (PASS/FAIL/SKIP), then one line per failed
     control with host, control, expected and found.

6. Fires ONE event on the master bus, tag ``rollout/compliance/report``, data = the summary
   (a reactor or an event returner turns drift into an alert).

Returns ``{"result", "summary", "comment" (the table), "retcode"}``; ``retcode`` is 1 (and
``salt-run`` exits 1, and an orchestration's ``salt.runner`` step fails) when any control of
any host failed, 0 otherwise (also when every host was skipped). A report that cannot be
written or announced raises ``CommandExecutionError`` (exit 1).

``test=True``: the hosts are still checked (the check is read-only, and a dry run that does
not look is useless) and the result is the same, but ``latest.json``/``latest.txt`` are not
replaced and no event is fired, so a manual dry run neither overwrites the scheduled report
nor raises an alert.

:depends: the repo's ``inventory`` and ``compliance`` execution modules synced to the master
          (``salt-run saltutil.sync_all``) and to the minions
"""

import datetime
import json
import logging
import os
import re

import salt.client
import salt.loader
import salt.minion
import salt.pillar
import salt.utils.atomicfile
import salt.utils.event
import salt.utils.minions
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "compliance"

EVENT_TAG = "rollout/compliance/report"
REPORT_SUBDIR = "compliance"
REPORT_JSON = "latest.json"
REPORT_TXT = "latest.txt"
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_MARK = {PASSED: "PASS", FAILED: "FAIL", SKIPPED: "SKIP"}


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------- helpers


def _mminion():
    """The master's execution modules (the repo's ``inventory`` and ``compliance`` among
    them, synced by ``salt-run saltutil.sync_all``), loaded once per runner loader."""
    if "compliance.mminion" not in __context__:
        __context__["compliance.mminion"] = salt.minion.MasterMinion(
            __opts__, states=False, rend=False, returners=False
        )
    return __context__["compliance.mminion"]


def _execution_modules():
    return _mminion().functions


def _master_pillar(override=None):
    """The master's own pillar (as orchestrations see it), ``override`` merged on top."""
    opts = dict(_mminion().opts)
    opts["file_client"] = "local"
    return salt.pillar.get_pillar(
        opts, opts.get("grains") or {}, opts["id"], saltenv=opts.get("saltenv") or "base",
        pillarenv=opts.get("pillarenv"), pillar_override=override or {},
    ).compile_pillar()


def _controls():
    """
    (id, title) of every control in table order, from the compliance execution module alone
    (``salt.loader.raw_mod``: a MasterMinion loads the master's grains, about a second, and
    is only needed for the rare host without a report, see ``_service_of``).
    """
    if "compliance.controls" not in __context__:
        func = salt.loader.raw_mod(__opts__, "compliance", None).get("compliance.controls")
        if func is None:
            func = _execution_modules()["compliance.controls"]
        __context__["compliance.controls"] = [(c["id"], c["title"]) for c in func()]
    return __context__["compliance.controls"]


def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _locked_hosts(holder, targets):
    """
    The targeted hosts an upgrade/rollback holding the lock works on: those its ``hosts``
    (or its ``detail``, "hosts a, b") names, all targets otherwise.
    """
    if not holder:
        return set()
    named = holder.get("hosts") if isinstance(holder, dict) else None
    if isinstance(named, (list, tuple)) and named:
        return {host for host in targets if host in named}
    detail = holder.get("detail") if isinstance(holder, dict) else None
    if isinstance(detail, str):
        match = re.match(r"^\s*hosts?\s+(.+)$", detail)
        if match:
            named = {h.strip() for h in re.split(r"[,\s]+", match.group(1)) if h.strip()}
            if named:
                return {host for host in targets if host in named}
    if isinstance(detail, (list, tuple)) and detail:
        return {host for host in targets if host in detail}
    return set(targets)


def _skipped_report(host, service, holder):
    kind = (holder or {}).get("kind") or "upgrade"
    found = (
        f"upgrade in progress: {kind} pid {holder.get('pid')} since {holder.get('started')}"
    )
    return {
        "host": host,
        "service": service,
        "release_expected": None,
        "status": SKIPPED,
        "controls": [
            {
                "id": cid,
                "title": title,
                "status": SKIPPED,
                "expected": None,
                "found": found,
                "evidence": holder,
            }
            for cid, title in _controls()
        ],
        "seconds": 0.0,
    }


def _failed_host(host, service, found, evidence=None):
    return {
        "host": host,
        "service": service,
        "release_expected": None,
        "status": FAILED,
        "controls": [
            {
                "id": "minion",
                "title": "the minion returns its compliance report",
                "status": FAILED,
                "expected": "a compliance.check report",
                "found": found,
                "evidence": evidence,
            }
        ],
        "seconds": None,
    }


def _is_report(ret):
    return isinstance(ret, dict) and isinstance(ret.get("controls"), list) and "status" in ret


def _host_report(host, service, data, timeout):
    """Turn one minion's LocalClient return (full_return) into its report."""
    if data is None or data is False:
        return _failed_host(host, service, f"did not return within {timeout}s")
    ret = data.get("ret") if isinstance(data, dict) and "ret" in data else data
    if _is_report(ret):
        return ret
    text = ret if isinstance(ret, str) else json.dumps(ret, default=str)
    first = text.strip().splitlines()[0] if text.strip() else repr(text)
    if isinstance(data, dict) and data.get("out") == "no_return":
        found = f"did not return within {timeout}s ({first})"
    elif "is not available" in text:
        found = f"{first} - sync the modules: salt {host} saltutil.sync_all"
    else:
        found = f"no report: {first[:200]}"
    return _failed_host(host, service, found, text)


def summarize(reports, generated=None):
    """
    Aggregate per-host reports into the summary (see the module docstring).
    """
    counts = {PASSED: 0, FAILED: 0, SKIPPED: 0}
    failed_controls = []
    for report in reports:
        counts[report.get("status", FAILED) if report.get("status") in counts else FAILED] += 1
        for control in report.get("controls") or []:
            if control.get("status") == FAILED:
                failed_controls.append(
                    {"host": report["host"], "control": control["id"], "found": control["found"]}
                )
    if counts[FAILED]:
        status = FAILED
    elif counts[PASSED]:
        status = PASSED
    else:
        status = SKIPPED
    return {
        "generated": generated or _now_iso(),
        "status": status,
        "hosts": len(reports),
        "passed": counts[PASSED],
        "failed": counts[FAILED],
        "skipped": counts[SKIPPED],
        "failed_controls": failed_controls,
    }


def _one_line(value):
    return " ".join(str(value).split()) if value is not None else "-"


def render(summary, reports):
    """
    The readable report: a header, a table host x control (PASS/FAIL/SKIP; ``-`` for a
    control a host did not report), then one line per failed control with host, control,
    expected and found.
    """
    releases = sorted({str(r["release_expected"]) for r in reports if r.get("release_expected")})
    header = (
        f"compliance {summary['generated']}: {summary['status'].upper()} - "
        f"{summary['hosts']} hosts: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['skipped']} skipped"
        + (f" (expected release {', '.join(releases)})" if releases else "")
    )
    control_ids = [cid for cid, _ in _controls()]
    columns = ["HOST", "SERVICE", "STATUS"] + control_ids
    rows = []
    for report in reports:
        marks = {c.get("id"): _MARK.get(c.get("status"), "?") for c in report.get("controls") or []}
        rows.append(
            [report.get("host") or "?", report.get("service") or "-",
             _MARK.get(report.get("status"), "?")]
            + [marks.get(cid, "-") for cid in control_ids]
        )
    widths = [max(len(str(row[i])) for row in [columns] + rows) for i in range(len(columns))]

    def fmt(row):
        return "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()

    lines = [header, "", fmt(columns)] + [fmt(row) for row in rows]
    failures = [
        (report.get("host"), control)
        for report in reports
        for control in report.get("controls") or []
        if control.get("status") == FAILED
    ]
    if failures:
        lines += ["", "FAILED CONTROLS"]
        for host, control in failures:
            lines.append(
                f"{host} {control.get('id')}: expected {_one_line(control.get('expected'))}; "
                f"found {_one_line(control.get('found'))}"
            )
    skipped = [r for r in reports if r.get("status") == SKIPPED]
    if skipped:
        why = next((c.get("found") for r in skipped for c in r.get("controls") or []), None)
        lines += ["", f"SKIPPED {', '.join(r['host'] for r in skipped)}: {_one_line(why)}"]
    return "\n".join(lines) + "\n"


def _write_atomic(path, text):
    with salt.utils.atomicfile.atomic_open(path, "w") as fh:
        fh.write(text)


def _local_client():
    return salt.client.get_local_client(__opts__["conf_file"])


def _expand_targets(tgt, tgt_type):
    """
    The minion ids the target names, in the given order for a list (so the report follows
    the inventory), sorted otherwise.
    """
    if tgt_type == "list":
        targets = [tgt] if isinstance(tgt, str) else list(tgt)
        if isinstance(tgt, str) and "," in tgt:
            targets = [t.strip() for t in tgt.split(",") if t.strip()]
        return list(dict.fromkeys(targets))
    found = salt.utils.minions.CkMinions(__opts__).check_minions(tgt, tgt_type)
    return sorted(found.get("minions") or [])


def _service_of(host, pillar):
    try:
        return _execution_modules()["inventory.host"](minion_id=host, archive=False, pillar=pillar)["service"]
    except Exception:  # pylint: disable=broad-except
        return None


def _check(targets, pillar, timeout):
    """compliance.check on ``targets`` (a list of ids), one job; {id: full return}."""
    client = _local_client()
    try:
        return client.cmd(
            targets,
            "compliance.check",
            kwarg={"pillar": pillar} if pillar else {},
            tgt_type="list",
            timeout=timeout,
            full_return=True,
        ) or {}
    finally:
        try:
            client.destroy()
        except Exception:  # pylint: disable=broad-except
            pass


def _fire(summary):
    event = salt.utils.event.get_master_event(__opts__, __opts__["sock_dir"], listen=False)
    try:
        event.fire_event(summary, EVENT_TAG)
    finally:
        event.destroy()


# --------------------------------------------------------------------------- runner


def _targets(tgt, tgt_type, services, hosts, pillar):
    """(targets, pillar for the minions): the given target with the given pillar, else the
    inventory's hosts planned from the master's pillar (``pillar`` merged on top)."""
    if tgt is not None:
        return _expand_targets(tgt, tgt_type), pillar
    merged = _master_pillar(pillar)
    plan = _execution_modules()["inventory.plan"](
        services=services if services is not None else merged.get("services"),
        hosts=hosts if hosts is not None else merged.get("hosts"),
        archive=False, pillar=merged,
    )
    # The minions check against the inventory and release the master planned with.
    passthrough = {key: merged[key] for key in ("inventory", "release") if key in merged}
    return [host for pair in plan for host in pair["hosts"]], passthrough


def report(tgt=None, tgt_type="glob", services=None, hosts=None, pillar=None,
           report_dir=None, timeout=15, test=False):
    """
    Check the inventory's hosts (``compliance.check`` on each), write the report on the
    master, fire ``rollout/compliance/report`` with the summary. Changes nothing on any host.
    Returns ``{"result", "summary", "comment", "retcode"}`` (``retcode`` 1 on drift).

    tgt, tgt_type
        The hosts to check (a list with ``tgt_type=list``, or any Salt target). Default: the
        hosts of the inventory in the master's pillar.

    services, hosts
        Narrow the inventory's hosts to these services / minion ids (lists), as for
        ``orch.upgrade``.

    pillar
        ``inventory``/``release`` overrides: merged on the master's pillar, and what the
        minions check against.

    report_dir
        Where ``latest.json`` and ``latest.txt`` go (default
        ``<master cachedir>/compliance``; created if missing).

    timeout
        Seconds to wait for the minions (LocalClient ``timeout``: a minion still running
        the check keeps being waited for; one that does not answer is a failed host).

    test
        Check, but neither replace the report files nor fire the event.

    CLI Example:

    .. code-block:: bash

        salt-run compliance.report
        salt-run compliance.report services='[ecmc]' test=True
        salt-run compliance.report tgt='[ecsc-1, ecsc-2]' tgt_type=list timeout=30
    """
    try:
        return _report(tgt, tgt_type, services, hosts, pillar, report_dir, timeout, test)
    finally:
        __context__.pop("compliance.controls", None)
        mminion = __context__.pop("compliance.mminion", None)
        if mminion is not None:
            mminion.destroy()


def _report(tgt, tgt_type, services, hosts, pillar, report_dir, timeout, test):
    test = bool(test or __opts__.get("test"))
    try:
        timeout = int(timeout)
        if timeout <= 0:
            raise ValueError
    except (TypeError, ValueError):
        raise SaltInvocationError(  # pylint: disable=raise-missing-from
            f"timeout must be a positive number of seconds, got {timeout!r}"
        )
    if pillar is not None and not isinstance(pillar, dict):
        raise SaltInvocationError(f"pillar must be a mapping, got {pillar!r}")
    # A stale lock (its run was killed) reads as None: those hosts are checked again.
    holder = __salt__["rolloutlock.holder"]()
    targets, minion_pillar = _targets(tgt, tgt_type, services, hosts, pillar)
    if not targets:
        raise SaltInvocationError(f"no minion matches {tgt_type} target {tgt!r}")
    locked = _locked_hosts(holder, targets)
    to_check = [host for host in targets if host not in locked]

    returns = _check(to_check, minion_pillar, timeout) if to_check else {}
    reports = []
    for host in targets:
        if host in locked:
            reports.append(_skipped_report(host, _service_of(host, minion_pillar), holder))
        else:
            data = returns.get(host)
            returned = data.get("ret") if isinstance(data, dict) else None
            service = None if _is_report(returned) else _service_of(host, minion_pillar)
            reports.append(_host_report(host, service, data, timeout))
    summary = summarize(reports)
    summary["report"] = None
    directory = os.path.abspath(report_dir or os.path.join(__opts__["cachedir"], REPORT_SUBDIR))
    json_path = os.path.join(directory, REPORT_JSON)
    txt_path = os.path.join(directory, REPORT_TXT)

    if test:
        notes = (
            "test=True: the check ran as usual (read-only); "
            f"{json_path} not replaced, no {EVENT_TAG} event fired"
        )
    else:
        summary["report"] = json_path
        try:
            os.makedirs(directory, exist_ok=True)
            _write_atomic(
                json_path,
                json.dumps({"summary": summary, "reports": reports}, indent=1, default=str) + "\n",
            )
            _write_atomic(txt_path, render(summary, reports))
        except OSError as exc:
            raise CommandExecutionError(
                render(summary, reports)
                + f"\ncannot write the compliance report to {directory}: {exc}"
            ) from exc
        try:
            _fire(summary)
        except Exception as exc:  # pylint: disable=broad-except
            # The event is the alert channel: a report nobody hears about is a failure.
            raise CommandExecutionError(
                render(summary, reports) + f"\nreport {json_path}; event {EVENT_TAG} NOT fired: {exc}"
            ) from exc
        notes = f"report {json_path} and {txt_path}; event {EVENT_TAG} fired"
    result = summary["status"] != FAILED
    # Runner success (an orchestration's salt.runner step) follows __context__["retcode"];
    # salt-run's exit code follows the returned "retcode". Set both, every run.
    __context__["retcode"] = 0 if result else 1
    return {
        "result": result,
        "summary": summary,
        "comment": render(summary, reports) + "\n" + notes,
        "retcode": __context__["retcode"],
    }
