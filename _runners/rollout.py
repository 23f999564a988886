"""
Master-side pre-flight of an upgrade or rollback: every targeted minion answers before any
host is touched (orch.upgrade and orch.rollback run it right after taking the rollout lock).

:depends: none (the master's LocalClient)
"""

import json
import logging

import salt.client
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "rollout"


def __virtual__():
    return __virtualname__


def _ping(hosts, timeout):
    """{id: True} of the hosts that answered ``test.ping`` within ``timeout`` seconds."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return client.cmd(hosts, "test.ping", tgt_type="list", timeout=timeout) or {}
    finally:
        client.destroy()


def answering(hosts, command="orch.upgrade", timeout=10):
    """
    Check that every one of ``hosts`` answers ``test.ping`` within ``timeout`` seconds, or
    raise ``CommandExecutionError`` naming the silent ones and the command that runs the
    others without them.

    hosts
        Minion ids (a list).

    command
        The orchestration being run, for the hint (``orch.upgrade`` or ``orch.rollback``).

    timeout
        Seconds to wait for the answers.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.answering hosts='[ecsc-1, ecsc-2]'
    """
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise SaltInvocationError(f"hosts must be a non-empty list of minion ids, got {hosts!r}")
    answered = _ping(list(hosts), timeout)
    silent = [host for host in hosts if answered.get(host) is not True]
    if not silent:
        return {"answered": list(hosts)}
    rest = [host for host in hosts if host not in silent]
    hint = (
        f"to run the others without {'it' if len(silent) == 1 else 'them'}: salt-run "
        f"state.orchestrate {command} pillar='{json.dumps({'hosts': rest})}'"
        if rest
        else "no targeted minion answers"
    )
    raise CommandExecutionError(
        f"{', '.join(silent)}: the minion did not answer test.ping within {timeout}s; "
        f"no host was touched. Bring it back (salt-key -L, its salt-minion service) and run "
        f"{command} again, or {hint}"
    )
