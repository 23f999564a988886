"""
Dated, verified backups of a program directory.

Replaces the runbook's ``cp -R /home/ecsc /home/ecsc_20170220``. A backup of
``<parent>/<name>`` with tag ``<tag>`` is the directory ``<parent>/<name>_<tag>``:

- it is built in ``<parent>/.<name>_<tag>.tmp-<random>`` and renamed to its final name
  only when complete, so a half-made backup never carries the final name;
- it holds ``.backup-manifest.json`` (sha256, size and mode of every file, symlink targets,
  directory modes, plus caller-supplied ``meta``), hashed from the very bytes written during
  the one copy pass;
- an existing backup that verifies is never overwritten or nested into; one that does not
  verify is an error.

Modes, ownership (when running as root), mtimes, symlinks (kept as symlinks) and empty
directories are preserved. Not preserved: extended attributes/ACLs, hard links (copied as
separate files), sparseness; sockets, FIFOs and device files are skipped (and reported).

Paths (see docs/CONVENTIONS.md): backup ``<parent>/<name>_<tag>``, manifest
``<parent>/<name>_<tag>/.backup-manifest.json``, temp dir ``<parent>/.<name>_<tag>.tmp-<random>``,
restore staging ``<parent>/.<name>.restore-<random>``, live tree set aside during a restore
``<parent>/.<name>.pre-restore-<random>``.

:depends: - Python standard library only (hashlib, shutil, fcntl); Linux/POSIX
"""

import datetime
import errno
import json
import logging
import os
import secrets
import stat
import shutil
import tempfile
import time

import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import fcntl

    HAS_FCNTL = True
except ImportError:  # pragma: no cover - Windows
    HAS_FCNTL = False

log = logging.getLogger(__name__)

__virtualname__ = "backup"
__func_alias__ = {"list_": "list"}

MANIFEST_NAME = ".backup-manifest.json"
MANIFEST_FORMAT = 1

# Free space required beyond the (block-rounded) tree size.
_FREE_MARGIN_BYTES = 64 << 20
_FREE_MARGIN_RATIO = 0.05
_BLOCK = 4096
# Mode of a backup's root dir once complete (owner root): see _seal.
_SEALED_MODE = 0o700


def __virtual__():
    if not HAS_FCNTL or not hasattr(os, "geteuid"):
        return (False, "The backup module needs a POSIX system (fcntl, os.geteuid).")
    return __virtualname__


# --------------------------------------------------------------------------- helpers


def _tree(func):
    """A function of the shared tree helpers (_utils/rollout_tree.py)."""
    return __utils__[f"rollout_tree.{func}"]


def _msg(text, path=None, tag=None):
    where = []
    if path is not None:
        where.append(f"path {path}")
    if tag is not None:
        where.append(f"tag {tag}")
    suffix = f" ({', '.join(where)})" if where else ""
    return f"backup on minion {__utils__['rollout_ids.minion_id']()}: {text}{suffix}"


def _cee(text, path=None, tag=None):
    return CommandExecutionError(_msg(text, path, tag))


def _sie(text, path=None, tag=None):
    return SaltInvocationError(_msg(text, path, tag))


def _check_tag(tag, path=None):
    if not isinstance(tag, str):
        # YAML on the CLI turns 20170220 into an int; accept plain integers as their digits.
        if isinstance(tag, int) and not isinstance(tag, bool) and tag >= 0:
            tag = str(tag)
        else:
            # 20170220.1 (a backup <dir>_<tag>.<n>) arrives as a float: say how to quote it.
            raise _sie(
                f"tag must be a string, got {tag!r} (quote it on the CLI: \"'20170220.1'\")",
                path, tag,
            )
    if not __utils__['rollout_ids.is_name'](tag):
        raise _sie(
            f"invalid tag {tag!r}: must match {__utils__['rollout_ids.name_pattern']()}", path, tag
        )
    return tag


def _split(path, tag=None):
    """
    Normalise the program directory path; return (path, parent, name).
    """
    if not isinstance(path, str) or not path:
        raise _sie(f"path must be a non-empty string, got {path!r}", path, tag)
    if not os.path.isabs(path):
        raise _sie("path must be absolute", path, tag)
    path = os.path.normpath(path)
    parent, name = os.path.split(path)
    if not name or name in (".", ".."):
        raise _sie("path must name a directory below /", path, tag)
    return path, parent, name


