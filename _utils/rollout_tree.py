"""
One way to walk, hash, copy and compare a program directory tree, used by the ``backup``
module (manifests, verify, restore), the ``release`` module (staging, deployed record) and,
through those, by the compliance check.

A *listing* describes a tree::

    {"files":    {"<rel>": {"sha256": "<hex>", "size": <int>, "mode": "0644"}},
     "symlinks": {"<rel>": "<link target>"},
     "dirs":     {".": "0755", "<rel>": "0750"},
     "other":    ["<rel>", ...]}          # sockets, FIFOs, devices (never copied)

``compare(expected, actual)`` checks, per entry of ``expected``, only the fields it records
(a deployed record keeps sha256 only; a backup manifest keeps sha256, size and mode), and
directories only when ``expected`` lists them.

Hash cache. ``scan`` does not re-read a file whose inode is unchanged since it was last
hashed: it keeps, per scanned root, ``rel -> (st_dev, st_ino, st_size, st_mtime_ns,
st_ctime_ns, sha256)`` in ``<cachedir>/rollout_tree/<sha256 of the root path>.json`` (the
minion's or master's cachedir, directory 0700, file 0600; no cachedir in ``__opts__``: no
cache). A file is taken from the cache only when all five fields still match its lstat,
and an entry is stored only when the file did not change while it was read and its ctime
is at least ``CACHE_MARGIN_NS`` older than the start of the scan. The trust assumption
is git's (its index relies on the same): every write, truncate, chmod, chown, rename onto
the path or replacement of the file changes its ctime (or its inode), and ctime cannot be
set from user space. Drift by any process on this host is therefore still detected,
even when size and mtime are put back (``touch -r``, ``os.utime``). Not detected from the
cache: changes that bypass the kernel's ctime (writing the block device, a step of the
system clock back to the recorded ctime, a filesystem whose ctime does not move on
writes) and media corruption of unchanged files; whoever can write the cache file is root
already. ``scan(..., cache=False)`` re-reads everything.

Reached as ``__utils__["rollout_tree.<function>"]``.

:depends: Linux/POSIX (os.readv, O_NOFOLLOW)
"""

import concurrent.futures
import ctypes
import ctypes.util
import errno
import gc
import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
import time

log = logging.getLogger(__name__)

__virtualname__ = "rollout_tree"


def __virtual__():
    # Utilities of this formula, always available where it runs (minions and master).
    return __virtualname__


# Copy/hash buffer per worker thread; large enough that hashlib releases the GIL and that
# most files of a program directory are read with a single read(2).
_BUF_SIZE = 1 << 20
# Worker threads for copying/hashing files (measured with bench/backup_bench.py).
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_FILE_FIELDS = ("sha256", "size", "mode")
#: An entry goes into the hash cache only if the file's ctime is this much older than the
#: start of the scan: the filesystem clock is coarse (a tick of a few ms), so a write in
#: the same tick as the ctime seen would not move it ("racy clean" in git's terms).
CACHE_MARGIN_NS = 2_000_000_000
_CACHE_SUBDIR = "rollout_tree"
_CACHE_FORMAT = 1

_local = threading.local()
_libc = None


class Tree:
    """
    One lstat pass over a tree: the entries in discovery order (parents before children).
    """

    __slots__ = ("root", "root_stat", "dirs", "files", "links", "other")

    def __init__(self, root):
        self.root = root
        self.root_stat = None
        self.dirs = []  # (rel, stat) excluding the root
        self.files = []  # (rel, stat)
        self.links = []  # (rel, target, stat)
        self.other = []  # rel of sockets, fifos, devices

    @property
    def nbytes(self):
        return sum(st.st_size for _, st in self.files)

    def rels(self):
        return (
            {rel for rel, _ in self.dirs}
            | {rel for rel, _ in self.files}
            | {rel for rel, _, _ in self.links}
            | set(self.other)
        )


