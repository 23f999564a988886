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

    return {
        "event-begin": event("begin", {"from": (record or {}).get("release")}),
        "rolled-back": {"release.rolled_back": [{"name": host["install_dir"]}, {"tag": tag}]},
        "event-rolled-back": event("restored", onchanges=[{"release": "rolled-back"}]),
        "event-failed": event("failed", onfail=[{"release": "rolled-back"}]),
        "event-end": event("end"),
    }
