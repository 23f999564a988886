"""
A host's turn in a rolling upgrade: the master's go (or abort) for one run, kept on the host.

:depends: none

Why: orch.upgrade publishes every host's state job at once, when the run starts, so that
each minion has its job running, its pillar compiled and its SLS rendered while the hosts
before it upgrade. The job's first state (``turn.taken``) then waits here for the master's
verdict, and the master gives it (``turn.give``, a job that only writes one small file) the
moment the host's wave may start: a wave costs one tiny job instead of a whole state-job
round (publish, fork, pillar, render: about 3 s on the lab).

The verdict is a file ``<minion cachedir>/rollout_turn/<run>`` holding ``go`` or ``abort``,
created exclusively: the first verdict for a run holds, so an abort sent when a run ends
never overturns a go already given, and a go that arrives before the job reaches its wait
is not lost. Files older than a week are pruned when a verdict is given.
"""

import errno
import logging
import os
import time

import salt.utils.files
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "turn"

VERDICTS = ("go", "abort")
#: How often a waiting host looks for its verdict (the issue's bar: 100 ms or finer).
POLL_SECONDS = 0.05
_KEEP_SECONDS = 7 * 86400


def __virtual__():
    return __virtualname__


def _dir():
    return os.path.join(__opts__["cachedir"], "rollout_turn")


def _path(run):
    run = str(run)
    if not __utils__["rollout_ids.is_name"](run):
        raise SaltInvocationError(f"run must be a run token (letters, digits, . _ -), got {run!r}")
    return os.path.join(_dir(), run)


def _prune():
    cutoff = time.time() - _KEEP_SECONDS
    try:
        entries = list(os.scandir(_dir()))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            pass  # another give pruned it


def get(run):
    """
    The verdict given for ``run`` on this host: ``go``, ``abort``, or ``None`` (none yet).

    run
        The orchestration run's token (pillar ``rollout_turn:run``).

    CLI Example:

    .. code-block:: bash

        salt ecsc-2 turn.get 6f1c0a...
    """
    try:
        with salt.utils.files.fopen(_path(run), "r") as handle:
            verdict = handle.read().strip()
    except FileNotFoundError:
        return None
    return verdict if verdict in VERDICTS else None


def give(run, verdict="go"):
    """
    Give this host its turn in ``run`` (``go``), or end its wait (``abort``). The first
    verdict given for a run holds: returns the verdict that holds now.

    run
        The orchestration run's token.

    verdict
        ``go`` (default) or ``abort``.

    CLI Example:

    .. code-block:: bash

        salt ecsc-2 turn.give 6f1c0a...
        salt ecsc-2 turn.give 6f1c0a... abort   # release a host a killed run left waiting
    """
    if verdict not in VERDICTS:
        raise SaltInvocationError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    path = _path(run)
    os.makedirs(_dir(), mode=0o700, exist_ok=True)
    _prune()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise CommandExecutionError(f"{__opts__['id']}: cannot write {path}: {exc}") from exc
        return get(run)
    with os.fdopen(fd, "w") as handle:
        handle.write(verdict)
    return verdict


def wait(run, timeout=3600):
    """
    Wait until a verdict is given for ``run`` on this host and return it (``go`` or
    ``abort``); raise ``CommandExecutionError`` after ``timeout`` seconds without one.

    run
        The orchestration run's token.

    timeout
        Seconds to wait (default 3600).

    CLI Example:

    .. code-block:: bash

        salt ecsc-2 turn.wait 6f1c0a... timeout=60
    """
    deadline = time.monotonic() + float(timeout)
    while True:
        verdict = get(run)
        if verdict:
            return verdict
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{__opts__['id']}: no turn given in run {run} within {timeout}s (the "
                "orchestration that published this job ended or was killed); nothing was touched"
            )
        time.sleep(POLL_SECONDS)
