"""
Safety checks of a release archive's members, before anything is extracted, and the
extraction filter that applies them once more against the real staging dir.

Builds on tarfile's ``data`` extraction filter (special files, absolute links, names and
links leaving the destination) and adds:

- absolute member names are refused (the data filter would silently strip the ``/``);
- ``..`` components are refused anywhere in a name or a hard link target;
- every member lies in ONE top-level directory (``top`` when given), itself a directory;
- setuid, setgid and sticky bits are refused (the data filter would silently clear them);
- symbolic links resolve inside the top-level directory, through the archive's other
  symlinks (also later ones) as realpath would; a hard link points to an earlier regular
  file of the archive;
- no member is written through a symlink or file of the archive, no path appears twice
  (except repeated directory entries), and no file or link takes the place of a directory
  that an earlier member created implicitly (``svc/d/f`` then ``svc/d``);
- every path fits the filesystem it is unpacked to: each name at most NAME_MAX bytes, the
  full staged and live paths (and link targets) below PATH_MAX.

Errors are ``CommandExecutionError`` naming the archive and the first bad member.
Reached as ``__utils__["rollout_archive.<function>"]``.

:depends: Python >= 3.11.4 (tarfile extraction filters)
"""

import hashlib
import os
import stat
import tarfile
import uuid

from salt.exceptions import CommandExecutionError

__virtualname__ = "rollout_archive"


def __virtual__():
    # Utilities of this formula, always available where it runs (minions and master).
    return __virtualname__


_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
_MAX_LINK_HOPS = 40
# Linux's limits, used when the destination is not known (or pathconf cannot tell).
_NAME_MAX = 255
_PATH_MAX = 4096


def resolve(parts, links):
    """
    Resolve a path (components from the archive root, the first being the top-level dir)
    like realpath would, through the archive's symlinks ``links`` ({path: linkname}).
    Returns the resolved components, or None when the path goes above the top-level dir at
    any step (``top/x -> ../top/y`` is refused too: while staged, the top dir is named
    ``.<name>.staging``, and ``..`` from it is the live parent). Raises ValueError on a
    symlink loop.
    """
    out, todo, hops = [], list(parts), 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if len(out) <= 1:
                return None
            out.pop()
            continue
        out.append(part)
        linkname = links.get("/".join(out))
        if linkname is not None:
            hops += 1
            if hops > _MAX_LINK_HOPS:
                raise ValueError("symlink loop")
            if linkname.startswith("/"):
                return None
            out.pop()
            todo[:0] = linkname.split("/")
    return out


def _limits(dests):
    """
    (NAME_MAX, PATH_MAX, longest destination prefix in bytes) for the directories the
    members land in (``dests``: e.g. the staging dir and the live program dir).
    """
    name_max, path_max, prefix = _NAME_MAX, _PATH_MAX, 0
    for dest in dests or ():
        parent = os.path.dirname(dest)
        try:
            name_max = min(name_max, os.pathconf(parent, "PC_NAME_MAX"))
            path_max = min(path_max, os.pathconf(parent, "PC_PATH_MAX"))
        except (OSError, ValueError):
            pass
        prefix = max(prefix, len(os.fsencode(dest)) + 1)
    return name_max, path_max, prefix