def fmt_mode(st_mode):
    """Permission bits as the 4-digit octal string listings use."""
    return f"{stat.S_IMODE(st_mode):04o}"


def walk(root, skip_root_names=()):
    """
    Walk ``root`` (a directory; a symlink to a directory is followed at the top only)
    without following symlinks below it. Returns a ``Tree``.
    """
    tree = Tree(root)
    tree.root_stat = os.stat(root)
    if not stat.S_ISDIR(tree.root_stat.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", root)
    stack = [""]
    while stack:
        reldir = stack.pop()
        absdir = os.path.join(root, reldir) if reldir else root
        with os.scandir(absdir) as it:
            for entry in it:
                if not reldir and entry.name in skip_root_names:
                    continue
                rel = f"{reldir}/{entry.name}" if reldir else entry.name
                st = entry.stat(follow_symlinks=False)
                mode = st.st_mode
                if stat.S_ISDIR(mode):
                    tree.dirs.append((rel, st))
                    stack.append(rel)
                elif stat.S_ISREG(mode):
                    tree.files.append((rel, st))
                elif stat.S_ISLNK(mode):
                    tree.links.append((rel, os.readlink(entry.path), st))
                else:
                    tree.other.append(rel)
    return tree


def _buffer():
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = bytearray(_BUF_SIZE)
    return buf


def _read_hash(fin, fout, name):
    """
    The one read loop: hash every byte of ``fin`` and, when ``fout`` is not None, write the
    very same bytes to it (one read(2) feeds both). Returns (sha256 hex, size, fstat).
    """
    buf = _buffer()
    view = memoryview(buf)
    digest = hashlib.sha256()
    size = 0
    while True:
        n = os.readv(fin, (buf,))
        if not n:
            break
        chunk = view[:n]
        digest.update(chunk)
        if fout is not None:
            written = os.write(fout, chunk)
            while written < n:
                written += os.write(fout, chunk[written:])
        size += n
        if n < _BUF_SIZE:
            # A short read from a regular file is end of file: skip the extra read(2)
            # returning 0 (most files fit in one buffer).
            break
    # fstat after the read: the metadata that goes with the bytes we have.
    st = os.fstat(fin)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", name)
    return digest.hexdigest(), size, st


def _open_source(path):
    # O_NONBLOCK: a file replaced by a FIFO since the walk must not hang the open.
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)


def _libc_fn(name):
    """A libc function through ctypes, or None (not Linux/glibc)."""
    global _libc  # pylint: disable=global-statement
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return getattr(_libc, name, None)


#: Trees smaller than this are copied without writing back while copying (a thread and the
#: extra journal commits cost more than the final syncfs of a few MB).
_WRITEBACK_MIN_BYTES = 16 << 20
#: Pause between two syncfs(2) calls of the writeback thread: bounds the journal commits it
#: forces while file creation goes on.
_WRITEBACK_PAUSE_S = 0.05


def _syncfs(fd):
    """syncfs(2) of the filesystem of ``fd``; os.sync() where syncfs is unavailable."""
    syncfs = _libc_fn("syncfs")
    if syncfs is None or syncfs(fd) != 0:
        os.sync()


class _Writeback:
    """
    While a copy runs, write what it has written so far to disk: syncfs(2) over and over in
    a thread (the kernel's flusher threads do the writing; this one only waits, outside the
    GIL). The syncfs that makes a backup durable before its rename (``sync_tree``) then has
    little left, and the copy's threads never block on the disk themselves (as they did
    with a sync_file_range(2) per file). A failure here only loses the head start.
    """

    def __init__(self, path):
        self._path = path
        self._done = threading.Event()
        self._thread = None

    def _run(self):
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            while not self._done.wait(_WRITEBACK_PAUSE_S):
                _syncfs(fd)
        finally:
            os.close(fd)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, name="rollout-tree-writeback",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()


def _hash_path(path):
    """(sha256 hex, size, fstat after the read) of one regular file."""
    fd = _open_source(path)
    try:
        return _read_hash(fd, None, path)
    finally:
        os.close(fd)


