#!py
"""One host's upgrade, the runbook's steps for one host made safe (run on the minion).

    verify + stage the archive -> back up the live dir (service still running) -> stop ->
    swap the staged tree in -> start -> ready gate (log after offset + HTTP) -> fixed issues

Only stop + swap + start are downtime. A host already on the release is left alone (no stop,
no restart). If anything fails after the stop, the rollback state (armed here with onfail,
the same step release.rollback runs) puts the backup back and starts the service again; the state run still fails,
so the orchestration stops before the partner host and exits non-zero.

Progress events: rollout/upgrade/<host>/<step> (staged, backed-up, stopped, swapped, ready,
verified, failed); data: host, service, release, step.
"""



def _event(host, step, **requisites):
    return {
        "event.send": [
            {"name": f"rollout/upgrade/{host['id']}/{step}"},
            {"data": {"host": host["id"], "service": host["service"],
                      "release": host["release"], "step": step}},
            {"show_changed": False},
        ]
        + [{key: value} for key, value in requisites.items()]
    }


def run():
    host = __salt__["inventory.host"](pillar=__pillar__)
    svc, target, rel = host["service"], host["install_dir"], host["release"]
    identity = [{k: v} for k, v in host["identity"].items()]
    staged = {"release": "staged"}
    # The deployed record goes with the backup, so a rollback can put it back too.
    record_before = __salt__["release.recorded"](target)

    states = {
        "staged": {
            "release.staged": [
                {"name": target},
                {"source": host["source"]},
                {"sha256": host["sha256"]},
                {"release": rel},
                {"keep": host["keep"]},
            ]
        },
        "backed-up": {
            "backup.present": [
                {"name": target},
                {"tag": rel},
                {"meta": {"record": record_before}},
                {"onchanges": [staged]},
            ]
        },
        "stopped": {
            "javaservice.dead": [
                {"name": svc},
                {"signal": host["stop"]["signal"]},
                {"timeout": host["stop"]["timeout"]},
                {"thread_dump": host["stop"]["thread_dump"]},
                {"onchanges": [staged]},
                {"require": [{"backup": "backed-up"}]},
            ]
            + identity
        },
        "swapped": {
            "release.deployed": [
                {"name": target},
                {"release": rel},
                {"source": host["source"]},
                {"sha256": host["sha256"]},
                {"keep": host["keep"]},
                {"onchanges": [staged]},
                {"require": [{"javaservice": "stopped"}]},
            ]
        },
        "ready": {
            "javaservice.running": [
                {"name": svc},
                {"start": host["start"]},
                {"cwd": host["start_cwd"]},
                {"logs": sorted(host["logs"].values())},
                {"output": host["output"]},
                {"ready": host["ready"]},
                {"url": host["health_url"]},
                {"timeout": host["ready_timeout"]},
                {"require": [staged, {"release": "swapped"}]},
            ]
            + identity
        },
    }
    fixes = []
    for check in host["checks"]:
        sid = f"verified-{check['id']}"
        fixes.append({"probe": sid})
        common = [{"onchanges": [{"release": "swapped"}]}, {"require": [{"javaservice": "ready"}]}]
        if "http" in check:
            states[sid] = {"probe.http_ok": [
                {"url": check["http"]["url"]},
                {"contains": check["http"].get("contains")},
            ] + common}
        else:
            states[sid] = {"probe.log_lines": [
                {"path": check["log"]["path"]},
                {"pattern": check["log"]["pattern"]},
                {"forbidden": check["log"].get("forbidden")},
            ] + common}

    # Armed rollback: only when a step from the stop on failed, and never on a host whose
    # backup was not made (nothing was stopped there). Left out of a dry run.
    after_stop = [{"javaservice": "stopped"}, {"release": "swapped"}, {"javaservice": "ready"}]
    after_stop += fixes
    if not __opts__["test"]:
        states["rolled-back"] = {"release.rolled_back": [{"name": target}, {"tag": rel},
            {"onfail": after_stop}, {"require": [staged, {"backup": "backed-up"}]},
        ]}
        states["event-rolled-back"] = _event(host, "rolled-back",
                                             onchanges=[{"release": "rolled-back"}])

    if __opts__["test"]:
        # javaservice.running sees the old JVM still up in a dry run: say what the real run
        # does after the swap.
        states["plan-start"] = {"test.show_notification": [{"text": (
            f"would start {' '.join(host['start'])} in {host['start_cwd']}, ready when "
            f"{[r['pattern'] for r in host['ready']]} appear after the start and "
            f"{host['health_url']} answers 200 (timeout {host['ready_timeout']}s)"
        )}, {"onchanges": [{"release": "swapped"}]}]}

    progress = [("staged", staged), ("backed-up", {"backup": "backed-up"}),
                ("stopped", {"javaservice": "stopped"}), ("swapped", {"release": "swapped"}),
                ("ready", {"javaservice": "ready"})]
    for step, req in progress:
        states[f"event-{step}"] = _event(host, step, onchanges=[req])
    states["event-verified"] = _event(host, "verified", require=fixes or [{"javaservice": "ready"}],
                                      onchanges=[{"release": "swapped"}])
    if not __opts__["test"]:
        states["event-failed"] = _event(
            host, "failed", onfail=[staged, {"backup": "backed-up"}] + after_stop
        )
    return states