class MemberCheck:
    """
    Checks tar members one by one (``check``), then the archive as a whole (``finish``).
    ``dests``: the directories ``<top>/...`` is unpacked into (path length limits).
    """

    def __init__(self, archive, top=None, prefix="", dests=()):
        self.archive = archive
        self.top = top
        self.top_given = top is not None
        self.prefix = prefix
        self.kinds = {}  # normalised path -> "dir" | "file" | "symlink" | "hardlink"
        self.implicit = {}  # dir made implicitly -> name of the member below it
        self.links = {}  # normalised symlink path -> linkname
        self.names = {}  # normalised symlink path -> member name as in the archive
        self.members = 0
        self.bytes = 0
        self.name_max, self.path_max, self.dest_len = _limits(dests)
        # A root that does not exist: tarfile's data filter resolves names lexically there.
        self.vroot = os.path.join(os.sep, f".release-verify-{uuid.uuid4().hex}")

    def _reject(self, name, reason):
        raise CommandExecutionError(
            f"{self.prefix}release archive {self.archive}: member {name!r} {reason}"
        )

    def _link_escapes(self, path, linkname):
        parts = path.split("/")[:-1] + linkname.split("/")
        resolved = resolve(parts, self.links)
        return not resolved or resolved[0] != self.top

    def _check_length(self, name, parts, linkname):
        for part in parts:
            if len(os.fsencode(part)) > self.name_max:
                self._reject(
                    name,
                    f"has a path component of {len(os.fsencode(part))} bytes; the filesystem "
                    f"allows {self.name_max}",
                )
        # Below the top dir the member lands at <dest>/<rest>; without a dest, at /<path>.
        rest = "/".join(parts[1:]) if self.dest_len else "/".join(parts)
        length = max(self.dest_len, 1) + len(os.fsencode(rest))
        if length >= self.path_max:
            self._reject(
                name,
                f"is nested too deep: its unpacked path would be {length} bytes; the "
                f"filesystem allows {self.path_max - 1}",
            )
        if linkname and len(os.fsencode(linkname)) >= self.path_max:
            self._reject(name, f"has a link target longer than {self.path_max - 1} bytes")

    def check(self, member):
        """
        Check one member; returns its path below the top-level dir ("" for the top dir).
        """
        name = member.name
        if name.startswith("/"):
            self._reject(name, "has an absolute path")
        raw = name.split("/")
        if ".." in raw:
            self._reject(name, "has a '..' path component")
        parts = [p for p in raw if p not in ("", ".")]
        if not parts:
            if member.isdir():  # a "./" entry
                self.members += 1
                return None
            self._reject(name, "has an empty name")
        self._check_length(name, parts, member.linkname if member.issym() else "")
        try:
            tarfile.data_filter(member, self.vroot)
        except tarfile.FilterError as exc:
            reason = str(exc).replace(self.vroot, "<archive root>")
            self._reject(
                name, f"is refused by tarfile's data filter ({type(exc).__name__}: {reason})"
            )
        if member.mode & _SPECIAL_BITS:
            self._reject(name, f"has setuid/setgid/sticky bits (mode {member.mode:04o})")
        top = parts[0]
        if self.top is None:
            self.top = top
        elif top != self.top:
            if self.top_given:
                self._reject(name, f"is outside the expected top-level dir {self.top!r}")
            self._reject(
                name,
                f"is outside the top-level dir {self.top!r} (an archive must hold one "
                "top-level dir)",
            )
        if len(parts) == 1 and not member.isdir():
            self._reject(name, "is a top-level entry that is not a directory")
        path = "/".join(parts)
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            kind = self.kinds.get(parent)
            if kind not in (None, "dir"):
                self._reject(name, f"lies below {parent!r}, a {kind} in the archive")
            if kind is None:
                # tar creates missing parents as directories: a later file or link of the
                # same name would replace the directory holding this member.
                self.kinds[parent] = "dir"
                self.implicit[parent] = name
        previous = self.kinds.get(path)
        if previous is not None and not (previous == "dir" and member.isdir()):
            if path in self.implicit and previous == "dir":
                self._reject(
                    name,
                    f"conflicts with the directory {path!r} that member "
                    f"{self.implicit[path]!r} created implicitly",
                )
            self._reject(name, "appears twice in the archive")
        if member.issym():
            self.links[path] = member.linkname
            self.names[path] = name
            try:
                escapes = self._link_escapes(path, member.linkname)
            except ValueError:
                self._reject(name, f"is a symlink loop (-> {member.linkname!r})")
            if escapes:
                self._reject(
                    name,
                    f"is a symlink to {member.linkname!r}, which leaves the top-level dir "
                    f"{self.top!r}",
                )
            kind = "symlink"
        elif member.islnk():
            lparts = member.linkname.split("/")
            linkpath = "/".join(p for p in lparts if p not in ("", "."))
            if ".." in lparts or self.kinds.get(linkpath) not in ("file", "hardlink"):
                self._reject(
                    name,
                    f"is a hard link to {member.linkname!r}, which is not an earlier regular "
                    f"file inside the top-level dir {self.top!r}",
                )
            kind = "hardlink"
        elif member.isdir():
            kind = "dir"
        else:
            kind = "file"
            self.bytes += member.size
        self.kinds[path] = kind
        self.members += 1
        return "/".join(parts[1:])

    def finish(self):
        """
        Whole-archive checks; returns (top, members, bytes).
        """
        if self.top is None:
            raise CommandExecutionError(f"{self.prefix}release archive {self.archive} has no members")
        # Symlinks can chain through links that came later in the archive: resolve all of
        # them again against the complete set.
        for path, linkname in self.links.items():
            try:
                escapes = self._link_escapes(path, linkname)
            except ValueError:
                self._reject(self.names[path], f"is a symlink loop (-> {linkname!r})")
            if escapes:
                self._reject(
                    self.names[path],
                    f"is a symlink to {linkname!r}, which leaves the top-level dir "
                    f"{self.top!r} through other symlinks of the archive",
                )
        return self.top, self.members, self.bytes


def check(fh, archive, sha256, top=None, prefix="", dests=()):
    """
    Verify the open archive ``fh``: its sha256 must equal ``sha256``, then every member is
    checked (module docstring). ``dests``: directories the top dir's content is unpacked
    into (path length limits). Leaves ``fh`` anywhere. Returns ``{"archive", "sha256",
    "top", "members", "bytes"}``.
    """
    found = hashlib.file_digest(fh, "sha256").hexdigest()
    if found != sha256:
        raise CommandExecutionError(
            f"{prefix}release archive {archive}: sha256 mismatch: expected {sha256}, "
            f"found {found}"
        )
    fh.seek(0)
    checker = MemberCheck(archive, top, prefix=prefix, dests=dests)
    try:
        with tarfile.open(fileobj=fh, mode="r:*") as tar:
            for member in tar:
                checker.check(member)
    except tarfile.TarError as exc:
        raise CommandExecutionError(
            f"{prefix}release archive {archive} is not a readable tar archive: {exc}"
        ) from exc
    top, members, size = checker.finish()
    return {"archive": archive, "sha256": found, "top": top, "members": members, "bytes": size}


def extract_filter(archive, top, prefix=""):
    """
    Extraction filter for staging: ``<top>/x`` -> ``x``, the top dir itself is skipped,
    then tarfile's data filter against the real staging dir, plus the setuid rule.
    """

    def _filter(member, dest_path):
        parts = [p for p in member.name.split("/") if p not in ("", ".")]
        if len(parts) <= 1:
            return None
        if member.name.startswith("/") or ".." in member.name.split("/") or parts[0] != top:
            raise CommandExecutionError(
                f"{prefix}release archive {archive}: member {member.name!r} is outside {top!r}"
            )
        if member.mode & _SPECIAL_BITS:
            raise CommandExecutionError(
                f"{prefix}release archive {archive}: member {member.name!r} has "
                "setuid/setgid/sticky bits"
            )
        changes = {"name": "/".join(parts[1:])}
        if member.islnk():
            lparts = [p for p in member.linkname.split("/") if p not in ("", ".")]
            changes["linkname"] = "/".join(lparts[1:])
        return tarfile.data_filter(member.replace(**changes, deep=False), dest_path)

    return _filter
