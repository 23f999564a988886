"""
The upgrade inventory: which services run on which hosts, with every path, command, check and
release parameter of one host resolved from pillar, and validated before anything is touched.

:depends: none (reads pillar keys ``inventory`` and ``release``; see pillar.example)

Pillar layout (documented key by key in ``pillar.example``)::

    inventory:services:<service>: kind, hosts (ordered: host 1, host 2), install_dir,
                                  catalina_base, start, logs, ready, health_url, stop, keep
    inventory:services:<service>:hosts:<minion id>: address, root
    inventory:order: minion ids in rollout order (host 1 before host 2 of each pair)
    release: id, source, sha256:<service>, keep_backups, checks:<service>

A host's ``root`` (default ``''``) is prefixed to every path of that host: production hosts
use the runbook's paths as they are; each rehearsal-lab host has its own root.
"""

import copy
import logging
import os
import re

from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "inventory"

KINDS = ("tomcat", "standalone")
SIGNALS = ("TERM", "KILL", "INT", "QUIT", "HUP", "15", "9", "2", "3", "1")
TAG_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULTS = {
    "stop": {"signal": "TERM", "timeout": 30, "thread_dump": False},
    "ready_timeout": 120,
    "keep": [],
    "start": ["sh", "startup.sh"],
}


def __virtual__():
    return __virtualname__


def _pillar(key, default=None, pillar=None):
    # __pillar__ (and a renderer's __pillar__ passed in) is a loader-context proxy, not a dict.
    value = dict(pillar if pillar is not None else __pillar__)
    for part in key.split(":"):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return value


def _fail(key, message):
    raise SaltInvocationError(f"pillar {key}: {message}")


def _services(pillar=None):
    services = _pillar("inventory:services", pillar=pillar)
    if not isinstance(services, dict) or not services:
        _fail("inventory:services", "missing or empty: no service to upgrade")
    return services


def _validate_service(name, conf, release, archive=True):
    key = f"inventory:services:{name}"
    if not isinstance(conf, dict):
        _fail(key, "must be a mapping")
    if conf.get("kind") not in KINDS:
        _fail(f"{key}:kind", f"{conf.get('kind')!r} is not one of {', '.join(KINDS)}")
    hosts = conf.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        _fail(f"{key}:hosts", "needs at least one host")
    for field in ("install_dir", "health_url", "logs", "ready"):
        if not conf.get(field):
            _fail(f"{key}:{field}", "is required")
    if conf["kind"] == "tomcat" and not conf.get("catalina_base"):
        _fail(f"{key}:catalina_base", "is required for a tomcat service")
    if not os.path.isabs(conf["install_dir"]):
        _fail(f"{key}:install_dir", f"{conf['install_dir']!r} is not an absolute path")
    stop = {**DEFAULTS["stop"], **(conf.get("stop") or {})}
    if str(stop["signal"]).upper().replace("SIG", "") not in SIGNALS:
        _fail(f"{key}:stop:signal", f"unknown signal {stop['signal']!r}")
    for tkey, value in (("stop:timeout", stop["timeout"]),
                        ("ready_timeout", conf.get("ready_timeout", DEFAULTS["ready_timeout"]))):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            _fail(f"{key}:{tkey}", f"must be a positive number of seconds, got {value!r}")
    for item in conf["ready"]:
        if not isinstance(item, dict) or item.get("log") not in conf["logs"]:
            _fail(f"{key}:ready", f"{item!r} must name one of the logs {sorted(conf['logs'])}")
    if not archive:
        return
    sha = _pillar(f"sha256:{name}", pillar=release)
    if not sha:
        _fail(f"release:sha256:{name}", "missing: every upgraded service needs its archive's sha256")
    if not SHA256_RE.match(str(sha)):
        _fail(f"release:sha256:{name}", f"{sha!r} is not a sha256 (64 lowercase hex digits)")


