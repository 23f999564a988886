"""
Release archives of a program directory: verify, stage, swap, and report what is deployed.

Replaces the runbook's ``cd /home; tar xvf ecsc.tar`` over the live ``/home/ecsc``.

A release archive (``<svc>.tar``, optionally compressed) holds exactly one top-level
directory ``<svc>/`` whose contents become the program directory ``<parent>/<svc>``.

Trust: nothing in the archive is trusted. ``verify`` checks the archive's sha256 (streamed,
``hashlib``) against the value from the pillar, then every member, failing on the first bad
one with its name in the message. It builds on tarfile's ``data`` extraction filter
(``tarfile.data_filter``: special files, absolute links, names and links leaving the
destination) and adds, on top of it:

- absolute member names are rejected (the data filter would silently strip the ``/``);
- ``..`` components are rejected anywhere in a name or a hard link target;
- every member lies in ONE top-level directory (equal to ``top`` when given; ``stage`` uses
  the target's name, so ``schedule.tar`` cannot be unpacked over ``/home/ecsc``), and the
  top-level entry itself is a directory;
- setuid, setgid and sticky bits are rejected (the data filter would silently clear them);
- symbolic links must resolve inside the top-level directory, resolving chains through the
  archive's other symlinks (also ones that come later in the archive) as realpath would;
- a hard link must point to an earlier regular file of the archive;
- no member is written through a symlink or file of the archive, and no path appears twice
  (except repeated directory entries).

Extraction uses ``filter="data"`` (plus the checks above once more, against the real staging
dir) and the archive's owners are ignored; when the minion runs as root the staged tree gets
the owner of the live program directory.

Lifecycle and paths (docs/CONVENTIONS.md; this module is the one place that knows them), for a
program directory ``P = <parent>/<name>``:

- ``stage``: verify, then extract into ``<parent>/.<name>.staging`` (``<top>/x`` lands as
  ``.<name>.staging/x``, so staging mirrors ``P``) and describe it in
  ``<parent>/.<name>.staging.json`` (release, archive sha256, sha256 of every staged file,
  and a fingerprint: each file's inode, size, mtime and ctime, taken before the hashing).
  ``P`` is not touched, so this can run while the service is up.
- ``swap`` (service stopped): check the staging still holds what was staged - one lstat
  pass against the fingerprint; only files whose entry changed, or whose change time is
  too close to the fingerprint to prove anything, are hashed again - so the downtime is
  renames, not reading the release; carry host-local files over, rename ``P`` -> ``<parent>/.<name>.previous`` and staging ->
  ``P`` (if the second rename fails the first is undone), write the deployed record
  ``<parent>/.<name>.release.json`` (temp file + rename; if that fails the swap is undone),
  then remove ``.previous``.
- ``status`` compares the live tree against the record, ``staging_status`` the staging
  against its description; ``read_record``/``write_record`` read and write (or remove) the
  record (rollback); ``leftovers``/``clean`` report/remove staging and ``.previous``;
  ``interrupted`` says how far a stage or swap that was cut short got (``clean`` puts the
  last whole live tree back rather than dropping it).

Function names: actions are verbs (``verify``, ``stage``, ``swap``, ``unpack``, ``clean``,
``write_record``); read-only reports say what they report (``status``, ``staging_status``,
``read_record``, ``leftovers``, ``interrupted``).

Files of the live tree that the new archive does not carry (decision): ``tar xvf`` keeps
them, so stale jars and classes of the previous release stay and are loaded next to the new
ones. Here they are dropped: after ``swap`` the program directory holds exactly the archive's
contents (they remain in the dated backup made before the upgrade by the ``backup`` module).
The one exception is host-local files matching ``keep`` (globs relative to ``P``, e.g.
``["conf/host.properties", "conf/*.local"]``; ``*``/``?``/``[..]`` do not cross ``/``, ``**``
matches any number of directories, a pattern naming a directory keeps the files below it):
those that the archive does NOT carry are copied into the new tree and recorded under
``local`` in the deployed record. A kept path that the archive also carries takes the
archive's version (the archive wins). Only regular files are kept (not symlinks).

Deployed record (``<parent>/.<name>.release.json``)::

    {"format": 1, "release": "20170220", "archive_sha256": "<hex>",
     "deployed": "<ISO-8601 UTC>", "host": "<minion id>",
     "files": {"<relpath>": "<sha256>", ...},      # regular files from the archive
     "links": {"<relpath>": "<symlink target>"},   # symlinks from the archive
     "local": {"<relpath>": "<sha256>", ...}}      # host-local files carried over (keep)

Release ids match ``^[0-9A-Za-z][0-9A-Za-z._-]*$`` (quote them in YAML).

:depends: - Python >= 3.11.4 (tarfile extraction filters); standard library only
"""

import datetime
import fnmatch
import glob
import json
import logging
import os
import re
import shutil
import stat
import tarfile
import time

import salt.utils.atomicfile
import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "release"

