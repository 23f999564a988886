"""
The orchestrations' own master-side steps (rollout lock, answering, gates between waves, run
report, compliance report), run in place: ``rollout.runner`` calls one of the repo's runners
(``_runners/rollout.py``, ``rolloutlock.py``, ``rolloutreport.py``) inside the
orchestration's own state run on the master.

Why not ``salt.runner``: that state goes through ``saltutil.runner``, which builds a new
RunnerClient for every step, and with it a MasterMinion; the client's ``_low`` walks
``functions.keys()``, which imports every runner module Salt ships; then it fires the job's
events and stores the job. That is 0.5-0.7 s per step on the lab, on the critical path of
every run: the lock before the first host, each gate between two waves, the report at the
end. This state loads only the runner module it calls, with the orchestration's own opts
and utils.

The return is the one ``salt.runner`` gives: ``changes.return`` holds the runner's return; a
runner that raises fails the step, with ``Exception occurred in runner <name>: <traceback>``
in ``changes.return``; a runner that sets ``__context__["retcode"]`` non-zero (compliance.report
on drift) fails it too, as ``saltutil.runner`` reads it; under ``test=True`` nothing runs
(result None). Outputters and tests read both alike. orch.compliance runs its one step,
``compliance.report``, the same way.

Master side only (``__virtual__`` refuses on minions); ``salt-run saltutil.sync_all`` (or
``sync_states`` and ``sync_runners``) syncs it and the runners to the master.

:depends: the repo's runners synced to the master
"""

import logging
import traceback

import salt.loader
import salt.utils.args

log = logging.getLogger(__name__)

__virtualname__ = "rollout"

#: The repo's runner modules (``_runners/``), loaded together: a runner may call another
#: through ``__salt__`` (compliance.report asks rolloutlock.holder). Salt's own are not loaded.
_REPO_RUNNERS = ("rollout", "rolloutlock", "rolloutreport", "compliance")


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "rollout states run on the master only (in orchestrations)")
    return __virtualname__


def runner(name, **kwargs):
    """
    Run the master runner ``name`` (``<module>.<function>``) with ``kwargs``, in this state
    run. Result False when the runner raises (its exception in ``changes.return``) or is
    not synced to the master.

    .. code-block:: yaml

        rollout-lock:
          rollout.runner:
            - name: rolloutlock.acquire
            - kind: upgrade
            - owner: 0f3c...
    """
    if __opts__.get("test"):
        return {"name": name, "result": None, "changes": {},
                "comment": f"Runner function '{name}' would be executed."}
    ret = {"name": name, "changes": {}, "result": False,
           "comment": f"Runner function '{name}' failed."}
    context = {}
    runners = salt.loader.runner(__opts__, utils=__utils__, context=context,
                                 whitelist=list(_REPO_RUNNERS))
    if name not in runners:
        ret["changes"] = {"return": f"runner {name} is not available on the master: "
                                    "salt-run saltutil.sync_all"}
        return ret
    try:
        out = runners[name](**salt.utils.args.clean_kwargs(**kwargs))
    except Exception:  # pylint: disable=broad-except
        # As salt.runner words it: the runner's own message stays readable in the return.
        ret["changes"] = {"return": f"Exception occurred in runner {name}: "
                                    f"{traceback.format_exc()}"}
        return ret
    ret["changes"] = {"return": out}
    if context.get("retcode"):
        # The runner's own verdict (e.g. drift): the step fails, salt-run exits non-zero.
        return ret
    ret.update(result=True, comment=f"Runner function '{name}' executed.")
    return ret
