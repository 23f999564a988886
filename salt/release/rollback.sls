#!py
"""One host back to a dated backup (run on the minion): the runbook's rollback for one host.

    stop (only if the program dir must change) -> restore <dir>_<tag> byte-identical, with
    the deployed-release record it came with -> start -> ready gate (log after offset + HTTP)

The tag is pillar ``rollback:tag``, default the release id (the backup that release's upgrade
made). Run again, it changes nothing and restarts nothing.

Progress events: rollout/rollback/<host>/restored (after the host is back and ready).
"""


def run():
    tag = str((__pillar__.get("rollback") or {}).get("tag") or __pillar__["release"]["id"])
    host = __salt__["inventory.host"](pillar=__pillar__, release=tag, archive=False)
    return {
        "rolled-back": {"release.rolled_back": [{"name": host["install_dir"]}, {"tag": tag}]},
        "event-rolled-back": {
            "event.send": [
                {"name": f"rollout/rollback/{host['id']}/restored"},
                {"data": {"host": host["id"], "service": host["service"], "tag": tag,
                          "step": "restored"}},
                {"show_changed": False},
                {"onchanges": [{"release": "rolled-back"}]},
            ]
        },
    }
