"""
Find, stop, start and wait for the JVM of one Java service, precisely.

Replaces the runbook's ``ps -ef | grep java; kill -9 <PID>``, ``nohup sh startup.sh &`` and
"``tail -f`` until it started normally" with functions that fail loudly instead of quietly doing
the wrong thing.

:depends:   - psutil (a Salt dependency)

Identity
--------
Every function that looks at processes takes the service's identity as keyword arguments.
Exactly one of ``catalina_base`` / ``app_dir`` is required (giving both is refused: a Tomcat JVM
does not run in its application directory, so "both" would silently find nothing):

catalina_base
    Tomcat: a java process whose JVM options hold ``-Dcatalina.base=<dir>`` (the last one wins,
    as in the JVM; a relative value is resolved against the process's cwd). Both sides are
    compared as realpaths, exactly: ``/home/tomcat`` never matches ``/home/tomcat2``.

app_dir
    Standalone JVM (``cd /home/schedule && sh startup.sh``): a java process whose working
    directory is ``<dir>`` (realpath), or whose launcher paths - ``-cp``/``-classpath``/
    ``--class-path`` and ``-p``/``--module-path`` entries and the ``-jar`` file, resolved against
    the process's cwd - lie inside ``<dir>`` (path components, so ``/home/schedule`` never
    matches ``/home/schedule-res``). ``-D`` values and the application's own arguments do not
    count: a JVM that merely names the service (``java LogShipper /home/schedule/x.log``) is not
    the service.

pidfile
    Optional extra check, never a source of truth on its own: the pid it holds counts only if
    that process is java and matches the identity above. A stale pid file (missing, garbage,
    dead pid, not java, another JVM) is ignored, logged and reported by :func:`status`.

Only processes whose executable is ``java`` (psutil ``exe()``, or ``name()`` when ``exe()`` is
not readable) count - never the ``sh startup.sh`` wrapper, a ``grep`` or a ``tail``. Zombies do
not count as running. Unknown keyword arguments are refused (a typo such as ``catalinabase=``
must not turn into "matches nothing").

Ready gate
----------
:func:`start` records the byte size of each log before launching and keeps it in
``<cachedir>/javaservice/<name>.json``; :func:`wait_ready` scans only what was appended after
those offsets, so the previous run's ``Server startup in ...`` line in a never-rotated
``catalina.out`` does not count. Use :data:`TOMCAT_READY` (or the literal pattern string
``"TOMCAT_READY"`` from an SLS) for Tomcat 7's ``Server startup in N ms`` and Tomcat 8.5+'s
``Server startup in [N] milliseconds``.
"""

import datetime
import http.client
import json
import logging
import os
import pwd
import re
import shlex
import signal as _signal
import subprocess
import time
import urllib.error
import urllib.request

import salt.utils.atomicfile
from salt.exceptions import CommandExecutionError, SaltInvocationError

try:
    import psutil

    HAS_PSUTIL = True
except ImportError:
    HAS_PSUTIL = False

log = logging.getLogger(__name__)

__virtualname__ = "javaservice"

#: Tomcat's "started" marker: Tomcat 7 ``Server startup in 2345 ms``, Tomcat 8.5+
#: ``Server startup in [2345] milliseconds``.
TOMCAT_READY = r"Server startup in \[?\d+\]? (ms|milliseconds)"

# Seconds a started service may show neither a JVM nor a live start command before the
# start counts as failed (a process being exec'd can be missing from one scan).
START_GRACE = 2.0

#: Patterns that fail :func:`wait_ready` at once when they appear after the start offset (in any
#: log), used when ``fatal`` is not given; ``fatal=[]`` disables them. Deliberately specific:
#: Tomcat and applications log plenty of harmless ``SEVERE`` lines.
#:
#: - ``java.lang.OutOfMemoryError``: the JVM may linger but is unusable.
#: - ``java.net.BindException``: a Tomcat connector could not bind its port; Tomcat keeps
#:   running (and still logs "Server startup in") and the port may be answered by someone else.
#: - ``Context [/x] startup failed``: Tomcat 7 and 8.5+ wording for a webapp that did not deploy
#:   (Tomcat still logs "Server startup in").
#: - ``Exception in thread "main"``: a standalone main() died (other threads may keep the JVM).
#: - ``Error: Could not find or load main class`` / ``Could not create the Java Virtual Machine``.
DEFAULT_FATAL = (
    r"java\.lang\.OutOfMemoryError",
    r"java\.net\.BindException",
    r"Context \[[^\]]*\] startup failed",
    r'Exception in thread "main"',
    r"Error: Could not (find or load main class|create the Java Virtual Machine)",
)

_SIGNALS = {
    "TERM": _signal.SIGTERM,
    "KILL": _signal.SIGKILL,
    "INT": _signal.SIGINT,
    "QUIT": _signal.SIGQUIT,
    "HUP": _signal.SIGHUP,
}
_IDENTITY_KEYS = ("catalina_base", "app_dir", "pidfile")
# dispositions reset to default for the launched command (see _spawn_detached)
_RESET_SIGNALS = (
    _signal.SIGHUP,
    _signal.SIGINT,
    _signal.SIGQUIT,
    _signal.SIGTERM,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
    _signal.SIGPIPE,
    _signal.SIGCHLD,
)
_NAME_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")
_KILL_WAIT = 10.0  # seconds a process gets to disappear after SIGKILL
_THREAD_DUMP_WAIT = 1.0  # seconds the JVM gets to print its thread dump after SIGQUIT
_TAIL_LINES = 20
_MAX_LINE = 1024 * 1024  # longest line buffered by the log reader
_READ_CHUNK = 1024 * 1024

