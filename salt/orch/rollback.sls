#!py
"""Roll back to the dated backups of a release (run on the master):

    salt-run state.orchestrate orch.rollback                      # all eight hosts
    salt-run state.orchestrate orch.rollback pillar='{"services": ["ecmc"]}'
    salt-run state.orchestrate orch.rollback pillar='{"rollback": {"tag": "20170220"}}'

The tag defaults to the pillar's release id: the backups that release's upgrade made. Pair by
pair: host 1 restored, started and ready, then host 2; pairs run side by side (parallel:
false for one host at a time). Any failure makes the run exit non-zero.
"""


def run():
    pillar = __pillar__
    plan = __salt__["inventory.plan"](
        services=pillar.get("services"), hosts=pillar.get("hosts"), pillar=pillar, archive=False
    )
    hosts = [host for pair in plan for host in pair["hosts"]]
    if not __opts__.get("test"):
        __salt__["rolloutlock.acquire"]("rollback", detail=f"hosts {', '.join(hosts)}")
    passthrough = {key: pillar[key] for key in ("inventory", "release", "rollback")
                   if key in pillar}
    parallel = pillar.get("parallel", True) is not False
    states = {}
    previous = None
    for pair in plan:
        before = None
        for host in pair["hosts"]:
            requires = []
            if before:
                requires.append({"salt": before})
            elif previous and not parallel:
                requires.append({"salt": previous})
            args = [
                {"tgt": host},
                {"sls": "release.rollback"},
                {"pillar": passthrough},
                {"expect_minions": True},
            ]
            if requires:
                args.append({"require": requires})
            if parallel:
                args.append({"parallel": True})
            states[f"rollback-{host}"] = {"salt.state": args}
            before = f"rollback-{host}"
        previous = before
    return states