def _backup_dir(parent, name, tag):
    return os.path.join(parent, f"{name}_{tag}")


def _tmp_prefix(name, tag):
    return f".{name}_{tag}.tmp-"






def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")




def _remove_tree(path):
    """Remove a tree, file or symlink; a path already gone is fine."""
    try:
        salt.utils.files.rm_rf(path)
    except FileNotFoundError:
        pass


def _lock_dir(path):
    """
    Hold an exclusive flock on a work directory while this process uses it, so a
    concurrent run's stale-dir cleanup leaves it alone. Returns the fd.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def _unlock(fd):
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def _clean_stale(parent, prefix):
    """
    Remove work dirs ``<parent>/<prefix>*`` left by a crashed run. A dir that another
    live run holds locked is left alone. Returns the removed paths.
    """
    removed = []
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = _lock_dir(entry.path)
        except OSError:
            log.info("backup: %s is in use by another run, not removing it", entry.path)
            continue
        try:
            log.warning("backup: removing stale work dir %s from an earlier run", entry.path)
            _remove_tree(entry.path)
            removed.append(entry.path)
        finally:
            _unlock(fd)
    return removed






def _space_needed(tree):
    """
    Bytes a copy of ``tree`` needs: block-rounded file sizes, a block per directory, the
    manifest, plus a safety margin.
    """
    data = sum(-(-st.st_size // _BLOCK) * _BLOCK for _, st in tree.files)
    data += _BLOCK * (len(tree.dirs) + 1)
    data += 256 * (len(tree.files) + len(tree.links) + len(tree.dirs))  # manifest
    return data + max(_FREE_MARGIN_BYTES, int(data * _FREE_MARGIN_RATIO))


def _check_space(where, needed, path, tag):
    free = shutil.disk_usage(where).free
    if free < needed:
        raise _cee(
            f"not enough free space on the filesystem of {where}: "
            f"{free} bytes free, {needed} needed (tree plus margin); nothing written",
            path,
            tag,
        )
    return free


























def _build_manifest(source, tag, meta, listing, created=None):
    return {
        "format": MANIFEST_FORMAT,
        "source": source,
        "tag": tag,
        "created": created or _now_iso(),
        "host": __utils__['rollout_ids.minion_id'](),
        "meta": meta,
        "files": listing["files"],
        "symlinks": listing["symlinks"],
        "dirs": listing["dirs"],
    }


def _manifest_totals(data):
    files = data.get("files", {})
    return len(files), sum(int(entry.get("size", 0)) for entry in files.values())


def _read_manifest(backup_dir, path=None, tag=None):
    mpath = os.path.join(backup_dir, MANIFEST_NAME)
    try:
        with open(mpath, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise _cee(f"backup {backup_dir} has no manifest {MANIFEST_NAME}", path, tag) from None
    except (OSError, ValueError) as exc:
        raise _cee(f"cannot read manifest {mpath}: {exc}", path, tag) from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise _cee(f"manifest {mpath} is not a format {MANIFEST_FORMAT} manifest", path, tag)
    for key in ("files", "symlinks", "dirs"):
        if not isinstance(data.get(key), dict):
            raise _cee(f"manifest {mpath} lacks '{key}'", path, tag)
    return data


def _load(path, tag):
    """
    Validate arguments and locate an existing backup: (path, parent, name, tag, dir, manifest).
    """
    path, parent, name = _split(path, tag)
    tag = _check_tag(tag, path)
    bdir = _backup_dir(parent, name, tag)
    if os.path.islink(bdir) or not os.path.isdir(bdir):
        if os.path.lexists(bdir):
            raise _cee(f"{bdir} exists but is not a backup directory", path, tag)
        raise _cee(f"no backup {bdir}", path, tag)
    data = _read_manifest(bdir, path, tag)
    if not _manifest_is_of(data, name, tag):
        raise _cee(
            f"{bdir} is a backup of {data.get('source')!r} with tag {data.get('tag')!r}, "
            "not of this directory and tag",
            path,
            tag,
        )
    return path, parent, name, tag, bdir, data


def _manifest_is_of(data, name, tag):
    """
    Whether a manifest belongs to program dir ``name`` and ``tag``. Tags may contain ``_``,
    so ``<parent>/a_b_1`` may be ``a`` tagged ``b_1`` or ``a_b`` tagged ``1``. The parent
    is not compared: the program dir and its backups may have moved together.
    """
    source = data.get("source")
    return (
        isinstance(source, str)
        and os.path.basename(os.path.normpath(source)) == name
        and data.get("tag") == tag
    )


def _check_meta(meta, path, tag):
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise _sie(f"meta must be a dict, got {type(meta).__name__}", path, tag)
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise _sie(f"meta is not JSON-serialisable: {exc}", path, tag) from None
    return meta


# --------------------------------------------------------------------------- public API


def create(path, tag, meta=None, test=False):
    """
    Back up the directory ``path`` to ``<path>_<tag>`` with a sha256 manifest.

    The copy is made in ``<parent>/.<name>_<tag>.tmp-<random>`` and renamed into place when
    complete. An existing backup that verifies is left alone (``created: False``); one that
    does not verify, or has no manifest, is an error. Free space is checked before anything
    is written. Stale temp dirs of the same path and tag from a crashed run are removed.

    path
        Absolute path of the program directory, e.g. ``/home/ecsc``.

    tag
        Backup tag, e.g. the date ``20170220``; must match ``^[0-9A-Za-z][0-9A-Za-z._-]*$``.

    meta
        Optional JSON-serialisable dict stored in the manifest (e.g. the release the tree
        holds).

    test
        ``True``: check everything (tag, source, existing backup, free space) and report
        what would be done, writing nothing.

    Returns ``{"path", "created", "files", "bytes", "seconds"}`` (plus ``"skipped"``: special
    files not copied, and ``"test": True`` in test mode).

    CLI Example:

    .. code-block:: bash

        salt '*' backup.create /home/ecsc 20170220
        salt '*' backup.create /home/ecsc 20170220 meta='{"release": "v1"}'
    """
    started = time.monotonic()
    path, parent, name = _split(path, tag)
    tag = _check_tag(tag, path)
    meta = _check_meta(meta, path, tag)
    _check_source(path, tag)
    return _hold(path, parent, name, tag, meta, test, started)


def _check_source(path, tag):
    if os.path.islink(path):
        raise _cee("program dir is a symlink; refusing to back it up (name the real directory)",
                   path, tag)
    if not os.path.isdir(path):
        if os.path.lexists(path):
            raise _cee("source is not a directory", path, tag)
        raise _cee("source directory does not exist", path, tag)


def _family(parent, name, tag):
    """(tag, dir) of ``<name>_<tag>`` and ``<name>_<tag>.<n>`` that exist, in order."""
    found, n = [], 0
    while True:
        cand = tag if n == 0 else f"{tag}.{n}"
        bdir = _backup_dir(parent, name, cand)
        if not os.path.lexists(bdir):
            return found, cand
        found.append((cand, bdir))
        n += 1


def _scan_live(path, tag):
    try:
        return _tree("scan")(path)
    except OSError as exc:
        raise _cee(f"cannot read live tree: {exc}", path, tag) from None


def _hold(path, parent, name, tag, meta, test, started, live=None, skip=()):
    """
    Make sure a verified backup of tag ``tag`` (``<name>_<tag>`` or ``<name>_<tag>.<n>``)
    holds the live tree ``path`` byte for byte: reuse one that does, else make a new one
    under the next free name. An existing backup is never overwritten; one that does not
    verify is an error. ``skip``: tags not to reuse (the tree a restore brings back).
    """
    family, free_tag = _family(parent, name, tag)
    differs = []
    for cand, bdir in family:
        res, data = _existing(path, cand, bdir, started, test)
        if cand in skip:
            continue
        if live is None:
            live = _scan_live(path, tag)
        if _tree("compare")(data, live, ignore=live["other"])["ok"]:
            res["holds_live_tree"] = True
            return res
        differs.append(bdir)
    res = _make(path, parent, name, free_tag, meta, test, started)
    if differs:
        res["reason"] = (f"the live tree differs from {', '.join(differs)}; "
                         f"backed up to {res['path']}")
    return res


def _make(path, parent, name, tag, meta, test, started):
    """
    Copy ``path`` to the new backup ``<name>_<tag>`` (temp name, fsync, rename).
    """
    bdir = _backup_dir(parent, name, tag)
    try:
        tree = _tree('walk')(path)
    except OSError as exc:
        raise _cee(f"cannot read source tree: {exc}", path, tag) from None
    if any(rel == MANIFEST_NAME for rel in tree.rels()):
        raise _cee(
            f"source contains {MANIFEST_NAME} at its top; refusing to back up a backup",
            path,
            tag,
        )
    nbytes = tree.nbytes
    _check_space(parent, _space_needed(tree), path, tag)
    result = {
        "path": bdir,
        "tag": tag,
        "created": True,
        "files": len(tree.files),
        "bytes": nbytes,
        "seconds": 0.0,
        "skipped": sorted(tree.other),
    }
    if test:
        result["test"] = True
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    _clean_stale(parent, _tmp_prefix(name, tag))
    try:
        tmp = tempfile.mkdtemp(prefix=_tmp_prefix(name, tag), dir=parent)
    except OSError as exc:
        raise _cee(f"cannot create temp dir in {parent}: {exc}", path, tag) from None
    lock = None
    try:
        lock = _lock_dir(tmp)
        listing = _tree('copy')(tree, tmp)
        manifest_data = _build_manifest(path, tag, meta, listing)
        manifest_data["owner"] = [tree.root_stat.st_uid, tree.root_stat.st_gid]
        mpath = os.path.join(tmp, MANIFEST_NAME)
        with open(mpath, "x", encoding="utf-8") as handle:
            # Compact: the C encoder is several times faster than indent= (jq to read it).
            handle.write(json.dumps(manifest_data, sort_keys=True, separators=(",", ":")))
            handle.write("\n")
        os.chmod(mpath, 0o444)
        _tree('finish_dir')(tmp, tree.root_stat, _tree('default_owner')())
        _seal(tmp)
        # The copy is on disk before it takes the backup's name (power loss: no half backup
        # under a good name), and the rename is on disk before anyone relies on it.
        _tree("sync_tree")(tmp)
        try:
            os.rename(tmp, bdir)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and os.path.isdir(bdir):
                # A concurrent run finished first: take its backup if it verifies.
                _remove_tree(tmp)
                return _existing(path, tag, bdir, started, test)[0]
            raise
        _tree("fsync_dir")(parent)
    except (CommandExecutionError, SaltInvocationError):
        _remove_tree(tmp)
        raise
    except BaseException as exc:
        _remove_tree(tmp)
        if isinstance(exc, Exception):
            raise _cee(f"backup to {bdir} failed, nothing kept: {exc}", path, tag) from exc
        raise
    finally:
        _unlock(lock)
    result["files"], result["bytes"] = _manifest_totals(manifest_data)
    result["seconds"] = round(time.monotonic() - started, 3)
    log.info(
        "backup: %s -> %s (%s files, %s bytes) in %.2fs",
        path,
        bdir,
        result["files"],
        result["bytes"],
        result["seconds"],
    )
    return result


def _seal(bdir):
    """
    Make the backup root root-owned 0700 (when running as root): the service's user, who
    owns the program dir and so most files of the copy, can then change nothing in it. The
    root's own mode and owner are in the manifest (``dirs["."]``, ``owner``).
    """
    if os.geteuid() == 0:
        os.chown(bdir, 0, 0)
        os.chmod(bdir, _SEALED_MODE)


def _sealed_view(listing, data, root_stat):
    """
    A listing of a backup dir as the manifest describes it: a sealed root (root-owned 0700,
    see _seal) stands for the program dir's root mode recorded in the manifest.
    """
    if (
        "owner" in data
        and root_stat.st_uid == 0
        and stat.S_IMODE(root_stat.st_mode) == _SEALED_MODE
        and "." in (data.get("dirs") or {})
    ):
        listing["dirs"]["."] = data["dirs"]["."]
    return listing


def _unseal(root, data, root_stat):
    """A copy of a sealed backup gets the program dir's own root mode and owner back."""
    if _sealed_view({"dirs": {}}, data, root_stat)["dirs"]:
        if os.geteuid() == 0:
            os.chown(root, *data["owner"])
        os.chmod(root, int(data["dirs"]["."], 8))


