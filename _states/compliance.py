"""
The compliance report as a step of an orchestration (``salt/orch/compliance.sls``): runs the
``compliance.report`` runner (``_runners/compliance.py``, which does all the work) inside the
orchestration's own state run on the master.

Why not ``salt.runner``: that state goes through ``saltutil.runner``, which builds a new
RunnerClient, and with it a MasterMinion (every execution module, returners), fires the
runner job's events and stores the job: about 0.7 s of a 4 s ``orch.compliance`` on the
lab. This state loads only the two runners the report uses (``compliance``,
``rolloutlock``) with the orchestration's own opts and utils. The master's ``schedule:``
and ``salt-run compliance.report`` call the runner directly, as before.

Master side only (``__virtual__`` refuses on minions): it needs the master's LocalClient,
cache dir and event bus, and ``salt-run saltutil.sync_all`` (or ``sync_states``) to have
synced it to the master.

:depends: the repo's ``compliance`` and ``rolloutlock`` runners synced to the master
"""

import logging

import salt.loader
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "compliance"

#: The runners the report needs (compliance.report calls rolloutlock.holder).
_RUNNERS = ("compliance", "rolloutlock")


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "compliance states run on the master only (in orchestrations)")
    return __virtualname__


def _runners():
    """The master's ``compliance`` and ``rolloutlock`` runners (one loader: the report calls
    ``rolloutlock.holder`` through its ``__salt__``)."""
    return salt.loader.runner(__opts__, utils=__utils__, context={}, whitelist=_RUNNERS)


def _runner(fun):
    runners = _runners()
    if fun not in runners:
        raise CommandExecutionError(
            f"runner {fun} is not available on the master: salt-run saltutil.sync_all")
    return runners[fun]


def reported(name, tgt, tgt_type="list", pillar=None, timeout=15):
    """
    Check the hosts with the ``compliance.report`` runner: report files on the master, the
    ``rollout/compliance/report`` event, a result that is False when any control of any host
    failed. Changes nothing on any host; the return's ``changes.return`` is the runner's
    (``result``, ``summary``, ``comment``: the table, ``retcode``), as a ``salt.runner``
    step would give it.

    name
        A label for the step (the runner is always ``compliance.report``).

    tgt, tgt_type, pillar, timeout
        As for the runner: the hosts (a list by default), the ``inventory``/``release``
        pillar the minions check against, seconds to wait for the minions.

    ``test=True``: nothing runs (as a ``salt.runner`` step), the comment says what would.

    .. code-block:: yaml

        compliance-report:
          compliance.reported:
            - tgt: [ecsc-1, ecsc-2]
            - pillar: {release: {id: "20170220"}}
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    hosts = [tgt] if isinstance(tgt, str) else list(tgt or [])
    if __opts__.get("test"):
        ret["result"] = None
        ret["comment"] = (f"Runner function 'compliance.report' would be executed "
                          f"on {len(hosts)} hosts.")
        return ret
    try:
        out = _runner("compliance.report")(
            tgt=tgt, tgt_type=tgt_type, pillar=pillar, timeout=timeout)
    except Exception as exc:  # pylint: disable=broad-except
        # The runner raises when the report cannot be written or announced: a failed step
        # naming why, as salt.runner would give it.
        log.debug("compliance.report raised", exc_info=True)
        ret["comment"] = f"Runner function 'compliance.report' failed: {exc}"
        return ret
    ret["changes"] = {"return": out}
    ret["result"] = bool(out.get("result"))
    ret["comment"] = "Runner function 'compliance.report' {}.".format(
        "executed" if ret["result"] else "failed")
    return ret
