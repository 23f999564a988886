"""
The upgrade inventory: which services run on which hosts, with every path, command, check and
release parameter of one host resolved from pillar, and validated before anything is touched.

:depends: the repo's ``_utils/rollout_ids.py`` (``saltutil.sync_all``; the master gets it
          with ``salt-run saltutil.sync_all`` for the orchestration's render)

Pillar layout (documented key by key in ``pillar.example``)::

    inventory:services:<service>: kind, hosts (ordered: host 1, host 2), install_dir,
                                  catalina_base, start, main, user, logs, ready, fatal,
                                  health_url, stop, ready_timeout, settle, keep
    inventory:services:<service>:hosts:<minion id>: address, root
    inventory:order: minion ids in rollout order (host 1 before host 2 of each pair)
    release: id, source, sha256:<service>, keep_backups, keep_reports, checks:<service>

A host's ``root`` (default ``''``) is prefixed to every path of that host: production hosts
use the runbook's paths as they are; each rehearsal-lab host has its own root.

Two checks, so a bad pillar value never stops a service:

- :func:`plan` (the orchestration's render, on the master) and :func:`host` check every value
  of every targeted service and host from the pillar alone: types, absolute and normalised
  paths that are not a system directory, regexes that compile, health and check URLs that are
  http(s) to the host's own address. Every problem is named by its pillar key, all at once.
- :func:`check_host` (pre-flight, on each minion, read-only) checks what only the host can
  tell: the start program exists and is executable in its cwd, the directories and log dirs
  exist and do not resolve to a system directory, the user exists, the address is the host's.
"""

import copy
import ipaddress
import logging
import os
import posixpath
import pwd
import re
import shlex
import shutil
import socket
import urllib.parse

import salt.utils.data
import salt.utils.hashutils
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "inventory"

KINDS = ("tomcat", "standalone")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
DEFAULTS = {
    "stop": {"signal": "TERM", "timeout": 30, "thread_dump": False},
    "ready_timeout": 120,
    "settle": 3,
    "keep": [],
    "start": ["sh", "startup.sh"],
}
# Every key a service, host entry or stop policy may carry: a misspelt key (`ready_timout`)
# would otherwise fall back to a default without a word.
SERVICE_KEYS = ("kind", "hosts", "install_dir", "catalina_base", "start", "main", "user", "logs",
                "ready", "fatal", "health_url", "stop", "ready_timeout", "settle", "keep",
                # the rollout policy (_utils/rollout_policy.py)
                "batch", "canary", "soak", "max_unavailable", "min_healthy", "max_fail",
                "drain", "undrain")
HOST_KEYS = ("address", "root")
STOP_KEYS = ("signal", "timeout", "thread_dump")
# A program dir is replaced whole and a Tomcat base names the JVM to stop: none of them may be
# the filesystem's own directories (nor a top-level one, e.g. /home).
SYSTEM_DIRS = frozenset((
    "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local",
    "/usr/local/bin", "/usr/local/sbin", "/usr/local/lib", "/usr/share", "/usr/include",
    "/usr/src", "/var/lib", "/var/log", "/var/tmp", "/var/cache", "/var/spool", "/var/run",
    "/var/mail", "/var/backups", "/var/opt", "/etc/default", "/etc/init.d", "/etc/systemd",
))
PSEUDO_FS = ("/proc", "/sys", "/dev", "/run")
# A start command run through one of these names a script: it must exist in the cwd too.
SHELLS = ("sh", "bash", "dash", "ksh", "zsh")
JAVA_CLASS_RE = re.compile(r"^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$")
USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def __virtual__():
    return __virtualname__


class _Problems:
    """Every problem found, each ``(pillar key, message)``; raised together, so one run of the
    check names them all."""

    def __init__(self):
        self.items = []

    def add(self, key, message):
        self.items.append((key, message))

    def __bool__(self):
        return bool(self.items)

    def text(self):
        return "; ".join(f"pillar {key}: {message}" for key, message in self.items)

    def raise_if_any(self, error=SaltInvocationError, prefix=""):
        if self.items:
            raise error(prefix + self.text())


def _fail(key, message):
    raise SaltInvocationError(f"pillar {key}: {message}")