def hash_file(path):
    """
    sha256, size and st_mode of one regular file (no symlink following, no FIFO hang).
    """
    sha, size, st = _hash_path(path)
    return sha, size, st.st_mode


def _umask():
    """The process umask, read without changing it (os.umask would, for every thread), from
    /proc/self/status; None when unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def copy_file(src, dst, chown=None, mode=0o600, umask=None):
    """
    Copy one regular file to the new file ``dst``, hashing exactly the bytes written; the
    copy gets the source's mode and times, and its owner when ``chown`` is a (uid, gid)
    differing from the source's (see ``copy``). ``dst`` is created with ``mode``; when the
    process ``umask`` is given and ``mode & ~umask`` already is the source's mode, no
    fchmod(2) follows (``copy`` creates files with the mode the walk saw). Returns
    (sha256 hex, size, st_mode).
    """
    fin = _open_source(src)
    try:
        fout = os.open(
            dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode
        )
        try:
            sha, size, st = _read_hash(fin, fout, src)
            if chown and (st.st_uid, st.st_gid) != chown:
                os.fchown(fout, st.st_uid, st.st_gid)
            want = stat.S_IMODE(st.st_mode)
            # fchown clears set-id bits, and only the 0o777 bits were asked at creation.
            if umask is None or want != mode & ~umask:
                os.fchmod(fout, want)
            os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fout)
    finally:
        os.close(fin)
    return sha, size, st.st_mode


def _chunks(weights, parts):
    """
    Split indexes 0..n-1 into at most ``parts`` contiguous runs of about equal total weight.
    """
    total = sum(weights)
    if parts <= 1 or len(weights) < 2 or not total:
        return [list(range(len(weights)))] if weights else []
    runs, current, acc, target = [], [], 0, total / parts
    for index, weight in enumerate(weights):
        current.append(index)
        acc += weight
        if acc >= target * (len(runs) + 1) and len(runs) < parts - 1:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _run_pool(func, jobs, weights):
    """
    Run ``func(*job)`` for every job and return the results in job order.

    Jobs come in path order and are split into one contiguous run per worker thread,
    balanced by ``weights``: each worker then mostly works in its own directories (two
    threads creating files in the same ext4 directory slow each other down), while the
    read/write syscalls and hashlib (large buffers) run outside the GIL. The cyclic GC is
    paused meanwhile: a pass creates many small objects and a minion's heap is large.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        runs = _chunks(weights, _WORKERS)
        if len(runs) <= 1:
            return [func(*job) for job in jobs]
        results = [None] * len(jobs)

        def _worker(run):
            for index in run:
                results[index] = func(*jobs[index])

        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(runs), thread_name_prefix="rollout-tree"
        ) as pool:
            futures = [pool.submit(_worker, run) for run in runs]
            for future in futures:
                future.result()
        return results
    finally:
        if gc_was_enabled:
            gc.enable()


def _job_weight(size):
    # Per-file cost (open/create/close/metadata) expressed in bytes of copying.
    return size + (64 << 10)


def _by_dir(files):
    return sorted(files, key=lambda item: os.path.split(item[0]))


def _cache_key(st):
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _cacheable(st, seen, started_ns):
    """
    Whether a file hashed from the fstat ``st`` (taken after the read) may go into the hash
    cache: it is the very inode and version the walk saw (``seen``, its lstat), and its
    ctime is ``CACHE_MARGIN_NS`` older than the scan's start (``started_ns``, time.time_ns),
    so any later change moves the ctime.
    """
    return (
        _cache_key(st) == _cache_key(seen)
        and st.st_ctime_ns < started_ns - CACHE_MARGIN_NS
    )


