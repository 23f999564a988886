#!py
"""One host's upgrade, the runbook's steps for one host made safe (run on the minion).

    resume what an interrupted run left (if anything) -> verify + stage the archive -> back
    up the live dir (service still running) -> stop -> swap the staged tree in -> start ->
    ready gate (log after offset + HTTP) -> fixed issues -> old backups pruned
    (release:keep_backups) -> back in rotation (pillar undrain hook) -> a canary's soak
    (pillar rollout_soak: {host: seconds}, set by orch.upgrade for its canary wave)

Only stop + swap + start are downtime. A host already on the release is left alone (no stop,
no restart). A canary soaks in rotation, serving real traffic: its JVM, health and fatal log
patterns watched for the soak time (balancer.soaked); a failed soak drains it again. If
anything fails after the stop (the soak too), the rollback step (armed here with onfail, the
same step release.rollback runs) puts the backup back and starts the service again; the state
run still fails, so the orchestration stops before the partner host and exits non-zero.

A re-run after an interrupted run (minion, master or salt-run killed) resumes the host: the
first state (release.resumed) says where the run left it (staged, backed-up, stopped,
swapped), puts a swap cut short back or completes it, and clears staging and .previous
(never a tree no verified backup holds); the steps below then finish the host, and the
fixed-issue checks run even when the swap had been done already.

Published ahead of its wave (orch.upgrade does so with pillar rollout_turn: {run, timeout}),
the job first waits for the master to give this host its turn (turn.taken): every other
state requires it, so an abort or a timeout there touches nothing and fires no event.

Progress events, fired as each step ends: rollout/upgrade/<host>/<step> with step one of
resumed, staged, backed-up, stopped, swapped, ready, verified, failed, rolled-back; data: host,
service, release, step, run (the orchestration's token, pillar rollout_run). ``begin`` (data
also ``from``: the release deployed before) opens the host's run and ``end`` closes it, so the
run report (runner rolloutreport) tells a host that went quiet mid-run from one with nothing
to do.
"""


