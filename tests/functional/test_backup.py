"""Functional tests: the backup module and states through Salt's loader, on real files."""

import hashlib
import json
import fcntl
import os
import pathlib
import shutil
import stat
import signal
import subprocess
import tempfile
import time
import unittest.mock

import pytest

from tests.functional import small_fs as fs

MANIFEST = ".backup-manifest.json"


def make_program_dir(root, release="v1"):
    """A small stand-in for /home/ecsc: jars, scripts, config, a symlink, an empty dir."""
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "ecsc.jar").write_bytes(f"jar {release} ".encode() * 50000)
    (root / "lib" / "util.jar").write_bytes(os.urandom(4096))
    (root / "bin").mkdir()
    (root / "bin" / "startup.sh").write_text("#!/bin/sh\nexec java -jar ../lib/ecsc.jar\n")
    os.chmod(root / "bin" / "startup.sh", 0o750)
    (root / "conf").mkdir()
    (root / "conf" / "app.properties").write_text(f"release={release}\nbalance.scale=3\n")
    os.chmod(root / "conf" / "app.properties", 0o600)
    (root / "empty.txt").write_bytes(b"")
    os.symlink("lib/ecsc.jar", root / "current.jar")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "work" / "cache").mkdir(parents=True)
    os.chmod(root / "work", 0o711)
    os.utime(root / "lib" / "ecsc.jar", (1487548800, 1487548800))  # 2017-02-20
    return root


