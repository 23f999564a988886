"""
Unit tests of the ``release`` execution module's logic: record comparison, keep-glob
selection, argument checks (member checks: tests/unit/utils/test_rollout_archive.py).
"""

import io
import os
import tarfile

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module, repo_utils
from tests.unit.utils.test_rollout_archive import member

release = load_repo_module("modules", "release")

MINION = "unit-minion"
ARCHIVE = "/srv/upload/svc.tar"


@pytest.fixture
def configure_loader_modules():
    opts = {"id": MINION, "test": False}
    return {release: {"__opts__": opts, "__utils__": repo_utils(opts)}}


def listing(files, links, other=()):
    """A rollout_tree listing from {rel: sha256} and {rel: target}."""
    return {
        "files": {rel: {"sha256": sha} for rel, sha in files.items()},
        "symlinks": links,
        "other": list(other),
    }


# --------------------------------------------------------------------------- verify


def test_verify_streams_checksum_and_names_minion(tmp_path):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.addfile(member("svc", tarfile.DIRTYPE))
    path = tmp_path / "svc.tar"
    path.write_bytes(data.getvalue())
    import hashlib  # pylint: disable=import-outside-toplevel

    digest = hashlib.sha256(data.getvalue()).hexdigest()
    assert release.verify(str(path), digest)["members"] == 1
    with pytest.raises(CommandExecutionError) as exc:
        release.verify(str(path), "1" * 64)
    assert str(exc.value) == (
        f"release on minion {MINION}: release archive {path}: sha256 mismatch: "
        f"expected {'1' * 64}, found {digest}"
    )


# --------------------------------------------------------------------------- record comparison


def test_compare_record_with_tree():
    record = {
        "files": {"a.jar": "1" * 64, "conf/app.properties": "2" * 64, "gone.txt": "3" * 64},
        "links": {"current.jar": "a.jar", "old-link": "a.jar"},
        "local": {"conf/host.properties": "4" * 64, "conf/missing.local": "5" * 64},
    }
    files = {
        "a.jar": "1" * 64,
        "conf/app.properties": "9" * 64,
        "conf/host.properties": "8" * 64,
        "extra.jar": "7" * 64,
    }
    links = {"current.jar": "extra.jar", "old-link": "a.jar"}
    diff = release._compare(record, listing(files, links, ["run/sock"]))
    assert diff == {
        "modified": ["conf/app.properties", "current.jar"],
        "removed": ["gone.txt"],
        "added": ["extra.jar", "run/sock"],
        "local_modified": ["conf/host.properties", "conf/missing.local"],
    }


def test_compare_intact_tree_and_type_change():
    record = {"files": {"a": "1" * 64}, "links": {"b": "a"}, "local": {"c": "2" * 64}}
    assert release._compare(record, listing({"a": "1" * 64, "c": "2" * 64}, {"b": "a"})) == {
        "modified": [],
        "removed": [],
        "added": [],
        "local_modified": [],
    }
    # A file replaced by a symlink with the same name is modified, not added/removed.
    diff = release._compare(record, listing({"b": "1" * 64, "c": "2" * 64}, {"a": "b"}))
    assert diff["modified"] == ["a", "b"] and not diff["added"] and not diff["removed"]


def test_first_difference():
    meta = {"files": {"a": "1" * 64}, "links": {}}
    assert release._first_difference(meta, listing({"a": "1" * 64}, {})) is None
    assert release._first_difference(meta, listing({"a": "2" * 64}, {})) == "a modified"
    assert release._first_difference(meta, listing({"a": "1" * 64, "b": "1" * 64}, {})) == "b added"
    assert release._first_difference(meta, listing({}, {})) == "a removed"


# --------------------------------------------------------------------------- keep globs


@pytest.mark.parametrize(
    "pattern, path, matches",
    [
        ("conf/host.properties", "conf/host.properties", True),
        ("conf/*.local", "conf/db.local", True),
        ("conf/*.local", "conf/sub/db.local", False),
        ("conf/*.local", "db.local", False),
        ("*.local", "conf/db.local", False),
        ("**/*.local", "conf/sub/db.local", True),
        ("**/*.local", "db.local", True),
        ("conf/**", "conf/a/b/c", True),
        ("conf/host.propert?es", "conf/host.properties", True),
        ("conf/[hx]ost.properties", "conf/host.properties", True),
    ],
)
def test_glob_match(pattern, path, matches):
    assert release._glob_match(pattern, path) is matches


