#!py
"""One host back to a dated backup (run on the minion): the runbook's rollback for one host.

    stop (only if the program dir must change) -> restore <dir>_<tag> byte-identical, and the
    deployed-release record it came with -> start -> ready gate (log after offset + HTTP)

The tag is pillar ``rollback:tag``, default the release id (the backup that release's upgrade
made). Run again, it changes nothing and restarts nothing. release.upgrade includes these
states and arms them with onfail, to undo a failed upgrade on the spot.

Progress events: rollout/rollback/<host>/<step> (restored, ready).
"""


def run():
    tag = str((__pillar__.get("rollback") or {}).get("tag") or __pillar__["release"]["id"])
    # The restored tree may be any release (even one deployed by hand): ready on any.
    host = __salt__["inventory.host"](
        pillar=__pillar__, release=tag, archive=False, ready_release=r"\S+"
    )
    svc, target = host["service"], host["install_dir"]
    identity = [{k: v} for k, v in host["identity"].items()]
    return {
        "rollback-stopped": {
            "javaservice.dead": [
                {"name": svc},
                {"signal": host["stop"]["signal"]},
                {"timeout": host["stop"]["timeout"]},
                # Stop only when the restore is going to change the program dir.
                {"prereq": [{"release": "rollback-restored"}]},
            ]
            + identity
        },
        "rollback-restored": {
            "release.restored": [{"name": target}, {"tag": tag}]
        },
        "rollback-ready": {
            "javaservice.running": [
                {"name": svc},
                {"start": host["start"]},
                {"cwd": host["start_cwd"]},
                {"logs": sorted(host["logs"].values())},
                {"output": host["output"]},
                {"ready": host["ready"]},
                {"url": host["health_url"]},
                {"timeout": host["ready_timeout"]},
                {"require": [{"release": "rollback-restored"}]},
            ]
            + identity
        },
        "rollback-event-restored": {
            "event.send": [
                {"name": f"rollout/rollback/{host['id']}/restored"},
                {"data": {"host": host["id"], "service": svc, "tag": tag, "step": "restored"}},
                {"show_changed": False},
                {"onchanges": [{"release": "rollback-restored"}]},
            ]
        },
        "rollback-event-ready": {
            "event.send": [
                {"name": f"rollout/rollback/{host['id']}/ready"},
                {"data": {"host": host["id"], "service": svc, "tag": tag, "step": "ready"}},
                {"show_changed": False},
                {"require": [{"javaservice": "rollback-ready"}]},
                {"onchanges": [{"release": "rollback-restored"}]},
            ]
        },
    }
