"""
States that prove a service works (read-only): an HTTP answer and the shape of new log lines.
They never change anything, so they report no changes; under ``test=True`` they say what they
would check (the thing checked may not exist until the real run).
"""

import logging

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "probe"


def __virtual__():
    if "probe.http" in __salt__:
        return __virtualname__
    return (False, "the probe execution module is not loaded")


def _run(name, title, func, *args, **kwargs):
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would check: {title}"
        return ret
    try:
        found = func(*args, **kwargs)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"FAILED {title}: {exc}"
        return ret
    ret["result"] = True
    ret["comment"] = f"passed {title}: {found}"
    return ret


def http_ok(name, url, status=200, contains=None, timeout=5):
    """
    Pass when ``url`` answers ``status`` (and contains ``contains``).

    .. code-block:: yaml

        bug-9427:
          probe.http_ok:
            - url: http://25.0.3.27:8080/ecmc/customers
            - contains: '"balance":12.345'
    """
    return _run(name, name, __salt__["probe.http"], url, status=status, contains=contains,
                timeout=timeout)


def log_lines(name, path, pattern, forbidden=None, count=2, timeout=15, since_start=None):
    """
    Pass when ``count`` new lines of ``path`` match ``pattern`` and none matches ``forbidden``
    (new: from now on, or with ``since_start: <service>`` since that service's last start, see
    ``probe.log``).

    .. code-block:: yaml

        money-log-timestamp:
          probe.log_lines:
            - path: /home/schedulelog/schedule.log
            - pattern: '^\\d{4}-\\d\\d-\\d\\dT\\S+ log\\.money\\.'
            - forbidden: '^log\\.money\\.'
    """
    return _run(name, name, __salt__["probe.log"], path, pattern, forbidden=forbidden,
                count=count, timeout=timeout, since_start=since_start)
