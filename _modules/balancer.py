"""
The load balancer in front of a service's hosts, reached through the service's ``drain`` and
``undrain`` hooks (pillar ``inventory:services:<svc>:drain|undrain``: a command or an HTTP
call, with a timeout; see ``pillar.example``). The upgrade drains a host before it stops its
service and puts it back once every gate passed, so no request is sent to a stopping JVM.

:depends: none

A hook that fails (non-zero exit, a non-2xx answer, no answer within its timeout) raises
``CommandExecutionError`` naming the host, the hook and what it said: a failed drain stops that
host's upgrade before its service is stopped.
"""

import logging
import shlex
import time

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "balancer"
VERBS = ("drain", "undrain")


def __virtual__():
    return __virtualname__


def hook(verb, minion_id=None, pillar=None):
    """
    The ``drain`` or ``undrain`` hook of this host's service, filled in for this host
    (``{"cmd": [...]}`` or ``{"http": url, "method"}``, plus ``timeout``), or None when the
    service has none.

    verb
        ``drain`` or ``undrain``.

    minion_id
        The host (default: this minion).

    pillar
        Use this pillar instead of the minion's.

    CLI Example:

    .. code-block:: bash

        salt ecsc-1 balancer.hook drain
    """
    if verb not in VERBS:
        raise CommandExecutionError(f"verb {verb!r} must be one of {', '.join(VERBS)}")
    host = __salt__["inventory.host"](minion_id, archive=False, pillar=pillar)
    return host.get(verb)


def _run(verb, minion_id, pillar):
    found = hook(verb, minion_id, pillar)
    where = __utils__["rollout_ids.minion_id"]("minion") if minion_id is None else minion_id
    if found is None:
        return {"host": where, "hook": None, "seconds": 0.0}
    began = time.monotonic()
    if "cmd" in found:
        what = shlex.join(found["cmd"])
        done = __salt__["cmd.run_all"](found["cmd"], python_shell=False, ignore_retcode=True,
                                       timeout=found["timeout"], output_loglevel="debug")
        if done["retcode"] != 0:
            said = (done.get("stderr") or done.get("stdout") or "").strip()[-500:]
            raise CommandExecutionError(
                f"{where}: {verb} hook `{what}` exited {done['retcode']} (timeout "
                f"{found['timeout']}s): {said or 'no output'}")
    else:
        what = f"{found['method']} {found['http']}"
        answer = __utils__["rollout_http.request"](found["http"], found["method"],
                                                   found["timeout"])
        if answer["status"] is None or not 200 <= answer["status"] < 300:
            raise CommandExecutionError(
                f"{where}: {verb} hook {what} answered "
                f"{answer['status'] or answer['error']} (timeout {found['timeout']}s): "
                f"{answer['body'][:300]}")
    seconds = round(time.monotonic() - began, 3)
    log.info("%s: %s hook %s done in %.3fs", where, verb, what, seconds)
    return {"host": where, "hook": what, "seconds": seconds}


def drain(minion_id=None, pillar=None):
    """
    Run the service's drain hook for this host: the load balancer sends it no new request
    (the hook returns once the host's requests in flight ended, or fails). Returns
    ``{"host", "hook", "seconds"}`` (``hook`` None: the service has no drain hook);
    ``minion_id`` and ``pillar`` as for :func:`hook`.

    CLI Example:

    .. code-block:: bash

        salt ecsc-1 balancer.drain
    """
    return _run("drain", minion_id, pillar)


def undrain(minion_id=None, pillar=None):
    """
    Run the service's undrain hook for this host: back in the load balancer's rotation.
    Returns ``{"host", "hook", "seconds"}`` (``hook`` None: the service has no undrain hook);
    ``minion_id`` and ``pillar`` as for :func:`hook`.

    CLI Example:

    .. code-block:: bash

        salt ecsc-1 balancer.undrain
    """
    return _run("undrain", minion_id, pillar)
