"""
Compliance check of one host: is it still what the last release made it?

Runs named, read-only controls for THIS minion's service (resolved from pillar with
``inventory.host``) and returns a report shaped like an InSpec/Goss result. The master's
``compliance.report`` state (``salt/orch/compliance.sls``, scheduled by the master's
``schedule:``) calls :func:`check` on every host at once and aggregates the reports.

:depends: the repo's ``inventory``, ``release``, ``backup``, ``probe`` and ``javaservice``
          execution modules (``saltutil.sync_all``)

Controls (their ids are API: alerts and dashboards key on them):

============== ===========================================================================
id             passes when
============== ===========================================================================
jvm-single     ``javaservice.status`` finds exactly one JVM of the service (0: "not
               running"; 2+: the pids are named); java processes that look related but are
               not the service (``strangers``: pid, user, cmdline, why) are named in
               ``found`` and listed in the evidence, never counted
health         the health URL answers 200 within a few seconds and its JSON ``release``
               equals the expected release
release        ``release.status(install_dir)["release"]`` equals pillar ``release:id``
               (no deployed record: failed, "deployed by hand?")
tree-intact    the live program dir matches its deployed record: every edited, added or
               removed file is named (host-local ``keep`` files may change; without a
               record there is nothing to compare with: skipped)
backup         the backup made for the release, ``<install_dir>_<release id>``, exists
               (made by ``backup.create``: it has a manifest) and ``backup.verify`` is ok
retention      ``backup.list(install_dir)`` holds at most ``release:keep_backups``
               (default 3) backups
no-leftovers   ``release.leftovers(install_dir)`` is empty (staging dir, ``.previous``
               tree, record temp files, an uploaded ``<name>.tar``)
============== ===========================================================================

A control that raises is ``failed`` with the error as its evidence; the check itself never
raises. A host that cannot be resolved from pillar is reported with the single failed
pseudo-control ``inventory`` (the master adds the pseudo-control ``minion`` for a host that
did not return).

Read-only: nothing on the host is written, renamed or removed (files are read and hashed,
processes listed, the health URL fetched with GET).

Report::

    {"host": "ecsc-1", "service": "ecsc", "release_expected": "20170220",
     "status": "passed" | "failed" | "skipped",
     "controls": [{"id", "title", "status": "passed" | "failed" | "skipped",
                   "expected": str, "found": str, "evidence": str | dict | list | None}],
     "seconds": 0.123}
"""

import json
import logging
import os
import time

log = logging.getLogger(__name__)

__virtualname__ = "compliance"

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"

#: Seconds the health URL gets to answer.
HEALTH_TIMEOUT = 3.0

#: Control ids (API: keep them stable) and titles, in report order.
CONTROLS = (
    ("jvm-single", "the service's JVM runs exactly once"),
    ("health", "the health URL answers 200 with the expected release"),
    ("release", "the deployed release is the expected release"),
    ("tree-intact", "the program dir matches its deployed record"),
    ("backup", "the backup made for the release exists and verifies"),
    ("retention", "no more backups than release:keep_backups"),
    ("no-leftovers", "no staging dir, .previous tree or uploaded archive is left"),
)
_TITLES = dict(CONTROLS)
_MAX_NAMED = 10  # paths named in a one-line `found`; the evidence has them all


def __virtual__():
    return __virtualname__


# --------------------------------------------------------------------------- helpers


def _names(paths, limit=_MAX_NAMED):
    paths = list(paths)
    shown = ", ".join(paths[:limit])
    if len(paths) > limit:
        shown += f" (+{len(paths) - limit} more)"
    return shown


def _first_line(text, limit=300):
    text = str(text).strip().splitlines()[0] if str(text).strip() else str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _control(cid, status, expected, found, evidence=None, title=None):
    return {
        "id": cid,
        "title": title or _TITLES.get(cid, cid),
        "status": status,
        "expected": expected,
        "found": found,
        "evidence": evidence,
    }


