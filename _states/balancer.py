"""
States for the load balancer in front of a service (its pillar ``drain``/``undrain`` hooks,
see the ``balancer`` execution module): ``drained`` before the service stops, ``in_rotation``
once every gate passed, and ``soaked`` for a canary: back in rotation, it serves real traffic
for its soak time while it is watched; if it fails, it is drained again. A service with no
hook passes with nothing done (and a canary then soaks without a balancer).

.. code-block:: yaml

    drained:
      balancer.drained:
        - name: ecsc
"""

import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

__virtualname__ = "balancer"


def __virtual__():
    if "balancer.drain" in __salt__:
        return __virtualname__
    return (False, "the balancer execution module is not loaded")


def _hooked(name, verb, done_word):
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        found = __salt__["balancer.hook"](verb, pillar=__pillar__)
        if found is None:
            ret["result"] = True
            ret["comment"] = f"{name}: no {verb} hook in the pillar: nothing to do"
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = f"{name}: would run the {verb} hook"
            return ret
        done = __salt__[f"balancer.{verb}"](pillar=__pillar__)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"{name}: {verb} failed: {exc}"
        return ret
    ret["result"] = True
    ret["changes"] = {done_word: done}
    ret["comment"] = f"{name}: {done_word} ({done['hook']}, {done['seconds']:.2f}s)"
    return ret


def drained(name):
    """
    The host is out of the load balancer's rotation (the service's ``drain`` hook ran).

    name
        The service (for the comment).
    """
    return _hooked(name, "drain", "drained")


def in_rotation(name):
    """
    The host is back in the load balancer's rotation (the service's ``undrain`` hook ran).

    name
        The service (for the comment).
    """
    return _hooked(name, "undrain", "undrained")


def soaked(name, seconds, logs=None, fatal=None, url=None, timeout=120, **identity):
    """
    The canary's soak, in rotation: for ``seconds`` the same JVM stays alive, ``url`` answers
    200 and no ``fatal`` pattern appears in ``logs`` (lines since its start): the settle time
    of ``javaservice.wait_ready``, run while the host serves the load balancer's traffic. If
    the soak fails, the host is drained again (the service's ``drain`` hook) and the state
    fails, so that the upgrade's armed rollback puts the old release back.

    name
        The service (as given to ``javaservice.start``).

    seconds
        The soak time (pillar ``soak`` of the service's canary); 0: nothing to watch.

    logs / fatal / url / timeout
        As for ``javaservice.wait_ready`` (the ready gate's own values).

    catalina_base / app_dir / main / user / pidfile
        The JVM's identity, see ``javaservice.pids``.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    if not seconds:
        ret["result"] = True
        ret["comment"] = f"{name}: no soak time: nothing to watch"
        return ret
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = (f"{name}: would watch it in rotation for {seconds:g}s (same JVM, "
                          "health, no fatal line), drained again and failed if it falters")
        return ret
    began = time.monotonic()
    try:
        # No ready pattern: the ready gate found them; the settle time is the soak.
        watched = __salt__["javaservice.wait_ready"](
            name, logs=logs, ready=[], fatal=fatal, url=url, timeout=timeout, settle=seconds,
            **identity)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = f"{name}: soak failed after {time.monotonic() - began:.1f}s: {exc}"
        drained = _hooked(name, "drain", "drained")
        ret["changes"] = drained["changes"]
        ret["comment"] += ("; drained again" if drained["changes"] else
                           f"; {drained['comment']}" if drained["result"] is False else "")
        return ret
    ret["result"] = True
    ret["changes"] = {"soaked": {"seconds": seconds, "pids": watched["pids"],
                                 "http_status": watched["http_status"]}}
    ret["comment"] = (f"{name}: watched {seconds:g}s while serving: same JVM "
                      f"({', '.join(map(str, watched['pids']))}), health "
                      f"{watched['http_status'] or '-'}, no fatal line")
    return ret