# java launcher options that take their value as the next argument
_OPTS_WITH_VALUE = frozenset(
    (
        "-cp",
        "-classpath",
        "--class-path",
        "-p",
        "--module-path",
        "--upgrade-module-path",
        "--add-modules",
        "--enable-native-access",
        "--limit-modules",
        "--add-reads",
        "--add-exports",
        "--add-opens",
        "--patch-module",
        "--source",
    )
)
_PATH_LIST_OPTS = frozenset(("-cp", "-classpath", "--class-path", "-p", "--module-path"))


def __virtual__():
    if not HAS_PSUTIL:
        return (False, "The javaservice module cannot be loaded: psutil is not installed.")
    return __virtualname__


# --------------------------------------------------------------------------- helpers: arguments


def _minion():
    try:
        return __opts__.get("id") or "<unknown minion>"
    except NameError:  # pragma: no cover - outside the loader
        return "<unknown minion>"


def _check_name(name):
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SaltInvocationError(
            f"service name {name!r} must match {_NAME_RE.pattern} (it names a cache file)"
        )
    return name


def _identity(kwargs):
    """
    Validate the identity keyword arguments; return
    ``{"kind": "catalina_base"|"app_dir", "path": realpath, "given": str, "pidfile": str|None}``.
    """
    ident = {}
    unknown = []
    for key, value in kwargs.items():
        if key.startswith("__"):  # __pub_* from the CLI
            continue
        if key not in _IDENTITY_KEYS:
            unknown.append(key)
            continue
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not os.path.isabs(value):
            raise SaltInvocationError(f"{key} must be an absolute path, got {value!r}")
        ident[key] = value
    if unknown:
        raise SaltInvocationError(
            f"unknown argument(s) {', '.join(sorted(unknown))}: a service is identified by "
            "catalina_base=<dir> or app_dir=<dir>, optionally with pidfile=<path>"
        )
    kinds = [key for key in ("catalina_base", "app_dir") if key in ident]
    if not kinds:
        raise SaltInvocationError(
            "identify the service with catalina_base=<dir> (Tomcat) or app_dir=<dir> "
            "(standalone JVM); pidfile= alone is not enough"
        )
    if len(kinds) > 1:
        raise SaltInvocationError(
            "give catalina_base or app_dir, not both: a Tomcat JVM is found by its "
            "-Dcatalina.base, a standalone JVM by its directory"
        )
    kind = kinds[0]
    path = os.path.realpath(ident[kind])
    if path == os.sep:
        raise SaltInvocationError(f"{kind}=/ would match every java process")
    return {"kind": kind, "path": path, "given": ident[kind], "pidfile": ident.get("pidfile")}


def _parse_signal(value):
    """
    Return the ``signal.Signals`` for TERM/KILL/INT/QUIT/HUP (with or without ``SIG``, any case)
    or their numbers; raise SaltInvocationError naming anything else.
    """
    sig = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            number = None
            sig = _SIGNALS.get(text[3:] if text.startswith("SIG") else text)
    else:
        number = None
    if number is not None:
        sig = next((s for s in _SIGNALS.values() if int(s) == number), None)
    if sig is None:
        allowed = ", ".join(f"{n} ({int(s)})" for n, s in _SIGNALS.items())
        raise SaltInvocationError(f"unsupported signal {value!r}: use one of {allowed}")
    return sig


def _seconds(value, what, minimum=0.0):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"{what} must be a number of seconds, got {value!r}")
    if isinstance(value, bool) or number != number or number < minimum:
        raise SaltInvocationError(f"{what} must be a number of seconds >= {minimum}, got {value!r}")
    return number


def _abs_paths(value, what):
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SaltInvocationError(f"{what} must be a list of absolute paths, got {value!r}")
    paths = []
    for item in value:
        if not isinstance(item, str) or not os.path.isabs(item):
            raise SaltInvocationError(f"{what}: {item!r} is not an absolute path")
        path = os.path.abspath(item)
        if path not in paths:
            paths.append(path)
    return paths


# --------------------------------------------------------------------------- helpers: processes


def _parse_java_argv(argv):
    """
    Split a java command line into (JVM options, launcher paths). Launcher paths are the
    class/module path entries and the ``-jar`` file; parsing stops at the main class, ``-jar``
    or ``-m``: what follows belongs to the application and never identifies it.
    """
    options, paths = [], []
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-jar":
            if i + 1 < len(argv):
                paths.append(argv[i + 1])
            break
        if arg in ("-m", "--module") or arg.startswith("--module="):
            break
        if arg.startswith("--") and "=" in arg:
            key, _, val = arg.partition("=")
            if key in _PATH_LIST_OPTS:
                paths.extend(val.split(os.pathsep))
            options.append(arg)
            i += 1
            continue
        if arg in _OPTS_WITH_VALUE:
            val = argv[i + 1] if i + 1 < len(argv) else ""
            if arg in _PATH_LIST_OPTS:
                paths.extend(val.split(os.pathsep))
            options.append(arg)
            i += 2
            continue
        if arg.startswith("-"):
            options.append(arg)
            i += 1
            continue
        break  # the main class
    return options, [p for p in paths if p]


