"""
One upgrade or rollback at a time: the rollout lock, kept on the master (this runner is never
synced to minions).

:depends: fcntl (POSIX), psutil

The lock is a record file ``<master cachedir>/rollout.lock`` naming its holder: the kind of
run, the hosts it works on, an ``owner`` token (one per orchestration run), and the pid and
process start time of the process that runs the orchestration (``salt-run``, or the master's
scheduler or reactor process). The orchestrations take it in their first step
(``rolloutlock.acquire``) and give it back in their last one (``rolloutlock.release``),
whether the run passed or failed, so a long-lived process (reactor, salt-api) never keeps
it. A record whose holder is gone (its pid is not running, or runs a process started at
another time: the pid was reused) is a stale lock, left by a run that was killed; the next
``acquire`` reports it and takes it over.

Every read and write of the record happens under an ``flock`` of the file itself, held only
for that moment, so two runs can never both take the lock; the file is opened with
``O_NOFOLLOW`` and must be a regular file of the master's user (a symlink planted in the
cache dir never makes the master write elsewhere). Releasing removes the file.

.. code-block:: yaml

    rollout-lock:
      salt.runner:
        - name: rolloutlock.acquire
        - kind: upgrade
        - hosts: [ecsc-1, ecsc-2]
        - owner: 6f1c...              # the same token the release step passes
"""

import datetime
import errno
import fcntl
import json
import logging
import os
import stat

import psutil
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "rolloutlock"

LOCK_NAME = "rollout.lock"
# Process start times are read from /proc in clock ticks: equal within this many seconds.
START_TIME_SLACK = 0.05


def __virtual__():
    return __virtualname__


def _path():
    return os.path.join(__opts__["cachedir"], LOCK_NAME)


def _open_locked(path, create, mode):
    """
    An fd of the lock file with ``flock(mode)`` held, or None when it does not exist (and
    ``create`` is False). Retries when the file was removed or replaced between the open
    and the flock (a release unlinks it), so the flock is always on the file at ``path``.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    while True:
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CommandExecutionError(
                    f"rollout lock {path} is a symbolic link: refusing to follow it "
                    "(remove it; the lock is a plain file of the master's user)"
                ) from exc
            raise CommandExecutionError(f"cannot open rollout lock {path}: {exc}") from exc
        try:
            held = os.fstat(fd)
            if not stat.S_ISREG(held.st_mode) or held.st_uid != os.geteuid():
                raise CommandExecutionError(
                    f"rollout lock {path} is not a regular file owned by uid {os.geteuid()}: "
                    "refusing to use it"
                )
            fcntl.flock(fd, mode)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # released and removed meanwhile: open the new one


def _read(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        raw += chunk
    try:
        record = json.loads(raw.decode() or "null")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _write(fd, record):
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record, sort_keys=True).encode(), 0)
    os.fsync(fd)


def _this_process():
    proc = psutil.Process()
    return {"pid": proc.pid, "pid_started": proc.create_time()}


def _gone(record):
    """Why the record's holder no longer runs (a sentence), or None when it does."""
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return f"the record names no process (pid {pid!r})"
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return f"process {pid} is gone"
    except psutil.Error as exc:  # AccessDenied etc.: cannot prove it gone, count it alive
        log.warning("rolloutlock: cannot inspect holder pid %s: %s", pid, exc)
        return None
    recorded = record.get("pid_started")
    if not isinstance(recorded, (int, float)) or abs(started - recorded) > START_TIME_SLACK:
        return f"pid {pid} now belongs to another process (started at {started}, not {recorded})"
    return None


def _describe(record):
    hosts = record.get("hosts") or []
    return (
        f"{record.get('kind') or 'rollout'} pid {record.get('pid')} started "
        f"{record.get('started')}" + (f" on hosts {', '.join(hosts)}" if hosts else "")
    )


def _hosts_list(hosts):
    if hosts is None:
        return []
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, (list, tuple)):
        raise SaltInvocationError(f"hosts must be a list of minion ids, got {hosts!r}")
    return [str(h) for h in hosts]


