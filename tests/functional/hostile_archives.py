"""
Release archives built at test time with tarfile (no archives in git): a well-formed release
builder and the hostile corpus that ``release.verify`` / ``stage`` / ``unpack`` must refuse.

Every hostile case is a release of the top-level dir ``svc/`` with one offending member; the
``offender`` is the text the error must name (the member as it is in the archive).
"""

import dataclasses
import hashlib
import io
import tarfile
from typing import Callable

TOP = "svc"
_MTIME = 1487548800  # 2017-02-20


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _info(name, type_=tarfile.REGTYPE, mode=0o644, linkname="", size=0):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    info.linkname = linkname
    info.size = size
    info.mtime = _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def add_dir(tar, name, mode=0o755):
    tar.addfile(_info(name, tarfile.DIRTYPE, mode))


def add_file(tar, name, data=b"data\n", mode=0o644):
    tar.addfile(_info(name, mode=mode, size=len(data)), io.BytesIO(data))


def add_symlink(tar, name, linkname):
    tar.addfile(_info(name, tarfile.SYMTYPE, 0o777, linkname=linkname))


def add_hardlink(tar, name, linkname):
    tar.addfile(_info(name, tarfile.LNKTYPE, 0o644, linkname=linkname))


def add_special(tar, name, type_, major=1, minor=3):
    info = _info(name, type_, 0o644)
    info.devmajor, info.devminor = major, minor
    tar.addfile(info)


def build_release(path, top, entries, mode="w"):
    """
    Write a well-formed release archive at ``path``; ``entries`` maps paths below ``top``
    to bytes (a file), ``("link", target)``, ``("hardlink", relpath)``, ``("dir",)`` or
    ``("exec", bytes)`` (a 0755 file), in the dict's order (a hard link after its target).
    Parent dirs are added. Returns the sha256.
    """
    with tarfile.open(path, mode) as tar:
        add_dir(tar, top)
        dirs = {top}
        for rel in entries:
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = "/".join([top] + parts[:i])
                if d not in dirs:
                    add_dir(tar, d)
                    dirs.add(d)
            name, value = f"{top}/{rel}", entries[rel]
            if isinstance(value, bytes):
                add_file(tar, name, value)
            elif value[0] == "link":
                add_symlink(tar, name, value[1])
            elif value[0] == "hardlink":
                add_hardlink(tar, name, f"{top}/{value[1]}")
            elif value[0] == "exec":
                add_file(tar, name, value[1], mode=0o755)
            elif value[0] == "dir":
                if name not in dirs:
                    add_dir(tar, name)
                    dirs.add(name)
            else:  # pragma: no cover - test author error
                raise ValueError(value)
    return sha256_of(path)


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    build: Callable  # build(tar): adds the members after the good ``svc/`` + ``svc/ok.txt``
    offender: str  # text the error must contain (the member's name)
    why: str  # what the error says about it (substring, lower case)


def _case(id_, offender, why):
    def deco(func):
        CASES.append(Case(id_, func, offender, why))
        return func

    return deco


CASES = []


@_case("path-traversal", "svc/../../etc/x", "'..'")
def _(tar):
    add_file(tar, "svc/../../etc/x")


@_case("absolute-path", "/etc/release-test-x", "absolute path")
def _(tar):
    add_file(tar, "/etc/release-test-x")


@_case("absolute-path-in-top", "/svc/conf/x", "absolute path")
def _(tar):
    add_file(tar, "/svc/conf/x")


@_case("symlink-escape", "svc/evil", "data filter")
def _(tar):
    add_symlink(tar, "svc/evil", "../../../../etc/passwd")


@_case("symlink-absolute", "svc/abs", "data filter")
def _(tar):
    add_symlink(tar, "svc/abs", "/etc/passwd")


@_case("symlink-leaves-top", "svc/up", "leaves the top-level dir")
def _(tar):
    add_symlink(tar, "svc/up", "../other/x")


@_case("symlink-through-parent", "svc/back", "leaves the top-level dir")
def _(tar):
    # Inside the archive root this lands on svc/ok.txt, but while staged "../svc" is the live
    # program directory next to the staging.
    add_symlink(tar, "svc/back", "../svc/ok.txt")