def _is_inside(path, directory):
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _snapshot(proc):
    """
    What we need to know about one process, or None if it is gone. Non-java processes only
    get ``pid``/``java``/``what``.
    """
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return {"pid": proc.pid, "java": False, "zombie": True, "what": "zombie"}
        try:
            exe = proc.exe()
        except psutil.AccessDenied:
            exe = ""
        name = proc.name()
        is_java = os.path.basename(exe) == "java" if exe else name == "java"
        info = {"pid": proc.pid, "java": is_java, "zombie": False, "what": exe or name}
        if is_java:
            info["proc"] = proc
            info["cmdline"] = list(proc.cmdline())
            info["create_time"] = proc.create_time()
            try:
                info["cwd"] = proc.cwd()
            except psutil.AccessDenied:
                info["cwd"] = None
        return info
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return {"pid": proc.pid, "java": False, "zombie": False, "what": "access denied"}


def _fresh_processes():
    """A new ``psutil.Process`` per live pid. Not ``process_iter()``: it reuses Process objects
    whose name and exe are cached, and ``sh startup.sh`` exec's into java under the same pid
    and start time, so a cached "sh" would hide the JVM for good."""
    for pid in psutil.pids():
        try:
            yield psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue


def _scan():
    """Return ``{pid: snapshot}`` of every live process."""
    found = {}
    for proc in _fresh_processes():
        info = _snapshot(proc)
        if info is not None:
            found[info["pid"]] = info
    return found


def _matches(info, ident):
    """True if the java process ``info`` is the service identified by ``ident``."""
    if not info.get("java") or not info.get("cmdline"):
        return False
    cwd = info.get("cwd")

    def resolve(path):
        if not os.path.isabs(path):
            if not cwd:
                return None
            path = os.path.join(cwd, path)
        return os.path.realpath(path)

    options, paths = _parse_java_argv(info["cmdline"])
    if ident["kind"] == "catalina_base":
        bases = [o.split("=", 1)[1] for o in options if o.startswith("-Dcatalina.base=")]
        return bool(bases) and bool(bases[-1]) and resolve(bases[-1]) == ident["path"]
    if cwd and os.path.realpath(cwd) == ident["path"]:
        return True
    for path in paths:
        resolved = resolve(path)
        if resolved and _is_inside(resolved, ident["path"]):
            return True
    return False


def _check_pidfile(path, scan, matched_pids):
    report = {"path": path, "pid": None, "valid": False, "reason": ""}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(64).strip()
    except FileNotFoundError:
        report["reason"] = "missing"
        return report
    except OSError as exc:
        report["reason"] = f"unreadable: {exc}"
    else:
        if not text.isdigit():
            report["reason"] = f"does not hold a pid ({text[:20]!r})"
        else:
            pid = report["pid"] = int(text)
            info = scan.get(pid)
            if info is None:
                report["reason"] = f"stale: no process {pid}"
            elif info.get("zombie"):
                report["reason"] = f"stale: process {pid} has exited (zombie)"
            elif not info["java"]:
                report["reason"] = f"stale: process {pid} is not java ({info['what']})"
            elif pid not in matched_pids:
                report["reason"] = f"stale: process {pid} is another java process"
            else:
                report["valid"] = True
                report["reason"] = "ok"
    if not report["valid"]:
        log.warning("%s: ignoring pid file %s: %s", _minion(), path, report["reason"])
    return report


def _find(ident):
    """Return (sorted matching snapshots, pid file report or None)."""
    scan = _scan()
    matched = sorted((i for i in scan.values() if _matches(i, ident)), key=lambda i: i["pid"])
    report = None
    if ident["pidfile"]:
        report = _check_pidfile(ident["pidfile"], scan, {i["pid"] for i in matched})
    return matched, report


def _is_gone(proc):
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:
        return False


def _send(procs, sig):
    """Send ``sig`` to each process; return those that still existed."""
    alive = []
    for proc in procs:
        try:
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied as exc:
            raise CommandExecutionError(
                f"{_minion()}: cannot send {sig.name} to pid {proc.pid}: {exc}"
            )
        alive.append(proc)
    return alive


def _wait_gone(procs, timeout):
    """Wait up to ``timeout`` seconds for ``procs`` to exit; return the ones still alive.

    A zombie counts as gone: an orphaned JVM whose init does not reap stays a zombie forever.
    """
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = [p for p in alive if not _is_gone(p)]
        remaining = deadline - time.monotonic()
        if not alive or remaining <= 0:
            return alive
        _, alive = psutil.wait_procs(alive, timeout=min(0.2, remaining))


def _iso(timestamp):
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- helpers: files


def _state_path(name):
    return os.path.join(__opts__["cachedir"], "javaservice", f"{name}.json")


def _write_state(name, data):
    path = _state_path(name)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with salt.utils.atomicfile.atomic_open(path, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)


