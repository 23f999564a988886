"""Unit tests for _utils/rollout_tree.py: the one tree walk/hash/copy/compare."""

import hashlib
import json
import os
import threading

import pytest

from tests.conftest import load_repo_module

tree = load_repo_module("utils", "rollout_tree")


# ------------------------------------------------------------------ comparison logic


def _manifest():
    return {
        "files": {
            "a.jar": {"sha256": "aa", "size": 2, "mode": "0644"},
            "bin/run.sh": {"sha256": "bb", "size": 3, "mode": "0755"},
        },
        "symlinks": {"cur": "a.jar"},
        "dirs": {".": "0755", "bin": "0755", "empty": "0700"},
    }


def test_compare_identical_is_ok():
    diff = tree.compare(_manifest(), _manifest())
    assert diff == {"ok": True, "modified": [], "missing": [], "added": []}


def test_compare_reports_content_mode_link_changes_missing_and_added():
    actual = _manifest()
    actual["files"]["a.jar"]["sha256"] = "zz"
    actual["files"]["bin/run.sh"]["mode"] = "0644"
    actual["symlinks"]["cur"] = "elsewhere"
    actual["dirs"]["empty"] = "0755"
    del actual["dirs"]["bin"]
    del actual["files"]["bin/run.sh"]
    actual["files"]["new.txt"] = {"sha256": "cc", "size": 1, "mode": "0644"}
    actual["other"] = ["fifo"]
    diff = tree.compare(_manifest(), actual)
    assert diff["ok"] is False
    assert diff["modified"] == ["a.jar", "cur", "empty"]
    assert diff["missing"] == ["bin", "bin/run.sh"]
    assert diff["added"] == ["fifo", "new.txt"]


def test_compare_type_change_is_modified_not_missing():
    actual = _manifest()
    del actual["symlinks"]["cur"]
    actual["files"]["cur"] = {"sha256": "aa", "size": 2, "mode": "0644"}
    diff = tree.compare(_manifest(), actual)
    assert diff["modified"] == ["cur"] and not diff["missing"] and not diff["added"]


def test_compare_against_nothing_lists_everything_missing():
    diff = tree.compare(_manifest(), {})
    assert diff["missing"] == [".", "a.jar", "bin", "bin/run.sh", "cur", "empty"]


# ------------------------------------------------------------------ work split


@pytest.mark.parametrize(
    "weights,parts",
    [([1] * 10, 2), ([100, 1, 1, 1, 1], 2), ([5], 3), ([1, 1], 4), ([0, 0, 0], 2), ([], 2)],
)
def test_chunks_are_contiguous_and_cover_every_job_once(weights, parts):
    runs = tree._chunks(weights, parts)
    assert [i for run in runs for i in run] == list(range(len(weights)))
    assert len(runs) <= max(1, parts)
    assert all(run for run in runs)


def test_chunks_balance_weight():
    runs = tree._chunks([1] * 10, 2)
    assert [len(run) for run in runs] == [5, 5]


# ------------------------------------------------------------------ hash cache


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _fs_clock_past(probe, ns):
    """Wait until the filesystem's (coarse) clock is past ``ns``: a write now gets a later
    ctime than any file written before the call."""
    while True:
        probe.write_bytes(b"tick")
        if probe.stat().st_ctime_ns > ns:
            return


@pytest.fixture
def cached_tree(tmp_path, monkeypatch):
    """A small tree, old enough for the hash cache (margin 0 and the fs clock moved on),
    and a cachedir; returns (root, cache dir, probe file)."""
    monkeypatch.setattr(tree, "__opts__", {"cachedir": str(tmp_path / "cache")}, raising=False)
    monkeypatch.setattr(tree, "CACHE_MARGIN_NS", 0)
    root = tmp_path / "ecsc"
    (root / "WEB-INF" / "lib").mkdir(parents=True)
    (root / "WEB-INF" / "lib" / "ecsc.jar").write_bytes(b"jar v2 " * 1000)
    (root / "index.html").write_bytes(b"<html>v2</html>")
    (root / "WEB-INF" / "web.xml").write_bytes(b"<web-app/>")
    probe = tmp_path / "clock-probe"
    _fs_clock_past(probe, max(p.stat().st_ctime_ns for p in root.rglob("*")))
    return root, tmp_path / "cache" / "rollout_tree", probe