def _existing(path, tag, bdir, started, test):
    """
    An existing ``<path>_<tag>``: (create's result, manifest) if it verifies, else refuse.
    """
    if os.path.islink(bdir) or not os.path.isdir(bdir):
        raise _cee(f"{bdir} exists and is not a backup directory; not touching it", path, tag)
    if not os.path.exists(os.path.join(bdir, MANIFEST_NAME)):
        raise _cee(
            f"{bdir} exists but has no {MANIFEST_NAME} (not made by backup.create?); "
            "not overwriting or copying into it",
            path,
            tag,
        )
    diff = verify(path, tag)
    if not diff["ok"]:
        raise _cee(
            f"{bdir} exists but does not verify against its manifest: {_tree('summary')(diff)}; "
            "not overwriting it",
            path,
            tag,
        )
    data = _read_manifest(bdir, path, tag)
    files, nbytes = _manifest_totals(data)
    result = {
        "path": bdir,
        "tag": tag,
        "created": False,
        "files": files,
        "bytes": nbytes,
        "seconds": round(time.monotonic() - started, 3),
        "meta": data.get("meta"),
    }
    if test:
        result["test"] = True
    return result, data


def manifest(path, tag):
    """
    Return the parsed manifest of the backup ``<path>_<tag>``.

    path
        Absolute path of the program directory that was backed up.

    tag
        Backup tag.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.manifest /home/ecsc 20170220
    """
    return _load(path, tag)[5]


