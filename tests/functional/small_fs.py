"""
A small real filesystem for disk-full tests: a tmpfs of a given size mounted under the
test's tmp_path (needs root), unmounted by the fixture's finalizer whatever happens.
"""

import os
import subprocess

import pytest


def mount_tmpfs(path, size="2m"):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True)
    return path


def umount(path):
    subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path, name="filler"):
    """Write into ``path`` until the filesystem is full (a real ENOSPC); returns the file."""
    filler = path / name
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    # Leftover partial blocks: fill them one byte at a time.
    with open(filler, "ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0")
        except OSError:
            pass
    return filler


def small_fs(tmp_path, request):
    """
    For a test module's fixture: a 2 MiB tmpfs at tmp_path/small (a real ENOSPC once
    full), unmounted by a finalizer of ``request``.
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "small"
    mount_tmpfs(path)
    request.addfinalizer(lambda: umount(path))
    return path