def _rollout_order(all_services, pillar=None):
    """[(service, [hosts])] in rollout order: ``inventory:order`` (minion ids) when given.

    A mapping's order does not survive a pillar merge (a command-line override that touches
    one service moves it first), so the runbook's order is a list, which merges whole."""
    order = _pillar("inventory:order", pillar=pillar)
    if order is None:
        return [(name, list((conf or {}).get("hosts") or {})) for name, conf in all_services.items()]
    if isinstance(order, str) or not isinstance(order, (list, tuple)):
        _fail("inventory:order", f"must be a list of minion ids, got {order!r}")
    service_of = {h: n for n, c in all_services.items() for h in ((c or {}).get("hosts") or {})}
    for host in order:
        if host not in service_of:
            _fail("inventory:order", f"{host!r} is not under inventory:services:*:hosts")
    ranked = list(dict.fromkeys(order)) + [h for h in service_of if h not in order]
    result = {}
    for host in ranked:
        result.setdefault(service_of[host], []).append(host)
    return list(result.items())


def _release(pillar=None):
    release = _pillar("release", pillar=pillar)
    if not isinstance(release, dict):
        _fail("release", "missing")
    rid = str(release.get("id", ""))
    if not TAG_RE.match(rid):
        _fail("release:id", f"{rid!r} must match {TAG_RE.pattern} (it is the backup tag)")
    if not release.get("source"):
        _fail("release:source", "is required (e.g. salt://releases/{release}/{service}.tar)")
    return release


def plan(services=None, hosts=None, archive=True, pillar=None):
    """
    Validate the inventory and return the rollout plan: the targeted services in inventory
    order, each with its hosts in upgrade order (host 1 first). Raises
    ``SaltInvocationError`` naming the pillar key at the first problem, before anything is
    touched: unknown service or host, duplicate host, missing sha256, unknown stop signal,
    non-positive timeout.

    services
        Restrict to these services (list; default all).

    hosts
        Restrict to these minion ids (list; default all hosts of the targeted services).

    archive
        Require each targeted service's archive sha256 (default True; a rollback does not).

    pillar
        Use this pillar instead of the minion's (the orchestration passes its own).

    CLI Example:

    .. code-block:: bash

        salt-call inventory.plan
        salt-call inventory.plan services='[ecmc]'
    """
    all_services = _services(pillar)
    release = _release(pillar)
    seen = {}
    for name, conf in all_services.items():
        for host in (conf or {}).get("hosts") or {}:
            if host in seen:
                _fail(f"inventory:services:{name}:hosts:{host}",
                      f"duplicate host: also listed at inventory:services:{seen[host]}:hosts")
            seen[host] = name
    if services is not None:
        if isinstance(services, str) or not isinstance(services, (list, tuple)):
            _fail("services", f"must be a list of service names, got {services!r}")
        for name in services:
            if name not in all_services:
                _fail("services", f"unknown service {name!r} (known: {', '.join(all_services)})")
    if hosts is not None:
        if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
            _fail("hosts", f"must be a list of minion ids, got {hosts!r}")
        for host in hosts:
            if host not in seen:
                _fail("hosts", f"unknown host {host!r} (known: {', '.join(seen)})")
    result = []
    for name, ordered_hosts in _rollout_order(all_services, pillar):
        if services is not None and name not in services:
            continue
        targeted = [h for h in ordered_hosts if hosts is None or h in hosts]
        if not targeted:
            continue
        _validate_service(name, all_services[name], release, archive=archive)
        result.append({"service": name, "hosts": targeted})
    if not result:
        _fail("services", "the targeting selects no host")
    return result


def _fill(value, **fields):
    """Fill {release}/{service}/{address} placeholders in strings, recursively."""
    if isinstance(value, str):
        for key, sub in fields.items():
            value = value.replace("{" + key + "}", str(sub))
        return value
    if isinstance(value, list):
        return [_fill(v, **fields) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, **fields) for k, v in value.items()}
    return value


