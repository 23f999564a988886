"""
One upgrade or rollback at a time: an exclusive lock on the master, held by the process that
runs the orchestration and released by the kernel when that process ends (no stale lock
after a crash).

:depends: fcntl (POSIX)

The lock file is ``<cachedir>/rollout.lock`` (the master's cache dir when used from an
orchestration); it also records who holds it, for the refusal message and for the compliance
check, which reports "skipped: upgrade in progress" while it is held.
"""

import datetime
import fcntl
import json
import logging
import os

from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "rolloutlock"

# Held descriptors, by lock path: they must outlive the loader's module objects.
_HELD = {}


def __virtual__():
    return __virtualname__


def _path():
    return os.path.join(__opts__["cachedir"], "rollout.lock")


def _read(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        return json.loads(raw.decode() or "{}")
    except ValueError:
        return {}


def acquire(kind, detail=None):
    """
    Take the rollout lock for this process, or raise ``CommandExecutionError`` naming the
    run that holds it. Taking it again in the same process is a no-op.

    kind
        What runs: ``upgrade`` or ``rollback``.

    detail
        Anything worth showing to whoever is refused (e.g. the targeted hosts).

    CLI Example:

    .. code-block:: bash

        salt-run salt.cmd rolloutlock.acquire upgrade
    """
    path = _path()
    if path in _HELD:
        return {"path": path, "acquired": False, "held": True}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise CommandExecutionError(
            f"another {holder.get('kind', 'rollout')} is running (pid {holder.get('pid')}, "
            f"started {holder.get('started')}, {holder.get('detail') or ''}): "
            f"one upgrade or rollback at a time; lock {path}"
        )
    info = {
        "kind": kind,
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "detail": detail,
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[path] = fd
    return {"path": path, "acquired": True, **info}


def holder():
    """
    Who holds the rollout lock: the holder's record, or ``None`` when no run holds it.

    CLI Example:

    .. code-block:: bash

        salt-run salt.cmd rolloutlock.holder
    """
    path = _path()
    if path in _HELD:
        return _read(_HELD[path])
    if not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def release():
    """
    Release the lock if this process holds it (ending the process releases it too).

    CLI Example:

    .. code-block:: bash

        salt-run salt.cmd rolloutlock.release
    """
    fd = _HELD.pop(_path(), None)
    if fd is None:
        return False
    os.close(fd)
    return True