def _read_state(name):
    try:
        with open(_state_path(name), encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: ignoring unreadable %s: %s", _minion(), _state_path(name), exc)
        return {}
    return data if isinstance(data, dict) else {}


def _tail(path, lines=_TAIL_LINES, block=8192, limit=1024 * 1024):
    """Last ``lines`` lines of ``path`` read backwards from the end (raises OSError)."""
    if lines <= 0:
        return []
    with open(path, "rb") as handle:
        pos = handle.seek(0, os.SEEK_END)
        data = b""
        while pos > 0 and data.count(b"\n") <= lines and len(data) < limit:
            step = min(block, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
    return [line.decode("utf-8", "replace") for line in data.splitlines()[-lines:]]


def _tail_block(path, lines=_TAIL_LINES):
    try:
        text = "\n".join(line[:2000] for line in _tail(path, lines))
    except FileNotFoundError:
        text = "(no such file)"
    except OSError as exc:
        text = f"(unreadable: {exc})"
    return f"--- last {lines} lines of {path} ---\n{text}"


class _LogReader:
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


def _patterns(value, what):
    """Normalise ready/fatal patterns to [(log or None, compiled, key)]."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SaltInvocationError(f"{what} must be a list of regexes, got {value!r}")
    specs = []
    for item in value:
        logfile = None
        if isinstance(item, dict):
            if set(item) != {"log", "pattern"}:
                raise SaltInvocationError(
                    f"{what} entry {item!r} must be a regex or "
                    "{'log': <path>, 'pattern': <regex>}"
                )
            logfile = _abs_paths(item["log"], f"{what} log")[0]
            text = item["pattern"]
        else:
            text = item
        if not isinstance(text, str) or not text:
            raise SaltInvocationError(f"{what} pattern {text!r} is not a regex")
        if text == "TOMCAT_READY":
            text = TOMCAT_READY
        try:
            regex = re.compile(text)
        except re.error as exc:
            raise SaltInvocationError(f"{what} pattern {text!r} is not a valid regex: {exc}")
        key = text if logfile is None else f"{logfile}: {text}"
        specs.append((logfile, regex, key))
    return specs


def _http_status(url, timeout):
    """(status or None, error text or None) of one GET; no proxies, redirects followed."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"User-Agent": "salt-javaservice"})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except urllib.error.URLError as exc:
        return None, str(exc.reason)
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc) or type(exc).__name__


def _session_procs(launcher_pid, started_at):
    """Live processes of the session ``start`` created (launcher, its children, the JVM)."""
    found = []
    if not launcher_pid:
        return found
    for proc in _fresh_processes():
        try:
            if os.getsid(proc.pid) != launcher_pid:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            # psutil's create_time runs up to a second behind time.time() (whole-second
            # boot time): allow for it.
            if started_at and proc.create_time() < started_at - 2:
                continue
            found.append(proc)
        except (OSError, psutil.Error):
            continue
    return found


def _describe(proc):
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:100]})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _launcher_alive(launcher_pid, started_at):
    """True while any process of the session ``start`` created is alive (the JVM is coming)."""
    return bool(_session_procs(launcher_pid, started_at))


def _spawn_detached(argv, cwd, env, output, user):
    """
    Double fork: an intermediate child starts the launcher in a new session and exits at once,
    so the launcher (and the JVM) is re-parented to init - never a zombie of the minion, never
    killed with the job. Return the launcher's pid.
    """
    out_fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    rfd, wfd = os.pipe()
    try:
        child = os.fork()
        if child == 0:  # intermediate: no logging, no cleanup handlers, just Popen and _exit
            message = b"error: unknown"
            try:
                os.close(rfd)
                # An ignored or blocked signal survives exec: a JVM started with SIGTERM ignored
                # never installs its shutdown handler and ignores TERM for good.
                for signum in _RESET_SIGNALS:
                    _signal.signal(signum, _signal.SIG_DFL)
                _signal.pthread_sigmask(_signal.SIG_SETMASK, [])
                kwargs = {}
                if user is not None:
                    kwargs = {"user": user[0], "group": user[1], "extra_groups": user[2]}
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_fd,
                    stderr=out_fd,
                    close_fds=True,
                    start_new_session=True,
                    **kwargs,
                )
                message = f"ok {proc.pid}".encode()
            except BaseException as exc:  # pylint: disable=broad-except
                message = f"error: {type(exc).__name__}: {exc}".encode("utf-8", "replace")
            finally:
                try:
                    os.write(wfd, message)
                finally:
                    os._exit(0)  # pylint: disable=protected-access
        os.close(wfd)
        wfd = None
        chunks = []
        while True:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        try:
            os.waitpid(child, 0)
        except ChildProcessError:  # SIGCHLD ignored: the kernel reaped it
            pass
    finally:
        os.close(out_fd)
        os.close(rfd)
        if wfd is not None:
            os.close(wfd)
    answer = b"".join(chunks).decode("utf-8", "replace")
    if not answer.startswith("ok "):
        raise OSError(answer.removeprefix("error: ") or "launcher did not report")
    return int(answer.split()[1])


def _user(runas):
    if runas is None:
        return None, {}
    try:
        entry = pwd.getpwnam(runas)
    except KeyError:
        raise SaltInvocationError(f"runas user {runas!r} does not exist on {_minion()}")
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise CommandExecutionError(f"{_minion()}: only root can start a service as {runas}")
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    return (entry.pw_uid, entry.pw_gid, groups), env


