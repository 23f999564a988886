#!py
"""The rolling upgrade, generated from the pillar inventory (run on the master):

    salt-run state.orchestrate orch.upgrade                          # all four services
    salt-run state.orchestrate orch.upgrade pillar='{"services": ["ecmc"]}'
    salt-run state.orchestrate orch.upgrade pillar='{"hosts": ["ecsc-1"]}'
    salt-run state.orchestrate orch.upgrade test=True                # the plan, nothing touched

Targeting and policy from pillar: services, hosts (lists), parallel (default true: pairs run
side by side; false keeps the runbook's order, one host at a time), failhard (stop the whole
run at the first failed host; without it the other pairs go on). A failed host is still rolled
back either way: failhard is built from requisites here, never passed to the minion, whose
own failhard would skip the host's armed rollback.

Steps: the inventory is validated while this file renders (a bad key fails the run before
anything is touched; rendering changes nothing: `state.show_sls` and test=True take no lock)
-> rollout-lock (runner rolloutlock.acquire: one rollout at a time; a lock left by a killed
run is reported and taken over) -> every targeted minion answers (else the run stops before
any host is touched and says how to run the others) -> modules synced -> pre-flight on every
targeted host (archive valid, disk room) -> per pair: host 1 (release.upgrade), then host 2
only if host 1 passed every gate. A failed host rolls itself back to its backup. Last step,
after success or failure: rollout-unlock (runner rolloutlock.release).
"""

import logging
import uuid

# The py renderer binds the name `salt` to __salt__: import Salt's modules under other names.
import salt.key as salt_key
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)


def _step(sls, tgt, passthrough, **extra):
    args = [
        {"tgt": tgt},
        {"tgt_type": "list" if isinstance(tgt, list) else "glob"},
        {"sls": sls},
        {"pillar": passthrough},
    ]
    return {"salt.state": args + [{k: v} for k, v in extra.items()]}


def _runner(fun, **kwargs):
    return {"salt.runner": [{"name": fun}] + [{k: v} for k, v in kwargs.items()]}


def _known_minions():
    """Ids of the minions whose keys the master accepted (None when it cannot tell)."""
    try:
        # The master's key store directly (what the wheel's key.list reads): a WheelClient
        # would leave an unclosed MasterMinion behind (a warning, and a returner import
        # traceback when the process exits). __opts__ is the loader's proxy: pass a dict.
        with salt_key.get_key(dict(__opts__)) as keys:
            return set(keys.list_status("accepted").get("minions", []))
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("orch.upgrade: cannot list accepted minion keys: %s", exc)
        return None  # the pre-flight, which every host must answer, still catches it


def run():
    pillar = __pillar__
    plan = __salt__["inventory.plan"](
        services=pillar.get("services"), hosts=pillar.get("hosts"), pillar=pillar
    )
    hosts = [host for pair in plan for host in pair["hosts"]]
    known = _known_minions()
    if known is not None:
        for pair in plan:
            for host in pair["hosts"]:
                if host not in known:
                    raise SaltInvocationError(
                        f"pillar inventory:services:{pair['service']}:hosts:{host}: "
                        f"no accepted minion with that id"
                    )
    # The minions get the same inventory and release the master planned with (including any
    # pillar given on the command line).
    passthrough = {key: pillar[key] for key in ("inventory", "release") if key in pillar}
    parallel = pillar.get("parallel", True) is not False
    failhard = bool(pillar.get("failhard", False))

    owner = uuid.uuid4().hex  # names this run's lock; rendering takes none
    states = {
        "rollout-lock": _runner("rolloutlock.acquire", kind="upgrade", owner=owner, hosts=hosts),
        "minions-answer": _runner(
            "rollout.answering", hosts=hosts, command="orch.upgrade",
            require=[{"salt": "rollout-lock"}],
        ),
        "sync-modules": {
            "salt.function": [
                {"name": "saltutil.sync_all"},
                {"tgt": hosts},
                {"tgt_type": "list"},
                {"expect_minions": True},
                {"require": [{"salt": "minions-answer"}]},
            ]
        },
        "preflight": _step(
            "release.preflight", hosts, passthrough,
            expect_minions=True, require=[{"salt": "sync-modules"}],
        ),
    }
    # Not parallel: steps run one at a time in the order written here, the runbook's order.
    # A host after the first of its pair runs only if the one before it passed. failhard
    # stops the whole run at the first failed host: one at a time, each host requires every
    # host before it; in parallel, no pair goes on to its next host unless every pair's first
    # host passed.
    first_hosts = [f"upgrade-{pair['hosts'][0]}" for pair in plan]
    done = []
    for pair in plan:
        before = None
        for host in pair["hosts"]:
            sid = f"upgrade-{host}"
            requires = ["preflight"] + ([before] if before else [])
            if failhard:
                requires += done if not parallel else (first_hosts if before else [])
            extra = {"expect_minions": True,
                     "require": [{"salt": r} for r in dict.fromkeys(requires)]}
            if parallel:
                extra["parallel"] = True
            states[sid] = _step("release.upgrade", host, passthrough, **extra)
            before = sid
            done.append(sid)
    # Give the lock back whatever happened: after every step passed, or (onfail: any step
    # that ran and failed) after a failure, but never when this run did not take it.
    steps = [{"salt": sid} for sid in states if sid != "rollout-lock"]
    states["rollout-unlock"] = _runner("rolloutlock.release", owner=owner, require=steps)
    states["rollout-unlock-after-failure"] = _runner(
        "rolloutlock.release", owner=owner, require=[{"salt": "rollout-lock"}], onfail=steps
    )
    return states