def _cache_path(root):
    cachedir = (globals().get("__opts__") or {}).get("cachedir")
    if not cachedir:
        return None
    name = hashlib.sha256(os.path.abspath(root).encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(cachedir, _CACHE_SUBDIR, f"{name[:32]}.json")


def _cache_load(path, root):
    """The cached entries of ``root`` ({rel: [dev, ino, size, mtime_ns, ctime_ns, sha]}); {}
    when there is no usable cache file (the cache only ever saves work)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("rollout_tree: ignoring hash cache %s: %s", path, exc)
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != _CACHE_FORMAT
        or data.get("root") != os.path.abspath(root)
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return {
        rel: entry
        for rel, entry in data["files"].items()
        if isinstance(entry, list) and len(entry) == 6 and isinstance(entry[5], str)
    }


def _cache_save(path, root, entries):
    """Replace the cache file of ``root`` atomically; a failure is logged, never raised."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"format": _CACHE_FORMAT, "root": os.path.abspath(root),
                           "files": entries}, handle, separators=(",", ":"))
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        log.warning("rollout_tree: cannot write hash cache %s: %s", path, exc)


def scan(root, skip_root_names=(), cache=True):
    """
    Listing of the tree at ``root`` (see the module docstring), hashing every regular file
    whose sha256 the hash cache does not hold for its unchanged inode (``cache=False``: every
    file is read).
    """
    started_ns = time.time_ns()
    tree = walk(root, skip_root_names=skip_root_names)
    listing = {
        "files": {},
        "symlinks": {rel: target for rel, target, _ in tree.links},
        "dirs": {".": fmt_mode(tree.root_stat.st_mode)},
        "other": list(tree.other),
    }
    for rel, st in tree.dirs:
        listing["dirs"][rel] = fmt_mode(st.st_mode)
    path = _cache_path(root) if cache else None
    cached = _cache_load(path, root) if path else {}
    files = _by_dir(tree.files)
    found, entries, todo = {}, {}, []
    for rel, st in files:
        entry = cached.get(rel)
        if entry is not None and entry[:5] == _cache_key(st):
            entries[rel] = entry
            found[rel] = (entry[5], st.st_size, st.st_mode)
        else:
            todo.append((rel, st))
    results = _run_pool(
        _hash_path,
        [(os.path.join(root, rel),) for rel, _ in todo],
        [_job_weight(st.st_size) for _, st in todo],
    )
    for (rel, seen), (sha, size, st) in zip(todo, results):
        found[rel] = (sha, size, st.st_mode)
        if _cacheable(st, seen, started_ns):
            entries[rel] = _cache_key(st) + [sha]
    for rel, _ in files:
        sha, size, mode = found[rel]
        listing["files"][rel] = {"sha256": sha, "size": size, "mode": fmt_mode(mode)}
    # Only this tree's files are kept: the cache never grows past the tree.
    if path and entries != cached:
        _cache_save(path, root, entries)
    return listing


def default_owner():
    """
    Ownership is copied when running as root: the (uid, gid) new files get by default
    (those need no chown); None when not root (ownership is not copied).
    """
    if os.geteuid() != 0:
        return None
    return (os.geteuid(), os.getegid())


