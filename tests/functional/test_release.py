"""
Functional tests of the ``release`` execution and state modules through Salt's loader, on real
files in tmp_path: the hostile archive corpus (built at test time) and a good release's
stage / swap / deployed / state lifecycle.
"""

import hashlib
import json
import os
import shutil
import stat
import tarfile
from unittest import mock

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.functional import hostile_archives as ha
from tests.functional import small_fs as fs

MINION = "func-tests-minion"
KEEP = ["conf/host.properties", "conf/*.local"]

V1 = {
    "WEB-INF/lib/svc.jar": b"svc jar v1\n",
    "WEB-INF/lib/svc.jar.bak": ("hardlink", "WEB-INF/lib/svc.jar"),
    "WEB-INF/web.xml": b"<web-app/>\n",
    "conf/app.properties": b"rounding=2\n",
    "startup.sh": ("exec", b"#!/bin/sh\necho v1\n"),
    "lib/old-only.jar": b"only in v1\n",
    "current.jar": ("link", "WEB-INF/lib/svc.jar"),
}
V2 = {
    "WEB-INF/lib/svc.jar": b"svc jar v2 (#9427 fixed)\n",
    "WEB-INF/web.xml": b"<web-app/>\n",
    "conf/app.properties": b"rounding=none\n",
    "startup.sh": ("exec", b"#!/bin/sh\necho v2\n"),
    "lib/new-in-v2.jar": b"new\n",
    "current.jar": ("link", "WEB-INF/lib/svc.jar"),
    "logs": ("dir",),
}
V2_FILES = {k for k, v in V2.items() if v != ("dir",)}


# --------------------------------------------------------------------------- helpers


