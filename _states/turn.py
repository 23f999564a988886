"""
The first state of a host's upgrade when orch.upgrade published the job ahead of the host's
wave: wait here, touching nothing, until the master gives this host its turn (see the
``turn`` execution module for why and how).
"""

import logging
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "turn"


def __virtual__():
    if "turn.wait" in __salt__:
        return __virtualname__
    return (False, "the turn execution module is not loaded")


def taken(name, timeout=3600):
    """
    Pass once the master gives this host its turn in run ``name`` (verdict ``go``); fail,
    with nothing touched, on ``abort`` (the run stopped before this host's wave) or after
    ``timeout`` seconds without a verdict. Every other state of the upgrade requires it.

    .. code-block:: yaml

        turn:
          turn.taken:
            - name: 6f1c0a...        # the run token, pillar rollout_turn:run
            - timeout: 3600
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = "would wait for this host's turn in the run"
        return ret
    started = time.monotonic()
    try:
        verdict = __salt__["turn.wait"](name, timeout=timeout)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    waited = time.monotonic() - started
    if verdict != "go":
        ret["comment"] = (f"not this host's turn: run {name} ended before its wave "
                          f"(verdict {verdict} after {waited:.1f}s); nothing was touched")
        return ret
    ret["result"] = True
    ret["comment"] = f"turn given after {waited:.2f}s"
    return ret