def snapshot(root, with_mtime=False):
    """
    Every entry below root (and root itself): type, mode, content hash or link target, and
    with ``with_mtime`` the mtime (directories included: a temp dir made and removed in
    a directory changes its mtime).
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames] if dirpath == str(root) else [
            *dirnames,
            *filenames,
        ]:
            full = os.path.normpath(os.path.join(dirpath, name))
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entry = ("link", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                entry = ("dir", mode)
            else:
                with open(full, "rb") as handle:
                    entry = ("file", mode, hashlib.sha256(handle.read()).hexdigest())
            if with_mtime:
                entry += (st.st_mtime_ns,)
            out[rel] = entry
    return out


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def ecsc(home):
    return make_program_dir(home / "ecsc")


# ------------------------------------------------------------------ create


def test_create_copies_tree_with_manifest(modules, ecsc, home):
    res = modules.backup.create(str(ecsc), "20170220", meta={"release": "v1"})
    bdir = home / "ecsc_20170220"
    assert res["path"] == str(bdir) and res["created"] is True
    assert res["files"] == 5 and res["bytes"] > 0 and "seconds" in res
    copied = snapshot(bdir, with_mtime=True)
    assert copied.pop(MANIFEST)[0] == "file"
    source = snapshot(ecsc, with_mtime=True)
    # Issue 8.3: the backup's root is sealed (root, 0700); its own mode is in the manifest.
    assert copied.pop(".")[1] == 0o700 and os.stat(bdir).st_uid == 0
    assert modules.backup.manifest(str(ecsc), "20170220")["dirs"]["."] == f"{source.pop('.')[1]:04o}"
    assert copied == source
    assert os.path.islink(bdir / "current.jar") and os.path.islink(bdir / "dangling")
    assert (bdir / "work" / "cache").is_dir()
    assert modules.backup.manifest(str(ecsc), "20170220")["meta"] == {"release": "v1"}
    assert modules.backup.verify(str(ecsc), "20170220") == {
        "ok": True,
        "modified": [],
        "missing": [],
        "added": [],
    }
    # No temp dir left behind.
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_20170220"]


def test_same_day_backup_twice_does_not_nest_or_overwrite(modules, ecsc, home):
    first = modules.backup.create(str(ecsc), "20170220", meta={"release": "v1"})
    assert first["created"] is True
    bdir = home / "ecsc_20170220"
    before = snapshot(bdir, with_mtime=True)
    # The upgrade changed the live tree in between (the runbook's failure case).
    (ecsc / "lib" / "ecsc.jar").write_bytes(b"jar v2")
    second = modules.backup.create(str(ecsc), "20170220", meta={"release": "v2"})
    assert not (bdir / "ecsc").exists()
    assert snapshot(bdir, with_mtime=True) == before
    assert modules.backup.manifest(str(ecsc), "20170220")["meta"] == {"release": "v1"}
    # Issue 8.3: the changed live tree is held by a new backup under a distinct name.
    assert second["created"] is True and second["path"] == str(home / "ecsc_20170220.1")
    assert modules.backup.verify(str(ecsc), "20170220.1")["ok"] is True
    assert (home / "ecsc_20170220.1" / "lib" / "ecsc.jar").read_bytes() == b"jar v2"
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_20170220", "ecsc_20170220.1"]
    # Once held, the same tree is not copied again.
    third = modules.backup.create(str(ecsc), "20170220")
    assert third["created"] is False and third["path"] == second["path"]


def test_existing_dir_without_manifest_is_refused(modules, ecsc, home):
    # A hand-made `cp -R` backup from the old runbook.
    legacy = make_program_dir(home / "ecsc_20170220")
    before = snapshot(legacy)
    with pytest.raises(Exception) as exc:
        modules.backup.create(str(ecsc), "20170220")
    assert "CommandExecutionError" in type(exc.value).__name__
    assert str(legacy) in str(exc.value) and "no .backup-manifest.json" in str(exc.value)
    assert snapshot(legacy) == before


def test_missing_source_raises(modules, home):
    home.mkdir()
    with pytest.raises(Exception, match="does not exist") as exc:
        modules.backup.create(str(home / "ecsc"), "20170220")
    assert "func-tests-minion" in str(exc.value)
    assert list(home.iterdir()) == []


# ------------------------------------------------------------------ stale temp dirs


def test_stale_temp_dir_from_crash_is_cleaned_and_never_a_backup(modules, ecsc, home):
    stale = home / ".ecsc_20170220.tmp-crashed1"
    make_program_dir(stale)  # half-made copy, even with a manifest-looking file
    (stale / MANIFEST).write_text(json.dumps({"format": 1, "files": {}}))
    assert modules.backup.list(str(ecsc)) == []
    with pytest.raises(Exception, match="no backup"):
        modules.backup.verify(str(ecsc), "20170220")
    res = modules.backup.create(str(ecsc), "20170220")
    assert res["created"] is True
    assert not stale.exists()
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_20170220"]
    assert modules.backup.verify(str(ecsc), "20170220")["ok"] is True


def test_temp_dir_of_a_running_create_is_not_removed(modules, ecsc, home):
    # Another create of the same path/tag is in progress: it holds a lock on its temp dir.
    busy = home / ".ecsc_20170220.tmp-running"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert modules.backup.create(str(ecsc), "20170220")["created"] is True
        assert busy.is_dir()
    finally:
        os.close(fd)


def test_stale_temp_of_other_tag_is_left_alone(modules, ecsc, home):
    other = home / ".ecsc_20170221.tmp-abc"
    other.mkdir()
    modules.backup.create(str(ecsc), "20170220")
    assert other.exists()


# ------------------------------------------------------------------ restore


def _mess_up(live):
    (live / "lib" / "ecsc.jar").write_bytes(b"jar v2 with the fix")
    (live / "lib" / "new-dep.jar").write_bytes(b"new")
    (live / "conf" / "app.properties").unlink()
    os.chmod(live / "bin" / "startup.sh", 0o755)
    os.unlink(live / "current.jar")
    os.symlink("lib/new-dep.jar", live / "current.jar")
    (live / "work" / "cache").rmdir()
    (live / "webapps" / "ROOT").mkdir(parents=True)
    (live / "webapps" / "ROOT" / "index.html").write_text("v2")


def test_restore_is_byte_identical(modules, ecsc, home):
    original = snapshot(ecsc, with_mtime=True)
    modules.backup.create(str(ecsc), "20170220", meta={"release": "v1"})
    _mess_up(ecsc)
    assert snapshot(ecsc, with_mtime=True) != original
    messed_up = snapshot(ecsc)
    res = modules.backup.restore(str(ecsc), "20170220")
    assert res["changed"] is True
    assert res["path"] == str(ecsc) and res["tag"] == "20170220"
    assert res["files"] == 5 and res["meta"] == {"release": "v1"}
    assert snapshot(ecsc, with_mtime=True) == original
    assert not (ecsc / MANIFEST).exists()
    # Staging and the set-aside tree are gone; the backup is intact; the replaced tree is
    # held by a new verified backup (issue 8.3).
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_20170220", "ecsc_20170220.1"]
    assert res["held_by"] == str(home / "ecsc_20170220.1")
    assert modules.backup.verify(str(ecsc), "20170220.1")["ok"] is True
    held = snapshot(home / "ecsc_20170220.1")
    held.pop(MANIFEST), held.pop("."), messed_up.pop(".")
    assert held == messed_up
    assert modules.backup.verify(str(ecsc), "20170220")["ok"] is True
    # Every file's sha256 matches the manifest.
    data = modules.backup.manifest(str(ecsc), "20170220")
    for rel, entry in data["files"].items():
        assert hashlib.sha256((ecsc / rel).read_bytes()).hexdigest() == entry["sha256"]
        assert f"{stat.S_IMODE(os.lstat(ecsc / rel).st_mode):04o}" == entry["mode"]
    for rel, target in data["symlinks"].items():
        assert os.readlink(ecsc / rel) == target


def test_restore_when_live_dir_is_gone(modules, ecsc, home):
    original = snapshot(ecsc)
    modules.backup.create(str(ecsc), "20170220")
    shutil.rmtree(ecsc)
    assert modules.backup.restore(str(ecsc), "20170220")["changed"] is True
    assert snapshot(ecsc) == original


def test_restore_of_identical_tree_changes_nothing(modules, ecsc, home):
    modules.backup.create(str(ecsc), "20170220")
    inode = os.stat(ecsc).st_ino
    res = modules.backup.restore(str(ecsc), "20170220")
    assert res["changed"] is False
    assert os.stat(ecsc).st_ino == inode  # not swapped


def test_corrupted_backup_is_reported_and_never_restored(modules, ecsc, home):
    modules.backup.create(str(ecsc), "20170220")
    bdir = home / "ecsc_20170220"
    os.chmod(bdir / "conf" / "app.properties", 0o600)
    (bdir / "conf" / "app.properties").write_text("release=v1\nbalance.scale=2\n")
    (bdir / "lib" / "util.jar").unlink()
    (bdir / "stray.txt").write_text("x")
    diff = modules.backup.verify(str(ecsc), "20170220")
    assert diff == {
        "ok": False,
        "modified": ["conf/app.properties"],
        "missing": ["lib/util.jar"],
        "added": ["stray.txt"],
    }
    _mess_up(ecsc)
    live_before = snapshot(ecsc, with_mtime=True)
    with pytest.raises(Exception, match="does not verify") as exc:
        modules.backup.restore(str(ecsc), "20170220")
    assert "conf/app.properties" in str(exc.value)
    assert snapshot(ecsc, with_mtime=True) == live_before
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_20170220"]
    # And a second backup run with the same tag refuses to take it as good.
    with pytest.raises(Exception, match="does not verify"):
        modules.backup.create(str(ecsc), "20170220")


def test_corrupted_symlink_and_mode_are_reported(modules, ecsc, home):
    modules.backup.create(str(ecsc), "20170220")
    bdir = home / "ecsc_20170220"
    os.unlink(bdir / "current.jar")
    os.symlink("/etc/passwd", bdir / "current.jar")
    os.chmod(bdir / "bin" / "startup.sh", 0o777)
    diff = modules.backup.verify(str(ecsc), "20170220")
    assert diff["modified"] == ["bin/startup.sh", "current.jar"]


def test_verify_and_restore_of_missing_backup_raise(modules, ecsc):
    with pytest.raises(Exception, match="no backup"):
        modules.backup.verify(str(ecsc), "19990101")
    with pytest.raises(Exception, match="no backup"):
        modules.backup.restore(str(ecsc), "19990101")


# ------------------------------------------------------------------ list and prune


def _backups(modules, ecsc, tags):
    for tag in tags:
        (ecsc / "conf" / "app.properties").write_text(f"tag={tag}\n")
        modules.backup.create(str(ecsc), tag, meta={"release": tag})


def test_list_newest_first(modules, ecsc, home):
    _backups(modules, ecsc, ["b1", "a2", "c3"])
    (home / "ecsc_legacy").mkdir()  # no manifest: not a backup
    (home / ".ecsc_zz.tmp-123").mkdir()
    listed = modules.backup.list(str(ecsc))
    assert [item["tag"] for item in listed] == ["c3", "a2", "b1"]
    assert listed[0]["path"] == str(home / "ecsc_c3")
    assert listed[0]["meta"] == {"release": "c3"}
    assert listed[0]["files"] == 5 and listed[0]["bytes"] > 0 and listed[0]["created"]


def test_prune_keeps_newest_and_protected(modules, ecsc, home):
    _backups(modules, ecsc, ["t1", "t2", "t3", "t4", "t5"])
    res = modules.backup.prune(str(ecsc), keep=2, protect=["t1"])
    assert res == {"deleted": ["t3", "t2"], "kept": ["t5", "t4", "t1"]}
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_t1", "ecsc_t4", "ecsc_t5"]
    res = modules.backup.prune(str(ecsc), keep=1)
    assert res == {"deleted": ["t4", "t1"], "kept": ["t5"]}
    assert modules.backup.verify(str(ecsc), "t5")["ok"] is True
    with pytest.raises(Exception, match="at least 1"):
        modules.backup.prune(str(ecsc), keep=0)


def test_pruned_state_keeps_newest_and_protected_and_test_mode_deletes_nothing(
    states, modules, ecsc, home
):
    _backups(modules, ecsc, ["t1", "t2", "t3", "t4"])
    before = snapshot(home, with_mtime=True)
    ret = states.backup.pruned(name=str(ecsc), keep=2, protect=["t1"], test=True)
    assert ret.result is None and ret.changes == {"pruned": ["t2"]}
    assert snapshot(home, with_mtime=True) == before
    ret = states.backup.pruned(name=str(ecsc), keep=2, protect=["t1"])
    assert ret.result is True and ret.changes == {"pruned": ["t2"]}
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_t1", "ecsc_t3", "ecsc_t4"]
    ret = states.backup.pruned(name=str(ecsc), keep=2, protect=["t1"])
    assert ret.result is True and ret.changes == {}


# ------------------------------------------------------------------ states


def test_present_state_idempotent_and_test_mode_writes_nothing(states, ecsc, home):
    before = snapshot(home, with_mtime=True)
    ret = states.backup.present(name=str(ecsc), tag="20170220", test=True)
    assert ret.result is None
    assert ret.comment.startswith(
        f"would back up {ecsc} to {home / 'ecsc_20170220'} (5 files, "
    )
    assert snapshot(home, with_mtime=True) == before

    ret = states.backup.present(name=str(ecsc), tag="20170220", meta={"release": "v1"})
    assert ret.result is True
    assert ret.changes["backup"]["path"] == str(home / "ecsc_20170220")
    assert ret.changes["backup"]["files"] == 5
    after_first = snapshot(home, with_mtime=True)

    ret = states.backup.present(name=str(ecsc), tag="20170220", meta={"release": "v1"})
    assert ret.result is True and ret.changes == {}
    ret = states.backup.present(name=str(ecsc), tag="20170220", test=True)
    assert ret.result is True and ret.changes == {}
    assert snapshot(home, with_mtime=True) == after_first


def test_restored_state_idempotent_and_test_mode_writes_nothing(states, modules, ecsc, home):
    original = snapshot(ecsc, with_mtime=True)
    modules.backup.create(str(ecsc), "20170220")
    _mess_up(ecsc)
    before = snapshot(home, with_mtime=True)

    ret = states.backup.restored(name=str(ecsc), tag="20170220", test=True)
    assert ret.result is None
    assert f"would replace {ecsc} with backup {home / 'ecsc_20170220'}" in ret.comment
    assert snapshot(home, with_mtime=True) == before

    ret = states.backup.restored(name=str(ecsc), tag="20170220")
    assert ret.result is True
    assert ret.changes == {"restored": {"from": str(home / "ecsc_20170220"), "files": 5}}
    assert snapshot(ecsc, with_mtime=True) == original

    ret = states.backup.restored(name=str(ecsc), tag="20170220")
    assert ret.result is True and ret.changes == {}
    ret = states.backup.restored(name=str(ecsc), tag="20170220", test=True)
    assert ret.result is True and ret.changes == {}


def test_states_fail_with_message(states, ecsc, home):
    ret = states.backup.present(name=str(ecsc), tag="bad/tag")
    assert ret.result is False and "invalid tag" in ret.comment
    ret = states.backup.restored(name=str(ecsc), tag="19990101")
    assert ret.result is False and "no backup" in ret.comment
    assert "func-tests-minion" in ret.comment


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is only copied as root")
def test_ownership_kept_through_backup_and_restore(modules, ecsc, home):
    os.chown(ecsc / "lib" / "ecsc.jar", 1234, 2345)
    os.chown(ecsc / "conf", 1234, 1234)
    os.lchown(ecsc / "current.jar", 1234, 1234)
    modules.backup.create(str(ecsc), "20170220")
    bdir = home / "ecsc_20170220"

    def owner(path):
        st = os.lstat(path)
        return st.st_uid, st.st_gid

    assert owner(bdir / "lib" / "ecsc.jar") == (1234, 2345)
    assert owner(bdir / "conf") == (1234, 1234)
    assert owner(bdir / "current.jar") == (1234, 1234)
    os.chown(ecsc / "lib" / "ecsc.jar", 0, 0)
    (ecsc / "lib" / "ecsc.jar").write_bytes(b"v2")
    modules.backup.restore(str(ecsc), "20170220")
    assert owner(ecsc / "lib" / "ecsc.jar") == (1234, 2345)
    assert owner(ecsc / "conf") == (1234, 1234)
    assert owner(ecsc / "current.jar") == (1234, 1234)


def test_setgid_parent_still_gets_source_group(modules, ecsc, home):
    if os.geteuid() != 0:
        pytest.skip("ownership is only copied as root")
    os.chown(home, 0, 4321)
    os.chmod(home, 0o2775)
    os.chown(ecsc / "conf" / "app.properties", 0, 0)
    modules.backup.create(str(ecsc), "20170220")
    assert os.stat(home / "ecsc_20170220" / "conf" / "app.properties").st_gid == 0


def test_special_files_are_skipped_and_reported(modules, ecsc, home):
    os.mkfifo(ecsc / "work" / "control.fifo")
    res = modules.backup.create(str(ecsc), "20170220")
    assert res["skipped"] == ["work/control.fifo"]
    assert not os.path.lexists(home / "ecsc_20170220" / "work" / "control.fifo")
    assert modules.backup.verify(str(ecsc), "20170220")["ok"] is True


# ------------------------------------------------------------------ issue 8.3: no tree lost

SERVICE_UID = 65534  # nobody: stands for the service's user, owner of the program dir


def test_create_refuses_a_symlinked_program_dir(modules, ecsc, home):
    os.symlink("ecsc", home / "ecsc-link")
    with pytest.raises(Exception, match="symlink") as exc:
        modules.backup.create(str(home / "ecsc-link"), "20170220")
    assert str(home / "ecsc-link") in str(exc.value)
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc-link"]


@pytest.fixture
def open_home():
    """A home dir every user can reach (pytest's tmp_path is private to root)."""
    base = tempfile.mkdtemp(prefix="backup-test-")
    os.chmod(base, 0o755)
    try:
        yield make_program_dir(pathlib.Path(base) / "home" / "ecsc").parent
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership needs root")
def test_backup_is_not_writable_by_the_service_user(modules, open_home):
    home = open_home
    ecsc = home / "ecsc"
    os.chmod(home, 0o755)
    for dirpath, dirnames, filenames in os.walk(ecsc):
        for entry in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(entry, SERVICE_UID, SERVICE_UID)
    modules.backup.create(str(ecsc), "20170220")
    bdir = home / "ecsc_20170220"

    def as_service_user(*argv):
        return subprocess.run(
            ["setpriv", f"--reuid={SERVICE_UID}", f"--regid={SERVICE_UID}", "--clear-groups",
             *argv], capture_output=True, check=False,
        ).returncode

    assert as_service_user("touch", str(ecsc / "lib" / "probe")) == 0  # it owns the live tree
    assert as_service_user("touch", str(bdir / "lib" / "ecsc.jar")) != 0
    assert as_service_user("touch", str(bdir / "new")) != 0
    assert as_service_user("rm", "-f", str(bdir / MANIFEST)) != 0
    assert os.stat(bdir / MANIFEST).st_uid == 0
    assert modules.backup.verify(str(ecsc), "20170220")["ok"] is True
    # The restored tree gets the service user's ownership back, root dir included.
    (ecsc / "lib" / "probe").unlink()
    (ecsc / "lib" / "ecsc.jar").write_bytes(b"hot fix")
    modules.backup.restore(str(ecsc), "20170220")
    assert os.stat(ecsc).st_uid == SERVICE_UID
    assert os.stat(ecsc / "lib" / "ecsc.jar").st_uid == SERVICE_UID


def test_file_added_after_the_upgrade_survives_a_rollback_in_a_backup(modules, ecsc, home):
    """The runbook's rollback over a hot-fixed tree: the hot fix is kept in a backup."""
    modules.backup.create(str(ecsc), "v2")
    (ecsc / "lib" / "hotfix.jar").write_bytes(b"host-local hot fix")
    plan = modules.backup.restore(str(ecsc), "v2", test=True)
    assert plan["held_by"] == str(home / "ecsc_v2.1")
    assert not (home / "ecsc_v2.1").exists()
    res = modules.backup.restore(str(ecsc), "v2")
    assert not (ecsc / "lib" / "hotfix.jar").exists()
    assert res["held_by"] == str(home / "ecsc_v2.1")
    assert (home / "ecsc_v2.1" / "lib" / "hotfix.jar").read_bytes() == b"host-local hot fix"
    assert modules.backup.verify(str(ecsc), "v2.1")["ok"] is True
    # Restoring again changes nothing and makes no further copy.
    assert modules.backup.restore(str(ecsc), "v2")["changed"] is False
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_v2", "ecsc_v2.1"]


def test_prune_keeps_the_trees_of_a_protected_tag(modules, ecsc, home):
    _backups(modules, ecsc, ["t1"])
    (ecsc / "lib" / "hotfix.jar").write_bytes(b"x")
    assert modules.backup.create(str(ecsc), "t1")["path"] == str(home / "ecsc_t1.1")
    _backups(modules, ecsc, ["t2", "t3"])
    res = modules.backup.prune(str(ecsc), keep=1, protect=["t1"])
    assert sorted(res["deleted"]) == ["t2"]
    assert sorted(res["kept"]) == ["t1", "t1.1", "t3"]


# ------------------------------------------------------------------ issue 9: faults


@pytest.fixture
def small_fs(tmp_path, request):
    return fs.small_fs(tmp_path, request)


def _program_dir_of(root, files=12, size=100_000):
    (root / "lib").mkdir(parents=True)
    for index in range(files):
        (root / "lib" / f"part{index:02d}.jar").write_bytes(os.urandom(size))
    return root


def test_disk_full_at_backup_time_is_refused_before_anything_is_written(
    modules, states, small_fs
):
    """9.7: the free-space check refuses; the state fails, so the upgrade's stop (which
    requires it) never runs; nothing is left on the filesystem."""
    ecsc = _program_dir_of(small_fs / "ecsc")
    before = sorted(os.listdir(small_fs))
    with pytest.raises(Exception, match="not enough free space") as exc:
        modules.backup.create(str(ecsc), "v2")
    assert str(ecsc) in str(exc.value)
    ret = states.backup.present(name=str(ecsc), tag="v2")
    assert ret.result is False and "not enough free space" in ret.comment
    assert sorted(os.listdir(small_fs)) == before


def test_real_enospc_during_the_copy_leaves_no_partial_backup(modules, small_fs):
    """9.7: past the check (here bypassed) a real ENOSPC mid-copy keeps nothing."""
    ecsc = _program_dir_of(small_fs / "ecsc")
    before = sorted(os.listdir(small_fs))
    huge = shutil._ntuple_diskusage(1 << 40, 0, 1 << 40)  # pylint: disable=protected-access
    with unittest.mock.patch("shutil.disk_usage", return_value=huge):
        with pytest.raises(Exception, match="nothing kept") as exc:
            modules.backup.create(str(ecsc), "v2")
    assert "No space left on device" in str(exc.value)
    assert sorted(os.listdir(small_fs)) == before
    assert modules.backup.list(str(ecsc)) == []


def test_backup_killed_mid_copy_is_never_taken_for_a_good_backup(modules, ecsc, home):
    """9.10: SIGKILL of the process doing the copy (power loss for the copy)."""
    for index in range(40):
        (ecsc / "lib" / f"dep{index:02d}.jar").write_bytes(os.urandom(20_000))
    pid = os.fork()
    if pid == 0:  # the child: copy, but hang for good once a few files are written
        try:
            real_fchmod, calls = os.fchmod, []

            def _slow_fchmod(fd, mode):
                calls.append(fd)
                if len(calls) > 5:
                    time.sleep(3600)
                return real_fchmod(fd, mode)

            os.fchmod = _slow_fchmod
            modules.backup.create(str(ecsc), "v2")
        finally:
            os._exit(0)  # pylint: disable=protected-access
    try:
        deadline = time.monotonic() + 60
        temp = []
        while time.monotonic() < deadline:
            temp = [p for p in home.iterdir() if p.name.startswith(".ecsc_v2.tmp-")]
            if temp and len(list((temp[0] / "lib").glob("*.jar"))) >= 5:
                break
            time.sleep(0.01)
        assert temp, "the child never started its copy"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    # What the killed run left is not a backup for anyone: not listed, not verifiable,
    # not restorable.
    assert not (home / "ecsc_v2").exists()
    assert modules.backup.list(str(ecsc)) == []
    with pytest.raises(Exception, match="no backup"):
        modules.backup.verify(str(ecsc), "v2")
    with pytest.raises(Exception, match="no backup"):
        modules.backup.restore(str(ecsc), "v2")
    # The next run removes the stale temp dir and makes a good backup.
    res = modules.backup.create(str(ecsc), "v2")
    assert res["created"] is True and modules.backup.verify(str(ecsc), "v2")["ok"] is True
    assert sorted(p.name for p in home.iterdir()) == ["ecsc", "ecsc_v2"]


def test_list_names_the_family_of_later_trees(modules, ecsc, home):
    _backups(modules, ecsc, ["v1"])
    (ecsc / "lib" / "hotfix.jar").write_bytes(b"x")
    modules.backup.create(str(ecsc), "v1")
    _backups(modules, ecsc, ["2017.02.20"])
    listed = {item["tag"]: item["family"] for item in modules.backup.list(str(ecsc))}
    assert listed == {"v1": "v1", "v1.1": "v1", "2017.02.20": "2017.02.20"}