def test_keep_selected_covers_directories():
    assert release._keep_selected(["conf/local"], "conf/local/a/b.xml")
    assert not release._keep_selected(["conf/local"], "conf/localx")
    assert not release._keep_selected([], "conf/host.properties")


def test_select_keep():
    live = [
        "conf/host.properties",
        "conf/app.properties",
        "conf/db.local",
        "lib/old.jar",
        "data/x.local",
        "plugins/p/conf.local",
    ]
    carried = {"conf/app.properties", "lib/new.jar", "plugins"}
    kept, shadowed, conflicts = release._select_keep(
        ["conf/*.properties", "conf/*.local", "**/conf.local"], live, carried
    )
    assert kept == ["conf/db.local", "conf/host.properties"]
    assert shadowed == ["conf/app.properties"]  # the archive's version wins
    assert conflicts == ["plugins/p/conf.local"]  # the archive carries "plugins" as a file


def test_check_keep():
    assert release._check_keep(None) == []
    assert release._check_keep("conf/host.properties") == ["conf/host.properties"]
    assert release._check_keep(["./conf//a.local/"]) == ["conf/a.local"]
    for bad in (["/etc/passwd"], ["conf/../../etc"], [""], [3], {"a": 1}):
        with pytest.raises(SaltInvocationError) as exc:
            release._check_keep(bad)
        assert MINION in str(exc.value)


# --------------------------------------------------------------------------- arguments and paths


def test_check_release():
    assert release._check_release("20170220") == "20170220"
    assert release._check_release(20170220) == "20170220"
    assert release._check_release("v2.1_rc-1") == "v2.1_rc-1"
    for bad in ("", "-x", "a/b", "../x", 1.5, True, None):
        with pytest.raises(SaltInvocationError):
            release._check_release(bad)


def test_check_sha():
    assert release._check_sha("A" * 64) == "a" * 64
    assert release._check_sha(None, required=False) is None
    for bad in (None, "a" * 63, "g" * 64, 123):
        with pytest.raises(SaltInvocationError):
            release._check_sha(bad)


def test_paths_follow_conventions():
    paths = release._paths("/home/ecsc/")
    assert paths == {
        "target": "/home/ecsc",
        "parent": "/home",
        "name": "ecsc",
        "staging": "/home/.ecsc.staging",
        "staging_meta": "/home/.ecsc.staging.json",
        "previous": "/home/.ecsc.previous",
        "record": "/home/.ecsc.release.json",
        "upload": "/home/ecsc.tar",
    }
    for bad in ("/", "home/ecsc", "", None):
        with pytest.raises(SaltInvocationError):
            release._paths(bad)


def test_record_validation(tmp_path):
    target = str(tmp_path / "svc")
    with pytest.raises(SaltInvocationError, match="dict"):
        release.write_record(target, "release=1")
    with pytest.raises(SaltInvocationError, match="release id"):
        release.write_record(target, {"files": {}})
    with pytest.raises(SaltInvocationError, match="files"):
        release.write_record(target, {"release": "1"})
    ret = release.write_record(target, {"release": "1", "files": {"a": "1" * 64}, "note": "rollback"})
    assert ret == {
        "target": target,
        "record": str(tmp_path / ".svc.release.json"),
        "release": "1",
        "removed": False,
    }
    assert os.listdir(tmp_path) == [".svc.release.json"]  # no temp file left
    rep = release.status(target)
    assert rep["release"] == "1" and rep["removed"] == ["a"] and rep["intact"] is False


