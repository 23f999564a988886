"""
States for the load balancer in front of a service (its pillar ``drain``/``undrain`` hooks,
see the ``balancer`` execution module): ``drained`` before the service stops, ``in_rotation``
once every gate passed. A service with no hook passes with nothing done.

.. code-block:: yaml

    drained:
      balancer.drained:
        - name: ecsc
"""

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