def finish_dir(path, st, chown):
    """Give the directory ``path`` the owner (if ``chown``), mode and times of ``st``."""
    if chown:
        os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy(tree, dst):
    """
    Copy the walked ``tree`` into the existing empty directory ``dst`` (symlinks as
    symlinks, modes, times, owners when root; special files skipped), hashing while copying.
    A tree of 16 MB or more is written back to disk while it is copied (``_Writeback``), so a
    ``sync_tree`` after it is short. The metadata of ``dst`` itself is left to the caller
    (``finish_dir``). Returns the listing of what was written.
    """
    chown = default_owner()
    if chown and os.stat(dst).st_mode & stat.S_ISGID:
        chown = (-1, -1)  # new files take the setgid dir's group: always chown
    src = tree.root
    listing = {
        "files": {},
        "symlinks": {},
        "dirs": {".": fmt_mode(tree.root_stat.st_mode)},
        "other": list(tree.other),
    }
    for rel, _ in tree.dirs:
        os.mkdir(os.path.join(dst, rel), 0o700)
    for rel, target, st in tree.links:
        link = os.path.join(dst, rel)
        os.symlink(target, link)
        if chown:
            os.lchown(link, st.st_uid, st.st_gid)
        os.utime(link, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
        listing["symlinks"][rel] = target
    files = _by_dir(tree.files)
    # New files get their final permission bits at creation (in a dir only its owner can
    # enter until finish_dir), which spares an fchmod per file (cp -a does the same).
    umask = _umask()
    jobs = [(f"{src}/{rel}", f"{dst}/{rel}", chown, stat.S_IMODE(st.st_mode) & 0o777, umask)
            for rel, st in files]
    weights = [_job_weight(st.st_size) for _, st in files]
    if tree.nbytes >= _WRITEBACK_MIN_BYTES:
        with _Writeback(dst):
            results = _run_pool(copy_file, jobs, weights)
    else:
        results = _run_pool(copy_file, jobs, weights)
    for (rel, _), (sha, size, mode) in zip(files, results):
        listing["files"][rel] = {"sha256": sha, "size": size, "mode": fmt_mode(mode)}
    # Directory metadata bottom-up, after their content is written.
    for rel, st in reversed(tree.dirs):
        finish_dir(os.path.join(dst, rel), st, chown)
        listing["dirs"][rel] = fmt_mode(st.st_mode)
    return listing


def compare(expected, actual, ignore=()):
    """
    Compare the listing ``expected`` (a manifest or record) with ``actual`` (a scan).
    Paths in ``ignore`` are not compared. Returns ``{"ok", "modified", "missing",
    "added"}`` with sorted relative paths; a path whose type changed is ``modified``.
    """
    ignore = set(ignore)
    exp_files = expected.get("files") or {}
    exp_links = expected.get("symlinks") or {}
    exp_dirs = expected.get("dirs")
    act_files = actual.get("files") or {}
    act_links = actual.get("symlinks") or {}
    act_dirs = actual.get("dirs") or {}
    act_all = set(act_files) | set(act_links) | set(actual.get("other") or ())
    exp_all = set(exp_files) | set(exp_links)
    if exp_dirs is not None:
        act_all |= set(act_dirs)
        exp_all |= set(exp_dirs)
    modified, missing = [], []

    def _absent(rel):
        (modified if rel in act_all else missing).append(rel)

    for rel, want in exp_files.items():
        if rel in ignore:
            continue
        have = act_files.get(rel)
        if have is None:
            _absent(rel)
        elif any(str(want[k]) != str(have.get(k)) for k in _FILE_FIELDS if k in want):
            modified.append(rel)
    for rel, target in exp_links.items():
        if rel in ignore:
            continue
        if rel in act_links:
            if act_links[rel] != target:
                modified.append(rel)
        else:
            _absent(rel)
    for rel, mode in (exp_dirs or {}).items():
        if rel in ignore:
            continue
        if rel in act_dirs:
            if str(act_dirs[rel]) != str(mode):
                modified.append(rel)
        else:
            _absent(rel)
    added = sorted(act_all - exp_all - ignore)
    modified.sort()
    missing.sort()
    return {
        "ok": not (modified or missing or added),
        "modified": modified,
        "missing": missing,
        "added": added,
    }


def summary(diff, limit=5):
    """One line naming the first differences of a ``compare`` result."""
    parts = []
    for key in ("modified", "missing", "added"):
        items = diff.get(key) or []
        if items:
            shown = ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
            parts.append(f"{len(items)} {key} ({shown})")
    return "; ".join(parts) or "no differences"


def sync_tree(path):
    """
    Flush everything written to the filesystem of ``path`` to disk (syncfs(2) on that
    filesystem only; os.sync() where syncfs is unavailable), then fsync ``path``'s parent
    directory so a rename that follows is ordered after the data.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _syncfs(fd)
    finally:
        os.close(fd)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def fsync_dir(path):
    """fsync a directory (makes renames/creations in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
