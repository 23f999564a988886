"""
Read-only probes that prove a service works: an HTTP answer, and new log lines of a given
shape. Used to verify the issues a release fixes and by the compliance check.

:depends: none

Both raise ``CommandExecutionError`` with what was expected and what was found, so a failed
probe fails the state (and the orchestration) that runs it.
"""

import re
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "probe"


def __virtual__():
    return __virtualname__


def _where():
    return __utils__["rollout_ids.minion_id"]("minion")


def http(url, status=200, contains=None, timeout=5):
    """
    GET ``url``; it must answer ``status`` and, when given, contain the text ``contains``.
    Returns ``{"url", "status", "body"}`` (body cut to 500 characters).

    url
        The URL to fetch.

    status
        Expected HTTP status (default 200).

    contains
        Text the body must contain (e.g. ``"balance":12.345``).

    timeout
        Seconds for the request (default 5).

    CLI Example:

    .. code-block:: bash

        salt-call probe.http http://25.0.3.27:8080/ecmc/customers contains='"balance":12.345'
    """
    ret = __utils__["rollout_http.get"](url, timeout=float(timeout))
    found = ret.get("status")
    body = ret.get("body") or ""
    if found != int(status):
        why = f" ({ret['error']})" if ret.get("error") else ""
        raise CommandExecutionError(
            f"{_where()}: GET {url} answered {found}{why}, expected {status}"
        )
    if contains is not None and str(contains) not in body:
        raise CommandExecutionError(
            f"{_where()}: GET {url} answered {found} without {contains!r}; body: {body[:300]!r}"
        )
    return {"url": url, "status": found, "body": body[:500]}


def _follower(path, since_start):
    """A follower of ``path`` from the service's last start offset, else from its end."""
    if since_start:
        started = __salt__["javaservice.last_start"](since_start)
        offset = (started.get("offsets") or {}).get(path)
        if offset is not None:
            return __utils__["rollout_logs.follow"](
                path, offset, (started.get("inodes") or {}).get(path)
            )
    return __utils__["rollout_logs.follow_from_end"](path)


def log(path, pattern, forbidden=None, count=2, timeout=15, interval=0.1, since_start=None):
    """
    Watch the lines a log gets from now on (or, with ``since_start``, since the service's last
    start): ``count`` new lines must match ``pattern`` within ``timeout`` seconds, and no new
    line may match ``forbidden``. Proves the behaviour of the code running now, not of lines
    an older release wrote.

    path
        The log file.

    pattern
        Regex the new lines must match (searched in each line).

    forbidden
        Regex no new line may match (e.g. a money line without a timestamp).

    count
        How many matching lines are needed (default 2).

    timeout
        Seconds to wait for them (default 15).

    interval
        Seconds between two looks at the log (default 0.1).

    since_start
        A service name: count the lines written since its last ``javaservice.start`` (the
        byte offset that start recorded for ``path``), so lines the new JVM logged while it
        became ready count too and a check right after an upgrade does not wait for more.
        Falls back to "from now" when that start recorded no offset for ``path``.

    CLI Example:

    .. code-block:: bash

        salt-call probe.log /home/schedulelog/schedule.log '^\\d{4}-\\d\\d-\\d\\dT\\S+ log\\.money\\.' forbidden='^log\\.money\\.'
        salt-call probe.log /home/schedulelog/schedule.log '^\\d{4}-\\S+ log\\.money\\.' since_start=schedule
    """
    try:
        want = re.compile(pattern)
        bad = re.compile(forbidden) if forbidden else None
    except re.error as exc:
        raise SaltInvocationError(f"probe.log: bad regex: {exc}") from exc
    try:
        follower = _follower(path, since_start)
    except OSError as exc:
        raise CommandExecutionError(f"{_where()}: cannot read log {path}: {exc}") from exc
    matched, seen = [], []
    deadline = time.monotonic() + float(timeout)
    while True:
        for line in follower.poll():
            seen.append(line)
            if bad is not None and bad.search(line):
                raise CommandExecutionError(
                    f"{_where()}: {path}: new line matches forbidden {forbidden!r}: {line!r}"
                )
            if want.search(line):
                matched.append(line)
        if len(matched) >= int(count):
            return {"path": path, "matched": matched[: int(count)], "lines_read": len(seen)}
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{_where()}: {path}: {len(matched)} of {count} new lines matched {pattern!r} "
                f"in {timeout}s; last new lines: {seen[-5:]!r}"
            )
        time.sleep(interval)