def list_(path):
    """
    List the backups of ``path`` (``<path>_*`` directories holding a manifest), newest
    first: ``[{"tag", "family", "path", "created", "files", "bytes", "meta"}]``. ``family``
    is the tag a ``<path>_<tag>.<n>`` belongs to (the tag itself for ``<path>_<tag>``):
    one family is one upgrade's or rollback's trees. Directories without a readable
    manifest (e.g. old hand-made ``cp -R`` copies) are not listed.

    path
        Absolute path of the program directory.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.list /home/ecsc
    """
    path, parent, name = _split(path)
    prefix = f"{name}_"
    found = []
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _cee(f"cannot list {parent}: {exc}", path) from None
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        tag = entry.name[len(prefix):]
        if not __utils__['rollout_ids.is_name'](tag) or entry.is_symlink() or not entry.is_dir():
            continue
        if not os.path.isfile(os.path.join(entry.path, MANIFEST_NAME)):
            continue
        try:
            data = _read_manifest(entry.path, path, tag)
        except CommandExecutionError as exc:
            log.warning("%s", exc)
            continue
        if not _manifest_is_of(data, name, tag):
            # e.g. /home/foo_bar_1 is a backup of /home/foo_bar, not of /home/foo (tag bar_1)
            continue
        files, nbytes = _manifest_totals(data)
        found.append(
            {
                "tag": tag,
                "path": entry.path,
                "created": data.get("created"),
                "files": files,
                "bytes": nbytes,
                "meta": data.get("meta"),
            }
        )
    tags = {item["tag"] for item in found}
    for item in found:
        # 2017.02.20 is a tag of its own, not the 20th tree of 2017.02: only when that tag's
        # own backup exists is <tag>.<n> of its family.
        family = _family_of(item["tag"])
        item["family"] = family if family in tags else item["tag"]
    found.sort(key=lambda item: (str(item["created"] or ""), item["tag"]), reverse=True)
    return found


