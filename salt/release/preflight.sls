#!py
"""Pre-flight of one host (run on the minion, read-only, also under test=True), before any
host of the run is stopped:

    preflight-pillar    this host's pillar entry checked against the host itself
                        (inventory.check_host): every value valid, the start program there and
                        executable in its cwd, program dir / Tomcat base / log dirs present and
                        not a system directory, user present, the address one of the host's
    preflight-artifact  the archive is there and valid (sha256, members), the disk has room
                        for the backup and the staging copy (release.verified)

Nothing is stopped or written (the archive lands in the minion's file cache, where the upgrade
takes it from). A failure here fails the orchestration's pre-flight step, so no host is
touched; its comment names the minion and the pillar key.
"""

from salt.exceptions import CommandExecutionError, SaltInvocationError


def _result(result, comment):
    # test.configurable_test_state keeps result and comment under test=True as well.
    return {"test.configurable_test_state": [
        {"changes": False}, {"result": result}, {"comment": comment},
        {"allow_test_mode_failure": True},
    ]}


def run():
    try:
        checked = __salt__["inventory.check_host"](pillar=__pillar__)
    except (CommandExecutionError, SaltInvocationError) as exc:
        # Nothing else can be checked from a host entry that does not hold.
        return {"preflight-pillar": _result(False, str(exc))}
    host = checked["host"]
    return {
        "preflight-pillar": _result(True, f"{host['id']}: checked " + ", ".join(checked["checked"])),
        "preflight-artifact": {
            "release.verified": [
                {"name": host["install_dir"]},
                {"source": host["source"]},
                {"sha256": host["sha256"]},
                {"require": [{"test": "preflight-pillar"}]},
            ]
        },
    }