def snapshot(root):
    """
    Every path below ``root`` with its type, mode, mtime and content hash / link target.
    """
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    what = ("file", hashlib.sha256(fh.read()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir", None)
            else:
                what = ("other", None)
            snap[rel] = (what, stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid)
    st = os.lstat(root)
    snap["."] = (("dir", None), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid)
    return snap


def tree_contents(root):
    """
    {relpath: bytes | ("link", target)} of the files and symlinks below root.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                out[rel] = ("link", os.readlink(full))
            elif os.path.isfile(full):
                with open(full, "rb") as fh:
                    out[rel] = fh.read()
    return out


def expected_contents(entries):
    out = {}
    for rel, value in entries.items():
        if isinstance(value, bytes):
            out[rel] = value
        elif value[0] == "exec":
            out[rel] = value[1]
        elif value[0] == "link":
            out[rel] = value
        elif value[0] == "hardlink":
            out[rel] = entries[value[1]]
    return out


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def target(home):
    return home / "svc"


@pytest.fixture
def archives(tmp_path):
    path = tmp_path / "upload"
    path.mkdir()
    return path


@pytest.fixture
def v1(archives):
    path = archives / "svc-v1.tar"
    return str(path), ha.build_release(path, "svc", V1)


@pytest.fixture
def v2(archives):
    path = archives / "svc-v2.tar"
    return str(path), ha.build_release(path, "svc", V2)


@pytest.fixture
def by_hand(target, v1, home):
    """
    The runbook's state: v1 unpacked by hand (tar xvf), no deployed record, plus host-local
    files and a hand-patched jar.
    """
    with tarfile.open(v1[0]) as tar:
        tar.extractall(home, filter="data")
    (target / "conf" / "host.properties").write_text("host=ecsc-1\n")
    (target / "conf" / "cache.local").write_text("local cache cfg\n")
    (target / "lib" / "hand-patched.jar").write_text("patched by hand\n")
    return target


# --------------------------------------------------------------------------- hostile corpus


@pytest.fixture
def live(target):
    (target / "conf").mkdir(parents=True)
    (target / "conf" / "host.properties").write_text("host=ecsc-1\n")
    (target / "app.jar").write_text("live v1\n")
    return target


def _hostile(archives, case):
    path = archives / f"{case.id}.tar"
    return str(path), ha.write_case(case, path)


def _assert_names(message, archive, offender):
    assert MINION in message
    assert archive in message
    assert offender in message


@pytest.mark.parametrize("case", ha.CASES, ids=[c.id for c in ha.CASES])
def test_verify_rejects_hostile_member(modules, tmp_path, archives, live, case):
    archive, digest = _hostile(archives, case)
    before = snapshot(tmp_path)
    with pytest.raises(CommandExecutionError) as exc:
        modules.release.verify(archive, digest, top="svc")
    _assert_names(str(exc.value), archive, repr(case.offender))
    assert case.why in str(exc.value).lower()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("func", ["stage", "unpack"])
@pytest.mark.parametrize("case", ha.CASES, ids=[c.id for c in ha.CASES])
def test_stage_and_unpack_reject_hostile_member_without_touching_disk(
    modules, tmp_path, home, archives, live, case, func
):
    archive, digest = _hostile(archives, case)
    before = snapshot(tmp_path)
    with pytest.raises(CommandExecutionError) as exc:
        getattr(modules.release, func)(archive, str(live), digest, "2", keep=KEEP)
    _assert_names(str(exc.value), archive, repr(case.offender))
    assert snapshot(tmp_path) == before
    assert not (home / ".svc.staging").exists()
    assert modules.release.leftovers(str(live)) == []


@pytest.mark.parametrize("case", ha.CASES, ids=[c.id for c in ha.CASES])
def test_states_reject_hostile_member_without_touching_disk(
    states, tmp_path, archives, live, case
):
    archive, digest = _hostile(archives, case)
    before = snapshot(tmp_path)
    for kwargs in ({}, {"test": True}):
        ret = states.release.staged(
            name=str(live), source=archive, sha256=digest, release="2", **kwargs
        )
        assert ret.result is False
        assert case.offender in ret.comment
        ret = states.release.deployed(
            name=str(live), release="2", source=archive, sha256=digest, keep=KEEP, **kwargs
        )
        assert ret.result is False
        assert ret.changes == {}
        assert case.offender in ret.comment
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("func", ["verify", "stage", "unpack"])
def test_checksum_mismatch_names_expected_and_found(modules, tmp_path, live, v2, func):
    archive, digest = v2
    wrong = "0" * 64
    before = snapshot(tmp_path)
    with pytest.raises(CommandExecutionError) as exc:
        if func == "verify":
            modules.release.verify(archive, wrong)
        else:
            getattr(modules.release, func)(archive, str(live), wrong, "2")
    message = str(exc.value)
    _assert_names(message, archive, "sha256 mismatch")
    assert f"expected {wrong}" in message and f"found {digest}" in message
    assert snapshot(tmp_path) == before


def test_checksum_mismatch_in_state(states, tmp_path, live, v2):
    archive, _ = v2
    before = snapshot(tmp_path)
    ret = states.release.deployed(name=str(live), release="2", source=archive, sha256="f" * 64)
    assert ret.result is False
    assert "sha256 mismatch" in ret.comment and archive in ret.comment
    assert snapshot(tmp_path) == before


def test_archive_of_another_service_is_refused(modules, tmp_path, archives, live):
    archive = str(archives / "other.tar")
    digest = ha.write_wrong_top(archive)
    # Fine on its own (one top-level dir) ...
    assert modules.release.verify(archive, digest)["top"] == "other"
    before = snapshot(tmp_path)
    # ... but not over /home/svc: the first member is outside the expected top-level dir.
    with pytest.raises(CommandExecutionError) as exc:
        modules.release.stage(archive, str(live), digest, "2")
    _assert_names(str(exc.value), archive, "'other'")
    assert "outside the expected top-level dir 'svc'" in str(exc.value)
    assert snapshot(tmp_path) == before


def test_two_top_dirs_refused_without_expected_top(modules, archives):
    case = next(c for c in ha.CASES if c.id == "two-top-dirs")
    archive, digest = _hostile(archives, case)
    with pytest.raises(CommandExecutionError, match="one top-level dir"):
        modules.release.verify(archive, digest)


def test_empty_and_unreadable_archives(modules, archives):
    empty = str(archives / "empty.tar")
    digest = ha.write_empty(empty)
    with pytest.raises(CommandExecutionError, match="has no members"):
        modules.release.verify(empty, digest)
    junk = archives / "junk.tar"
    junk.write_bytes(b"not a tar archive at all" * 100)
    with pytest.raises(CommandExecutionError, match="not a readable tar archive"):
        modules.release.verify(str(junk), ha.sha256_of(junk))
    with pytest.raises(CommandExecutionError, match="cannot read release archive"):
        modules.release.verify(str(archives / "missing.tar"), digest)


def test_bad_arguments(modules, target, v2):
    archive, digest = v2
    with pytest.raises(SaltInvocationError, match="sha256 must be 64 hex"):
        modules.release.verify(archive, "abc")
    with pytest.raises(SaltInvocationError, match="invalid release id"):
        modules.release.stage(archive, str(target), digest, "../x")
    with pytest.raises(SaltInvocationError, match="absolute"):
        modules.release.stage(archive, "home/svc", digest, "2")
    with pytest.raises(SaltInvocationError, match="keep pattern"):
        modules.release.stage(archive, str(target), digest, "2", keep=["../etc/*"])
    with pytest.raises(CommandExecutionError, match="does not exist"):
        modules.release.stage(archive, str(target / "no" / "svc"), digest, "2")


# --------------------------------------------------------------------------- good release


def test_verify_good_archive(modules, v1):
    archive, digest = v1
    ret = modules.release.verify(archive, digest.upper(), top="svc")
    files = [v for v in V1.values() if isinstance(v, bytes) or v[0] == "exec"]
    assert ret == {
        "archive": archive,
        "sha256": digest,
        "top": "svc",
        "members": 1 + 4 + len(V1),  # svc/, 4 parent dirs, the entries
        "bytes": sum(len(v if isinstance(v, bytes) else v[1]) for v in files),
    }


def test_compressed_archive(modules, archives, target):
    path = archives / "svc.tar.gz"
    digest = ha.build_release(path, "svc", V2, mode="w:gz")
    ret = modules.release.unpack(str(path), str(target), digest, "2")
    assert ret["release"] == "2"
    assert tree_contents(target) == expected_contents(V2)


def test_hand_deployed_tree_has_no_record(modules, by_hand):
    ret = modules.release.status(str(by_hand))
    assert ret["release"] is None and ret["intact"] is None
    assert ret["target"] == str(by_hand)


def test_stage_leaves_target_untouched(modules, tmp_path, home, by_hand, v2):
    archive, digest = v2
    before = snapshot(by_hand)
    ret = modules.release.stage(archive, str(by_hand), digest, "2", keep=KEEP)
    staging = home / ".svc.staging"
    assert ret == {"staging": str(staging), "release": "2", "files": len(V2_FILES)}
    assert snapshot(by_hand) == before
    # Staging mirrors the target: the archive's svc/x is staging/x.
    assert tree_contents(staging) == expected_contents(V2)
    assert (staging / "logs").is_dir()
    assert os.access(staging / "startup.sh", os.X_OK)
    assert not os.access(staging / "conf" / "app.properties", os.X_OK)
    info = modules.release.staging_status(str(by_hand))
    assert info["present"] and info["intact"] and info["release"] == "2"
    assert info["archive_sha256"] == digest and info["files"] == len(V2_FILES)
    assert modules.release.status(str(by_hand))["release"] is None


def test_stage_replaces_stale_staging(modules, home, by_hand, v2):
    archive, digest = v2
    stale = home / ".svc.staging"
    (stale / "junk").mkdir(parents=True)
    (stale / "junk" / "old.jar").write_text("stale\n")
    modules.release.stage(archive, str(by_hand), digest, "2")
    assert tree_contents(stale) == expected_contents(V2)


def test_swap_replaces_tree_drops_stale_keeps_local(modules, home, by_hand, v2):
    archive, digest = v2
    host_local = (by_hand / "conf" / "host.properties").read_bytes()
    cache_local = (by_hand / "conf" / "cache.local").read_bytes()
    modules.release.stage(archive, str(by_hand), digest, "2")
    ret = modules.release.swap(str(by_hand), "2", sha256=digest, keep=KEEP)
    assert ret == {
        "target": str(by_hand),
        "release": "2",
        "files": len(V2_FILES),
        "kept": ["conf/cache.local", "conf/host.properties"],
    }
    expected = expected_contents(V2)
    expected["conf/host.properties"] = host_local
    expected["conf/cache.local"] = cache_local
    # Exactly the archive plus the kept files: stale files of v1 (and the hand-patched jar) are gone.
    assert tree_contents(by_hand) == expected
    assert not (by_hand / "lib" / "old-only.jar").exists()
    assert not (by_hand / "lib" / "hand-patched.jar").exists()
    assert not (by_hand / "WEB-INF" / "lib" / "svc.jar.bak").exists()
    # No staging / previous left behind.
    assert sorted(p.name for p in home.iterdir()) == [".svc.release.json", "svc"]
    assert modules.release.leftovers(str(by_hand)) == []
    record = json.loads((home / ".svc.release.json").read_text())
    assert record["format"] == 1 and record["release"] == "2"
    assert record["archive_sha256"] == digest and record["host"] == MINION
    assert record["deployed"]
    assert record["files"] == {
        rel: sha(v if isinstance(v, bytes) else v[1])
        for rel, v in V2.items()
        if isinstance(v, bytes) or v[0] == "exec"
    }
    assert record["links"] == {"current.jar": "WEB-INF/lib/svc.jar"}
    assert record["local"] == {
        "conf/host.properties": sha(host_local),
        "conf/cache.local": sha(cache_local),
    }
    rep = modules.release.status(str(by_hand))
    assert rep["release"] == "2" and rep["intact"] is True and rep["archive_sha256"] == digest
    assert rep["modified"] == rep["added"] == rep["removed"] == rep["local_modified"] == []


def test_keep_stored_at_stage_is_used_by_swap(modules, by_hand, v2):
    archive, digest = v2
    modules.release.stage(archive, str(by_hand), digest, "2", keep=["conf/host.properties"])
    assert modules.release.swap(str(by_hand), "2")["kept"] == ["conf/host.properties"]
    assert not (by_hand / "conf" / "cache.local").exists()


def test_kept_path_carried_by_archive_takes_archive_version(modules, home, by_hand, v2):
    archive, digest = v2
    ret = modules.release.unpack(archive, str(by_hand), digest, "2", keep=["conf/*.properties"])
    assert ret["kept"] == ["conf/host.properties"]
    assert (by_hand / "conf" / "app.properties").read_bytes() == V2["conf/app.properties"]
    record = json.loads((home / ".svc.release.json").read_text())
    assert list(record["local"]) == ["conf/host.properties"]


def test_deployed_reports_drift(modules, by_hand, v2):
    archive, digest = v2
    modules.release.unpack(archive, str(by_hand), digest, "2", keep=KEEP)
    target = str(by_hand)
    (by_hand / "conf" / "host.properties").write_text("host=edited\n")
    rep = modules.release.status(target)
    assert rep["intact"] is True and rep["local_modified"] == ["conf/host.properties"]
    (by_hand / "WEB-INF" / "lib" / "svc.jar").write_text("hot-patched\n")
    (by_hand / "lib" / "extra.jar").write_text("dropped in by hand\n")
    (by_hand / "WEB-INF" / "web.xml").unlink()
    (by_hand / "current.jar").unlink()
    (by_hand / "current.jar").symlink_to("lib/extra.jar")
    rep = modules.release.status(target)
    assert rep["release"] == "2" and rep["intact"] is False
    assert rep["modified"] == ["WEB-INF/lib/svc.jar", "current.jar"]
    assert rep["added"] == ["lib/extra.jar"]
    assert rep["removed"] == ["WEB-INF/web.xml"]
    assert rep["local_modified"] == ["conf/host.properties"]


def test_swap_puts_live_tree_back_when_second_rename_fails(modules, home, by_hand, v2):
    archive, digest = v2
    modules.release.stage(archive, str(by_hand), digest, "2")
    before = snapshot(by_hand)
    staging = str(home / ".svc.staging")
    real_rename = os.rename

    def failing_rename(src, dst, *args, **kwargs):
        if os.fspath(src) == staging:
            raise OSError(28, "No space left on device (simulated)")
        return real_rename(src, dst, *args, **kwargs)

    with mock.patch("os.rename", side_effect=failing_rename):
        with pytest.raises(CommandExecutionError, match="live tree put back"):
            modules.release.swap(str(by_hand), "2", keep=KEEP)
    assert snapshot(by_hand) == before
    assert not (home / ".svc.previous").exists()
    # The staging is as staged (kept copies removed again) and can be swapped later.
    assert modules.release.staging_status(str(by_hand))["intact"] is True
    assert modules.release.swap(str(by_hand), "2", keep=KEEP)["release"] == "2"


def test_swap_refuses_wrong_or_tampered_staging(modules, home, by_hand, v2):
    archive, digest = v2
    with pytest.raises(CommandExecutionError, match="nothing staged"):
        modules.release.swap(str(by_hand), "2")
    modules.release.stage(archive, str(by_hand), digest, "2")
    with pytest.raises(CommandExecutionError, match="holds release 2, not 3"):
        modules.release.swap(str(by_hand), "3")
    with pytest.raises(CommandExecutionError, match="archive sha256"):
        modules.release.swap(str(by_hand), "2", sha256="a" * 64)
    (home / ".svc.staging" / "WEB-INF" / "lib" / "svc.jar").write_text("tampered\n")
    before = snapshot(by_hand)
    with pytest.raises(CommandExecutionError, match="changed since it was staged"):
        modules.release.swap(str(by_hand), "2")
    assert snapshot(by_hand) == before
    assert modules.release.staging_status(str(by_hand))["intact"] is False


def test_interrupted_swap_is_recovered_by_clean(modules, home, by_hand, v2):
    archive, digest = v2
    modules.release.stage(archive, str(by_hand), digest, "2")
    before = snapshot(by_hand)
    os.rename(by_hand, home / ".svc.previous")  # as if the minion died between the renames
    with pytest.raises(CommandExecutionError, match="release.clean"):
        modules.release.swap(str(by_hand), "2")
    ret = modules.release.clean(str(by_hand))
    assert ret["restored"] == str(home / ".svc.previous")
    assert snapshot(by_hand) == before


def test_leftovers_and_clean(modules, home, by_hand, v2):
    archive, digest = v2
    modules.release.stage(archive, str(by_hand), digest, "2")
    (home / ".svc.previous").mkdir()
    upload = home / "svc.tar"
    shutil.copy(archive, upload)
    backup = home / "svc_20170220"
    backup.mkdir()
    assert modules.release.leftovers(str(by_hand)) == sorted(
        str(home / n) for n in (".svc.staging", ".svc.staging.json", ".svc.previous", "svc.tar")
    )
    before = snapshot(by_hand)
    ret = modules.release.clean(str(by_hand))
    assert ret["restored"] is None
    assert sorted(ret["removed"]) == sorted(
        str(home / n) for n in (".svc.staging", ".svc.staging.json", ".svc.previous")
    )
    assert modules.release.leftovers(str(by_hand)) == [str(upload)]
    assert upload.exists() and backup.exists()
    assert snapshot(by_hand) == before


def test_record_write_and_remove(modules, home, by_hand):
    files = {"conf/app.properties": sha(V1["conf/app.properties"])}
    ret = modules.release.write_record(str(by_hand), {"release": 20170220, "files": files})
    assert ret["release"] == "20170220" and ret["record"] == str(home / ".svc.release.json")
    rep = modules.release.status(str(by_hand))
    assert rep["release"] == "20170220" and rep["archive_sha256"] is None
    assert rep["intact"] is False and "lib/old-only.jar" in rep["added"]
    assert modules.release.write_record(str(by_hand))["removed"] is True
    assert modules.release.status(str(by_hand))["release"] is None
    assert modules.release.write_record(str(by_hand))["removed"] is False
    with pytest.raises(SaltInvocationError, match="files"):
        modules.release.write_record(str(by_hand), {"release": "1", "files": {"a": "not-a-sha"}})


def test_first_deploy_into_missing_target(modules, home, v2):
    archive, digest = v2
    target = home / "svc"
    ret = modules.release.unpack(archive, str(target), digest, "2", keep=KEEP)
    assert ret["kept"] == []
    assert modules.release.status(str(target))["intact"] is True


# --------------------------------------------------------------------------- states


def test_state_deployed_is_idempotent(states, modules, tmp_path, by_hand, v2):
    archive, digest = v2
    ret = states.release.deployed(
        name=str(by_hand), release="2", source=archive, sha256=digest, keep=KEEP
    )
    assert ret.result is True
    assert ret.changes == {"deployed": {"old": None, "new": "2", "files": len(V2_FILES)}}
    before = snapshot(tmp_path)
    ret = states.release.deployed(
        name=str(by_hand), release="2", source=archive, sha256=digest, keep=KEEP
    )
    assert ret.result is True and ret.changes == {}
    assert "already on 2" in ret.comment
    ret = states.release.staged(name=str(by_hand), source=archive, sha256=digest, release="2")
    assert ret.result is True and ret.changes == {} and "already on 2" in ret.comment
    assert snapshot(tmp_path) == before


def test_state_staged_then_deployed_swaps_the_staging(states, modules, home, by_hand, v2):
    archive, digest = v2
    ret = states.release.staged(
        name=str(by_hand), source=archive, sha256=digest, release="2", keep=KEEP
    )
    assert ret.result is True
    assert ret.changes == {
        "staged": {"release": "2", "staging": str(home / ".svc.staging"), "files": len(V2_FILES)}
    }
    # Not on the release yet: staged again and reported as a change, so that the upgrade's
    # onchanges steps (backup, stop, swap) still run after an aborted first run.
    ret = states.release.staged(name=str(by_hand), source=archive, sha256=digest, release="2")
    assert ret.result is True and ret.changes["staged"]["release"] == "2"
    # No source needed: the staging of that release is swapped in.
    ret = states.release.deployed(name=str(by_hand), release="2", test=True)
    # A dry run reports the would-be change (so onchanges steps show in the plan).
    assert ret.result is None and ret.changes == {"deployed": {"old": None, "new": "2"}}
    assert "would swap" in ret.comment and str(home / ".svc.staging") in ret.comment
    ret = states.release.deployed(name=str(by_hand), release="2", keep=KEEP)
    assert ret.result is True, ret.comment
    assert ret.changes == {"deployed": {"old": None, "new": "2", "files": len(V2_FILES)}}
    assert modules.release.status(str(by_hand))["intact"] is True
    assert (by_hand / "conf" / "host.properties").exists()


def test_state_deployed_upgrades_from_recorded_release(states, modules, by_hand, v1, v2):
    modules.release.unpack(v1[0], str(by_hand), v1[1], "1", keep=KEEP)
    ret = states.release.deployed(
        name=str(by_hand), release="2", source=v2[0], sha256=v2[1], keep=KEEP
    )
    assert ret.changes["deployed"]["old"] == "1" and ret.changes["deployed"]["new"] == "2"


def test_state_redeploys_a_drifted_tree(states, modules, by_hand, v2):
    archive, digest = v2
    modules.release.unpack(archive, str(by_hand), digest, "2", keep=KEEP)
    (by_hand / "WEB-INF" / "lib" / "svc.jar").write_text("hot-patched\n")
    ret = states.release.deployed(name=str(by_hand), release="2", source=archive, sha256=digest)
    assert ret.result is True and ret.changes["deployed"]["old"] == "2"
    assert modules.release.status(str(by_hand))["intact"] is True


def test_state_test_mode_writes_nothing(states, tmp_path, home, by_hand, v2):
    archive, digest = v2
    before = snapshot(tmp_path)
    ret = states.release.staged(
        name=str(by_hand), source=archive, sha256=digest, release="2", test=True
    )
    assert ret.result is None and ret.changes["staged"]["release"] == "2"
    members = 1 + 4 + len(V2)  # svc/, parent dirs (WEB-INF, WEB-INF/lib, conf, lib), entries
    assert ret.comment == (
        f"would verify and stage {archive} ({members} members) into {home / '.svc.staging'}"
    )
    ret = states.release.deployed(
        name=str(by_hand), release="2", source=archive, sha256=digest, keep=KEEP, test=True
    )
    assert ret.result is None and ret.changes == {"deployed": {"old": None, "new": "2"}}
    assert "would verify and stage" in ret.comment and "then swap it into" in ret.comment
    assert snapshot(tmp_path) == before


def test_state_salt_source(states, modules, state_tree, by_hand, v2):
    archive, digest = v2
    shutil.copy(archive, state_tree / "svc-v2.tar")
    ret = states.release.deployed(
        name=str(by_hand), release="2", source="salt://svc-v2.tar", sha256=digest
    )
    assert ret.result is True, ret.comment
    assert modules.release.status(str(by_hand))["release"] == "2"


def test_state_source_failures(states, tmp_path, by_hand, v2):
    before = snapshot(tmp_path)
    for source in ("salt://no-such-release.tar", str(tmp_path / "missing.tar")):
        ret = states.release.staged(name=str(by_hand), source=source, sha256="a" * 64, release="2")
        assert ret.result is False and source in ret.comment
        ret = states.release.deployed(name=str(by_hand), release="2", source=source, sha256="a" * 64)
        assert ret.result is False and source in ret.comment
    ret = states.release.deployed(name=str(by_hand), release="2")
    assert ret.result is False and "no source" in ret.comment
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------- issue 8.3


@pytest.mark.parametrize("staged_first", [False, True])
def test_swap_never_drops_a_tree_that_no_backup_holds(
    states, modules, home, live, v2, staged_first
):
    """
    A backup of tag 2 exists from an earlier run, then the live tree was hot-patched: the
    swap keeps the patched tree in a new backup (<dir>_2.1) and says so.
    """
    archive, digest = v2
    assert modules.backup.create(str(live), "2")["created"] is True
    (live / "app.jar").write_text("hot-patched\n")
    if staged_first:
        assert states.release.staged(
            name=str(live), source=archive, sha256=digest, release="2"
        ).result is True
    plan = states.release.deployed(
        name=str(live), release="2", source=archive, sha256=digest, backup="2", test=True
    )
    assert plan.result is None and f"would be held by {home}/svc_2.1" in plan.comment
    assert not (home / "svc_2.1").exists()
    ret = states.release.deployed(
        name=str(live), release="2", source=archive, sha256=digest, backup="2"
    )
    assert ret.result is True, ret.comment
    assert f"the replaced tree is held by {home}/svc_2.1" in ret.comment
    assert f"a rollback (tag 2) restores {home}/svc_2" in ret.comment
    assert (home / "svc_2.1" / "app.jar").read_text() == "hot-patched\n"
    assert modules.backup.verify(str(live), "2.1")["ok"] is True
    assert modules.backup.manifest(str(live), "2.1")["meta"] == {"record": None}
    assert modules.release.status(str(live))["release"] == "2"


# --------------------------------------------------------------------------- issue 9.8


@pytest.fixture
def small_fs(tmp_path, request):
    return fs.small_fs(tmp_path, request)


@pytest.fixture
def small_live(small_fs):
    live = small_fs / "svc"
    (live / "conf").mkdir(parents=True)
    (live / "conf" / "host.properties").write_text("host=ecsc-1\n")
    (live / "app.jar").write_text("live v1\n")
    return live


def test_disk_full_during_unpack_leaves_the_live_tree_whole(modules, small_fs, small_live,
                                                            archives):
    """9.8: the archive does not fit: no staging left, the live tree untouched."""
    archive = archives / "big.tar"
    digest = ha.build_release(archive, "svc", {"lib/big.jar": os.urandom(3 << 20)})
    before = snapshot(small_live)
    for func in ("stage", "unpack"):
        with pytest.raises(CommandExecutionError) as exc:
            getattr(modules.release, func)(str(archive), str(small_live), digest, "2")
        assert "No space left on device" in str(exc.value)
        assert snapshot(small_live) == before
        assert modules.release.leftovers(str(small_live)) == []
        assert sorted(os.listdir(small_fs)) == ["svc"]


@pytest.mark.parametrize("keep", [KEEP, None], ids=["carry-host-local", "record-only"])
def test_disk_full_during_swap_leaves_old_or_new_tree_never_a_mix(
    modules, small_fs, small_live, v2, keep
):
    """9.8: the swap's writes (host-local copies, the record) hit ENOSPC: undone, the old
    tree whole; with room again the same swap gives the whole new tree."""
    archive, digest = v2
    modules.release.stage(archive, str(small_live), digest, "2", keep=keep)
    before = snapshot(small_live)
    filler = fs.fill(small_fs)
    with pytest.raises(CommandExecutionError) as exc:
        modules.release.swap(str(small_live), "2", sha256=digest, keep=keep)
    assert "swap undone" in str(exc.value) and "No space left on device" in str(exc.value)
    assert snapshot(small_live) == before
    assert modules.release.status(str(small_live))["release"] is None
    assert modules.release.staging_status(str(small_live))["intact"] is True
    filler.unlink()
    modules.release.swap(str(small_live), "2", sha256=digest, keep=keep)
    report = modules.release.status(str(small_live))
    assert report["release"] == "2" and report["intact"] is True
    assert modules.release.leftovers(str(small_live)) == []


# --------------------------------------------------------------------------- issue 9.4: resume


def _cut_swap(modules, home, target, archive, digest, where):
    """Stage release 2 and leave the swap as a minion killed at ``where`` would (the swap's
    own steps, in its order: rename live -> .previous, staging -> live, record, cleanup)."""
    modules.release.stage(archive, str(target), digest, "2", keep=KEEP)
    meta = (home / ".svc.staging.json").read_text()
    if where == "after-record":
        shutil.copytree(target, home / "old", symlinks=True)
        modules.release.swap(str(target), "2")
        # .previous cut short while being removed, and the staging description still there.
        os.rename(home / "old", home / ".svc.previous")
        shutil.rmtree(home / ".svc.previous" / "WEB-INF")
        (home / ".svc.staging.json").write_text(meta)
        return
    os.rename(target, home / ".svc.previous")
    if where == "before-record":
        os.rename(home / ".svc.staging", target)


@pytest.mark.parametrize("where", ["between-renames", "before-record", "after-record"])
def test_clean_never_drops_the_last_whole_live_tree(modules, home, by_hand, v2, where):
    """9.4: whatever point a swap was cut at, clean leaves one whole tree live (the old one
    put back, or the new one with its record) and no leftovers; before the fix, a swap cut
    before its record lost the old tree (clean removed .previous, the only copy)."""
    archive, digest = v2
    before = tree_contents(by_hand)
    modules.backup.create(str(by_hand), "2")
    _cut_swap(modules, home, by_hand, archive, digest, where)
    assert modules.release.interrupted(str(by_hand))["swap"] == where
    ret = modules.release.clean(str(by_hand))
    assert ret["swap"] == where
    assert modules.release.leftovers(str(by_hand)) == []
    if where == "after-record":
        assert ret["restored"] is None and str(home / ".svc.previous") in ret["removed"]
        assert modules.release.status(str(by_hand))["intact"] is True
    else:
        assert ret["restored"] == str(home / ".svc.previous")
        assert tree_contents(by_hand) == before
        assert modules.release.status(str(by_hand))["release"] is None


def test_interrupted_reports_staging_and_stray_previous(modules, home, by_hand, v2):
    archive, digest = v2
    assert modules.release.interrupted(str(by_hand)) == {
        "target": str(by_hand), "swap": None, "staged": None, "leftovers": []}
    modules.release.stage(archive, str(by_hand), digest, "2")
    (home / ".svc.previous").mkdir()
    found = modules.release.interrupted(str(by_hand))
    assert found["swap"] == "unknown" and found["staged"] == "2"
    assert found["leftovers"] == sorted(
        str(home / n) for n in (".svc.previous", ".svc.staging", ".svc.staging.json"))
    ret = modules.release.clean(str(by_hand), drop_previous=False)
    assert ret["kept"] == [str(home / ".svc.previous")] and (home / ".svc.previous").is_dir()
    assert modules.release.interrupted(str(by_hand))["leftovers"] == [str(home / ".svc.previous")]


@pytest.mark.parametrize("where", ["between-renames", "before-record", "after-record"])
def test_state_resumed_says_where_and_clears_the_way(states, modules, home, by_hand, v2, where):
    """9.4: the upgrade's first state names the point an interrupted swap reached, and after
    it the upgrade's own states finish the host: the same staged + deployed a re-run does."""
    archive, digest = v2
    modules.backup.create(str(by_hand), "2")
    _cut_swap(modules, home, by_hand, archive, digest, where)
    ret = states.release.resumed(name=str(by_hand), release="2", test=True)
    assert ret.result is None and "would be resuming" in ret.comment
    assert (home / ".svc.previous").exists()
    ret = states.release.resumed(name=str(by_hand), release="2")
    assert ret.result is True, ret.comment
    assert ret.comment.startswith(
        f"resuming {MINION}: an interrupted run left it at 'swapped' (")
    assert ret.changes["resumed"]["step"] == "swapped"
    assert modules.release.leftovers(str(by_hand)) == []
    for state in ("staged", "deployed"):
        res = getattr(states.release, state)(name=str(by_hand), source=archive, sha256=digest,
                                              release="2", keep=KEEP)
        assert res.result is True, res.comment
    assert modules.release.status(str(by_hand))["intact"] is True
    assert modules.release.leftovers(str(by_hand)) == []
    again = states.release.resumed(name=str(by_hand), release="2")
    assert again.result is True and not again.changes


def test_state_resumed_keeps_a_previous_tree_no_backup_holds(states, modules, home, by_hand, v2):
    """A .previous with a file no backup has is kept and named, never dropped."""
    archive, digest = v2
    modules.backup.create(str(by_hand), "2")
    _cut_swap(modules, home, by_hand, archive, digest, "after-record")
    (home / ".svc.previous" / "hot-fix.jar").write_text("only here\n")
    ret = states.release.resumed(name=str(by_hand), release="2")
    assert ret.result is True, ret.comment
    assert f"kept {home}/.svc.previous: no verified backup holds all of it" in ret.comment
    assert (home / ".svc.previous" / "hot-fix.jar").read_text() == "only here\n"
    assert ret.changes["resumed"]["kept"] == [str(home / ".svc.previous")]


def test_state_resumed_staged_and_backed_up(states, modules, home, by_hand, v2):
    archive, digest = v2
    assert states.release.resumed(name=str(by_hand), release="2").changes == {}
    modules.release.stage(archive, str(by_hand), digest, "2")
    ret = states.release.resumed(name=str(by_hand), release="2")
    assert "left it at 'staged' (2 staged; left beside it: .svc.staging, .svc.staging.json)" \
        in ret.comment
    modules.release.stage(archive, str(by_hand), digest, "2")
    modules.backup.create(str(by_hand), "2")
    ret = states.release.resumed(name=str(by_hand), release="2")
    assert f"left it at 'backed-up' (2 staged; left beside it: .svc.staging, " \
           f".svc.staging.json; backup svc_2)" in ret.comment
    assert modules.release.leftovers(str(by_hand)) == []