def test_stage_extraction_filter_is_a_second_line_of_defence(tmp_path):
    """
    Even if verify missed something, the extraction filter refuses it against the real
    staging dir, the staging is removed and the target is untouched.
    """
    import hashlib  # pylint: disable=import-outside-toplevel
    from unittest import mock  # pylint: disable=import-outside-toplevel

    archive = tmp_path / "svc.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(member("svc", tarfile.DIRTYPE))
        tar.addfile(member("svc/up", tarfile.SYMTYPE, linkname=".."))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    home = tmp_path / "home"
    (home / "svc").mkdir(parents=True)
    (home / "svc" / "app.jar").write_text("live\n")
    with pytest.raises(CommandExecutionError):  # verify refuses it ...
        release.stage(str(archive), str(home / "svc"), digest, "2")
    summary = {"archive": str(archive), "sha256": digest, "top": "svc", "members": 2, "bytes": 0}
    with mock.patch.object(release, "_verify_fh", return_value=summary):  # ... and so does extraction
        with pytest.raises(CommandExecutionError) as exc:
            release.stage(str(archive), str(home / "svc"), digest, "2")
    assert "member 'svc/up' refused during extraction" in str(exc.value)
    assert sorted(os.listdir(home)) == ["svc"]
    assert os.listdir(home / "svc") == ["app.jar"]


# --------------------------------------------------------------------------- interrupted / clean


def _tree(path, files):
    path.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (path / rel).write_text(text)


def _describe(path, rel_id, files, sha="a"):
    """A record or staging description (format 1) of ``files`` ({relpath: text})."""
    import hashlib  # pylint: disable=import-outside-toplevel
    import json  # pylint: disable=import-outside-toplevel

    path.write_text(json.dumps({
        "format": 1, "release": rel_id, "archive_sha256": sha * 64,
        "files": {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in files.items()},
        "links": {}, "local": {},
    }))


OLD, NEW = {"app.jar": "v1\n"}, {"app.jar": "v2\n", "new.jar": "new\n"}


@pytest.mark.parametrize("case, swap", [
    ("nothing", None),
    ("between-renames", "between-renames"),
    ("before-record", "before-record"),
    ("before-record, old record", "before-record"),
    ("after-record", "after-record"),
    ("stray previous", "unknown"),
])
def test_swap_left_from_what_a_cut_swap_leaves(tmp_path, case, swap):
    """9.4: the point a swap was cut at, read from the files it leaves (its order: live ->
    .previous, staging -> live, record, then .previous and the description removed)."""
    target, meta, record = tmp_path / "svc", tmp_path / ".svc.staging.json", tmp_path / ".svc.release.json"
    if case == "nothing":
        _tree(target, OLD)
    elif case == "between-renames":
        _tree(tmp_path / ".svc.previous", OLD)
        _tree(tmp_path / ".svc.staging", NEW)
        _describe(meta, "2", NEW)
    elif case.startswith("before-record"):
        _tree(tmp_path / ".svc.previous", OLD)
        _tree(target, NEW)
        _describe(meta, "2", NEW)
        if case.endswith("old record"):
            _describe(record, "1", OLD, sha="b")
    elif case == "after-record":
        _tree(tmp_path / ".svc.previous", {})  # partly removed
        _tree(target, NEW)
        _describe(meta, "2", NEW)
        _describe(record, "2", NEW)
    else:
        _tree(tmp_path / ".svc.previous", OLD)
        _tree(target, {"app.jar": "hot-patched\n"})
        _describe(record, "1", OLD)
    found = release.interrupted(str(target))
    assert found["swap"] == swap
    assert found["staged"] == ("2" if meta.exists() else None)


def test_clean_undoes_a_swap_cut_before_its_record(tmp_path):
    """The old tree comes back whole; before the fix clean removed .previous, its only copy."""
    target = tmp_path / "svc"
    _tree(tmp_path / ".svc.previous", OLD)
    _tree(target, NEW)
    _describe(tmp_path / ".svc.staging.json", "2", NEW)
    ret = release.clean(str(target))
    assert ret["restored"] == str(tmp_path / ".svc.previous") and ret["swap"] == "before-record"
    assert {p.name: p.read_text() for p in target.iterdir()} == OLD
    assert sorted(os.listdir(tmp_path)) == ["svc"]


def test_clean_keeps_previous_when_told(tmp_path):
    target = tmp_path / "svc"
    _tree(tmp_path / ".svc.previous", OLD)
    _tree(target, NEW)
    _describe(tmp_path / ".svc.release.json", "2", NEW)
    (tmp_path / ".___atomic_write_x").write_text("")
    ret = release.clean(str(target), drop_previous=False)
    assert ret == {"target": str(target), "swap": "after-record",
                   "removed": [str(tmp_path / ".___atomic_write_x")], "restored": None,
                   "kept": [str(tmp_path / ".svc.previous")]}
    assert release.clean(str(target))["removed"] == [str(tmp_path / ".svc.previous")]
    assert release.interrupted(str(target))["leftovers"] == []