def _count_reads(monkeypatch):
    reads = []
    real = tree._hash_path

    def counting(path):
        reads.append(os.path.relpath(path))
        return real(path)

    monkeypatch.setattr(tree, "_hash_path", counting)
    return reads


def test_scan_cache_rereads_nothing_unchanged(cached_tree, monkeypatch):
    root, cache_dir, _ = cached_tree
    first = tree.scan(str(root))
    assert first["files"]["index.html"]["sha256"] == _sha(b"<html>v2</html>")
    (cache_file,) = cache_dir.iterdir()
    assert oct(cache_dir.stat().st_mode & 0o777) == "0o700"
    assert oct(cache_file.stat().st_mode & 0o777) == "0o600"
    stored = json.loads(cache_file.read_text())
    assert stored["root"] == str(root)
    assert {rel: entry[5] for rel, entry in stored["files"].items()} == {
        rel: entry["sha256"] for rel, entry in first["files"].items()
    }
    reads = _count_reads(monkeypatch)
    assert tree.scan(str(root)) == first
    assert reads == []


def test_scan_cache_entry_is_what_scan_reports_for_an_unchanged_inode(cached_tree):
    # Proof that an unchanged file is not re-read (and the trust the cache file gets): a
    # forged sha for an unchanged inode is reported as is; cache=False reads the file.
    root, cache_dir, _ = cached_tree
    tree.scan(str(root))
    (cache_file,) = cache_dir.iterdir()
    stored = json.loads(cache_file.read_text())
    stored["files"]["index.html"][5] = "0" * 64
    cache_file.write_text(json.dumps(stored))
    assert tree.scan(str(root))["files"]["index.html"]["sha256"] == "0" * 64
    assert tree.scan(str(root), cache=False)["files"]["index.html"]["sha256"] == _sha(
        b"<html>v2</html>")


