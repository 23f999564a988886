"""Issue 8.3 on the lab: no tree is ever dropped that no backup holds.

One host (schedule-1; its partner is never touched), reset to v1 by hand first and again at
the end:

1. a release is re-issued under the same id: the second upgrade keeps the tree of the first
   issue in ``<dir>_<id>.1`` (verified), and the swap's comment says so;
2. a host-local hot fix added after the upgrade survives ``orch.rollback`` in a new verified
   backup named in the rollback's comment; the backups are root's and sealed (0700).
"""

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile

import pytest

from lab import build, faults, labctl
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.lab

HOST, PARTNER = "schedule-1", "schedule-2"
RELEASE = "20170305"


def orchestrate(sls, pillar):
    return run_cli("salt-run", "--out=json", "state.orchestrate", sls,
                   "pillar=" + json.dumps(pillar), timeout=600)


def host_comments(proc, host):
    """Every state comment ``host`` returned in a `salt-run --out=json` orchestration."""
    found = []

    def walk(node, on_host):
        if isinstance(node, dict):
            if on_host and isinstance(node.get("comment"), str):
                found.append(node["comment"])
            for key, value in node.items():
                walk(value, on_host or key == host)
        elif isinstance(node, list):
            for value in node:
                walk(value, on_host)

    walk(json.loads(proc.stdout), False)
    return "\n".join(found)


def salt(*args):
    proc = run_cli("salt", "--out=json", "--static", HOST, *args, timeout=120)
    return json.loads(proc.stdout)[HOST]


@pytest.fixture
def one_host(lab, hosts):
    host = hosts[HOST]
    faults.reset_hosts([host])
    partner_pids = sorted(lab.service_pids(hosts[PARTNER]))
    try:
        yield host
        assert sorted(lab.service_pids(hosts[PARTNER])) == partner_pids, "partner was touched"
    finally:
        faults.reset_hosts([host])
        shutil.rmtree(labctl.ARTIFACTS / RELEASE, ignore_errors=True)


def _reissue(tar):
    """The same release id issued again with other bytes: one more member in its archive."""
    info = tarfile.TarInfo("schedule/REISSUED")
    info.size, info.mtime = 3, 1488672000
    with tarfile.open(tar, "a") as archive:
        archive.addfile(info, io.BytesIO(b"yes"))
    return hashlib.sha256(tar.read_bytes()).hexdigest()


def test_reissued_release_and_hot_fix_are_never_dropped(lab, one_host):
    target = lab.in_root(one_host, one_host["conf"]["install_dir"])  # also the minion's path
    tar, first_sha = build.build_release(RELEASE, "v2", labctl.ARTIFACTS,
                                         services=["schedule"])["schedule"]
    pillar = {"hosts": [HOST], "release": {"id": RELEASE, "sha256": {"schedule": first_sha}}}
    first = orchestrate("orch.upgrade", pillar)
    assert first.returncode == 0, first.stdout[-3000:]
    assert salt("release.status", str(target))["release"] == RELEASE

    # Re-issued under the same id: the first issue's tree is held by <dir>_<id>.1.
    pillar["release"]["sha256"]["schedule"] = _reissue(tar)
    second = orchestrate("orch.upgrade", pillar)
    assert second.returncode == 0, second.stdout[-3000:]
    held = target.with_name(f"{target.name}_{RELEASE}.1")
    assert f"the replaced tree is held by {held}" in host_comments(second, HOST)
    assert salt("backup.verify", str(target), f"'{RELEASE}.1'")["ok"] is True
    assert not (held / "REISSUED").exists() and (target / "REISSUED").exists()
    # It carries the first issue's deployed record (for a rollback to put back).
    meta = json.loads((held / ".backup-manifest.json").read_text())["meta"]
    assert first_sha in json.dumps(meta), meta

    # A hot fix after the upgrade, then the rollback to the release's backup (v1).
    (target / "lib" / "hotfix.jar").write_bytes(b"host-local hot fix")
    rollback = orchestrate("orch.rollback", {"hosts": [HOST], "release": {"id": RELEASE}})
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert not (target / "lib" / "hotfix.jar").exists()
    kept = target.with_name(f"{target.name}_{RELEASE}.2")
    assert (kept / "lib" / "hotfix.jar").read_bytes() == b"host-local hot fix"
    assert f"the tree it replaced is held by {kept}" in host_comments(rollback, HOST)
    assert salt("backup.verify", str(target), f"'{RELEASE}.2'")["ok"] is True
    for backup in (target.with_name(f"{target.name}_{RELEASE}"), held, kept):
        st = os.stat(backup)
        assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700, backup