def verify(path, tag):
    """
    Compare the backup ``<path>_<tag>`` with its manifest (content sha256, sizes, modes,
    symlink targets, directories). Reports differences rather than raising; raises when the
    backup or its manifest is missing.

    Returns ``{"ok": bool, "modified": [...], "missing": [...], "added": [...]}`` (relative
    paths).

    path
        Absolute path of the program directory that was backed up.

    tag
        Backup tag.

    CLI Example:

    .. code-block:: bash

        salt '*' backup.verify /home/ecsc 20170220
    """
    path, _, _, tag, bdir, data = _load(path, tag)
    try:
        listing = _tree('scan')(bdir, skip_root_names=(MANIFEST_NAME,))
    except OSError as exc:
        raise _cee(f"cannot read backup {bdir}: {exc}", path, tag) from None
    return _tree('compare')(data, _sealed_view(listing, data, os.stat(bdir)))


def restore(path, tag, test=False, meta=None):
    """
    Restore ``path`` from the backup ``<path>_<tag>``, byte-identical to its manifest
    (content, modes, symlinks; mtimes kept).

    The backup (without its manifest) is copied into ``<parent>/.<name>.restore-<random>``,
    hashing while copying; if anything differs from the manifest the staging copy is
    removed and an error raised, with ``path`` untouched. Otherwise the live ``path`` is
    renamed aside to ``<parent>/.<name>.pre-restore-<random>``, the staging dir renamed to
    ``path``, and the aside tree removed. If ``path`` already equals the backup nothing is
    changed (``changed: False``).

    The live tree is never dropped unless a verified backup holds it: before the swap a
    backup of the same family (``<path>_<tag>.<n>``) that equals it is reused, or a new one
    is made (``held_by`` in the result).

    path
        Absolute path of the program directory to restore.

    tag
        Backup tag.

    test
        ``True``: verify the backup and compare it with ``path``, report what would be
        replaced (``diff``) and which backup would hold it (``held_by``), change nothing.

    meta
        ``meta`` of a backup made of the live tree before it is replaced.

    Returns ``{"path", "tag", "files", "meta", "seconds", "changed", "from", "held_by"}``
    (plus ``"diff"`` when ``path`` differs, ``"test": True`` in test mode).

    CLI Example:

    .. code-block:: bash

        salt '*' backup.restore /home/ecsc 20170220
    """
    started = time.monotonic()
    path, parent, name, tag, bdir, data = _load(path, tag)
    files, nbytes = _manifest_totals(data)
    result = {
        "path": path,
        "tag": tag,
        "files": files,
        "meta": data.get("meta"),
        "seconds": 0.0,
        "changed": False,
        "from": bdir,
        "held_by": None,
    }
    meta = _check_meta(meta, path, tag)
    live = None
    if os.path.islink(path):
        raise _cee("live path is a symlink; refusing to replace it", path, tag)
    if os.path.isdir(path):
        try:
            live = _tree('scan')(path)
            diff = _tree('compare')(data, live)
        except OSError as exc:
            raise _cee(f"cannot read live tree: {exc}", path, tag) from None
        if diff["ok"]:
            result["seconds"] = round(time.monotonic() - started, 3)
            return result
    elif os.path.lexists(path):
        raise _cee("live path exists and is not a directory; refusing to replace it", path, tag)
    else:
        diff = _tree('compare')(data, {})
    result["changed"] = True
    result["diff"] = {key: diff[key] for key in ("modified", "missing", "added")}

    needed = nbytes + max(_FREE_MARGIN_BYTES, int(nbytes * _FREE_MARGIN_RATIO))
    if test:
        check = verify(path, tag)
        if not check["ok"]:
            raise _cee(
                f"backup {bdir} does not verify against its manifest: {_tree('summary')(check)}; "
                "a restore would be refused",
                path,
                tag,
            )
        _check_space(parent, needed, path, tag)
        if live is not None:
            result["held_by"] = _hold(path, parent, name, tag, meta, True, started, live=live,
                                      skip=(tag,))["path"]
        result["test"] = True
        result["seconds"] = round(time.monotonic() - started, 3)
        return result

    _check_space(parent, needed, path, tag)
    _clean_stale(parent, f".{name}.restore-")
    if os.path.isdir(path):
        # A crash after the swap leaves the old tree aside; with path in place it is garbage.
        # (Without path, an aside dir may be the only copy of the live tree: keep it.)
        _clean_stale(parent, f".{name}.pre-restore-")
    try:
        staging = tempfile.mkdtemp(prefix=f".{name}.restore-", dir=parent)
    except OSError as exc:
        raise _cee(f"cannot create staging dir in {parent}: {exc}", path, tag) from None
    lock = None
    try:
        lock = _lock_dir(staging)
        tree = _tree('walk')(bdir, skip_root_names=(MANIFEST_NAME,))
        listing = _sealed_view(_tree('copy')(tree, staging), data, tree.root_stat)
        check = _tree('compare')(data, listing)
        if not check["ok"]:
            raise _cee(
                f"backup {bdir} does not verify against its manifest: {_tree('summary')(check)}; "
                "nothing restored, live tree untouched",
                path,
                tag,
            )
        _tree('finish_dir')(staging, tree.root_stat, _tree('default_owner')())
        _unseal(staging, data, tree.root_stat)
        if live is not None:
            # Nothing is dropped that no backup holds: the tree about to be replaced.
            result["held_by"] = _hold(path, parent, name, tag, meta, False, started, live=live,
                                      skip=(tag,))["path"]
        _tree("sync_tree")(staging)
        _swap(staging, path, parent, name)
    except (CommandExecutionError, SaltInvocationError):
        _remove_tree(staging)
        raise
    except BaseException as exc:
        _remove_tree(staging)
        if isinstance(exc, Exception):
            raise _cee(f"restore from {bdir} failed: {exc}", path, tag) from exc
        raise
    finally:
        _unlock(lock)
    result["seconds"] = round(time.monotonic() - started, 3)
    log.info("backup: restored %s from %s in %.2fs", path, bdir, result["seconds"])
    return result