def _pillar(key, default=None, pillar=None):
    # __pillar__ (and a renderer's __pillar__ passed in) is a loader-context proxy, not a dict.
    data = dict(pillar if pillar is not None else __pillar__)
    return salt.utils.data.traverse_dict_and_list(data, key, default, delimiter=":")


def _services(pillar=None):
    services = _pillar("inventory:services", pillar=pillar)
    if not isinstance(services, dict) or not services:
        _fail("inventory:services", "missing or empty: no service to upgrade")
    return services


def _is_seconds(value, minimum_excluded=True):
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return value > 0 if minimum_excluded else value >= 0


def _check_path(problems, key, value, directory=True):
    """An absolute, normalised path that is not a system directory; False if not."""
    if not isinstance(value, str) or not value:
        problems.add(key, f"must be an absolute path, got {value!r}")
        return False
    if not value.startswith("/"):
        problems.add(key, f"{value!r} is not an absolute path")
        return False
    norm = posixpath.normpath(value)
    if norm != value or value.startswith("//"):
        problems.add(key, f"{value!r} is not normalised (write {norm!r})")
        return False
    if any(norm == fs or norm.startswith(fs + "/") for fs in PSEUDO_FS):
        problems.add(key, f"{value!r} is on a system pseudo filesystem")
        return False
    if directory and (norm.count("/") < 2 or norm in SYSTEM_DIRS):
        problems.add(key, f"{value!r} is a system directory")
        return False
    if not directory and (norm.count("/") < 2 or norm in SYSTEM_DIRS):
        problems.add(key, f"{value!r} is a system directory, not a file")
        return False
    return True


def _check_regex(problems, key, text, fields):
    """``text`` (a str) compiles once its {placeholders} are filled; False if not."""
    if not isinstance(text, str) or not text:
        problems.add(key, f"must be a regular expression, got {text!r}")
        return False
    for values in fields:
        try:
            re.compile(_fill(text, **values))
        except re.error as exc:
            problems.add(key, f"{text!r} is not a valid regular expression: {exc}")
            return False
    return True


def _start_argv(problems, key, value):
    """The start command as a list of words: a string is split like shell words (shlex), but
    it is never run through a shell."""
    if value is None:
        return list(DEFAULTS["start"])
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            problems.add(key, f"{value!r} cannot be split into words: {exc}")
            return None
    elif isinstance(value, (list, tuple)) and all(
            isinstance(arg, (str, int)) and not isinstance(arg, bool) for arg in value):
        argv = [str(arg) for arg in value]
    else:
        problems.add(key, f"must be a list of words or a string, got {value!r}")
        return None
    if not argv or not argv[0].strip():
        problems.add(key, f"{value!r} names no program")
        return None
    program = argv[0]
    if program.startswith("/"):
        if not _check_path(problems, key, program, directory=False):
            return None
    elif ".." in program.split("/"):
        problems.add(key, f"program {program!r} must not leave its cwd ('..')")
        return None
    return argv


def _check_patterns(problems, key, value, logs, release_id, required):
    if value is None and not required:
        return
    if not isinstance(value, (list, tuple)) or (required and not value):
        problems.add(key, "must be a list of {log: <name of a log>, pattern: <regex>}")
        return
    # The upgrade fills {release} with the release id, a rollback with \S+: both must compile.
    fields = [{"release": re.escape(release_id), "service": "s", "address": "127.0.0.1"},
              {"release": r"\S+", "service": "s", "address": "127.0.0.1"}]
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"log", "pattern"}:
            problems.add(f"{key}:{index}", f"{item!r} must be {{log: <name>, pattern: <regex>}}")
            continue
        if not isinstance(item["log"], str) or item["log"] not in logs:
            problems.add(f"{key}:{index}:log",
                         f"{item['log']!r} must name one of the logs {sorted(logs)}")
        _check_regex(problems, f"{key}:{index}:pattern", item["pattern"], fields)