# --------------------------------------------------------------------------- public functions


def pids(**identity):
    """
    Return the sorted pids of the service's JVM(s) (empty list when it is not running).

    catalina_base
        Tomcat's CATALINA_BASE: matches ``-Dcatalina.base=<dir>`` exactly (realpaths).

    app_dir
        A standalone service's directory: matches a java process running in it (cwd) or
        launched from it (class path / ``-jar``).

    pidfile
        Optional pid file, checked against the above (stale ones are ignored).

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.pids catalina_base=/home/apache-tomcat-7.0.67
        salt '*' javaservice.pids app_dir=/home/schedule
    """
    ident = _identity(identity)
    matched, _ = _find(ident)
    return [info["pid"] for info in matched]


def status(name, install_dir=None, **identity):
    """
    Report whether the service runs: ``{"name", "running", "pids", "started", "cmdline", "cwd",
    "release", "release_note"}`` (``started`` is the ISO time the oldest of its JVMs started;
    ``cmdline``/``cwd`` are that JVM's). With ``pidfile=`` the report also has
    ``"pidfile": {"path", "pid", "valid", "reason"}``.

    ``release`` is the release the running code came from: the program dir's deployed record
    (``release.recorded``) when the JVM started after that deploy; ``None`` with a
    ``release_note`` when it is not known (no record: deployed by hand; or the JVM is older
    than the deploy, so it still runs the code from before).

    name
        The service's name (a label for the report).

    install_dir
        The program dir whose deployed record names the release (default: ``app_dir``).

    catalina_base / app_dir / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.status ecsc catalina_base=/home/apache-tomcat-7.0.67 install_dir=/home/ecsc
        salt '*' javaservice.status schedule app_dir=/home/schedule
    """
    ident = _identity(identity)
    matched, report = _find(ident)
    ret = {
        "name": name,
        "running": bool(matched),
        "pids": [info["pid"] for info in matched],
        "started": None,
        "cmdline": [],
        "cwd": None,
        "release": None,
        "release_note": "not running",
    }
    if matched:
        oldest = min(matched, key=lambda info: info["create_time"])
        ret.update(
            started=_iso(oldest["create_time"]), cmdline=oldest["cmdline"], cwd=oldest["cwd"]
        )
        if install_dir is None and ident["kind"] == "app_dir":
            install_dir = ident["path"]
        ret["release"], ret["release_note"] = _running_release(install_dir, oldest["create_time"])
    if report is not None:
        ret["pidfile"] = report
    return ret