RECORD_FORMAT = 1
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def __virtual__():
    if not hasattr(tarfile, "data_filter"):
        return (
            False,
            "The release module needs tarfile extraction filters (Python >= 3.11.4).",
        )
    return __virtualname__


# --------------------------------------------------------------------------- helpers


def _minion_id():
    return __utils__["rollout_ids.minion_id"]()


def _tree(func):
    """A function of the shared tree helpers (_utils/rollout_tree.py)."""
    return __utils__[f"rollout_tree.{func}"]


def _archive(func):
    """A function of the shared archive checks (_utils/rollout_archive.py)."""
    return __utils__[f"rollout_archive.{func}"]


def _prefix():
    return f"release on minion {_minion_id()}: "


def _cee(text):
    return CommandExecutionError(f"release on minion {_minion_id()}: {text}")


def _sie(text):
    return SaltInvocationError(f"release on minion {_minion_id()}: {text}")


def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_release(release):
    if not isinstance(release, str):
        # YAML turns 20170220 into an int; accept plain integers as their digits.
        if isinstance(release, int) and not isinstance(release, bool) and release >= 0:
            release = str(release)
        else:
            raise _sie(f"release id must be a string (quote it in YAML), got {release!r}")
    if not __utils__["rollout_ids.is_name"](release):
        pattern = __utils__["rollout_ids.name_pattern"]()
        raise _sie(f"invalid release id {release!r}: must match {pattern}")
    return release


def _check_sha(sha256, required=True):
    if sha256 is None and not required:
        return None
    if not isinstance(sha256, str) or not SHA256_RE.match(sha256):
        raise _sie(f"sha256 must be 64 hex digits, got {sha256!r}")
    return sha256.lower()


def _check_archive(archive):
    if not isinstance(archive, str) or not os.path.isabs(archive):
        raise _sie(f"archive must be an absolute path, got {archive!r}")
    return archive


def _paths(target):
    """
    All paths this module uses for the program directory ``target``.
    """
    if not isinstance(target, str) or not target or not os.path.isabs(target):
        raise _sie(f"target must be an absolute path, got {target!r}")
    target = os.path.normpath(target)
    parent, name = os.path.split(target)
    if not name or name in (".", ".."):
        raise _sie(f"target {target} must name a directory below /")
    return {
        "target": target,
        "parent": parent,
        "name": name,
        "staging": os.path.join(parent, f".{name}.staging"),
        "staging_meta": os.path.join(parent, f".{name}.staging.json"),
        "previous": os.path.join(parent, f".{name}.previous"),
        "record": os.path.join(parent, f".{name}.release.json"),
        "upload": os.path.join(parent, f"{name}.tar"),
    }


