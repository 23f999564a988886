#!py
"""The compliance check of the inventory's hosts as an orchestration: one step, the runner
`compliance.report` (_runners/compliance.py) run in place by the master-side state
`rollout.runner` (_states/rollout.py; the master's `schedule:` in etc/salt/master runs the
runner directly every 15 minutes):

    salt-run state.orchestrate orch.compliance                       # every host
    salt-run state.orchestrate orch.compliance pillar='{"services": ["ecmc"]}'
    salt-run state.orchestrate orch.compliance pillar='{"hosts": ["ecsc-1"]}'
    salt-run compliance.report test=True                             # check, report not saved

Read-only on every host, with or without test=True. Exits non-zero when any control of any
host failed. Writes <master cachedir>/compliance/latest.json and latest.txt (not under
test=True) and fires the event `rollout/compliance/report` with the summary; hosts an
upgrade or rollback is working on (rolloutlock) are reported "skipped: upgrade in progress".
Needs `salt-run saltutil.sync_all` (runners, states and modules on the master) and the modules
synced to the minions (orch.upgrade does it; this check never syncs, it changes nothing).
Under test=True the orchestration only shows the step (as a runner step, it does not run in test
mode); `salt-run compliance.report test=True` checks without saving.
"""


def run():
    pillar = __pillar__
    plan = __salt__["inventory.plan"](
        services=pillar.get("services"), hosts=pillar.get("hosts"), archive=False, pillar=pillar
    )
    hosts = [host for pair in plan for host in pair["hosts"]]
    # The minions check against the inventory and release the master planned with
    # (including any pillar given on the command line), as orch.upgrade does.
    passthrough = {key: pillar[key] for key in ("inventory", "release") if key in pillar}
    # rollout.runner (_states/rollout.py) runs the compliance.report runner in this state
    # run; a salt.runner step would build a RunnerClient and a MasterMinion for it.
    return {
        "compliance-report": {
            "rollout.runner": [
                {"name": "compliance.report"},
                {"tgt": hosts},
                {"tgt_type": "list"},
                {"pillar": passthrough},
            ]
        }
    }