def host(minion_id=None, release=None, archive=True, ready_release=None, pillar=None):
    """
    Everything one host needs for its upgrade, rollback and compliance check, resolved: paths
    under the host's root, the start command, ready patterns with the release id filled in,
    the health URL with the host's address, the stop policy, the archive and its sha256, and
    the fixed-issue checks.

    minion_id
        The host (default: this minion).

    release
        Release id to resolve for (default ``release:id`` from pillar).

    archive
        Require the release archive's sha256 (default True; a rollback or a compliance check
        does not need it).

    ready_release
        What ``{release}`` in the ready patterns stands for (default the release id; a
        rollback, which may bring back a release deployed by hand, passes ``\\S+``).

    CLI Example:

    .. code-block:: bash

        salt-call inventory.host
        salt-run salt.cmd inventory.host ecmc-1
    """
    minion_id = minion_id or __opts__["id"]
    services = _services(pillar)
    rel = _release(pillar)
    for name, conf in services.items():
        if minion_id in (conf or {}).get("hosts", {}):
            break
    else:
        raise SaltInvocationError(
            f"{minion_id}: not in pillar inventory:services:*:hosts (no service runs here)"
        )
    _validate_service(name, conf, rel, archive=archive)
    release_id = str(release or rel["id"])
    if not TAG_RE.match(release_id):
        _fail("release:id", f"{release_id!r} must match {TAG_RE.pattern}")
    entry = conf["hosts"][minion_id] or {}
    root = entry.get("root", "") or ""
    address = entry.get("address")
    if not address:
        _fail(f"inventory:services:{name}:hosts:{minion_id}:address", "is required")

    def at_root(path):
        return os.path.normpath(root.rstrip("/") + "/" + str(path).lstrip("/")) if root else path

    fields = {"release": release_id, "service": name, "address": address}
    install_dir = at_root(conf["install_dir"])
    logs = {key: at_root(path) for key, path in conf["logs"].items()}
    start = list(conf.get("start") or DEFAULTS["start"])
    if conf["kind"] == "tomcat":
        start = [at_root(start[0])] + start[1:]
        start_cwd = os.path.dirname(install_dir)
        identity = {"catalina_base": at_root(conf["catalina_base"])}
    else:
        start_cwd = install_dir
        identity = {"app_dir": install_dir}
    ready_fields = {**fields, "release": ready_release or re.escape(release_id)}
    ready = [
        {"log": logs[item["log"]], "pattern": _fill(item["pattern"], **ready_fields)}
        for item in conf["ready"]
    ]
    checks = []
    for check in copy.deepcopy((rel.get("checks") or {}).get(name) or []):
        check = _fill(check, **fields)
        if "log" in check and check["log"].get("log") in logs:
            check["log"]["path"] = logs[check["log"].pop("log")]
        checks.append(check)
    stop = {**DEFAULTS["stop"], **(conf.get("stop") or {})}
    stop["signal"] = str(stop["signal"]).upper().replace("SIG", "")
    hosts = dict(_rollout_order(services, pillar))[name]
    return {
        "id": minion_id,
        "service": name,
        "kind": conf["kind"],
        "address": address,
        "root": root,
        "pair": hosts,
        "partner": [h for h in hosts if h != minion_id],
        "install_dir": install_dir,
        "identity": identity,
        "start": start,
        "start_cwd": start_cwd,
        "logs": logs,
        "output": logs.get("app") or next(iter(logs.values())),
        "ready": ready,
        "ready_timeout": conf.get("ready_timeout", DEFAULTS["ready_timeout"]),
        "health_url": _fill(conf["health_url"], **fields),
        "stop": stop,
        "keep": list(conf.get("keep") or DEFAULTS["keep"]),
        "release": release_id,
        "source": _fill(rel["source"], **fields),
        "sha256": str((rel.get("sha256") or {}).get(name) or ""),
        "keep_backups": int(rel.get("keep_backups", 3)),
        "checks": checks,
    }
