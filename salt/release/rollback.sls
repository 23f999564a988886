#!py
"""One host back to a dated backup (run on the minion): the runbook's rollback for one host.

    stop (only if the program dir must change) -> restore <dir>_<tag> byte-identical, with
    the deployed-release record it came with -> start -> ready gate (log after offset + HTTP)

The tag is pillar ``rollback:tag``, default the release id (the backup that release's upgrade
made). Run again, it changes nothing and restarts nothing.

Progress events: rollout/rollback/<host>/<step>, step begin (data also ``from``: the release
deployed before), restored (after the host is back and ready), failed, end (last, whatever
happened); data: host, service, tag, step, run (the orchestration's token, pillar
rollout_run), read by the run report (runner rolloutreport).
"""


def run():
    tag = str((__pillar__.get("rollback") or {}).get("tag") or __pillar__["release"]["id"])
    host = __salt__["inventory.host"](pillar=__pillar__, release=tag, archive=False)
    record = __salt__["release.read_record"](host["install_dir"])

    def event(step, extra=None, **requisites):
        return {"event.send": [
            {"name": f"rollout/rollback/{host['id']}/{step}"},
            {"data": {"host": host["id"], "service": host["service"], "tag": tag,
                      "step": step, "run": __pillar__.get("rollout_run"), **(extra or {})}},
            {"show_changed": False},
        ] + [{key: value} for key, value in requisites.items()]}

    svc = host["service"]
    restored = {"release": "rolled-back"}
    states = {"event-begin": event("begin", {"from": (record or {}).get("release")})}
    # With load balancer hooks (pillar drain/undrain): out of rotation before a restore may
    # stop the service, back in after it, whether the restore changed anything, or refused
    # (the host still serves its release; the balancer's own checks keep a down host out).
    drained = [{"balancer": "drained"}] if host["drain"] else []
    if drained:
        states["drained"] = {"balancer.drained": [{"name": svc}]}
    states["rolled-back"] = {"release.rolled_back": [
        {"name": host["install_dir"]}, {"tag": tag},
    ] + ([{"require": drained}] if drained else [])}
    if host["undrain"]:
        states["in-rotation"] = {"balancer.in_rotation": [{"name": svc}, {"require": [restored]}]}
        states["in-rotation-after-failure"] = {"balancer.in_rotation": [
            {"name": svc}, {"onfail": [restored] + drained},
        ]}
    states["event-rolled-back"] = event("restored", onchanges=[restored])
    states["event-failed"] = event("failed", onfail=[restored] + drained)
    states["event-end"] = event("end")
    return states
