#!py
"""Pre-flight of one host (run on the minion, read-only, also under test=True): the inventory
entry resolves, the archive is there and valid (sha256, members), and the disk has room for
the backup and the staging copy. Nothing is stopped or written (the archive lands in the
minion's file cache, where the upgrade takes it from)."""


def run():
    host = __salt__["inventory.host"](pillar=__pillar__)
    return {
        "preflight-artifact": {
            "release.verified": [
                {"name": host["install_dir"]},
                {"source": host["source"]},
                {"sha256": host["sha256"]},
            ]
        }
    }
