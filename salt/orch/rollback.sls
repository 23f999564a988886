#!py
"""Roll back to the dated backups of a release (run on the master):

    salt-run state.orchestrate orch.rollback                      # all eight hosts
    salt-run state.orchestrate orch.rollback pillar='{"services": ["ecmc"]}'
    salt-run state.orchestrate orch.rollback pillar='{"rollback": {"tag": "20170220"}}'

The tag defaults to the pillar's release id: the backups that release's upgrade made. Pair by
pair: host 1 restored, started and ready, then host 2; pairs run side by side (parallel:
false for one host at a time). Any failure makes the run exit non-zero.

Rendering changes nothing (`state.show_sls`, test=True take no lock). The run's first step
takes the rollout lock (runner rolloutlock.acquire; a lock left by a killed run is reported
and taken over), the second checks that every targeted minion answers (else no host is
touched and the message says how to run the others). After success or failure: the run
report (runner rolloutreport.write, from this run's events: they carry the lock's owner token
as ``run``, pillar rollout_run), then the lock given back (runner rolloutlock.release), which
never waits for the report.
"""

import time
import uuid


def _runner(fun, **kwargs):
    # rollout.runner (_states/rollout.py): the runner in this state run, as orch.upgrade does.
    return {"rollout.runner": [{"name": fun}] + [{k: v} for k, v in kwargs.items()]}


def _ref(states, sid):
    """A requisite naming step ``sid`` by the state module it runs (``rollout`` or ``salt``):
    Salt matches a requisite by module and id, so a wrong module names no step."""
    return {next(iter(states[sid])).split(".")[0]: sid}


def run():
    pillar = __pillar__
    plan = __salt__["inventory.plan"](
        services=pillar.get("services"), hosts=pillar.get("hosts"), pillar=pillar, archive=False
    )
    hosts = [host for pair in plan for host in pair["hosts"]]
    passthrough = {key: pillar[key] for key in ("inventory", "release", "rollback")
                   if key in pillar}
    parallel = pillar.get("parallel", True) is not False
    owner = uuid.uuid4().hex  # names this run's lock; rendering takes none
    started = time.time()
    # Every host step's progress event carries the token (its `run`): the report's filter.
    passthrough["rollout_run"] = owner
    states = {
        "rollout-lock": _runner("rolloutlock.acquire", kind="rollback", owner=owner, hosts=hosts),
        "minions-answer": _runner(
            "rollout.answering", hosts=hosts, command="orch.rollback",
            require=[{"rollout": "rollout-lock"}],
        ),
    }
    previous = None
    for pair in plan:
        before = None
        for host in pair["hosts"]:
            requires = [_ref(states, "minions-answer")]
            if before:
                requires.append(_ref(states, before))
            elif previous and not parallel:
                requires.append(_ref(states, previous))
            args = [
                {"tgt": host},
                {"sls": "release.rollback"},
                {"pillar": passthrough},
                {"expect_minions": True},
                {"require": requires},
            ]
            if parallel:
                args.append({"parallel": True})
            states[f"rollback-{host}"] = {"salt.state": args}
            before = f"rollback-{host}"
        previous = before
    # The run report, after every step passed or after a failure (never when this run did
    # not take the lock); the unlock below also follows a report that failed.
    steps = [_ref(states, sid) for sid in states if sid != "rollout-lock"]
    report = {
        "kind": "rollback", "owner": owner, "hosts": hosts,
        "release": (pillar.get("release") or {}).get("id"),
        "tag": str((pillar.get("rollback") or {}).get("tag")
                   or (pillar.get("release") or {}).get("id")),
        "pairs": [{"service": pair["service"], "hosts": pair["hosts"]} for pair in plan],
        "started": started, "keep": (pillar.get("release") or {}).get("keep_reports", 20),
    }
    # Parallel in a parallel run: see the unlock steps below.
    last = {"parallel": True} if parallel else {}
    states["rollout-report"] = _runner("rolloutreport.write", **report, require=steps, **last)
    states["rollout-report-after-failure"] = _runner(
        "rolloutreport.write", **report, failed=True, require=[_ref(states, "rollout-lock")],
        onfail=steps, **last
    )
    # Give the lock back whatever happened: after every step passed, or (onfail: any step
    # that ran and failed) after a failure, but never when this run did not take it.
    # Parallel like the host steps: a step that is not parallel would hold Salt's state loop
    # until every running step it requires ended, so a pair's host 2 would wait for the
    # slowest host 1 of all pairs (see orch.upgrade).
    steps = [_ref(states, sid) for sid in states if sid != "rollout-lock"]
    states["rollout-unlock"] = _runner("rolloutlock.release", owner=owner, require=steps, **last)
    states["rollout-unlock-after-failure"] = _runner(
        "rolloutlock.release", owner=owner, require=[_ref(states, "rollout-lock")], onfail=steps,
        **last
    )
    return states
