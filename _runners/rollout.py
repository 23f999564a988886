"""
Master-side pre-flight of an upgrade or rollback (orch.upgrade and orch.rollback run it right
after taking the rollout lock): every targeted minion answers, and none is still running a
state job (one left by an interrupted run, e.g. a killed ``salt-run``: the minion finishes it
on its own; this run waits for it, then resumes the host from where that job left it).

:depends: none (the master's LocalClient)
"""

import json
import logging
import time

import salt.client
from salt.exceptions import CommandExecutionError, SaltClientError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "rollout"


def __virtual__():
    return __virtualname__


POLL_SECONDS = 2


def _cmd(hosts, fun, timeout):
    """{id: return} of ``fun`` on the hosts that answered within ``timeout`` seconds."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return client.cmd(hosts, fun, tgt_type="list", timeout=timeout) or {}
    finally:
        client.destroy()


def _ping(hosts, timeout):
    return _cmd(hosts, "test.ping", timeout)


def _state_jobs(hosts, timeout):
    """{id: ["<fun> jid <jid>", ...]} of the state jobs running on the hosts."""
    running = _cmd(hosts, "saltutil.running", timeout)
    busy = {}
    for host, jobs in running.items():
        for job in jobs if isinstance(jobs, list) else []:
            if isinstance(job, dict) and str(job.get("fun", "")).startswith("state."):
                busy.setdefault(host, []).append(f"{job['fun']} jid {job.get('jid')}")
    return busy


def answering(hosts, command="orch.upgrade", timeout=10, wait=600):
    """
    Check that every one of ``hosts`` answers ``test.ping`` within ``timeout`` seconds, or
    raise ``CommandExecutionError`` naming the silent ones and the command that runs the
    others without them. Then wait (up to ``wait`` seconds) until none of them runs a state
    job any more (one left by an interrupted run), or raise naming the host and the job.

    hosts
        Minion ids (a list).

    command
        The orchestration being run, for the hint (``orch.upgrade`` or ``orch.rollback``).

    timeout
        Seconds to wait for the answers.

    wait
        Seconds to wait for state jobs already running on the hosts to end.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.answering hosts='[ecsc-1, ecsc-2]'
    """
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise SaltInvocationError(f"hosts must be a non-empty list of minion ids, got {hosts!r}")
    try:
        answered = _ping(list(hosts), timeout)
    except SaltClientError as exc:
        raise CommandExecutionError(
            f"cannot ask the minions whether they answer (is the salt-master running?): {exc}; "
            "no host was touched"
        ) from exc
    silent = [host for host in hosts if answered.get(host) is not True]
    if not silent:
        return {"answered": list(hosts), "waited_for": _wait_idle(list(hosts), timeout, wait)}
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


def _wait_idle(hosts, timeout, wait):
    """Wait until no host runs a state job; the jobs that were waited for."""
    deadline = time.monotonic() + float(wait)
    waited = {}
    while True:
        busy = _state_jobs(hosts, timeout)
        if not busy:
            return waited
        for host, jobs in busy.items():
            waited.setdefault(host, sorted(set(waited.get(host, []) + jobs)))
        if time.monotonic() >= deadline:
            running = "; ".join(f"{host}: {', '.join(jobs)}" for host, jobs in sorted(busy.items()))
            raise CommandExecutionError(
                f"still running after {wait}s: {running} (left by an interrupted run?); no host "
                "was touched. Let it finish (salt-run jobs.active) and run this again"
            )
        log.warning("rollout: waiting for state jobs to end: %s", busy)
        time.sleep(POLL_SECONDS)