# --------------------------------------------------------------------------- issue 10 (c): swap


def _archive(tmp_path, files):
    """svc.tar holding svc/<rel> for each {rel: text}; (path, sha256)."""
    import hashlib  # pylint: disable=import-outside-toplevel

    path = tmp_path / "svc.tar"
    with tarfile.open(path, "w") as tar:
        tar.addfile(member("svc", tarfile.DIRTYPE))
        for rel, text in files.items():
            info = member(f"svc/{rel}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def staged_svc(tmp_path):
    """/home/svc on v1 and v2 staged beside it, its fingerprint taken a second after the
    files were written (as when the backup ran between the stage and the swap)."""
    from unittest import mock  # pylint: disable=import-outside-toplevel

    home = tmp_path / "home"
    _tree(home / "svc", OLD)
    archive, digest = _archive(tmp_path, NEW)
    later = release.time.time_ns() + 1_000_000_000
    with mock.patch.object(release.time, "time_ns", return_value=later):
        release.stage(archive, str(home / "svc"), digest, "2")
    return home


def _reads(configure_loader_modules_utils):
    """Wrap rollout_tree's readers (scan: hash every file, hash_file: one) to count calls."""
    calls = []
    for name in ("rollout_tree.scan", "rollout_tree.hash_file"):
        func = configure_loader_modules_utils[name]
        configure_loader_modules_utils[name] = (
            lambda *a, _f=func, _n=name, **k: calls.append((_n, a[0])) or _f(*a, **k))
    return calls


def test_swap_of_an_unchanged_staging_reads_no_file(staged_svc):
    """The staging was hashed by stage, before the service stopped: the swap (service down)
    checks it with one lstat pass and renames; it hashed every staged file again before."""
    from unittest import mock  # pylint: disable=import-outside-toplevel

    target = staged_svc / "svc"
    with mock.patch.dict(release.__utils__):
        calls = _reads(release.__utils__)
        assert release.staging_status(str(target))["intact"] is True
        ret = release.swap(str(target), "2")
    assert calls == []
    assert ret["files"] == 2
    assert {p.name: p.read_text() for p in target.iterdir()} == NEW
    assert release.status(str(target))["intact"] is True  # the record's hashes are right


@pytest.mark.parametrize("change", ["same size, mtime put back", "touched", "added", "removed"])
def test_swap_still_refuses_a_staging_changed_since_it_was_staged(staged_svc, change):
    from unittest import mock  # pylint: disable=import-outside-toplevel

    target, staging = staged_svc / "svc", staged_svc / ".svc.staging"
    jar = staging / "app.jar"
    st = jar.stat()
    if change == "same size, mtime put back":
        jar.write_text("v3\n")  # same size as v2's
        os.utime(jar, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "touched":
        os.utime(jar, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    elif change == "added":
        (staging / "extra.jar").write_text("x\n")
    else:
        (staging / "new.jar").unlink()
    with mock.patch.dict(release.__utils__):
        calls = _reads(release.__utils__)
        if change == "touched":  # only its time changed: that file is read, and it holds
            release.swap(str(target), "2")
            assert calls == [("rollout_tree.hash_file", str(jar))]
            assert {p.name: p.read_text() for p in target.iterdir()} == NEW
            return
        with pytest.raises(CommandExecutionError, match="changed since it was staged"):
            release.swap(str(target), "2")
    assert {p.name: p.read_text() for p in target.iterdir()} == OLD


def test_a_staging_fingerprinted_right_after_its_files_were_written_is_hashed(tmp_path):
    """File times come from a coarse clock: a change in the same tick as the fingerprint
    would keep the time it shows, so files written just before it are read again."""
    from unittest import mock  # pylint: disable=import-outside-toplevel

    home = tmp_path / "home"
    _tree(home / "svc", OLD)
    archive, digest = _archive(tmp_path, NEW)
    release.stage(archive, str(home / "svc"), digest, "2")
    with mock.patch.dict(release.__utils__):
        calls = _reads(release.__utils__)
        release.swap(str(home / "svc"), "2")
    assert sorted(path for _, path in calls) == sorted(
        str(home / ".svc.staging" / rel) for rel in NEW)
