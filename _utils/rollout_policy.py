"""
A service's rollout policy (pillar ``inventory:services:<svc>``): how many hosts go at once,
the canary and its soak, how many may be down or fail, and the drain/undrain hooks.

    batch            hosts upgraded at once: a count or "25%" (default 1: the runbook's pairs)
    canary           the first N hosts alone, before any batch (default 0)
    soak             seconds the canary is watched after its gates (needs canary; default 0)
    max_unavailable  never more hosts down at once: a count or % (default: the batch)
    min_healthy      hosts that must stay up: a count or % (caps max_unavailable)
    max_fail         failed hosts that stop the service's rollout: a count or % (default 1)
    drain, undrain   {cmd: ... | http: ..., method, timeout}: before the stop, after the gates

Percentages round up and count at least one host. Reached as
``__utils__["rollout_policy.<function>"]``; pure functions, no I/O.

:depends: none
"""

import math
import re
import shlex
import urllib.parse

__virtualname__ = "rollout_policy"

POLICY_KEYS = ("batch", "canary", "soak", "max_unavailable", "min_healthy", "max_fail",
               "drain", "undrain")
HOOK_KEYS = ("cmd", "http", "method", "timeout")
HOOK_FIELDS = ("host", "address", "service")
HOOK_TIMEOUT = 10
_PERCENT = re.compile(r"^(\d{1,3})%$")


def __virtual__():
    return __virtualname__


def _hosts(value, total, key, problems, minimum):
    """A count or "N%" of ``total`` hosts as an int (None and a problem when invalid)."""
    if isinstance(value, bool):
        value = None
    elif isinstance(value, str) and _PERCENT.fullmatch(value.strip()):
        percent = int(_PERCENT.fullmatch(value.strip()).group(1))
        if 0 < percent <= 100:
            return max(1, math.ceil(total * percent / 100))
        value = None
    if isinstance(value, int) and value >= minimum:
        return value
    problems.append((key, f"must be a count >= {minimum} or a percentage like '25%'"))
    return None


def _hook(value, key, problems):
    """A drain/undrain hook checked: exactly one of cmd (str or list) and http (URL)."""
    if not isinstance(value, dict):
        problems.append((key, "must be a mapping with cmd or http (and timeout)"))
        return None
    for extra in sorted(set(value) - set(HOOK_KEYS)):
        problems.append((f"{key}:{extra}", f"unknown key (known: {', '.join(HOOK_KEYS)})"))
    if ("cmd" in value) == ("http" in value):
        problems.append((key, "needs exactly one of cmd and http"))
        return None
    hook = {"timeout": value.get("timeout", HOOK_TIMEOUT)}
    if isinstance(hook["timeout"], bool) or not isinstance(hook["timeout"], (int, float)) \
            or hook["timeout"] <= 0:
        problems.append((f"{key}:timeout", "must be a number of seconds > 0"))
    if "cmd" in value:
        cmd = value["cmd"]
        argv = shlex.split(cmd) if isinstance(cmd, str) else cmd
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            problems.append((f"{key}:cmd", "must be a command line or a list of strings"))
            return None
        hook["cmd"] = argv
        texts = argv
    else:
        url = value["http"]
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            problems.append((f"{key}:http", "must be an http(s) URL"))
            return None
        hook["http"] = url
        hook["method"] = str(value.get("method", "POST")).upper()
        texts = [url]
    for text in texts:
        try:
            text.format(**{field: "" for field in HOOK_FIELDS})
        except (KeyError, IndexError, ValueError) as exc:
            problems.append((key, f"{text!r}: only {{host}}, {{address}}, {{service}} may be "
                                  f"filled in ({exc})"))
    return hook


def resolve(conf, total, key):
    """The policy of a service of ``total`` hosts from its pillar ``conf``.

    Returns ``(policy, problems)``: policy has batch, canary, soak, max_unavailable, max_fail
    (ints, soak in seconds) and drain/undrain (a checked hook or None); problems is a list of
    ``(pillar key, message)``, empty when the policy is usable.
    """
    problems = []
    given = {k: conf[k] for k in POLICY_KEYS if conf.get(k) is not None}
    batch = _hosts(given.get("batch", 1), total, f"{key}:batch", problems, 1)
    canary = _hosts(given.get("canary", 0), total, f"{key}:canary", problems, 0)
    max_fail = _hosts(given.get("max_fail", 1), total, f"{key}:max_fail", problems, 1)
    soak = given.get("soak", 0)
    if isinstance(soak, bool) or not isinstance(soak, (int, float)) or soak < 0:
        problems.append((f"{key}:soak", "must be a number of seconds >= 0"))
        soak = None
    elif soak and not canary:
        problems.append((f"{key}:soak", "watches the canary: set canary too"))
    down = None
    if "max_unavailable" in given:
        down = _hosts(given["max_unavailable"], total, f"{key}:max_unavailable", problems, 1)
    if "min_healthy" in given:
        healthy = _hosts(given["min_healthy"], total, f"{key}:min_healthy", problems, 0)
        if healthy is not None:
            allowed = total - healthy
            if allowed < 1:
                problems.append((f"{key}:min_healthy",
                                 f"{healthy} of {total} hosts must stay up: none may stop"))
            down = allowed if down is None else min(down, allowed)
    if down is None:
        down = batch
    if batch and down and batch > down:
        problems.append((f"{key}:batch", f"{batch} hosts at once would exceed "
                                         f"max_unavailable {down}"))
    if canary and down and canary > down:
        problems.append((f"{key}:canary", f"{canary} canary hosts at once would exceed "
                                          f"max_unavailable {down}"))
    if canary is not None and canary >= total > 1:
        problems.append((f"{key}:canary", f"{canary} of {total} hosts leaves no batch"))
    policy = {
        "batch": batch, "canary": canary, "soak": soak, "max_unavailable": down,
        "max_fail": max_fail,
        "drain": _hook(given["drain"], f"{key}:drain", problems) if "drain" in given else None,
        "undrain": _hook(given["undrain"], f"{key}:undrain", problems)
        if "undrain" in given else None,
    }
    return policy, problems


def waves(hosts, policy):
    """The hosts in the order they go: the canary wave alone, then batches of ``batch``."""
    hosts = list(hosts)
    canary = policy.get("canary") or 0
    batch = policy.get("batch") or 1
    found = [hosts[:canary]] if canary else []
    rest = hosts[canary:]
    found += [rest[i:i + batch] for i in range(0, len(rest), batch)]
    return found


def fill(hook, host, address, service):
    """The hook for one host: {host}, {address}, {service} filled into its cmd or URL."""
    fields = {"host": host, "address": address, "service": service}
    filled = dict(hook)
    if "cmd" in hook:
        filled["cmd"] = [arg.format(**fields) for arg in hook["cmd"]]
    else:
        filled["http"] = hook["http"].format(**fields)
    return filled