def _swap(staging, path, parent, name):
    aside = None
    if os.path.lexists(path):
        aside = os.path.join(parent, f".{name}.pre-restore-{secrets.token_hex(6)}")
        os.rename(path, aside)
    try:
        os.rename(staging, path)
    except OSError:
        if aside:
            os.rename(aside, path)
        raise
    if aside:
        _remove_tree(aside)


def prune(path, keep=3, protect=None, test=False):
    """
    Delete the oldest backups of ``path`` beyond the ``keep`` newest. The newest backup and
    any tag in ``protect`` (with its ``<tag>.<n>`` family) are never deleted. A backup is
    renamed to a temp name before it is removed, so a half-deleted backup never keeps its
    name.

    path
        Absolute path of the program directory.

    keep
        How many of the newest backups to keep (at least 1). Default 3.

    protect
        List (or comma-separated string) of tags never to delete, e.g. the backup of the
        release that is running.

    test
        ``True``: report what would be deleted, delete nothing.

    Returns ``{"deleted": [tags], "kept": [tags]}`` (newest first).

    CLI Example:

    .. code-block:: bash

        salt '*' backup.prune /home/ecsc keep=2 protect='["20170220"]'
    """
    path, parent, name = _split(path)
    try:
        keep = int(keep)
    except (TypeError, ValueError):
        raise _sie(f"keep must be an integer, got {keep!r}", path) from None
    if keep < 1:
        raise _sie(f"keep must be at least 1, got {keep}", path)
    if protect is None:
        protect = []
    elif isinstance(protect, (str, int)):
        protect = [item.strip() for item in str(protect).split(",") if item.strip()]
    elif isinstance(protect, (list, tuple, set)):
        protect = [str(item) for item in protect]
    else:
        raise _sie(f"protect must be a list of tags, got {protect!r}", path)
    backups = list_(path)
    delete, kept = _select_prune([item["tag"] for item in backups], keep, protect)
    if test:
        return {"deleted": list(delete), "kept": kept, "test": True}
    deleted = []
    for tag in delete:
        bdir = _backup_dir(parent, name, tag)
        doomed = os.path.join(parent, f"{_tmp_prefix(name, tag)}{secrets.token_hex(6)}")
        try:
            os.rename(bdir, doomed)
            _remove_tree(doomed)
        except OSError as exc:
            raise _cee(
                f"cannot delete backup {bdir}: {exc} (deleted so far: {deleted})", path, tag
            ) from None
        log.info("backup: pruned %s", bdir)
        deleted.append(tag)
    return {"deleted": deleted, "kept": kept}


def _family_of(tag):
    """``20170220`` for ``20170220.1`` (a later tree under that tag), else the tag itself."""
    base, _, suffix = tag.rpartition(".")
    return base if base and suffix.isdigit() else tag


def _select_prune(tags_newest_first, keep, protect):
    """
    Split tags (newest first) into (delete, kept): keep the ``keep`` newest, never the
    newest one, never a protected tag nor the rest of its family (``<tag>.<n>``: trees a
    swap or restore under that tag replaced, each held nowhere else).
    """
    keep = max(1, int(keep))
    protect = set(protect or ())

    def _protected(tag):
        return tag in protect or _family_of(tag) in protect

    delete, kept = [], []
    for index, tag in enumerate(tags_newest_first):
        if index < keep or _protected(tag):
            kept.append(tag)
        else:
            delete.append(tag)
    return delete, kept