def _check_keep(keep):
    """
    Normalise ``keep`` to a list of relative glob patterns.
    """
    if keep is None:
        return []
    if isinstance(keep, str):
        keep = [keep]
    if not isinstance(keep, (list, tuple)):
        raise _sie(f"keep must be a list of globs relative to the target, got {keep!r}")
    patterns = []
    for pattern in keep:
        if not isinstance(pattern, str) or not pattern.strip("/"):
            raise _sie(f"keep pattern must be a non-empty string, got {pattern!r}")
        if pattern.startswith("/"):
            raise _sie(f"keep pattern {pattern!r} must be relative to the target")
        parts = [p for p in pattern.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _sie(f"keep pattern {pattern!r} must not contain '..'")
        patterns.append("/".join(parts))
    return patterns


def _glob_match(pattern, relpath):
    """
    True when ``relpath`` (``a/b/c``) matches the glob ``pattern``: ``*``, ``?`` and ``[..]``
    match within one path component, ``**`` matches any number of components.
    """

    def _match(pat, parts):
        if not pat:
            return not parts
        if pat[0] == "**":
            return any(_match(pat[1:], parts[i:]) for i in range(len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and _match(pat[1:], parts[1:])

    return _match(pattern.split("/"), relpath.split("/"))


def _keep_selected(patterns, relpath):
    """
    True when a pattern matches ``relpath`` or one of its parent directories.
    """
    parts = relpath.split("/")
    return any(
        _glob_match(pattern, "/".join(parts[:i]))
        for pattern in patterns
        for i in range(1, len(parts) + 1)
    )


def _select_keep(patterns, live_files, carried):
    """
    Split the live regular files matching ``patterns`` into (kept, carried_by_archive,
    conflicts): ``carried`` holds the archive's file and symlink paths; a conflict is a kept
    file below a path the archive carries as a file or symlink.
    """
    kept, shadowed, conflicts = [], [], []
    for rel in sorted(live_files):
        if not _keep_selected(patterns, rel):
            continue
        if rel in carried:
            shadowed.append(rel)
            continue
        parts = rel.split("/")
        if any("/".join(parts[:i]) in carried for i in range(1, len(parts))):
            conflicts.append(rel)
            continue
        kept.append(rel)
    return kept, shadowed, conflicts








def _expected(record):
    """A deployed record or staging description as a listing for rollout_tree.compare."""
    return {
        "files": {rel: {"sha256": sha} for rel, sha in (record.get("files") or {}).items()},
        "symlinks": dict(record.get("links") or {}),
    }


def _compare(record, listing):
    """
    Compare a deployed record with a listing (rollout_tree.scan) of the live tree.
    Returns {"modified", "added", "removed", "local_modified"} (sorted relative paths):
    host-local files (``local``) are not drift, only ``local_modified`` when changed.
    """
    local = {rel: sha for rel, sha in (record.get("local") or {}).items()
             if rel not in (record.get("files") or {}) and rel not in (record.get("links") or {})}
    diff = _tree("compare")(_expected(record), listing, ignore=local)
    files = listing.get("files") or {}
    return {
        "modified": diff["modified"],
        "removed": diff["missing"],
        "added": diff["added"],
        "local_modified": sorted(
            rel for rel, sha in local.items() if (files.get(rel) or {}).get("sha256") != sha
        ),
    }


def _first_difference(meta, listing):
    diff = _compare({"files": meta.get("files"), "links": meta.get("links")}, listing)
    for key in ("modified", "removed", "added"):
        if diff[key]:
            return f"{diff[key][0]} {key}"
    return None


def _scan(root):
    """Listing of ``root`` (rollout_tree.scan); an empty listing when it is not a dir."""
    if not os.path.isdir(root):
        return {"files": {}, "symlinks": {}, "other": []}
    return _tree("scan")(root)


# Change times closer than this to a fingerprint prove nothing: file times come from the
# kernel's coarse clock (one tick, 1-10 ms, behind), so a change made in the same tick right
# after the fingerprint keeps the time it shows.
_RACY_NS = 50_000_000


def _fingerprint(root):
    """
    What one lstat pass sees of the tree at ``root`` (nothing is read):
    ``{"taken_ns", "files": {rel: [inode, size, mtime_ns, ctime_ns]}, "links": {rel: target},
    "other": [rel]}``. Writing, replacing, truncating, chmod or chown of a file changes its
    ctime, which no user can set back, so a file whose entry is unchanged still holds what
    was hashed after the fingerprint was taken (``_staging_difference``).
    """
    taken = time.time_ns()
    tree = _tree("walk")(root)
    return {
        "taken_ns": taken,
        "files": {rel: [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
                  for rel, st in tree.files},
        "links": {rel: target for rel, target, _ in tree.links},
        "other": sorted(tree.other),
    }


def _staging_difference(paths, meta):
    """
    (first difference of the staging from its description or None, files {rel: sha256},
    links {rel: target}) - what ``swap`` records. The staged files were hashed by ``stage``
    (before the service was stopped): only files whose lstat changed since its fingerprint,
    or whose change time is too close to it to prove anything, are hashed again; the rest is
    one lstat pass. A staging without a fingerprint (staged by an older version) is hashed
    whole.
    """
    fp = meta.get("fingerprint")
    if isinstance(fp, dict) and isinstance(fp.get("files"), dict):
        now = _fingerprint(paths["staging"])
        want_files = meta.get("files") or {}
        if (set(now["files"]) == set(fp["files"]) == set(want_files)
                and now["links"] == fp["links"] == (meta.get("links") or {})
                and not now["other"]):
            recent = fp.get("taken_ns", 0) - _RACY_NS
            for rel, entry in fp["files"].items():
                if entry == now["files"][rel] and entry[3] < recent:
                    continue
                sha = _tree("hash_file")(os.path.join(paths["staging"], rel))[0]
                if sha != want_files[rel]:
                    return f"{rel} modified", None, None
            return None, dict(want_files), dict(meta.get("links") or {})
    listing = _scan(paths["staging"])
    files, links = _record_shape(listing)
    return _first_difference(meta, listing), files, links


def _record_shape(listing):
    """(files {rel: sha256}, links {rel: target}) of a listing, as records keep them."""
    return (
        {rel: entry["sha256"] for rel, entry in listing["files"].items()},
        dict(listing["symlinks"]),
    )


def _write_json(path, data):
    """
    Write ``data`` as JSON to ``path`` atomically (salt.utils.atomicfile: temp file in the
    same dir, fsync, rename), mode 0644.
    """
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    handle = salt.utils.atomicfile.atomic_open(path, "w")
    try:
        with handle:
            handle.write(text)
    except OSError:
        # A full disk fails in atomic_open's close(), which then leaves its temp file.
        tmp = getattr(handle, "_tmp_filename", None)
        if tmp and os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    os.chmod(path, 0o644)


def _read_json(path, what):
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise _cee(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        raise _cee(f"{what} {path} is not a format-{RECORD_FORMAT} JSON object")
    return data


def _remove(path):
    """
    Remove a file, symlink or tree; True when something was removed.
    """
    if not os.path.lexists(path):
        return False
    salt.utils.files.rm_rf(path)
    return True


def _temp_files(paths):
    # Temp files of salt.utils.atomicfile (record, staging description) left by a crash.
    return sorted(glob.glob(os.path.join(glob.escape(paths["parent"]), ".___atomic_write*")))






def _open_archive(archive):
    try:
        return open(archive, "rb")  # pylint: disable=consider-using-with
    except OSError as exc:
        raise _cee(f"cannot read release archive {archive}: {exc.strerror}") from exc






def _verify_fh(fh, archive, sha256, top, paths=None):
    """
    Verify the open archive ``fh`` (checksum, then members; rollout_archive.check); with
    ``paths``, also that every member fits below the staging and the live program dir.
    """
    dests = (paths["staging"], paths["target"]) if paths else ()
    return _archive("check")(fh, archive, sha256, top, prefix=_prefix(), dests=dests)


def _chown_tree(root, uid, gid):
    os.lchown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            os.lchown(os.path.join(dirpath, entry), uid, gid)


def _staging_meta(paths):
    """
    The staging description, or None when there is no (complete) staging.
    """
    if not os.path.isdir(paths["staging"]) or os.path.islink(paths["staging"]):
        return None
    return _read_json(paths["staging_meta"], "staging description")


def _remove_staging(paths):
    removed = []
    for key in ("staging_meta", "staging"):
        if _remove(paths[key]):
            removed.append(paths[key])
    return removed


def _check_live_target(paths):
    target = paths["target"]
    if not os.path.isdir(paths["parent"]):
        raise _cee(f"parent dir {paths['parent']} of target {target} does not exist")
    if os.path.islink(target):
        raise _cee(f"target {target} is a symlink; point the state at the real directory")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise _cee(f"target {target} exists and is not a directory")
    return os.path.isdir(target)


# --------------------------------------------------------------------------- public


def verify(archive, sha256, top=None, target=None):
    """
    Verify a release archive without extracting it: its sha256, then every member (see the
    module docstring for the rules). Fails on the first bad member, naming it.

    archive
        Absolute path of the archive (tar, optionally gzip/bzip2/xz compressed).

    sha256
        Expected sha256 of the archive file (64 hex digits).

    top
        Expected name of the single top-level dir (e.g. the target's name, ``ecsc``).

    target
        The program directory the archive is for (e.g. ``/home/ecsc``): ``top`` defaults
        to its name, and every member must fit below it and below its staging dir
        (NAME_MAX/PATH_MAX of that filesystem).

    Returns ``{"archive", "sha256", "top", "members": <count>, "bytes": <total file size>}``.

    CLI Example:

    .. code-block:: bash

        salt '*' release.verify /var/cache/salt/minion/ecsc.tar 3a7b...e1 top=ecsc
    """
    archive = _check_archive(archive)
    sha256 = _check_sha(sha256)
    if top is not None and (not isinstance(top, str) or not top or "/" in top or top in (".", "..")):
        raise _sie(f"top must be a single directory name, got {top!r}")
    paths = _paths(target) if target is not None else None
    if paths and top is None:
        top = paths["name"]
    with _open_archive(archive) as fh:
        return _verify_fh(fh, archive, sha256, top, paths)


def fetch(source):
    """
    The local path of the release archive ``source`` (a local path or any URL
    ``cp.cache_file`` understands, e.g. ``salt://releases/<release>/<svc>.tar``), fetched into
    the minion's file cache. Raises ``CommandExecutionError`` naming the source.

    source
        Where the archive is (the pillar's ``release:source``, filled in).

    CLI Example:

    .. code-block:: bash

        salt ecsc-1 release.fetch salt://releases/20170220/ecsc.tar
    """
    try:
        cached = __salt__["cp.cache_file"](source)
    except (CommandExecutionError, SaltInvocationError, OSError) as exc:
        raise _cee(f"could not fetch release archive {source}: {exc}") from exc
    if not cached or not os.path.isfile(cached):
        raise _cee(f"could not fetch release archive {source}")
    return cached


def _tree_bytes(path):
    if not os.path.isdir(path):
        return 0
    return _tree("walk")(path).nbytes


def preflight(target, source, sha256, margin=1.1):
    """
    Pre-flight of an upgrade of ``target``, read-only: the archive ``source`` can be fetched
    (it stays in the minion's file cache, where the upgrade takes it from) and verifies (see
    :func:`verify`), and the filesystem of ``target`` has room for the backup and the staging
    copy (``margin`` times their size). Raises ``CommandExecutionError`` naming the archive
    member, the sum or the free space that does not do. Returns :func:`verify`'s summary with
    ``free`` and ``need`` (bytes) and a ``comment``.

    target
        Absolute path of the program directory.

    source
        The release archive (see :func:`fetch`).

    sha256
        Expected sha256 of the archive.

    margin
        Room needed, as a multiple of the backup's and the staging's size (default 1.1).

    CLI Example:

    .. code-block:: bash

        salt ecsc-1 release.preflight /home/ecsc salt://releases/20170220/ecsc.tar 3a7b...e1
    """
    summary = verify(fetch(source), sha256, target=target)
    parent = os.path.dirname(os.path.normpath(target))
    need = int((summary["bytes"] + _tree_bytes(target)) * float(margin))
    free = shutil.disk_usage(parent).free
    if free < need:
        raise _cee(f"{parent} has {free} bytes free, the backup of {target} and the staging of "
                   f"{source} need {need}")
    return {**summary, "free": free, "need": need, "comment": (
        f"{source} verified ({summary['members']} members, sha256 {summary['sha256'][:12]}...);"
        f" {free // 2**20} MiB free for {need // 2**20} MiB of backup + staging")}


def stage(archive, target, sha256, release, keep=None):
    """
    Verify ``archive`` and extract it into the staging dir ``<parent>/.<name>.staging`` next
    to ``target`` (a stale staging is removed first). The archive's top-level dir must be
    named like the target; its contents become the staging root, so the staging mirrors the
    target. Nothing in ``target`` is touched: run this while the service is still up.

    archive
        Absolute path of the release archive.

    target
        Absolute path of the program directory, e.g. ``/home/ecsc``; its parent must exist.

    sha256
        Expected sha256 of the archive.

    release
        Release id, e.g. ``20170220``.

    keep
        Globs of host-local files (relative to the target) that ``swap`` should carry over;
        stored with the staging and used by ``swap`` when it is given no ``keep``.

    Returns ``{"staging", "release", "files": <files and symlinks staged>}``.

    CLI Example:

    .. code-block:: bash

        salt '*' release.stage /var/cache/salt/minion/ecsc.tar /home/ecsc 3a7b...e1 20170220
    """
    archive = _check_archive(archive)
    paths = _paths(target)
    sha256 = _check_sha(sha256)
    release = _check_release(release)
    patterns = _check_keep(keep)
    live = _check_live_target(paths)
    staging_dir = paths["staging"]
    with _open_archive(archive) as fh:
        summary = _verify_fh(fh, archive, sha256, paths["name"], paths)
        for path in _remove_staging(paths):
            log.info("release: removed stale staging %s", path)
        try:
            os.mkdir(staging_dir, 0o755)
            fh.seek(0)
            with tarfile.open(fileobj=fh, mode="r:*") as tar:
                tar.errorlevel = 2
                tar.extractall(
                    staging_dir, filter=_archive("extract_filter")(archive, summary["top"], prefix=_prefix())
                )
            if live and os.geteuid() == 0:
                st = os.stat(paths["target"])
                _chown_tree(staging_dir, st.st_uid, st.st_gid)
                os.chmod(staging_dir, stat.S_IMODE(st.st_mode))
            # Taken before the hashing: a file changed after it no longer matches it.
            fingerprint = _fingerprint(staging_dir)
            listing = _scan(staging_dir)
            if listing["other"]:
                raise _cee(
                    f"release archive {archive}: staged special file {listing['other'][0]!r}"
                )
            files, links = _record_shape(listing)
            _write_json(
                paths["staging_meta"],
                {
                    "format": RECORD_FORMAT,
                    "release": release,
                    "archive": archive,
                    "archive_sha256": sha256,
                    "staged": _now_iso(),
                    "host": _minion_id(),
                    "target": paths["target"],
                    "keep": patterns,
                    "files": files,
                    "links": links,
                    "fingerprint": fingerprint,
                },
            )
        except tarfile.FilterError as exc:
            _remove_staging(paths)
            offender = f"{summary['top']}/{exc.tarinfo.name}"
            raise _cee(
                f"release archive {archive}: member {offender!r} refused during extraction "
                f"into {staging_dir}: {exc}"
            ) from exc
        except CommandExecutionError:
            _remove_staging(paths)
            raise
        except (OSError, tarfile.TarError) as exc:
            _remove_staging(paths)
            raise _cee(f"cannot extract release archive {archive} into {staging_dir}: {exc}") from exc
    log.info("release: staged %s (%s) into %s", archive, release, staging_dir)
    return {"staging": staging_dir, "release": release, "files": len(files) + len(links)}


def staging_status(target):
    """
    Describe the staging of ``target`` (read-only; ``intact`` as ``swap`` checks it: the
    files changed since their fingerprint are re-hashed).

    target
        Absolute path of the program directory.

    Returns ``{"staging": <path>, "present": bool, "release", "archive_sha256", "staged",
    "files": <count>, "intact": bool}`` (release etc. None when nothing is staged).

    CLI Example:

    .. code-block:: bash

        salt '*' release.staging_status /home/ecsc
    """
    paths = _paths(target)
    meta = _staging_meta(paths)
    ret = {
        "staging": paths["staging"],
        "present": meta is not None,
        "release": None,
        "archive_sha256": None,
        "staged": None,
        "files": 0,
        "intact": None,
    }
    if meta is None:
        return ret
    ret.update(
        release=meta.get("release"),
        archive_sha256=meta.get("archive_sha256"),
        staged=meta.get("staged"),
        files=len(meta.get("files") or {}) + len(meta.get("links") or {}),
        intact=_staging_difference(paths, meta)[0] is None,
    )
    return ret


def _carry_local(target, staging_dir, patterns, files, links, release, undo):
    """
    Copy the live files matching ``patterns`` that the archive does not carry into the
    staging (each copy registered in ``undo``); returns {relpath: sha256} of those kept.
    """
    live_files = [rel for rel, _ in _tree("walk")(target).files]
    kept, shadowed, conflicts = _select_keep(patterns, live_files, set(files) | set(links))
    if conflicts:
        raise _cee(
            f"host-local file {os.path.join(target, conflicts[0])} (keep) lies below a "
            f"path that release {release} carries as a file"
        )
    for rel in shadowed:
        log.info("release: %s is carried by the archive; not keeping the live copy", rel)
    owner = _tree("default_owner")()
    local = {}
    for rel in kept:
        src, dst = os.path.join(target, rel), os.path.join(staging_dir, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        undo.append(lambda dst=dst: _remove(dst))  # also a copy cut short by a full disk
        sha, _, _ = _tree("copy_file")(src, dst, owner)
        local[rel] = sha
    return local


def swap(target, release, sha256=None, keep=None):
    """
    Put the staged release in place of the live program directory (the service must be
    stopped). Host-local files of the live tree matching ``keep`` that the archive does not
    carry are copied into the staging; every other file of the live tree that the archive
    does not carry is dropped (it remains in the backup). Then ``target`` is renamed to
    ``<parent>/.<name>.previous``, the staging to ``target`` (undone if it fails), the
    deployed record is written and ``.previous`` removed.

    target
        Absolute path of the program directory.

    release
        Release id the staging must hold.

    sha256
        When given, the staged archive's sha256 must equal it.

    keep
        Globs relative to the target, e.g. ``["conf/host.properties", "conf/*.local"]``;
        default: the ``keep`` given to ``stage``.

    Returns ``{"target", "release", "files": <count from the archive>, "kept": [relpaths]}``.

    CLI Example:

    .. code-block:: bash

        salt '*' release.swap /home/ecsc 20170220 keep='["conf/host.properties"]'
    """
    paths = _paths(target)
    release = _check_release(release)
    sha256 = _check_sha(sha256, required=False)
    target = paths["target"]
    staging_dir, previous = paths["staging"], paths["previous"]
    meta = _staging_meta(paths)
    if meta is None:
        raise _cee(f"nothing staged for {target} ({staging_dir}); run release.stage first")
    if meta.get("release") != release:
        raise _cee(f"staging {staging_dir} holds release {meta.get('release')}, not {release}")
    if sha256 is not None and meta.get("archive_sha256") != sha256:
        raise _cee(
            f"staging {staging_dir} is of archive sha256 {meta.get('archive_sha256')}, "
            f"not {sha256}"
        )
    patterns = _check_keep(keep) if keep is not None else _check_keep(meta.get("keep"))
    live = _check_live_target(paths)
    if os.path.lexists(previous):
        if not live:
            raise _cee(
                f"{target} is missing and {previous} exists: an earlier swap was interrupted; "
                f"run release.clean {target} to put the previous tree back"
            )
        _remove(previous)
    difference, files, links = _staging_difference(paths, meta)
    if difference:
        raise _cee(f"staging {staging_dir} changed since it was staged ({difference}); stage again")

    # One undo list for every step: on failure each done step is undone, newest first.
    undo = []
    step = f"carry host-local files of {target} into {staging_dir}"
    try:
        local = _carry_local(target, staging_dir, patterns, files, links, release, undo) if (
            live and patterns) else {}
        if live:
            step = f"rename {target} to {previous}"
            os.rename(target, previous)
            undo.append(lambda: os.rename(previous, target))
        step = f"rename {staging_dir} to {target}"
        os.rename(staging_dir, target)
        undo.append(lambda: os.rename(target, staging_dir))
        step = f"write {paths['record']}"
        _write_json(paths["record"], {
            "format": RECORD_FORMAT,
            "release": release,
            "archive_sha256": meta.get("archive_sha256"),
            "deployed": _now_iso(),
            "host": _minion_id(),
            "files": files,
            "links": links,
            "local": local,
        })
    except Exception as exc:  # every step's failure takes the same way back
        for action in reversed(undo):
            try:
                action()
            except OSError as undo_exc:
                log.error("release: undoing the swap of %s: %s", target, undo_exc)
        if isinstance(exc, CommandExecutionError):
            raise
        raise _cee(f"cannot {step} (swap undone, live tree put back as it was): {exc}") from exc
    for leftover in (previous, paths["staging_meta"]) if live else (paths["staging_meta"],):
        try:
            _remove(leftover)
        except OSError as exc:
            log.warning("release: could not remove %s: %s", leftover, exc)
    log.info("release: %s is now on %s", target, release)
    return {
        "target": target,
        "release": release,
        "files": len(files) + len(links),
        "kept": sorted(local),
    }


def unpack(archive, target, sha256, release, keep=None):
    """
    ``stage`` then ``swap`` in one go, for when no service stop is needed in between.

    archive, target, sha256, release, keep
        As for ``stage`` and ``swap``.

    Returns what ``swap`` returns: ``{"target", "release", "files", "kept"}``.

    CLI Example:

    .. code-block:: bash

        salt '*' release.unpack /var/cache/salt/minion/ecsc.tar /home/ecsc 3a7b...e1 20170220
    """
    staged = stage(archive, target, sha256, release, keep=keep)
    return swap(target, staged["release"], sha256=sha256, keep=keep)


def status(target):
    """
    Which release the program directory runs, and whether it still matches the deployed
    record (re-hashes every file).

    target
        Absolute path of the program directory.

    Returns ``{"target", "release", "archive_sha256", "deployed", "intact", "modified",
    "added", "removed", "local_modified"}``: ``added`` are files neither from the archive nor
    host-local; a changed (or missing) host-local file is listed in ``local_modified`` and is
    not drift. Without a record (e.g. deployed by hand before automation) ``release`` and
    ``intact`` are None.

    CLI Example:

    .. code-block:: bash

        salt '*' release.status /home/ecsc
    """
    paths = _paths(target)
    record_data = _read_json(paths["record"], "deployed record")
    ret = {
        "target": paths["target"],
        "release": None,
        "archive_sha256": None,
        "deployed": None,
        "intact": None,
        "modified": [],
        "added": [],
        "removed": [],
        "local_modified": [],
    }
    if record_data is None:
        return ret
    diff = _compare(record_data, _scan(paths["target"]))
    ret.update(diff)
    ret.update(
        release=record_data.get("release"),
        archive_sha256=record_data.get("archive_sha256"),
        deployed=record_data.get("deployed"),
        intact=not (diff["modified"] or diff["added"] or diff["removed"]),
    )
    return ret


def write_record(target, data=None):
    """
    Write or remove the deployed record of ``target`` (used by rollback after restoring a
    backup: write the restored release's record, or remove it when the release is unknown).

    target
        Absolute path of the program directory.

    data
        Dict with at least ``release`` and ``files`` ({relpath: sha256}); optional
        ``archive_sha256``, ``links``, ``local``, ``deployed``, ``host`` (defaults: None,
        {}, {}, now, this minion). None removes the record.

    Returns ``{"target", "record": <path>, "release": <id or None>, "removed": bool}``.

    CLI Example:

    .. code-block:: bash

        salt '*' release.write_record /home/ecsc
        salt '*' release.write_record /home/ecsc data='{"release": "v1", "files": {"a.jar": "3a7b...e1"}}'
    """
    paths = _paths(target)
    ret = {"target": paths["target"], "record": paths["record"], "release": None, "removed": False}
    if data is None:
        try:
            ret["removed"] = _remove(paths["record"])
        except OSError as exc:
            raise _cee(f"cannot remove {paths['record']}: {exc}") from exc
        return ret
    if not isinstance(data, dict):
        raise _sie(f"data must be a dict (or None to remove the record), got {data!r}")
    rec = dict(data)
    rec["format"] = RECORD_FORMAT
    rec["release"] = _check_release(data.get("release"))
    if data.get("archive_sha256") is not None:
        rec["archive_sha256"] = _check_sha(data["archive_sha256"])
    else:
        rec["archive_sha256"] = None
    for key, check_sha in (("files", True), ("links", False), ("local", True)):
        value = data.get(key, {} if key != "files" else None)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and (not check_sha or SHA256_RE.match(v))
            for k, v in value.items()
        ):
            raise _sie(f"record {key} must be a dict of relpath: {'sha256' if check_sha else 'link target'}")
        rec[key] = value
    rec.setdefault("deployed", _now_iso())
    rec["deployed"] = rec["deployed"] or _now_iso()
    rec["host"] = rec.get("host") or _minion_id()
    if not os.path.isdir(paths["parent"]):
        raise _cee(f"parent dir {paths['parent']} of target {paths['target']} does not exist")
    try:
        _write_json(paths["record"], rec)
    except OSError as exc:
        raise _cee(f"cannot write {paths['record']}: {exc}") from exc
    ret["release"] = rec["release"]
    return ret


def read_record(target):
    """
    The deployed record of ``target`` as written at deploy time, or ``None`` when there is
    none (e.g. a release deployed by hand). The upgrade keeps it with the backup, so a
    rollback can put it back with ``release.write_record``.

    target
        Absolute path of the program directory.

    CLI Example:

    .. code-block:: bash

        salt '*' release.read_record /home/ecsc
    """
    paths = _paths(target)
    if not os.path.exists(paths["record"]):
        return None
    return _read_json(paths["record"], "deployed record")


def leftovers(target):
    """
    List leftovers next to ``target`` (read-only, for the compliance check): the staging dir
    and its description, a ``.previous`` tree of an unfinished swap, temp files of the
    record, and an uploaded ``<parent>/<name>.tar`` from the manual procedure.

    target
        Absolute path of the program directory.

    Returns a sorted list of paths.

    CLI Example:

    .. code-block:: bash

        salt '*' release.leftovers /home/ecsc
    """
    paths = _paths(target)
    found = [
        paths[key]
        for key in ("staging", "staging_meta", "previous", "upload")
        if os.path.lexists(paths[key])
    ]
    return sorted(found + _temp_files(paths))


def _swap_left(paths):
    """
    How far a swap that was cut short got, from what it left (see ``swap``: carry host-local
    files, rename the live tree to ``.previous``, rename the staging to the target, write the
    record, remove ``.previous`` and the staging description):

    - None: no ``.previous`` (no swap cut short);
    - ``between-renames``: the target is missing, ``.previous`` holds the last live tree;
    - ``before-record``: the staged tree is in place (it matches the staging description)
      but its record was not written: ``.previous`` is the live tree of before, whole;
    - ``after-record``: the target matches its record; ``.previous`` is what the swap was
      removing (maybe partly removed);
    - ``unknown``: a ``.previous`` beside a tree that is neither (not one of this swap's).
    """
    if not os.path.lexists(paths["previous"]):
        return None
    if not os.path.lexists(paths["target"]):
        return "between-renames"
    listing = _scan(paths["target"])
    record_data = _read_json(paths["record"], "deployed record")
    meta = _read_json(paths["staging_meta"], "staging description")
    # The staging description goes only after the record is written: with it still there
    # and the live tree being what was staged, the record must be of that same release.
    if meta is not None and _first_difference(meta, listing) is None:
        if record_data is None or record_data.get("release") != meta.get("release") or (
                record_data.get("archive_sha256") != meta.get("archive_sha256")):
            return "before-record"
    if record_data is not None:
        diff = _compare(record_data, listing)
        if not (diff["modified"] or diff["added"] or diff["removed"]):
            return "after-record"
    return "unknown"


def interrupted(target):
    """
    What an interrupted ``stage`` or ``swap`` left next to ``target`` (read-only; it
    re-hashes the live tree only when a ``.previous`` tree is there).

    target
        Absolute path of the program directory.

    Returns ``{"target", "swap", "staged", "leftovers"}``: ``swap`` says how far a swap cut
    short got (None: no swap was cut short; ``between-renames``: the target is missing and
    ``.previous`` holds the last live tree; ``before-record``: the staged tree is in place
    without its record, ``.previous`` is the live tree of before; ``after-record``: the swap
    was done and was removing ``.previous``; ``unknown``: a ``.previous`` no swap of the
    staging left); ``staged`` is the release of the staging description (or None);
    ``leftovers`` what :py:func:`clean` removes or puts back (the uploaded archive is not
    one: see :py:func:`leftovers`).

    CLI Example:

    .. code-block:: bash

        salt '*' release.interrupted /home/ecsc
    """
    paths = _paths(target)
    meta = _read_json(paths["staging_meta"], "staging description") if os.path.lexists(
        paths["staging_meta"]) else None
    found = [paths[key] for key in ("staging", "staging_meta", "previous")
             if os.path.lexists(paths[key])]
    return {
        "target": paths["target"],
        "swap": _swap_left(paths),
        "staged": (meta or {}).get("release"),
        "leftovers": sorted(found + _temp_files(paths)),
    }


def clean(target, drop_previous=True):
    """
    Remove what an interrupted ``stage`` or ``swap`` left next to ``target``: the staging,
    its description, temp files (never backups, never the uploaded archive), and a
    ``.previous`` tree, except where it is the last whole live tree: when ``target`` is
    missing (a swap cut between its two renames) ``.previous`` is renamed back to
    ``target``; when the staged tree is in place without its record (a swap cut before
    writing it), the swap is undone (the staged tree goes, ``.previous`` becomes ``target``
    again). See :py:func:`interrupted`.

    target
        Absolute path of the program directory.

    drop_previous
        False: a ``.previous`` beside a live tree that is not the one to put back is kept
        (reported under ``kept``), e.g. when no backup holds it.

    Returns ``{"target", "swap", "removed": [paths], "restored": <path or None>,
    "kept": [paths]}`` (``swap`` as :py:func:`interrupted` found it).

    CLI Example:

    .. code-block:: bash

        salt '*' release.clean /home/ecsc
        salt '*' release.clean /home/ecsc drop_previous=False
    """
    paths = _paths(target)
    removed, kept, restored = [], [], None
    swap_left = _swap_left(paths)
    try:
        if swap_left == "between-renames":
            os.rename(paths["previous"], paths["target"])
            restored = paths["previous"]
        elif swap_left == "before-record":
            # The staged tree goes back where it came from (and is removed with the staging).
            _remove(paths["staging"])
            os.rename(paths["target"], paths["staging"])
            os.rename(paths["previous"], paths["target"])
            restored = paths["previous"]
        elif swap_left is not None:
            if drop_previous:
                _remove(paths["previous"])
                removed.append(paths["previous"])
            else:
                kept.append(paths["previous"])
        removed.extend(_remove_staging(paths))
        for path in _temp_files(paths):
            _remove(path)
            removed.append(path)
    except OSError as exc:
        raise _cee(f"cannot clean up next to {paths['target']}: {exc}") from exc
    if restored:
        log.warning("release: %s put back as %s (swap cut short: %s)", restored,
                    paths["target"], swap_left)
    return {"target": paths["target"], "swap": swap_left, "removed": sorted(removed),
            "restored": restored, "kept": kept}