@_case("symlink-chain", "svc/a", "leaves the top-level dir")
def _(tar):
    # svc/a -> l/.. looks harmless until svc/l -> . (which comes later) makes it svc/..
    add_symlink(tar, "svc/a", "l/..")
    add_symlink(tar, "svc/l", ".")


@_case("write-through-symlink", "svc/link/x", "lies below")
def _(tar):
    add_dir(tar, "svc/sub")
    add_symlink(tar, "svc/link", "sub")
    add_file(tar, "svc/link/x")


@_case("symlink-replaced-by-file", "svc/a", "appears twice")
def _(tar):
    add_symlink(tar, "svc/a", "ok.txt")
    add_file(tar, "svc/a")


@_case("hardlink-escape", "svc/hl", "data filter")
def _(tar):
    add_hardlink(tar, "svc/hl", "../../etc/passwd")


@_case("hardlink-outside-top", "svc/hl", "hard link")
def _(tar):
    add_hardlink(tar, "svc/hl", "etc/passwd")


@_case("char-device", "svc/dev/null", "special file")
def _(tar):
    add_dir(tar, "svc/dev")
    add_special(tar, "svc/dev/null", tarfile.CHRTYPE, 1, 3)


@_case("block-device", "svc/sda", "special file")
def _(tar):
    add_special(tar, "svc/sda", tarfile.BLKTYPE, 8, 0)


@_case("fifo", "svc/pipe", "special file")
def _(tar):
    add_special(tar, "svc/pipe", tarfile.FIFOTYPE, 0, 0)


@_case("setuid-file", "svc/bin/tool", "setuid")
def _(tar):
    add_dir(tar, "svc/bin")
    add_file(tar, "svc/bin/tool", b"#!/bin/sh\n", mode=0o4755)


@_case("setgid-dir", "svc/shared", "setuid/setgid/sticky")
def _(tar):
    add_dir(tar, "svc/shared", mode=0o2775)


@_case("sticky-dir", "svc/tmp", "setuid/setgid/sticky")
def _(tar):
    add_dir(tar, "svc/tmp", mode=0o1777)


@_case("two-top-dirs", "other/x.txt", "outside")
def _(tar):
    add_file(tar, "other/x.txt")


@_case("top-level-file", "README", "outside")
def _(tar):
    add_file(tar, "README")


@_case("implicit-dir-replaced-by-file", "svc/d", "created implicitly")
def _(tar):
    # svc/d/f makes tar create svc/d as a directory; the file svc/d would then replace it.
    add_file(tar, "svc/d/f")
    add_file(tar, "svc/d")


@_case("implicit-dir-replaced-by-link", "svc/d", "created implicitly")
def _(tar):
    add_file(tar, "svc/d/f")
    add_symlink(tar, "svc/d", "ok.txt")


LONG_NAME = "svc/" + "n" * 300


@_case("name-too-long", LONG_NAME, "the filesystem allows")
def _(tar):
    add_file(tar, LONG_NAME)


TOO_DEEP = "svc/" + "/".join(["d" * 200] * 21) + "/f"


@_case("nested-too-deep", TOO_DEEP, "nested too deep")
def _(tar):
    # Each name is fine; the path below the program dir is longer than PATH_MAX.
    add_file(tar, TOO_DEEP)


def write_case(case, path):
    """
    Write the hostile archive of ``case`` at ``path``; returns its sha256.
    """
    with tarfile.open(path, "w") as tar:
        add_dir(tar, TOP)
        add_file(tar, f"{TOP}/ok.txt", b"fine\n")
        case.build(tar)
    return sha256_of(path)


def write_wrong_top(path):
    """
    A well-formed archive whose single top-level dir is not ``svc``; the first member
    (``other``) is the offender when it is staged into a dir named ``svc``.
    """
    return build_release(path, "other", {"ok.txt": b"fine\n"})


def write_empty(path):
    with tarfile.open(path, "w"):
        pass
    return sha256_of(path)