def acquire(kind, owner, hosts=None, jobs=None):
    """
    Take the rollout lock for one orchestration run, or raise ``CommandExecutionError``
    naming the run that holds it. A stale lock (its holder's process is gone or its pid was
    reused) is taken over and reported in the return (``took_over``). Taking it again with
    the same ``owner`` is a no-op.

    kind
        What runs: ``upgrade`` or ``rollback``.

    owner
        A token naming this run (the orchestration renders one); ``release`` needs it.

    hosts
        The minion ids the run works on (the compliance check skips them meanwhile).

    jobs
        The state jobs the run publishes ahead, waiting for their turns
        (``[{"jid", "hosts"}]``, ``rollout.publish``): a run that takes over this lock when
        it is stale ends the waits the killed run left (``rollout.close``).

    The holder is the process that runs this function: an orchestration step's is the
    process running the orchestration. Run alone from the CLI, the lock is stale as soon as
    that ``salt-run`` exits (handy to see the refusal or takeover, not to block runs).

    CLI Example:

    .. code-block:: bash

        salt-run rolloutlock.acquire upgrade owner=manual-1 hosts='[ecsc-1, ecsc-2]'
    """
    if not owner:
        raise SaltInvocationError("owner is required: the token the release step will pass")
    path = _path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = _open_locked(path, True, fcntl.LOCK_EX)
    try:
        current = _read(fd)
        took_over = None
        if current:
            if current.get("owner") == str(owner):
                return {"path": path, "acquired": True, "holder": current, "took_over": None}
            why = _gone(current)
            if why is None:
                raise CommandExecutionError(
                    f"another {current.get('kind') or 'rollout'} is running, the rollout lock "
                    f"is held by it: {_describe(current)} "
                    f"(owner {current.get('owner')}); one upgrade or rollback at a time. "
                    f"Wait for it, or if that process is stuck, stop it; lock {path}"
                )
            took_over = {**current, "stale": why}
            log.warning("rolloutlock: stale lock taken over (%s): %s", why, _describe(current))
        record = {
            "kind": str(kind),
            "hosts": _hosts_list(hosts),
            "owner": str(owner),
            "jobs": list(jobs or []),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **_this_process(),
        }
        # The compliance check of older records read "hosts a, b" from here.
        record["detail"] = f"hosts {', '.join(record['hosts'])}" if record["hosts"] else None
        _write(fd, record)
    finally:
        os.close(fd)
    ret = {"path": path, "acquired": True, "holder": record, "took_over": took_over}
    if took_over and took_over.get("jobs"):
        # The killed run's hosts may still wait for their turns: end those waits now, so
        # this run does not wait for them (their jobs end touching nothing).
        try:
            ret["closed"] = __salt__["rollout.close"](took_over["jobs"], took_over["owner"])
        except Exception as exc:  # pylint: disable=broad-except
            log.warning("rolloutlock: cannot end the waits of run %s: %s",
                        took_over.get("owner"), exc)
    if took_over:
        ret["comment"] = (
            f"stale rollout lock taken over: {took_over['stale']} "
            f"(it was held by {_describe(took_over)}; that run was interrupted: check "
            "its hosts, this run resumes them)"
        )
    return ret


def holder():
    """
    The record of the run that holds the rollout lock, or ``None`` when no live run holds
    it (a stale record of a killed run counts as free).

    CLI Example:

    .. code-block:: bash

        salt-run rolloutlock.holder
    """
    fd = _open_locked(_path(), False, fcntl.LOCK_SH)
    if fd is None:
        return None
    try:
        current = _read(fd)
    finally:
        os.close(fd)
    if not current or _gone(current):
        return None
    return current


def release(owner):
    """
    Give the rollout lock back: remove it if the run named by ``owner`` holds it. Anything
    else (no lock, another run's lock) is left as it is and reported, never an error, so the
    last step of a failed run cannot fail on it.

    owner
        The token the run passed to ``acquire``.

    CLI Example:

    .. code-block:: bash

        salt-run rolloutlock.release owner=manual-1
    """
    path = _path()
    fd = _open_locked(path, False, fcntl.LOCK_EX)
    if fd is None:
        return {"path": path, "released": False, "comment": "no rollout lock was held"}
    try:
        current = _read(fd)
        if current and current.get("owner") != str(owner):
            return {
                "path": path,
                "released": False,
                "holder": current,
                "comment": f"the lock belongs to another run ({_describe(current)}): left as is",
            }
        os.unlink(path)  # under the flock: a waiting acquire sees the inode gone and retries
    finally:
        os.close(fd)
    return {"path": path, "released": True, "holder": current}