class _Once:
    """
    A lazily computed value shared by several controls (``release.status`` hashes the
    tree once for ``release`` and ``tree-intact``); an exception is re-raised to each.
    """

    def __init__(self, func):
        self._func = func
        self._done = False
        self._value = None
        self._error = None

    def get(self):
        if not self._done:
            self._done = True
            try:
                self._value = self._func()
            except Exception as exc:  # pylint: disable=broad-except
                self._error = exc
        if self._error is not None:
            raise self._error
        return self._value


# --------------------------------------------------------------------------- controls
# Each takes the context and returns (status, expected, found, evidence).


def _jvm_single(ctx):
    host = ctx["host"]
    expected = "exactly 1 JVM"
    if "javaservice.status" not in __salt__:
        return (
            FAILED,
            expected,
            "javaservice.status is not available on this minion (module not synced or "
            "not loadable): the JVM cannot be identified",
            None,
        )
    status = __salt__["javaservice.status"](host["service"], **host["identity"])
    pids = list(status.get("pids") or [])
    # Java processes that look related but are not the service (another user, another main
    # class, a tool naming the program dir): evidence for the operator, never counted.
    strangers = list(status.get("strangers") or [])
    evidence = {"identity": host["identity"], "pids": pids, "started": status.get("started"),
                "strangers": strangers}
    seen = ""
    if strangers:
        seen = f"; not the service: {_names(_stranger(s) for s in strangers)}"
    if not pids:
        return FAILED, expected, "not running" + seen, evidence
    if len(pids) > 1:
        return (FAILED, expected, f"{len(pids)} JVMs: pids {', '.join(map(str, pids))}" + seen,
                evidence)
    return PASSED, expected, f"1 JVM: pid {pids[0]}" + seen, evidence


def _stranger(item):
    if not isinstance(item, dict):
        return str(item)
    return f"pid {item.get('pid')} ({item.get('user')}: {item.get('why')})"


def _health(ctx):
    host, rid = ctx["host"], ctx["release"]
    url = host["health_url"]
    expected = f"200 from {url} with release {rid}"
    ret = __salt__["probe.http"](url, status=200, timeout=HEALTH_TIMEOUT)
    body = ret.get("body") or ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return FAILED, expected, f"200 but the body is not a JSON object: {body[:100]!r}", body
    found_release = data.get("release")
    if str(found_release) != rid:
        return FAILED, expected, f"200 with release {found_release}", data
    return PASSED, expected, f"200 with release {found_release}", data


def _release(ctx):
    rid = ctx["release"]
    deployed = ctx["deployed"].get()
    evidence = {k: deployed.get(k) for k in ("release", "archive_sha256", "deployed")}
    if deployed.get("release") is None:
        return FAILED, rid, "no deployed record: deployed by hand?", evidence
    if str(deployed["release"]) != rid:
        return FAILED, rid, str(deployed["release"]), evidence
    return PASSED, rid, str(deployed["release"]), evidence


def _tree_intact(ctx):
    deployed = ctx["deployed"].get()
    expected = "no modified, added or removed file"
    if deployed.get("release") is None:
        return SKIPPED, expected, "no deployed record to compare with", None
    evidence = {key: list(deployed.get(key) or []) for key in
                ("modified", "added", "removed", "local_modified")}
    drift = [
        f"{key} {_names(evidence[key])}"
        for key in ("modified", "added", "removed")
        if evidence[key]
    ]
    if drift:
        return FAILED, expected, "; ".join(drift), evidence
    found = f"matches the record of release {deployed['release']}"
    if evidence["local_modified"]:
        found += f" (host-local files changed, not drift: {_names(evidence['local_modified'])})"
    return PASSED, expected, found, evidence


def _backup(ctx):
    install_dir, rid = ctx["host"]["install_dir"], ctx["release"]
    path = f"{install_dir}_{rid}"
    expected = f"backup {path} verifies"
    listed = {item["tag"]: item for item in ctx["backups"].get()}
    if rid not in listed:
        if os.path.isdir(path):
            found = f"{path} is not a backup made by backup.create (no manifest: hand-made copy?)"
        else:
            found = f"no backup {path}"
        return FAILED, expected, found, None
    result = __salt__["backup.verify"](install_dir, rid)
    evidence = {key: list(result.get(key) or []) for key in ("modified", "missing", "added")}
    if not result.get("ok"):
        found = "; ".join(f"{key} {_names(val)}" for key, val in evidence.items() if val)
        return FAILED, expected, f"does not verify: {found or 'see evidence'}", result
    return PASSED, expected, f"{path} verifies", evidence