def test_scan_cache_sees_a_change_that_restored_size_and_mtime(cached_tree, monkeypatch):
    root, _, probe = cached_tree
    jar = root / "WEB-INF" / "lib" / "ecsc.jar"
    before = tree.scan(str(root))
    st = jar.stat()
    _fs_clock_past(probe, st.st_ctime_ns)
    patched = b"jar vX " * 1000  # same size
    jar.write_bytes(patched)
    os.utime(jar, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (jar.stat().st_size, jar.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    reads = _count_reads(monkeypatch)
    after = tree.scan(str(root))
    assert after["files"]["WEB-INF/lib/ecsc.jar"]["sha256"] == _sha(patched)
    assert reads == [os.path.relpath(jar)]
    assert tree.compare(before, after)["modified"] == ["WEB-INF/lib/ecsc.jar"]


def test_scan_cache_sees_a_file_replaced_by_rename_with_same_size_and_mtime(cached_tree):
    root, _, _ = cached_tree
    page = root / "index.html"
    tree.scan(str(root))
    st = page.stat()
    other = root.parent / "index.new"
    other.write_bytes(b"<html>vX</html>")
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(other, page)
    assert tree.scan(str(root))["files"]["index.html"]["sha256"] == _sha(b"<html>vX</html>")


def test_scan_cache_keeps_no_file_changed_within_the_margin(tmp_path, monkeypatch):
    # Default margin: files written just now are hashed but not cached (a write in the same
    # filesystem clock tick would leave their ctime as it is).
    monkeypatch.setattr(tree, "__opts__", {"cachedir": str(tmp_path / "cache")}, raising=False)
    root = tmp_path / "fresh"
    root.mkdir()
    (root / "a.txt").write_bytes(b"a")
    listing = tree.scan(str(root))
    assert listing["files"]["a.txt"]["sha256"] == _sha(b"a")
    cache_dir = tmp_path / "cache" / "rollout_tree"
    assert not cache_dir.exists() or all(
        json.loads(f.read_text())["files"] == {} for f in cache_dir.iterdir())


def test_cacheable_needs_the_seen_inode_version_and_an_old_ctime():
    def st(ino=1, size=10, mtime=100, ctime=100):
        return os.stat_result((0o100644, ino, 7, 1, 0, 0, size, 0, 0, 0,
                               None, None, None, mtime, mtime, ctime))

    now = 100 + tree.CACHE_MARGIN_NS + 1
    assert tree._cacheable(st(), st(), now)
    assert not tree._cacheable(st(), st(), now - 1)  # ctime within the margin
    assert not tree._cacheable(st(ctime=101), st(), now)  # changed while read
    assert not tree._cacheable(st(size=11), st(), now)
    assert not tree._cacheable(st(ino=2), st(), now)


def test_scan_with_an_unreadable_cache_file_hashes_everything(cached_tree):
    root, cache_dir, _ = cached_tree
    good = tree.scan(str(root))
    (cache_file,) = cache_dir.iterdir()
    cache_file.write_text("{not json")
    assert tree.scan(str(root)) == good
    assert json.loads(cache_file.read_text())["files"]  # rewritten


def test_scan_without_cachedir_writes_no_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(tree, "__opts__", {}, raising=False)
    root = tmp_path / "t"
    root.mkdir()
    (root / "a").write_bytes(b"a")
    assert tree.scan(str(root))["files"]["a"]["sha256"] == _sha(b"a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


# ------------------------------------------------------------------ copy


def test_copy_of_a_large_tree_writes_back_while_copying_and_stops_its_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(tree, "_WRITEBACK_MIN_BYTES", 0)
    synced = []
    real = tree._syncfs
    monkeypatch.setattr(tree, "_syncfs", lambda fd: (synced.append(fd), real(fd)))
    real_copy_file = tree.copy_file

    def slow_copy_file(*args):
        synced_before = len(synced)
        result = real_copy_file(*args)
        # Give the writeback thread its turn (it runs while files are copied); bounded, so
        # that a copy without one fails below rather than hangs.
        for _ in range(300):
            if len(synced) > synced_before:
                break
            threading.Event().wait(0.01)
        return result

    monkeypatch.setattr(tree, "copy_file", slow_copy_file)
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    data = {"lib/a.jar": os.urandom(3000), "b.txt": b"b" * 10}
    for rel, payload in data.items():
        (src / rel).write_bytes(payload)
    dst = tmp_path / "dst"
    dst.mkdir()
    listing = tree.copy(tree.walk(str(src)), str(dst))
    assert {rel: entry["sha256"] for rel, entry in listing["files"].items()} == {
        rel: _sha(payload) for rel, payload in data.items()}
    assert all((dst / rel).read_bytes() == payload for rel, payload in data.items())
    assert synced
    assert "rollout-tree-writeback" not in {t.name for t in threading.enumerate()}


def test_copy_gives_every_file_its_source_mode_whatever_the_umask(tmp_path):
    # Files are created with the walk's mode; an fchmod follows only when the umask (022
    # here) took bits away or set-id bits are wanted.
    src = tmp_path / "src"
    src.mkdir()
    modes = {"ro.txt": 0o444, "conf.xml": 0o640, "run.sh": 0o755, "shared": 0o777,
             "group-w": 0o664, "none": 0o000, "setuid": 0o4755}
    for name, mode in modes.items():
        (src / name).write_bytes(name.encode())
        os.chmod(src / name, mode)
    dst = tmp_path / "dst"
    dst.mkdir()
    old = os.umask(0o022)
    try:
        listing = tree.copy(tree.walk(str(src)), str(dst))
    finally:
        os.umask(old)
    assert {name: os.stat(dst / name).st_mode & 0o7777 for name in modes} == modes
    assert {name: entry["mode"] for name, entry in listing["files"].items()} == {
        name: f"{mode:04o}" for name, mode in modes.items()}
    assert tree._umask() == old