def _running_release(install_dir, started):
    """(release, note): what the deployed record of install_dir says the JVM runs."""
    if not install_dir:
        return None, "no install_dir given"
    if "release.recorded" not in __salt__:
        return None, "the release module is not loaded"
    record = __salt__["release.recorded"](install_dir)
    if not record:
        return None, f"no deployed record for {install_dir} (deployed by hand?)"
    try:
        deployed = datetime.datetime.fromisoformat(record["deployed"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None, f"the deployed record of {install_dir} has no deploy time"
    # psutil's start time runs up to a second early (whole-second boot time).
    if started + 2 < deployed:
        return None, (f"the JVM started before {record['release']} was deployed "
                      f"({record['deployed']}): it runs the code from before")
    return record["release"], f"deployed {record['deployed']}"


def stop(name, signal="TERM", timeout=30, thread_dump=False, **identity):
    """
    Stop the service's JVM(s): send ``signal``, wait up to ``timeout`` seconds, then SIGKILL
    whatever is still alive.

    Returns ``{"name", "pids", "outcome", "signal", "seconds", "escalated", "thread_dump"}``
    (plus ``"pidfile_removed": path`` when ``pidfile`` named the JVM it stopped, as
    ``catalina.sh stop`` does):

    - ``outcome`` is ``"graceful"`` when every JVM exited on the requested signal within the
      timeout, ``"killed"`` whenever SIGKILL was sent - because it was asked for (``signal=KILL``,
      the runbook's ``kill -9``) or because the timeout ran out (then ``escalated`` is True) -
      and ``"not running"`` when nothing matched (``pids`` empty);
    - ``seconds`` is the wall time from the first signal.

    Raises CommandExecutionError (naming the minion and pid) if a process survives SIGKILL.

    name
        The service's name (a label for the report).

    signal : TERM
        TERM, KILL, INT, QUIT or HUP (``SIG`` prefix optional) or their numbers (15, 9, 2, 3, 1).

    timeout : 30
        Seconds to wait after ``signal`` before SIGKILL.

    thread_dump : False
        Send SIGQUIT first and wait a second: the JVM prints a thread dump to its stdout
        (``catalina.out`` for Tomcat, the ``output`` of :func:`start`) - evidence of what a hung
        service was doing before it is stopped.

    catalina_base / app_dir / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.stop ecsc catalina_base=/home/apache-tomcat-7.0.67 timeout=60
        salt '*' javaservice.stop schedule app_dir=/home/schedule signal=TERM thread_dump=True
    """
    sig = _parse_signal(signal)
    timeout = _seconds(timeout, "timeout")
    ident = _identity(identity)
    began = time.monotonic()
    matched, pidfile = _find(ident)
    ret = {
        "name": name,
        "pids": [info["pid"] for info in matched],
        "outcome": "not running",
        "signal": sig.name[3:],
        "seconds": 0.0,
        "escalated": False,
        "thread_dump": bool(thread_dump),
    }
    if not matched:
        return ret
    procs = [info["proc"] for info in matched]
    log.info("%s: stopping %s pids %s with %s", _minion(), name, ret["pids"], sig.name)
    if thread_dump:
        procs = _send(procs, _signal.SIGQUIT)
        time.sleep(_THREAD_DUMP_WAIT)
    alive = _send(procs, sig)
    killed = sig == _signal.SIGKILL
    if not killed:
        alive = _wait_gone(alive, timeout)
        if alive:
            log.warning(
                "%s: %s pids %s still alive %ss after %s; sending SIGKILL",
                _minion(),
                name,
                [p.pid for p in alive],
                timeout,
                sig.name,
            )
            ret["escalated"] = killed = True
            alive = _send(alive, _signal.SIGKILL)
    if killed:
        alive = _wait_gone(alive, _KILL_WAIT)
        if alive:
            raise CommandExecutionError(
                f"{_minion()}: {name}: pid(s) {', '.join(str(p.pid) for p in alive)} still "
                f"alive {_KILL_WAIT:g}s after SIGKILL"
            )
    ret["outcome"] = "killed" if killed else "graceful"
    ret["seconds"] = round(time.monotonic() - began, 3)
    if pidfile and pidfile["valid"]:
        # like `catalina.sh stop`: a pid file naming a dead JVM makes catalina.sh refuse to start
        # once that pid is reused ("Tomcat appears to still be running")
        try:
            os.unlink(pidfile["path"])
            ret["pidfile_removed"] = pidfile["path"]
        except OSError as exc:
            log.warning("%s: cannot remove pid file %s: %s", _minion(), pidfile["path"], exc)
    return ret


def start(name, command, cwd=None, env=None, logs=None, output=None, runas=None, **identity):
    """
    Start the service detached - new session, stdin from /dev/null, stdout/stderr appended to
    ``output``, other descriptors closed, double-forked so the launcher is never the minion's
    child - and return at once. Both launchers work: Tomcat's ``startup.sh`` forks the JVM and
    exits; ``sh startup.sh`` of a standalone service runs java in the foreground.

    Before launching, records the byte size of each of ``logs`` (a missing file counts as 0) and
    keeps it, with the launcher pid, in ``<cachedir>/javaservice/<name>.json`` for
    :func:`wait_ready`. Returns ``{"name", "offsets": {path: int}, "command", "cwd", "output",
    "launcher_pid"}``.

    Raises CommandExecutionError if the service is already running, or a previous start's
    processes (its session) are still alive without a JVM yet (no second JVM either way), if
    ``cwd`` is not a directory or if the command cannot be executed.

    name
        The service's name; names the offsets file (``^[0-9A-Za-z][0-9A-Za-z._-]*$``).

    command
        A list (``["sh", "startup.sh"]``) or a string split like shell words but run without a
        shell (``/home/apache-tomcat-7.0.67/bin/startup.sh``).

    cwd
        Working directory; defaults to ``app_dir`` or ``catalina_base``.

    env
        Variables added to the minion's environment: a dict, or a list of one-key dicts.

    logs
        Absolute paths of the logs :func:`wait_ready` will watch.

    output
        File the launcher's stdout/stderr are appended to (default ``/dev/null``). For a
        standalone JVM that is its stdout - the runbook's ``nohup.out`` and where a thread dump
        goes - so pass e.g. ``/home/schedule/nohup.out``.

    runas
        User to run as (root only); HOME/USER/LOGNAME are set for it.

    catalina_base / app_dir / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.start ecsc '["/home/apache-tomcat-7.0.67/bin/startup.sh"]' catalina_base=/home/apache-tomcat-7.0.67 logs='["/home/apache-tomcat-7.0.67/logs/catalina.out"]'
        salt '*' javaservice.start schedule 'sh startup.sh' app_dir=/home/schedule output=/home/schedule/nohup.out logs='["/home/schedulelog/schedule.log"]'
    """
    _check_name(name)
    ident = _identity(identity)
    if isinstance(command, str):
        argv = shlex.split(command)
    elif isinstance(command, (list, tuple)):
        argv = [str(arg) for arg in command]
    else:
        argv = []
    if not argv:
        raise SaltInvocationError(f"command must be a non-empty list or string, got {command!r}")
    if isinstance(env, list) and all(isinstance(item, dict) for item in env):
        env = {k: v for item in env for k, v in item.items()}  # SLS style: [{KEY: value}, ...]
    if env is not None and not isinstance(env, dict):
        raise SaltInvocationError(f"env must be a dict, got {env!r}")
    logs = _abs_paths(logs, "logs")
    output = _abs_paths(output, "output")[0] if output else os.devnull
    cwd = cwd or ident["given"]
    if not os.path.isdir(cwd):
        raise CommandExecutionError(f"{_minion()}: cannot start {name}: {cwd} is not a directory")
    user, user_env = _user(runas)

    matched, _ = _find(ident)
    if matched:
        raise CommandExecutionError(
            f"{_minion()}: {name} is already running (pid(s) "
            f"{', '.join(str(i['pid']) for i in matched)}); not starting a second JVM"
        )
    previous = _read_state(name)
    starting = _session_procs(previous.get("launcher_pid"), previous.get("started_at"))
    if starting:
        raise CommandExecutionError(
            f"{_minion()}: {name}: the previous start (launcher pid "
            f"{previous.get('launcher_pid')}) is still in progress: "
            f"{', '.join(_describe(p) for p in starting)}; not starting a second JVM"
        )

    offsets, inodes = {}, {}
    for path in logs:
        try:
            st = os.stat(path)
            offsets[path], inodes[path] = st.st_size, st.st_ino
        except FileNotFoundError:
            offsets[path] = 0
    full_env = dict(os.environ)
    full_env.update(user_env)
    full_env.update({str(k): str(v) for k, v in (env or {}).items()})
    started_at = time.time()
    try:
        launcher = _spawn_detached(argv, cwd, full_env, output, user)
    except OSError as exc:
        raise CommandExecutionError(
            f"{_minion()}: cannot start {name}: {shlex.join(argv)} (in {cwd}): {exc}"
        )
    log.info("%s: started %s: %s (launcher pid %s)", _minion(), name, shlex.join(argv), launcher)
    _write_state(
        name,
        {
            "name": name,
            "command": argv,
            "cwd": cwd,
            "output": output,
            "offsets": offsets,
            "inodes": inodes,
            "launcher_pid": launcher,
            "started_at": started_at,
        },
    )
    return {
        "name": name,
        "offsets": offsets,
        "command": argv,
        "cwd": cwd,
        "output": output,
        "launcher_pid": launcher,
    }


def wait_ready(
    name,
    logs=None,
    offsets=None,
    ready=None,
    fatal=None,
    url=None,
    timeout=120,
    interval=0.5,
    **identity,
):
    """
    Wait until the service is ready, or fail loudly. Ready means all of:

    - every ``ready`` pattern appeared in its log after the byte offset recorded before the start
      (lines are matched one by one; old lines before the offset never count);
    - no ``fatal`` pattern appeared after the offset (checked before readiness: Tomcat logs
      "Server startup in" even when a connector could not bind);
    - the JVM runs (if it exits, or the start command exits without leaving a JVM, fail at once);
    - ``url``, if given, answers HTTP 200 (redirects followed, no proxy).

    Returns ``{"name", "ready": True, "seconds", "matched": {pattern: {"log", "line"}},
    "http_status", "pids"}``. On timeout or death raises CommandExecutionError naming the minion,
    the service, what was missing (patterns, HTTP status) with the last 20 lines of each log.

    name
        The service's name (as given to :func:`start`).

    logs
        Logs to scan; defaults to the logs :func:`start` recorded. Logs named by pattern dicts
        are added.

    offsets
        ``{path: byte offset}``; defaults to the offsets persisted by :func:`start`. Every log
        needs one (SaltInvocationError otherwise: scanning from 0 would accept old lines). A log
        found shorter than its offset (truncated) or replaced is scanned from its start.

    ready
        List of regexes. An entry is either a regex (found in any of the logs) or
        ``{"log": <path>, "pattern": <regex>}``; the string ``"TOMCAT_READY"`` stands for
        :data:`TOMCAT_READY`.

    fatal
        Same shape; defaults to :data:`DEFAULT_FATAL` (OutOfMemoryError, BindException, a
        Tomcat context that failed to start, an exception in main, a JVM that could not
        start); ``[]`` for none.

    url
        http(s) URL that must answer 200.

    timeout : 120
        Seconds to wait.

    interval : 0.5
        Seconds between checks (per HTTP request timeout is at most 5 s).

    catalina_base / app_dir / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.wait_ready ecsc catalina_base=/home/apache-tomcat-7.0.67 ready='["TOMCAT_READY"]' url=http://25.0.3.17:8080/ecsc/ timeout=180
        salt '*' javaservice.wait_ready schedule app_dir=/home/schedule ready='[{"log": "/home/schedulelog/schedule.log", "pattern": "started"}]'
    """
    _check_name(name)
    ident = _identity(identity)
    timeout = _seconds(timeout, "timeout")
    interval = _seconds(interval, "interval", minimum=0.01)
    ready_specs = _patterns(ready, "ready")
    fatal_specs = _patterns(DEFAULT_FATAL if fatal is None else fatal, "fatal")
    if url is not None and not (
        isinstance(url, str) and url.lower().startswith(("http://", "https://"))
    ):
        raise SaltInvocationError(f"url must be an http(s) URL, got {url!r}")

    saved = _read_state(name)
    inodes = {}
    if offsets is None:
        offsets = saved.get("offsets")
        inodes = saved.get("inodes") or {}
    elif not isinstance(offsets, dict):
        raise SaltInvocationError(f"offsets must be a dict of path: byte offset, got {offsets!r}")
    offsets = {os.path.abspath(k): v for k, v in (offsets or {}).items()}
    if not inodes and offsets and offsets == saved.get("offsets"):
        inodes = saved.get("inodes") or {}  # the offsets start returned: its inodes apply too
    log_list = _abs_paths(logs, "logs") if logs is not None else list(offsets)
    for logfile, _, _ in ready_specs + fatal_specs:
        if logfile and logfile not in log_list:
            log_list.append(logfile)
    missing = [path for path in log_list if path not in offsets]
    if missing:
        raise SaltInvocationError(
            f"{_minion()}: {name}: no start offset for {', '.join(missing)}: call "
            "javaservice.start with these logs first, or pass offsets="
        )
    if any(spec[0] is None for spec in ready_specs) and not log_list:
        raise SaltInvocationError(f"{name}: ready patterns need logs= to scan")
    try:
        readers = {p: _LogReader(p, int(offsets[p]), inodes.get(p)) for p in log_list}
    except (TypeError, ValueError):
        readers = None
    if readers is None or any(reader.pos < 0 for reader in readers.values()):
        raise SaltInvocationError(f"offsets must be byte offsets >= 0, got {offsets!r}")

    launcher_pid, started_at = saved.get("launcher_pid"), saved.get("started_at")
    poll_ident = dict(ident, pidfile=None)  # a pid file is stale until the JVM writes it
    began = time.monotonic()
    deadline = began + timeout
    matched = {}
    http = {"status": None, "error": None, "checked": False}
    seen = []
    absent_since = None

    def fail(reason):
        parts = [f"{_minion()}: {name}: {reason} (after {time.monotonic() - began:.1f}s)"]
        for logfile, _, key in ready_specs:
            if key not in matched:
                where = logfile or ("any of " + ", ".join(log_list))
                parts.append(f"missing: pattern '{key}' in {where} after the start offset")
        if url:
            if not http["checked"] and reason.startswith("not ready"):
                http["status"], http["error"] = _http_status(url, 2)
                http["checked"] = True
            if not http["checked"]:
                parts.append(f"HTTP {url}: not checked")
            elif http["status"] is None:
                parts.append(f"HTTP {url}: no answer ({http['error']})")
            else:
                want = "" if http["status"] == 200 else " (want 200)"
                parts.append(f"HTTP {url}: status {http['status']}{want}")
        tails = list(log_list)
        out = saved.get("output")
        if out and out != os.devnull and out not in tails:
            tails.append(out)
        for path in tails:
            parts.append(_tail_block(path))
        raise CommandExecutionError("\n".join(parts))

    while True:
        for path, reader in readers.items():
            for line in reader.poll():
                for logfile, regex, key in fatal_specs:
                    if (logfile is None or logfile == path) and regex.search(line):
                        fail(f"fatal pattern '{key}' in {path}: {line[:500]}")
                for logfile, regex, key in ready_specs:
                    if key not in matched and (logfile is None or logfile == path):
                        if regex.search(line):
                            matched[key] = {"log": path, "line": line[:2000]}
        current = [info["pid"] for info in _find(poll_ident)[0]]
        if current:
            seen, absent_since = current, None
        elif seen:
            fail(f"the JVM (pid(s) {', '.join(map(str, seen))}) exited before it was ready")
        elif _launcher_alive(launcher_pid, started_at):
            absent_since = None
        elif absent_since is None:
            # A process caught mid-exec (catalina.sh's child becoming java) can be missing
            # from one scan: only a JVM still absent a moment later is a failed start.
            absent_since = time.monotonic()
        elif time.monotonic() - absent_since >= START_GRACE:
            if launcher_pid:
                fail(
                    f"not running: no JVM found and the start command (launcher pid "
                    f"{launcher_pid}) has exited"
                )
            fail("not running: no JVM found (and no javaservice.start recorded for it)")
        logs_ok = len(matched) == len(ready_specs)
        if logs_ok and current and url:
            remaining = max(deadline - time.monotonic(), 0.5)
            http["status"], http["error"] = _http_status(url, min(5.0, remaining))
            http["checked"] = True
        if logs_ok and current and (not url or http["status"] == 200):
            return {
                "name": name,
                "ready": True,
                "seconds": round(time.monotonic() - began, 3),
                "matched": matched,
                "http_status": http["status"],
                "pids": current,
            }
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if current:
                fail(f"not ready within {timeout:g}s")
            fail(
                f"not running after {timeout:g}s: no java process matches "
                f"{ident['kind']}={ident['given']}; the start command's session still has "
                + ", ".join(_describe(p) for p in _session_procs(launcher_pid, started_at))
            )
        time.sleep(min(interval, remaining))


def tail(path, lines=20):
    """
    Return the last ``lines`` lines of a log (read backwards from its end, so a multi-gigabyte
    ``catalina.out`` costs a few blocks).

    path
        Absolute path of the log.

    lines : 20
        How many lines.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.tail /home/apache-tomcat-7.0.67/logs/catalina.out
        salt '*' javaservice.tail /home/schedulelog/schedule.log lines=50
    """
    path = _abs_paths(path, "path")[0] if path else None
    if path is None:
        raise SaltInvocationError("path is required")
    try:
        count = int(lines)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"lines must be an integer, got {lines!r}")
    if count < 0:
        raise SaltInvocationError(f"lines must be >= 0, got {lines!r}")
    try:
        return _tail(path, count)
    except OSError as exc:
        raise CommandExecutionError(f"{_minion()}: cannot read {path}: {exc.strerror or exc}")