def run():
    host = __salt__["inventory.host"](pillar=__pillar__)
    svc, target, rel = host["service"], host["install_dir"], host["release"]
    identity = [{k: v} for k, v in host["identity"].items()]
    test = __opts__["test"]
    staged = {"release": "staged"}
    swapped = {"release": "swapped"}

    run_token = __pillar__.get("rollout_run")
    record = __salt__["release.read_record"](target)

    def event(step, extra=None, **requisites):
        return {"event.send": [
            {"name": f"rollout/upgrade/{host['id']}/{step}"},
            {"data": {"host": host["id"], "service": svc, "release": rel, "step": step,
                      "run": run_token, **(extra or {})}},
            {"show_changed": False},
        ] + [{key: value} for key, value in requisites.items()]}

    # Salt runs states in the order given here (requisites permitting): each progress event
    # follows its step, so the bus shows the upgrade as it happens.
    states = {}
    turn = __pillar__.get("rollout_turn")
    # Every state that may run without another's success requires the turn (the others
    # follow those), so a job that never gets its turn touches nothing.
    after_turn = []
    if turn and not test:
        states["turn"] = {"turn.taken": [{"name": turn["run"]}, {"timeout": turn["timeout"]}]}
        after_turn = [{"require": [{"turn": "turn"}]}]
    after_turn_kw = dict(kv for item in after_turn for kv in item.items())
    states["event-begin"] = event("begin", {"from": (record or {}).get("release")},
                                  **after_turn_kw)
    resumed = {"release": "resumed"}
    states["resumed"] = {"release.resumed": [
        {"name": target}, {"release": rel}, {"service": svc}, {"identity": host["identity"]},
    ] + after_turn}
    states["event-resumed"] = event("resumed", onchanges=[resumed])
    states["staged"] = {"release.staged": [
        {"name": target}, {"source": host["source"]}, {"sha256": host["sha256"]},
        {"release": rel}, {"keep": host["keep"]}, {"require": [resumed]},
    ]}
    states["event-staged"] = event("staged", onchanges=[staged])
    states["backed-up"] = {"backup.present": [
        {"name": target}, {"tag": rel},
        # The deployed record goes with the backup, so a rollback can put it back too.
        {"meta": {"record": record}},
        {"onchanges": [staged]},
    ]}
    states["event-backed-up"] = event("backed-up", onchanges=[{"backup": "backed-up"}])
    # Out of the load balancer's rotation before the stop (pillar drain hook): no request is
    # sent to a stopping JVM; a failed drain stops this host here, its service still running.
    drained = [{"balancer": "drained"}] if host["drain"] else []
    if drained:
        states["drained"] = {"balancer.drained": [
            {"name": svc}, {"onchanges": [staged]}, {"require": [{"backup": "backed-up"}]},
        ]}
    states["stopped"] = {"javaservice.dead": [
        {"name": svc}, {"signal": host["stop"]["signal"]}, {"timeout": host["stop"]["timeout"]},
        {"thread_dump": host["stop"]["thread_dump"]},
        {"onchanges": [staged]}, {"require": [{"backup": "backed-up"}] + drained},
    ] + identity}
    states["event-stopped"] = event("stopped", onchanges=[{"javaservice": "stopped"}])
    states["swapped"] = {"release.deployed": [
        {"name": target}, {"release": rel}, {"source": host["source"]},
        {"sha256": host["sha256"]}, {"keep": host["keep"]},
        # The tree being replaced must be held by a verified backup (reused or made now).
        {"backup": rel},
        {"onchanges": [staged]}, {"require": [{"javaservice": "stopped"}]},
    ]}
    states["event-swapped"] = event("swapped", onchanges=[swapped])
    if test:
        # javaservice.running sees the old JVM still up in a dry run: say what the real run
        # does after the swap.
        states["plan-start"] = {"test.show_notification": [{"text": (
            f"would start {' '.join(host['start'])} in {host['start_cwd']}, ready when "
            f"{[r['pattern'] for r in host['ready']]} appear after the start and "
            f"{host['health_url']} answers 200 (timeout {host['ready_timeout']}s), then "
            f"stays up {host['settle']}s"
        )}, {"onchanges": [swapped]}]}
    states["ready"] = {"javaservice.running": [
        {"name": svc}, {"start": host["start"]}, {"cwd": host["start_cwd"]},
        {"logs": sorted(host["logs"].values())}, {"output": host["output"]},
        {"ready": host["ready"]}, {"fatal": host["fatal"]}, {"url": host["health_url"]},
        {"timeout": host["ready_timeout"]},
        # A JVM that dies right after it became ready (crash loop) is caught here, not later.
        {"settle": host["settle"]},
        {"require": [staged, swapped]},
    ] + identity}
    states["event-ready"] = event("ready", onchanges=[{"javaservice": "ready"}])

    # The fixed issues, proven on the new code (only right after a swap).
    fixes = []
    for check in host["checks"]:
        sid = f"verified-{check['id']}"
        fixes.append({"probe": sid})
        # Also after a resumed host whose swap the interrupted run had done.
        common = [{"onchanges": [swapped, resumed]}, {"require": [{"javaservice": "ready"}]}]
        if "http" in check:
            states[sid] = {"probe.http_ok": [
                {"url": check["http"]["url"]}, {"contains": check["http"].get("contains")},
            ] + common}
        else:
            states[sid] = {"probe.log_lines": [
                {"path": check["log"]["path"]}, {"pattern": check["log"]["pattern"]},
                {"forbidden": check["log"].get("forbidden")},
                # Lines since this run's start count: the new JVM logged them while it
                # became ready, so the check needs not wait for more.
                {"since_start": svc},
            ] + common}
    states["event-verified"] = event(
        "verified", require=fixes or [{"javaservice": "ready"}], onchanges=[swapped, resumed]
    )
    # Retention, once the new release is proven: never the backup just made (a rollback
    # needs it) nor the newest.
    states["backups-pruned"] = {"backup.pruned": [
        {"name": target}, {"keep": host["keep_backups"]}, {"protect": [rel]},
        {"onchanges": [swapped, resumed]}, {"require": fixes or [{"javaservice": "ready"}]},
    ]}
    # Back in rotation once every gate passed (pillar undrain hook).
    gates = fixes or [{"javaservice": "ready"}]
    if host["undrain"]:
        states["in-rotation"] = {"balancer.in_rotation": [
            {"name": svc}, {"onchanges": [swapped, resumed]}, {"require": gates},
        ]}
    # A canary's soak (orch.upgrade passes rollout_soak to its canary wave only): in rotation,
    # serving real traffic, watched as in the ready gate's settle time; a failed soak drains
    # the host again and fails, so the rollback below puts the old release back.
    soak = (__pillar__.get("rollout_soak") or {}).get(host["id"]) or 0
    soaked = [{"balancer": "soaked"}] if soak else []
    if soak:
        states["soaked"] = {"balancer.soaked": [
            {"name": svc}, {"seconds": soak}, {"logs": sorted(host["logs"].values())},
            {"fatal": host["fatal"]}, {"url": host["health_url"]},
            {"timeout": host["ready_timeout"]}, {"onchanges": [swapped, resumed]},
            {"require": [{"balancer": "in-rotation"}] if host["undrain"] else gates},
        ] + identity}

    if not test:
        # Armed rollback: only when a step from the stop on failed, and never on a host whose
        # backup was not made (nothing was stopped there). Left out of a dry run.
        after_stop = ([{"javaservice": "stopped"}, swapped, {"javaservice": "ready"}] + fixes
                      + soaked)
        # Not when this host never had its turn (nothing ran).
        states["event-failed"] = event(
            "failed", onfail=[resumed, staged, {"backup": "backed-up"}] + drained + after_stop,
            **after_turn_kw
        )
        # A failed drain fails the stop's requisite, not the stop: nothing to roll back then.
        states["rolled-back"] = {"release.rolled_back": [
            {"name": target}, {"tag": rel},
            {"onfail": after_stop}, {"require": [staged, {"backup": "backed-up"}] + drained},
        ]}
        states["event-rolled-back"] = event("rolled-back", onchanges=[{"release": "rolled-back"}])
        if host["undrain"]:
            # Rolled back and ready on the old release, or a drain that failed half-way: the
            # host goes back in rotation either way (it serves, and must not stay out).
            states["in-rotation-after-rollback"] = {"balancer.in_rotation": [
                {"name": svc}, {"onchanges": [{"release": "rolled-back"}]},
            ]}
            if drained:
                states["in-rotation-after-failed-drain"] = {"balancer.in_rotation": [
                    {"name": svc}, {"onfail": drained},
                ] + after_turn}
    # Last, whatever happened above: the host's state run finished (it returned).
    states["event-end"] = event("end", **after_turn_kw)
    return states