def _is_user(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    return isinstance(value, str) and bool(USER_RE.match(value))


def _check_main(problems, key, value):
    """A main class (``lab.standalone.Main``) or the jar of ``java -jar`` (path ending .jar,
    relative to the program dir or absolute)."""
    if not isinstance(value, str) or not value:
        problems.add(key, f"must be a main class or a .jar path, got {value!r}")
    elif value.endswith(".jar"):
        if value.startswith("/"):
            _check_path(problems, key, value, directory=False)
        elif ".." in value.split("/") or posixpath.normpath(value) != value:
            problems.add(key, f"{value!r} must be a normalised path inside the program dir")
    elif not JAVA_CLASS_RE.match(value):
        problems.add(key, f"{value!r} is neither a Java class name nor a .jar path")


def _check_service(problems, name, conf, release, archive):
    """Every service-level value of one service; returns ``(resolvable, policy)``: False when
    it cannot be resolved, and its rollout policy (resolved here, once)."""
    key = f"inventory:services:{name}"
    if not isinstance(conf, dict):
        problems.add(key, "must be a mapping")
        return False, None
    before = len(problems.items)
    for extra in sorted(set(conf) - set(SERVICE_KEYS)):
        problems.add(f"{key}:{extra}", f"unknown key (known: {', '.join(SERVICE_KEYS)})")
    kind = conf.get("kind")
    if kind not in KINDS:
        problems.add(f"{key}:kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    hosts = conf.get("hosts")
    if not isinstance(hosts, dict) or not hosts:
        problems.add(f"{key}:hosts", "needs at least one host")
    for field in ("install_dir", "health_url", "logs", "ready"):
        if not conf.get(field):
            problems.add(f"{key}:{field}", "is required")
    if conf.get("install_dir"):
        _check_path(problems, f"{key}:install_dir", conf["install_dir"])
    if kind == "tomcat":
        if not conf.get("catalina_base"):
            problems.add(f"{key}:catalina_base", "is required for a tomcat service")
        else:
            _check_path(problems, f"{key}:catalina_base", conf["catalina_base"])
        if "main" in conf:
            problems.add(f"{key}:main", "is for standalone services (Tomcat's JVM runs its "
                                        "bootstrap class)")
    elif kind == "standalone" and "main" in conf:
        _check_main(problems, f"{key}:main", conf["main"])
    if "user" in conf and not _is_user(conf["user"]):
        problems.add(f"{key}:user", f"{conf['user']!r} is not a user name or uid")
    _start_argv(problems, f"{key}:start", conf.get("start"))
    logs = conf.get("logs")
    if logs and not isinstance(logs, dict):
        problems.add(f"{key}:logs", "must map a log name to its absolute path")
        logs = {}
    for log_name, path in (logs or {}).items():
        _check_path(problems, f"{key}:logs:{log_name}", path, directory=False)
    release_id = str(release.get("id", ""))
    if conf.get("ready"):
        _check_patterns(problems, f"{key}:ready", conf["ready"], logs or {}, release_id, True)
    _check_patterns(problems, f"{key}:fatal", conf.get("fatal"), logs or {}, release_id, False)
    if conf.get("health_url") is not None and not isinstance(conf.get("health_url"), str):
        problems.add(f"{key}:health_url", f"must be a URL, got {conf['health_url']!r}")
    stop = conf.get("stop") or {}
    if not isinstance(stop, dict):
        problems.add(f"{key}:stop", "must be a mapping (signal, timeout, thread_dump)")
        stop = {}
    for extra in sorted(set(stop) - set(STOP_KEYS)):
        problems.add(f"{key}:stop:{extra}", f"unknown key (known: {', '.join(STOP_KEYS)})")
    stop = {**DEFAULTS["stop"], **stop}
    try:
        __utils__["rollout_ids.parse_signal"](stop["signal"])
    except SaltInvocationError:
        problems.add(f"{key}:stop:signal", f"unknown signal {stop['signal']!r}")
    if not isinstance(stop["thread_dump"], bool):
        problems.add(f"{key}:stop:thread_dump", f"must be true or false, got {stop['thread_dump']!r}")
    for tkey, value in (("stop:timeout", stop["timeout"]),
                        ("ready_timeout", conf.get("ready_timeout", DEFAULTS["ready_timeout"]))):
        if not _is_seconds(value):
            problems.add(f"{key}:{tkey}", f"must be a positive number of seconds, got {value!r}")
    settle = conf.get("settle", DEFAULTS["settle"])
    if not _is_seconds(settle, minimum_excluded=False):
        problems.add(f"{key}:settle", f"must be a number of seconds >= 0, got {settle!r}")
    keep = conf.get("keep") or []
    if isinstance(keep, str) or not isinstance(keep, (list, tuple)):
        problems.add(f"{key}:keep", f"must be a list of globs, got {keep!r}")
    else:
        for glob in keep:
            if (not isinstance(glob, str) or not glob or glob.startswith("/")
                    or ".." in glob.split("/")):
                problems.add(f"{key}:keep", f"{glob!r} must be a glob inside the program dir")
    policy, found = __utils__["rollout_policy.resolve"](
        conf, len(hosts) if isinstance(hosts, dict) else 0, key)
    for pkey, message in found:
        problems.add(pkey, message)
    if archive:
        sha = (release.get("sha256") or {}).get(name)
        if not sha:
            problems.add(f"release:sha256:{name}",
                         "missing: every upgraded service needs its archive's sha256")
        elif not SHA256_RE.match(str(sha)):
            problems.add(f"release:sha256:{name}",
                         f"{sha!r} is not a sha256 (64 lowercase hex digits)")
    return len(problems.items) == before, policy


def _check_url(problems, key, url, address):
    """http(s) to this host's own address, nothing else (no file:, no other host)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.port is not None and not 0 < parts.port:  # .port raises on a bad port
            raise ValueError(f"port {parts.port}")
    except ValueError as exc:
        problems.add(key, f"{url!r} is not a URL: {exc}")
        return
    if parts.scheme not in ("http", "https"):
        problems.add(key, f"{url!r} must be http:// or https://")
    elif parts.username is not None or parts.password is not None:
        problems.add(key, f"{url!r} must not carry credentials")
    elif (parts.hostname or "").lower() != str(address).lower().strip("[]"):
        problems.add(key, f"{url!r} must point at the host's own address {address} "
                          "(write {address})")


def _check_address(problems, key, address):
    if not isinstance(address, str) or not address:
        problems.add(key, "is required")
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if not HOSTNAME_RE.match(address):
            problems.add(key, f"{address!r} is neither an IP address nor a host name")
            return False
    return True


def _check_host_entry(problems, name, conf, minion_id, release):
    """The host-level values of one host (address, root, URLs filled with its address)."""
    key = f"inventory:services:{name}:hosts:{minion_id}"
    entry = conf["hosts"][minion_id]
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        problems.add(key, "must be a mapping (address, root)")
        return
    for extra in sorted(set(entry) - set(HOST_KEYS)):
        problems.add(f"{key}:{extra}", f"unknown key (known: {', '.join(HOST_KEYS)})")
    root = entry.get("root") or ""
    if root:
        _check_path(problems, f"{key}:root", root)
    address = entry.get("address")
    if not _check_address(problems, f"{key}:address", address):
        return
    fields = {"release": str(release.get("id", "")), "service": name, "address": address}
    if isinstance(conf.get("health_url"), str):
        _check_url(problems, f"inventory:services:{name}:health_url",
                   _fill(conf["health_url"], **fields), address)
    checks = (release.get("checks") or {}).get(name) or []
    if not isinstance(checks, list):
        problems.add(f"release:checks:{name}", "must be a list of checks")
        return
    logs = conf.get("logs") if isinstance(conf.get("logs"), dict) else {}
    for index, check in enumerate(checks):
        ckey = f"release:checks:{name}:{index}"
        if not isinstance(check, dict) or not ("http" in check) ^ ("log" in check):
            problems.add(ckey, "must have either http: {url, contains} or log: {log, pattern}")
            continue
        if "http" in check:
            url = (check["http"] or {}).get("url") if isinstance(check["http"], dict) else None
            if not isinstance(url, str):
                problems.add(f"{ckey}:http:url", "is required")
            else:
                _check_url(problems, f"{ckey}:http:url", _fill(url, **fields), address)
        else:
            spec = check["log"] if isinstance(check["log"], dict) else {}
            if spec.get("log") not in logs:
                problems.add(f"{ckey}:log:log", f"{spec.get('log')!r} must name one of the logs "
                                                f"{sorted(logs)}")
            _check_regex(problems, f"{ckey}:log:pattern", spec.get("pattern"), [fields])
            if spec.get("forbidden") is not None:
                _check_regex(problems, f"{ckey}:log:forbidden", spec["forbidden"], [fields])


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
    for host_id in order:
        if host_id not in service_of:
            _fail("inventory:order", f"{host_id!r} is not under inventory:services:*:hosts")
    ranked = list(dict.fromkeys(order)) + [h for h in service_of if h not in order]
    result = {}
    for host_id in ranked:
        result.setdefault(service_of[host_id], []).append(host_id)
    return list(result.items())


def _release(pillar=None):
    release = _pillar("release", pillar=pillar)
    if not isinstance(release, dict):
        _fail("release", "missing")
    __utils__["rollout_ids.check_name"](str(release.get("id", "")), "pillar release:id:")
    if not release.get("source") or not isinstance(release["source"], str):
        _fail("release:source", "is required (e.g. salt://releases/{release}/{service}.tar)")
    # keep_reports: the run reports the master keeps (runner rolloutreport).
    for key, default in (("keep_backups", 3), ("keep_reports", 20)):
        keep = release.get(key, default)
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            _fail(f"release:{key}", f"must be a whole number >= 1, got {keep!r}")
    return release


def plan(services=None, hosts=None, archive=True, pillar=None):
    """
    Validate the inventory and return the rollout plan: the targeted services in inventory
    order, each with its hosts in upgrade order (host 1 first), its rollout ``policy``
    (batch, canary, soak, max_unavailable, max_fail, drain, undrain: see
    ``_utils/rollout_policy.py``) and its ``waves`` (the hosts that go at once, in order). Every value of every targeted
    service and host is checked before anything is touched (see :func:`host`); one
    ``SaltInvocationError`` names the pillar key of each problem found: unknown service or
    host, duplicate host, missing sha256, unknown stop signal, non-positive timeout, a path
    that is relative, not normalised or a system directory, a regex that does not compile, a
    URL that is not http(s) to the host's own address.

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
        for host_id in (conf or {}).get("hosts") or {}:
            if host_id in seen:
                _fail(f"inventory:services:{name}:hosts:{host_id}",
                      f"duplicate host: also listed at inventory:services:{seen[host_id]}:hosts")
            seen[host_id] = name
    if services is not None:
        if isinstance(services, str) or not isinstance(services, (list, tuple)):
            _fail("services", f"must be a list of service names, got {services!r}")
        for name in services:
            if name not in all_services:
                _fail("services", f"unknown service {name!r} (known: {', '.join(all_services)})")
    if hosts is not None:
        if isinstance(hosts, str) or not isinstance(hosts, (list, tuple)):
            _fail("hosts", f"must be a list of minion ids, got {hosts!r}")
        for host_id in hosts:
            if host_id not in seen:
                _fail("hosts", f"unknown host {host_id!r} (known: {', '.join(seen)})")
    result = []
    problems = _Problems()
    for name, ordered_hosts in _rollout_order(all_services, pillar):
        if services is not None and name not in services:
            continue
        targeted = [h for h in ordered_hosts if hosts is None or h in hosts]
        if not targeted:
            continue
        resolvable, policy = _check_service(problems, name, all_services[name], release, archive)
        if resolvable:
            for host_id in targeted:
                _check_host_entry(problems, name, all_services[name], host_id, release)
        result.append({"service": name, "hosts": targeted, "policy": policy,
                       "waves": __utils__["rollout_policy.waves"](targeted, policy or {})})
    problems.raise_if_any()
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
    the fixed-issue checks. Every value of the host's service and entry is checked first (see
    :func:`plan`); ``SaltInvocationError`` names the pillar key of each problem.

    A ``start`` given as a string is split like shell words (``"sh startup.sh"`` ->
    ``["sh", "startup.sh"]``) and never run through a shell.

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

    pillar
        Use this pillar instead of the minion's.

    CLI Example:

    .. code-block:: bash

        salt-call inventory.host
        salt-run salt.cmd inventory.host ecmc-1
    """
    minion_id = minion_id or __utils__["rollout_ids.minion_id"]()
    services = _services(pillar)
    rel = _release(pillar)
    for name, conf in services.items():
        if minion_id in ((conf or {}).get("hosts") or {}):
            break
    else:
        raise SaltInvocationError(
            f"{minion_id}: not in pillar inventory:services:*:hosts (no service runs here)"
        )
    problems = _Problems()
    resolvable, policy = _check_service(problems, name, conf, rel, archive)
    if resolvable:
        _check_host_entry(problems, name, conf, minion_id, rel)
    problems.raise_if_any()
    release_id = __utils__["rollout_ids.check_name"](str(release or rel["id"]),
                                                     "pillar release:id:")
    entry = conf["hosts"][minion_id] or {}
    root = entry.get("root", "") or ""
    address = entry["address"]

    def at_root(path):
        return posixpath.normpath(root.rstrip("/") + "/" + path.lstrip("/")) if root else path

    fields = {"release": release_id, "service": name, "address": address}
    install_dir = at_root(conf["install_dir"])
    logs = {key: at_root(path) for key, path in conf["logs"].items()}
    # Absolute words of the start command are paths on this host: under its root too.
    start = [at_root(arg) if arg.startswith("/") else arg
             for arg in _start_argv(problems, "start", conf.get("start"))]
    identity = {}
    if conf["kind"] == "tomcat":
        start_cwd = posixpath.dirname(install_dir)
        identity["catalina_base"] = at_root(conf["catalina_base"])
    else:
        start_cwd = install_dir
        identity["app_dir"] = install_dir
        if conf.get("main"):
            identity["main"] = at_root(conf["main"]) if conf["main"].startswith("/") else conf["main"]
    if conf.get("user") is not None:
        identity["user"] = conf["user"]
    ready_fields = {**fields, "release": ready_release or re.escape(release_id)}

    def patterns(items):
        return [{"log": logs[item["log"]], "pattern": _fill(item["pattern"], **ready_fields)}
                for item in items or []]

    checks = []
    for check in copy.deepcopy((rel.get("checks") or {}).get(name) or []):
        check = _fill(check, **fields)
        if "log" in check and check["log"].get("log") in logs:
            check["log"]["path"] = logs[check["log"].pop("log")]
        checks.append(check)
    stop = {**DEFAULTS["stop"], **(conf.get("stop") or {})}
    stop["signal"] = __utils__["rollout_ids.signal_name"](stop["signal"])
    pair = dict(_rollout_order(services, pillar))[name]
    hooks = {verb: __utils__["rollout_policy.fill"](policy[verb], minion_id, address, name)
             if policy[verb] else None for verb in ("drain", "undrain")}
    return {
        "id": minion_id,
        "service": name,
        "kind": conf["kind"],
        "address": address,
        "root": root,
        "pair": pair,
        "partner": [h for h in pair if h != minion_id],
        "install_dir": install_dir,
        "identity": identity,
        "start": start,
        "start_cwd": start_cwd,
        "logs": logs,
        "output": logs.get("app") or next(iter(logs.values())),
        "ready": patterns(conf["ready"]),
        # None: javaservice's default fatal patterns; a list (even []) replaces them.
        "fatal": patterns(conf["fatal"]) if conf.get("fatal") is not None else None,
        "ready_timeout": conf.get("ready_timeout", DEFAULTS["ready_timeout"]),
        "settle": conf.get("settle", DEFAULTS["settle"]),
        "health_url": _fill(conf["health_url"], **fields),
        "stop": stop,
        "keep": list(conf.get("keep") or DEFAULTS["keep"]),
        "release": release_id,
        "source": _fill(rel["source"], **fields),
        "sha256": str((rel.get("sha256") or {}).get(name) or ""),
        "keep_backups": int(rel.get("keep_backups", 3)),
        "checks": checks,
        # The load balancer's hooks for this host (None: the service has none).
        "drain": hooks["drain"],
        "undrain": hooks["undrain"],
    }


# --------------------------------------------------------------------------- on the minion


def _system_target(path):
    """The real path when ``path`` resolves (symlinks) to a system directory, else None."""
    real = os.path.realpath(path)
    problems = _Problems()
    return None if _check_path(problems, "-", real) else real


def _is_local_address(address):
    """True when this host can bind ``address``: it is one of its own."""
    try:
        infos = socket.getaddrinfo(address, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((sockaddr[0], 0))
            return True
        except OSError:
            continue
    return False


def _program(argv, cwd):
    """The start program's path as the start resolves it (PATH for a bare name)."""
    program = argv[0]
    if "/" not in program:
        return shutil.which(program) or program
    return program if program.startswith("/") else os.path.join(cwd, program)


def check_host(minion_id=None, release=None, archive=True, pillar=None):
    """
    Pre-flight of this host's pillar entry against the host itself, read-only: everything
    :func:`host` checks, then the start program exists, is a regular file and executable
    (a script run by ``sh`` must exist in the start's cwd), the start's cwd, the program dir,
    the Tomcat base and every log's directory exist and do not resolve (symlinks) to a system
    directory, ``user`` exists, a ``main`` jar exists, and the address is one of the host's
    own. Raises ``CommandExecutionError`` naming the minion and the pillar key of each
    problem; returns ``{"id", "service", "checked": [what was checked], "host": <host()>}``.

    minion_id, release, archive, pillar
        As for :func:`host`.

    CLI Example:

    .. code-block:: bash

        salt-call inventory.check_host
        salt ecsc-1 inventory.check_host
    """
    resolved = host(minion_id, release=release, archive=archive, pillar=pillar)
    svc, hid = resolved["service"], resolved["id"]
    key = f"inventory:services:{svc}"
    problems = _Problems()
    checked = []

    def directory(pkey, path, what):
        checked.append(f"{what} {path}")
        if not os.path.isdir(path):
            problems.add(pkey, f"{what} {path} is not a directory on {hid}")
            return False
        real = _system_target(path)
        if real:
            problems.add(pkey, f"{what} {path} resolves to the system directory {real}")
            return False
        return True

    if resolved["root"]:
        directory(f"{key}:hosts:{hid}:root", resolved["root"], "root")
    directory(f"{key}:install_dir", resolved["install_dir"], "program dir")
    if "catalina_base" in resolved["identity"]:
        directory(f"{key}:catalina_base", resolved["identity"]["catalina_base"], "Tomcat base")
    cwd = resolved["start_cwd"]
    if directory(f"{key}:start", cwd, "start cwd"):
        argv = resolved["start"]
        program = _program(argv, cwd)
        checked.append(f"start program {program}")
        if not os.path.isfile(program):
            problems.add(f"{key}:start", f"program {argv[0]!r} not found on {hid} (cwd {cwd})")
        elif not os.access(program, os.X_OK):
            problems.add(f"{key}:start", f"program {program} is not executable on {hid}")
        elif os.path.basename(program) in SHELLS and len(argv) > 1 and not argv[1].startswith("-"):
            script = os.path.join(cwd, argv[1])
            checked.append(f"start script {script}")
            if not os.path.isfile(script):
                problems.add(f"{key}:start", f"script {argv[1]!r} not found in {cwd} on {hid}")
    for name, path in resolved["logs"].items():
        checked.append(f"log dir of {path}")
        if not os.path.isdir(os.path.dirname(path)):
            problems.add(f"{key}:logs:{name}",
                         f"{os.path.dirname(path)} (dir of {path}) is not a directory on {hid}")
        elif os.path.lexists(path) and not os.path.isfile(path):
            problems.add(f"{key}:logs:{name}", f"{path} is not a regular file on {hid}")
    user = resolved["identity"].get("user")
    if user is not None:
        checked.append(f"user {user}")
        lookup = pwd.getpwuid if isinstance(user, int) else pwd.getpwnam
        try:
            lookup(user)
        except KeyError:
            problems.add(f"{key}:user", f"no user {user!r} on {hid}")
    main = resolved["identity"].get("main")
    if main and main.endswith(".jar"):
        jar = main if main.startswith("/") else os.path.join(resolved["install_dir"], main)
        checked.append(f"main jar {jar}")
        if not os.path.isfile(jar):
            problems.add(f"{key}:main", f"{jar} is not a file on {hid}")
    checked.append(f"address {resolved['address']}")
    if not _is_local_address(resolved["address"]):
        problems.add(f"{key}:hosts:{hid}:address",
                     f"{resolved['address']} is not an address of {hid}")
    problems.raise_if_any(CommandExecutionError, prefix=f"{hid}: ")
    return {"id": hid, "service": svc, "checked": checked, "host": resolved}


# Custom module types the repo ships to minions (``_modules``, ``_states``, ``_utils``), by the
# name of their directory under the minion's ``extension_modules``.
SHIPPED_CODE = ("modules", "states", "utils")


def _code_hashes():
    """{"<type>/<file>": sha256} of the custom modules synced to this minion."""
    root = __opts__.get("extension_modules") or os.path.join(__opts__["cachedir"], "extmods")
    found = {}
    for kind in SHIPPED_CODE:
        try:
            names = sorted(os.listdir(os.path.join(root, kind)))
        except FileNotFoundError:
            continue
        for name in names:
            path = os.path.join(root, kind, name)
            if name.endswith(".py") and os.path.isfile(path):
                found[f"{kind}/{name}"] = salt.utils.hashutils.get_hash(path, "sha256")
    return found


def current(minion_id=None, release=None, pillar=None, preflight=False, quick=False):
    """
    What this host runs now, read-only: whether it is already on the release (the deployed
    record names it, the program dir is intact and came from the pillar's archive, the JVM
    started after that deploy and the health URL answers 200) and the sha256 of each custom
    module synced to it. ``orch.upgrade`` asks every targeted host this once while it renders,
    so a host with nothing to do costs no state job and a minion whose modules are the
    master's is not synced again.

    The host's pre-flight check of its pillar entry (:func:`check_host`) comes first: a host
    whose entry does not hold on it is never "on the release", so the run pre-flights it and
    stops before any host is touched, as it would without this survey.

    Returns ``{"id", "release", "on_release": bool, "healthy": bool (its health URL answers
    200 now: a rollout's max_unavailable counts hosts that do not), "why": what is not as
    planned (None when on_release), "code": {"modules/<file>": sha256, ...}}``, and with
    ``preflight`` a ``"preflight": {"result": bool, "comment"}`` for a host not on the release.

    minion_id, release, pillar
        As for :func:`host`.

    preflight
        For a host not on the release, also run the upgrade's whole pre-flight
        (``release.preflight``: the archive fetched and verified, room for backup and
        staging), so the orchestration needs no pre-flight job of its own for this host.

    quick
        Between two waves of a rollout (runner ``rollout.gate``): "on the release" from the
        deployed record (release, archive sum) and the health URL only; no tree is hashed,
        no JVM looked for and no module hashed (``code`` is None).

    CLI Example:

    .. code-block:: bash

        salt '*' inventory.current
        salt ecsc-1 inventory.current release=20170220
        salt ecsc-1 inventory.current preflight=True
    """
    ret = {"id": minion_id or __utils__["rollout_ids.minion_id"](), "release": None,
           "on_release": False, "healthy": False, "why": None,
           "code": None if quick else _code_hashes()}
    try:
        resolved = check_host(minion_id, release=release, pillar=pillar)["host"]
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["why"] = str(exc)
        if preflight:
            ret["preflight"] = {"result": False, "comment": ret["why"]}
        return ret
    health = __utils__["rollout_http.get"](resolved["health_url"], timeout=5)
    ret["healthy"] = health["status"] == 200
    target, svc = resolved["install_dir"], resolved["service"]
    # Between waves the record tells whether the upgrade landed: no tree hashing then.
    deployed = ((__salt__["release.read_record"](target) or {}) if quick
                else __salt__["release.status"](target))
    ret["release"] = deployed.get("release")
    sha256 = resolved["sha256"].lower()
    if ret["release"] != resolved["release"]:
        ret["why"] = f"{target} is on {ret['release']}, not {resolved['release']}"
    elif not quick and deployed["intact"] is not True:
        ret["why"] = f"{target} differs from its deployed record"
    elif sha256 and (deployed.get("archive_sha256") or "") != sha256:
        ret["why"] = f"{target} came from another archive than sha256 {sha256}"
    else:
        # quick: the JVM is not looked for (its health answers for it).
        running = ({"running": True, "release": resolved["release"]} if quick else
                   __salt__["javaservice.status"](svc, install_dir=target, **resolved["identity"]))
        if not running["running"]:
            ret["why"] = f"{svc} is not running"
        elif running["release"] != resolved["release"]:
            ret["why"] = (f"{svc}'s JVM does not run {resolved['release']}: "
                          f"{running['release_note']}")
        elif health["status"] != 200:
            ret["why"] = f"{resolved['health_url']} answers {health['status']}"
        else:
            ret["on_release"] = True
    if preflight and not ret["on_release"]:
        try:
            checked = __salt__["release.preflight"](target, resolved["source"], resolved["sha256"])
            ret["preflight"] = {"result": True, "comment": f"{ret['id']}: {checked['comment']}"}
        except (CommandExecutionError, SaltInvocationError) as exc:
            ret["preflight"] = {"result": False, "comment": str(exc)}
    return ret