def _retention(ctx):
    # Retention counts upgrades, not directories: <tag>.<n> copies (a tree a swap or restore
    # replaced) belong to the family of <tag>.
    keep = ctx["host"]["keep_backups"]
    tags = [item["tag"] for item in ctx["backups"].get()]
    families = list(dict.fromkeys(item.get("family") or item["tag"] for item in ctx["backups"].get()))
    expected = f"at most {keep} backups"
    found = f"{len(families)} backups" + (f": {', '.join(tags)}" if tags else "")
    return (PASSED if len(families) <= keep else FAILED), expected, found, tags


def _no_leftovers(ctx):
    found = list(__salt__["release.leftovers"](ctx["host"]["install_dir"]))
    if found:
        return FAILED, "nothing left over", f"left over: {_names(found)}", found
    return PASSED, "nothing left over", "none", found


_RUNNERS = {
    "jvm-single": _jvm_single,
    "health": _health,
    "release": _release,
    "tree-intact": _tree_intact,
    "backup": _backup,
    "retention": _retention,
    "no-leftovers": _no_leftovers,
}


def _overall(controls):
    statuses = {control["status"] for control in controls}
    if FAILED in statuses:
        return FAILED
    if PASSED in statuses:
        return PASSED
    return SKIPPED


# --------------------------------------------------------------------------- public


def controls():
    """
    The controls :func:`check` runs, in report order: ``[{"id", "title"}]``. The ids are API
    (alerts and dashboards key on them).

    CLI Example:

    .. code-block:: bash

        salt-call compliance.controls
    """
    return [{"id": cid, "title": title} for cid, title in CONTROLS]


def check(pillar=None):
    """
    Run every control for this host and return its report (read-only; never raises).

    pillar
        Use this pillar (keys ``inventory`` and ``release``, see pillar.example) instead of
        the minion's own; the orchestration passes the master's, so both sides agree.

    Returns ``{"host", "service", "release_expected", "status", "controls", "seconds"}``,
    ``status`` being ``failed`` when any control failed, else ``passed`` when any passed,
    else ``skipped``; each control is ``{"id", "title", "status", "expected", "found",
    "evidence"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' compliance.check
        salt-call compliance.check --out=json
    """
    started = time.monotonic()
    report = {
        "host": __utils__["rollout_ids.minion_id"](),
        "service": None,
        "release_expected": None,
        "status": FAILED,
        "controls": [],
        "seconds": 0.0,
    }
    try:
        host = __salt__["inventory.host"](archive=False, pillar=pillar)
    except Exception as exc:  # pylint: disable=broad-except
        report["controls"] = [
            _control(
                "inventory",
                FAILED,
                "this host in pillar inventory:services:*:hosts",
                _first_line(exc),
                str(exc),
                title="the host resolves from the pillar inventory",
            )
        ]
        report["seconds"] = round(time.monotonic() - started, 3)
        return report
    report["service"] = host["service"]
    report["release_expected"] = host["release"]
    install_dir = host["install_dir"]
    ctx = {
        "host": host,
        "release": str(host["release"]),
        "deployed": _Once(lambda: __salt__["release.status"](install_dir)),
        "backups": _Once(lambda: __salt__["backup.list"](install_dir)),
    }
    for cid, _ in CONTROLS:
        try:
            status, expected, found, evidence = _RUNNERS[cid](ctx)
        except Exception as exc:  # pylint: disable=broad-except
            log.debug("compliance: control %s raised", cid, exc_info=True)
            status, expected, found, evidence = FAILED, _TITLES[cid], _first_line(exc), str(exc)
        report["controls"].append(_control(cid, status, expected, found, evidence))
    report["status"] = _overall(report["controls"])
    report["seconds"] = round(time.monotonic() - started, 3)
    return report
