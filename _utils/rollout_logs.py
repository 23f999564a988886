"""
Logs of a service, read the one way every module of the rollout reads them: the byte offsets
of logs before a start, the lines appended after an offset (followed incrementally), and the
last lines of a log for an error message.

Reached as ``__utils__["rollout_logs.<function>"]`` (``follow`` returns a follower object whose
``poll()`` gives the new complete lines).

:depends: none
"""

import errno
import logging
import os
import stat

__virtualname__ = "rollout_logs"


def __virtual__():
    # Utilities of this formula, always available where it runs (minions and master).
    return __virtualname__


log = logging.getLogger(__name__)

TAIL_LINES = 20
_MAX_LINE = 1024 * 1024  # longest line buffered by a follower
_READ_CHUNK = 1024 * 1024


class _Follower:
    """Read the lines appended to one log after a byte offset, incrementally.

    A file shorter than the position was truncated and a file with another inode was replaced:
    both are read again from byte 0 (everything in them is new). A missing file is waited for.
    (A file truncated in place and already grown past the offset again before the first read
    cannot be told apart from one that was not; catalina.out is never truncated.)
    """

    def __init__(self, path, offset, inode=None):
        self.path = path
        self.pos = int(offset)
        self.inode = inode
        self.buf = b""
        self.restarts = 0

    def poll(self):
        """The complete lines appended since the last poll (``\\r\\n`` endings stripped)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self.inode is not None and st.st_ino != self.inode:
            log.info("%s was replaced; reading it from the start", self.path)
            self.pos, self.buf, self.restarts = 0, b"", self.restarts + 1
        elif st.st_size < self.pos:
            log.info("%s was truncated; reading it from the start", self.path)
            self.pos, self.buf, self.restarts = 0, b"", self.restarts + 1
        self.inode = st.st_ino
        if st.st_size == self.pos:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.pos)
            while True:
                chunk = handle.read(_READ_CHUNK)
                if not chunk:
                    break
                self.pos += len(chunk)
                self.buf += chunk
        *complete, self.buf = self.buf.split(b"\n")
        if len(self.buf) > _MAX_LINE:  # a runaway line: cut it rather than grow forever
            complete.append(self.buf)
            self.buf = b""
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in complete]


def follow(path, offset, inode=None):
    """
    A follower of ``path`` from byte ``offset`` (``inode``: the file's inode when the offset
    was taken, so a replaced file is read from its start). ``follower.poll()`` returns the new
    complete lines; ``follower.pos`` is the byte position read so far.
    """
    return _Follower(path, offset, inode)


def follow_from_end(path):
    """A follower of the lines ``path`` gets from now on; OSError if it cannot be read."""
    st = os.stat(path)
    return _Follower(path, st.st_size, st.st_ino)


def offsets(paths):
    """
    ``({path: byte size}, {path: inode})`` of ``paths`` now: where the lines a start writes will
    begin. A missing or unreadable file counts as size 0 (everything it will hold is new) and
    has no inode.
    """
    sizes, inodes = {}, {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            sizes[path] = 0
            continue
        sizes[path], inodes[path] = st.st_size, st.st_ino
    return sizes, inodes


def tail(path, lines=TAIL_LINES, block=8192, limit=1024 * 1024, nofollow=False):
    """
    The last ``lines`` lines of ``path``, read backwards from its end (a multi-gigabyte
    ``catalina.out`` costs a few blocks; at most ``limit`` bytes). With ``nofollow`` a symlink
    is refused (ELOOP) and so is anything but a regular file. Raises OSError.
    """
    if lines <= 0:
        return []
    flags = os.O_RDONLY | os.O_NONBLOCK | (os.O_NOFOLLOW if nofollow else 0)
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO planted under the name cannot hang us
    with open(fd, "rb") as handle:
        if nofollow and not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        pos = handle.seek(0, os.SEEK_END)
        data = b""
        while pos > 0 and data.count(b"\n") <= lines and len(data) < limit:
            step = min(block, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-lines:]]


def _inside(path, directory):
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def tail_block(path, log_dirs, lines=TAIL_LINES):
    """
    ``--- last N lines of <path> ---`` and the lines, for an error message. Only a regular file
    (not a symlink) inside one of ``log_dirs`` (the service's own log directories) is quoted:
    an error message must never carry another file's content because a pillar entry or a
    planted symlink pointed there.
    """
    header = f"--- last {lines} lines of {path} ---"
    where = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if not any(_inside(where, os.path.realpath(d)) for d in log_dirs):
        return f"{header}\n(not quoted: outside the service's log directories)"
    try:
        text = "\n".join(line[:2000] for line in tail(path, lines, nofollow=True))
    except FileNotFoundError:
        text = "(no such file)"
    except OSError as exc:
        reason = "a symlink" if exc.errno == errno.ELOOP else exc
        text = f"(not quoted: {reason})"
    return f"{header}\n{text}"
