"""
Find, stop, start and wait for the JVM of one Java service, precisely.

Replaces the runbook's ``ps -ef | grep java; kill -9 <PID>``, ``nohup sh startup.sh &`` and
"``tail -f`` until it started normally" with functions that fail loudly instead of quietly doing
the wrong thing.

:depends:   - psutil (a Salt dependency)

Identity
--------
Every function that looks at processes takes the service's identity as keyword arguments, built
from what the runbook's start really produces. Exactly one of ``catalina_base`` / ``app_dir`` is
required (giving both is refused: a Tomcat JVM does not run in its application directory, so
"both" would silently find nothing). A process is the service only when ALL of these hold:

catalina_base
    Tomcat: the JVM options hold ``-Dcatalina.base=<dir>`` (the last one wins, as in the JVM; a
    relative value is resolved against the process's cwd), compared as realpaths, exactly
    (``/home/tomcat`` never matches ``/home/tomcat2``), AND the main class is Tomcat's
    ``org.apache.catalina.startup.Bootstrap``.

app_dir (+ main)
    Standalone JVM (``cd /home/schedule && sh startup.sh``): the working directory is ``<dir>``
    (realpath), or a launcher path - ``-cp``/``-classpath``/``--class-path`` and
    ``-p``/``--module-path`` entries and the ``-jar`` file, resolved against the process's cwd -
    lies inside ``<dir>`` (path components: ``/home/schedule`` never matches
    ``/home/schedule-res``), AND it runs ``main``: a main class (``lab.standalone.Main``) or,
    for a name ending in ``.jar``, the ``-jar`` file (relative to ``<dir>``). ``main`` defaults
    to what ``<dir>/startup.sh`` launches (its ``java ... Main`` or ``java ... -jar x.jar``
    line); when neither gives one the call is refused.

user
    The process belongs to this user (name or uid; default: the owner of ``app_dir`` /
    ``catalina_base``).

and always
    Its executable is a real JVM: the ``java`` binary of a Java home holding ``lib/modules`` or
    a ``libjvm.so`` - not any file named ``java``.

pidfile
    Optional extra check, never a source of truth on its own: the pid it holds counts only if
    that process is the service as above. A stale pid file (missing, garbage, dead pid, not
    java, another JVM) is ignored, logged and reported by :func:`status`.

A java process that looks related but fails any check - it mentions the directory in its
arguments, runs another main class from the program dir, belongs to another user, or its
``java`` is not a JVM - is a *stranger*: never signalled, never counted as running, and listed
by :func:`status` and :func:`stop` (``strangers``: pid, user, cmdline, why). Never the
``sh startup.sh`` wrapper, a ``grep`` or a ``tail`` either; zombies do not count as running.
Unknown keyword arguments are refused (a typo such as ``catalinabase=`` must not turn into
"matches nothing").

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
import errno
import glob
import json
import logging
import os
import pwd
import re
import shlex
import signal as _signal
import stat
import subprocess
import time

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

_IDENTITY_KEYS = ("catalina_base", "app_dir", "main", "user", "pidfile")
_PATH_KEYS = ("catalina_base", "app_dir", "pidfile")
# Words that may stand before the java command in a start script.
_COMMAND_PREFIXES = frozenset(("exec", "nohup", "env", "command", "setsid", "nice"))
_OPTION_VARIABLE = re.compile(r"\$\{?\w*(OPTS|OPTIONS|ARGS|FLAGS)\w*\}?", re.IGNORECASE)
# Files only a real Java home has, relative to it (9+: lib/modules; 8: a libjvm.so).
_JAVA_HOME_MARKERS = (
    "lib/modules", "lib/*/libjvm.so", "lib/*/*/libjvm.so", "jre/lib/*/*/libjvm.so",
)
#: The main class of every Tomcat JVM (``catalina.sh`` runs ``... Bootstrap start``).
TOMCAT_MAIN = "org.apache.catalina.startup.Bootstrap"
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
_KILL_WAIT = 10.0  # seconds a process gets to disappear after SIGKILL
_THREAD_DUMP_WAIT = 1.0  # seconds the JVM gets to print its thread dump after SIGQUIT
# seconds the previous start's launcher (a shell waiting on the JVM) gets to exit once the
# JVM is gone: until it has, start refuses ("previous start still in progress")
_LAUNCHER_WAIT = 2.0
_GONE_POLL = 0.01  # seconds between looks at a signalled JVM's pids (and its launcher)

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


def _identity(kwargs):
    """
    Validate the identity keyword arguments; return ``{"kind": "catalina_base"|"app_dir",
    "path": realpath, "given": str, "pidfile": str|None, "main": str, "main_from": str,
    "uid": int|None, "user": str}`` (``uid`` None: the owner could not be read, nothing
    matches).
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
        if key in _PATH_KEYS and not (isinstance(value, str) and os.path.isabs(value)):
            raise SaltInvocationError(f"{key} must be an absolute path, got {value!r}")
        ident[key] = value
    if unknown:
        raise SaltInvocationError(
            f"unknown argument(s) {', '.join(sorted(unknown))}: a service is identified by "
            "catalina_base=<dir> or app_dir=<dir> (with main=<class or jar>), optionally "
            "user=<name> and pidfile=<path>"
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
    ret = {"kind": kind, "path": path, "given": ident[kind], "pidfile": ident.get("pidfile")}
    ret.update(_main_of(kind, ident[kind], ident.get("main")))
    ret.update(_user_of(path, ident.get("user")))
    return ret


def _main_of(kind, given, main):
    """{"main", "main_from"}: what the service's JVM runs (a main class, or a path ending in
    .jar for ``-jar``)."""
    if kind == "catalina_base":
        if main is not None and main != TOMCAT_MAIN:
            raise SaltInvocationError(
                f"main={main!r}: a Tomcat (catalina_base=) always runs {TOMCAT_MAIN}"
            )
        return {"main": TOMCAT_MAIN, "main_from": "Tomcat"}
    if main is not None:
        if not isinstance(main, str) or not main.strip() or main.startswith("-"):
            raise SaltInvocationError(
                f"main must name a main class or a .jar file, got {main!r}"
            )
        return {"main": main, "main_from": "main="}
    script = os.path.join(given, "startup.sh")
    found = _main_from_script(script)
    if found is None:
        raise SaltInvocationError(
            f"{__utils__['rollout_ids.minion_id']()}: cannot tell what {given}'s JVM runs: "
            f"no 'java ... <MainClass>' or 'java ... -jar <file>' line in {script}; give "
            "main=<class or jar> (pillar: the service's main)"
        )
    return {"main": found, "main_from": script}


def _main_from_script(script):
    """The main class (or ``-jar`` file) of the first java command line of a start script."""
    try:
        with open(script, encoding="utf-8", errors="replace") as handle:
            text = handle.read(256 * 1024)
    except OSError:
        return None
    for line in text.replace("\\\n", " ").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        # the command word, after exec/nohup/env and VAR=value assignments
        while words and (words[0] in _COMMAND_PREFIXES or "=" in words[0]):
            words.pop(0)
        # java, /usr/bin/java, "${JAVA_HOME:+$JAVA_HOME/bin/}java"
        if words and re.search(r"(^|[/}])java$", words[0]):
            # $JAVA_OPTS and the like expand to options; any other variable where the main
            # class belongs cannot be read from here
            words = [w for w in words if not _OPTION_VARIABLE.fullmatch(w)]
            launched = _parse_java_argv(words)[2]
            if launched:
                return None if "$" in launched else launched
    return None


def _user_of(path, user):
    """{"uid", "user"}: whose processes may be the service (``user``, else the dir's owner)."""
    if user is None:
        try:
            uid = os.stat(path).st_uid
        except OSError as exc:
            return {"uid": None, "user": f"? (owner of {path} unknown: {exc.strerror})"}
    elif isinstance(user, int) and not isinstance(user, bool):
        uid = user
    elif isinstance(user, str) and user.isdigit():
        uid = int(user)
    elif isinstance(user, str):
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            raise SaltInvocationError(
                f"user {user!r} does not exist on {__utils__['rollout_ids.minion_id']()}"
            )
    else:
        raise SaltInvocationError(f"user must be a user name or uid, got {user!r}")
    return {"uid": uid, "user": _user_name(uid)}


def _user_name(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


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
    Split a java command line into (JVM options, launcher paths, what it launches). Launcher
    paths are the class/module path entries and the ``-jar`` file; what it launches is the main
    class, the ``-jar`` file or the ``-m`` module (None if none). Parsing stops there: what
    follows belongs to the application and never identifies it.
    """
    options, paths, launched = [], [], None
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-jar":
            if i + 1 < len(argv):
                paths.append(argv[i + 1])
                launched = argv[i + 1]
            break
        if arg in ("-m", "--module") or arg.startswith("--module="):
            launched = arg.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else None)
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
        launched = arg  # the main class
        break
    return options, [p for p in paths if p], launched


def _is_inside(path, directory):
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _snapshot(proc):
    """
    What we need to know about one process, or None if it is gone. Every snapshot has
    ``pid``/``java``/``zombie``/``what``, the ``proc`` itself, its session id ``sid`` and
    ``create_time`` (so one scan also tells which processes a start's session holds). Only
    processes called ``java`` (executable or name) get more: the candidates that are then
    judged (a real JVM or a stranger). One read of /proc per file (psutil's oneshot): a scan
    runs while the service is down.
    """
    try:
        with proc.oneshot():
            info = {"pid": proc.pid, "proc": proc, "sid": _sid(proc.pid),
                    "create_time": proc.create_time()}
            if proc.status() == psutil.STATUS_ZOMBIE:
                return dict(info, java=False, zombie=True, what="zombie")
            try:
                exe = proc.exe()
            except psutil.AccessDenied:
                exe = ""
            name = proc.name()
            is_java = os.path.basename(exe) == "java" or name == "java"
            info.update(java=is_java, zombie=False, what=exe or name)
            if is_java:
                info["exe"] = exe
                info["cmdline"] = list(proc.cmdline())
                info["uid"] = proc.uids().real
                try:
                    info["cwd"] = proc.cwd()
                except psutil.AccessDenied:
                    info["cwd"] = None
            return info
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return {"pid": proc.pid, "proc": proc, "sid": _sid(proc.pid), "create_time": None,
                "java": False, "zombie": False, "what": "access denied"}


def _sid(pid):
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _java_home(exe):
    """The Java home (JDK/JRE) whose ``bin/java`` ``exe`` is, or None: a real JVM's binary sits
    next to ``lib/modules`` (9+) or a ``libjvm.so`` (8)."""
    if not exe:
        return None
    real = os.path.realpath(exe.removesuffix(" (deleted)"))
    bindir = os.path.dirname(real)
    if os.path.basename(real) != "java" or os.path.basename(bindir) != "bin":
        return None
    home = os.path.dirname(bindir)
    for marker in _JAVA_HOME_MARKERS:
        if glob.glob(os.path.join(home, marker)):
            return home
    return None


def _fresh_processes(wanted=None):
    """A new ``psutil.Process`` per live pid (for which ``wanted(pid)`` holds, if given). Not
    ``process_iter()``: it reuses Process objects whose name and exe are cached, and ``sh
    startup.sh`` exec's into java under the same pid and start time, so a cached "sh" would
    hide the JVM for good."""
    for pid in psutil.pids():
        if wanted is not None and not wanted(pid):
            continue
        try:
            yield psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue


def _exe_link(pid):
    """The executable of ``pid`` by one readlink(2) of ``/proc/<pid>/exe`` - what psutil's
    exe() reads on Linux, without building a psutil.Process (about 0.3 ms each; a scan runs
    while the service is down). ``""``: it has none (a kernel thread, a zombie, gone);
    None: not readable here (another user's process)."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        return None
    except OSError:
        return ""


def _scan():
    """Return ``{pid: snapshot}`` of every live process.

    A first look at each process is its executable's path (:func:`_exe_link`): only one
    named ``java`` (also ``java (deleted)``), or one whose path cannot be read, gets a psutil
    snapshot (:func:`_snapshot`); the others get a short one (``proc`` None, ``what`` their
    path, ``zombie`` None: not known) with their session id. Without ``/proc`` every
    process gets a psutil snapshot."""
    light = {}
    if os.path.islink("/proc/self/exe"):

        def wanted(pid):
            exe = _exe_link(pid)
            if exe is None or os.path.basename(exe.removesuffix(" (deleted)")) == "java":
                return True
            light[pid] = {"pid": pid, "proc": None, "sid": _sid(pid), "create_time": None,
                          "java": False, "zombie": None, "what": exe or "no executable"}
            return False
    else:
        wanted = None
    found = {}
    for proc in _fresh_processes(wanted):
        info = _snapshot(proc)
        if info is not None:
            found[info["pid"]] = info
    light.update(found)
    return light


def _judge(info, ident):
    """
    ``"service"`` if the process ``info`` is the service's JVM, ``None`` if it is unrelated, or
    the reasons (a string) why a related-looking java process is a stranger.
    """
    if not info.get("java") or not info.get("cmdline"):
        return None
    cwd = info.get("cwd")

    def resolve(path):
        if not os.path.isabs(path):
            if not cwd:
                return None
            path = os.path.join(cwd, path)
        return os.path.realpath(path)

    options, paths, launched = _parse_java_argv(info["cmdline"])
    why = []
    if ident["kind"] == "catalina_base":
        bases = [o.split("=", 1)[1] for o in options if o.startswith("-Dcatalina.base=")]
        placed = bool(bases) and bool(bases[-1]) and resolve(bases[-1]) == ident["path"]
        if not placed:
            why.append(f"its -Dcatalina.base is {bases[-1] if bases else 'not set'}")
    else:
        placed = bool(cwd) and os.path.realpath(cwd) == ident["path"]
        placed = placed or any(
            (r := resolve(p)) is not None and _is_inside(r, ident["path"]) for p in paths
        )
        if not placed:
            why.append(f"neither runs in nor is launched from {ident['path']}")
    if not placed and not _mentions(info, ident):
        return None  # unrelated: another service's JVM
    if not _runs_main(launched, ident, resolve):
        why.append(f"runs {launched or 'nothing'}, not {ident['main']}")
    if info.get("uid") != ident["uid"]:
        why.append(f"user {_user_name(info.get('uid'))}, not {ident['user']}")
    if _java_home(info.get("exe")) is None:
        why.append(f"{info.get('exe') or 'its executable (unreadable)'} is not a JVM")
    return "; ".join(why) if why else "service"


def _mentions(info, ident):
    """True when a process names the service's directory: cwd inside it, or any argument."""
    cwd = info.get("cwd")
    if cwd and _is_inside(os.path.realpath(cwd), ident["path"]):
        return True
    for root in {ident["path"], ident["given"].rstrip(os.sep)}:
        named = re.compile(re.escape(root) + r"(?![\w.-])")  # /home/x, not /home/x2, /home/x-y
        if any(named.search(arg) for arg in info["cmdline"]):
            return True
    return False


def _runs_main(launched, ident, resolve):
    if not launched:
        return False
    want = ident["main"]
    if want.endswith(".jar"):
        if not launched.endswith(".jar"):
            return False
        jar = want if os.path.isabs(want) else os.path.join(ident["path"], want)
        return resolve(launched) == os.path.realpath(jar)
    return launched == want or launched.rpartition("/")[2] == want  # -m module/Main


def _check_pidfile(path, scan, matched_pids):
    report = {"path": path, "pid": None, "valid": False, "reason": ""}
    try:  # never through a symlink: its content is quoted in the report
        text = "".join(__utils__["rollout_logs.tail"](path, 1, nofollow=True)).strip()
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
        log.warning("%s: ignoring pid file %s: %s", __utils__["rollout_ids.minion_id"](), path,
                    report["reason"])
    return report


def _survey(ident, scan=None):
    """Return (matching snapshots, strangers, pid file report or None), sorted by pid, from
    ``scan`` (a :func:`_scan` just made; default: a new one).

    A stranger is ``{"pid", "user", "cmdline", "why"}``: a java process that looks like the
    service (names its directory, runs from it, has its catalina.base) but is not it."""
    if scan is None:
        scan = _scan()
    matched, strangers = [], []
    for info in sorted(scan.values(), key=lambda i: i["pid"]):
        verdict = _judge(info, ident)
        if verdict == "service":
            matched.append(info)
        elif verdict:
            strangers.append(
                {
                    "pid": info["pid"],
                    "user": _user_name(info["uid"]),
                    "cmdline": " ".join(info["cmdline"])[:500],
                    "why": verdict,
                }
            )
    if strangers:
        log.info(
            "%s: not the service (never signalled): %s",
            __utils__["rollout_ids.minion_id"](),
            "; ".join(f"pid {s['pid']}: {s['why']}" for s in strangers),
        )
    report = None
    if ident["pidfile"]:
        report = _check_pidfile(ident["pidfile"], scan, {i["pid"] for i in matched})
    return matched, strangers, report


def _find(ident):
    """Return (matching snapshots sorted by pid, pid file report or None)."""
    matched, _, report = _survey(ident)
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
                f"{__utils__['rollout_ids.minion_id']()}: cannot send {sig.name} to pid "
                f"{proc.pid}: {exc}"
            )
        alive.append(proc)
    return alive


def _signal_and_wait(procs, sig, timeout):
    """Send ``sig``, wait up to ``timeout`` for the processes to go; (still alive, seconds)."""
    began = time.monotonic()
    alive = _wait_gone(_send(procs, sig), timeout)
    return alive, time.monotonic() - began


def _wait_gone(procs, timeout):
    """Wait up to ``timeout`` seconds for ``procs`` to exit; return the ones still alive.

    A zombie counts as gone: an orphaned JVM whose init does not reap stays a zombie forever.
    """
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while True:
        alive = _still_running(alive)
        remaining = deadline - time.monotonic()
        if not alive or remaining <= 0:
            return alive
        # Polled, not psutil.wait_procs: the JVM is not our child (no waitpid), and a zombie
        # that init has not reaped yet would hold wait_procs for its whole timeout. The
        # service is down from the signal on, so each look later is downtime.
        time.sleep(min(_GONE_POLL, remaining))


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
        log.warning("%s: ignoring unreadable %s: %s", __utils__["rollout_ids.minion_id"](),
                    _state_path(name), exc)
        return {}
    return data if isinstance(data, dict) else {}


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
    """(status or None, error text or None) of one GET (see _utils/rollout_http.py)."""
    ret = __utils__["rollout_http.get"](url, timeout=timeout)
    return ret["status"], ret["error"]


def _session_procs(launcher_pid, started_at, launcher_created=None, scan=None):
    """Live processes of the session ``start`` created (launcher, its children, the JVM),
    from ``scan`` (a :func:`_scan` just made; default: a new one).

    A pid is reused once its process is gone: if a process now holds the launcher's pid but
    was created at another time (``launcher_created``, else ``started_at``), the session is
    someone else's and nothing of ours is in progress. (While any member of our session lives,
    the kernel does not hand its session id out as a pid again.)"""
    found = []
    if not launcher_pid:
        return found
    try:
        holder_created = psutil.Process(launcher_pid).create_time()
    except psutil.Error:
        holder_created = None
    # psutil's create_time runs up to a second behind time.time() (whole-second boot time).
    if holder_created is not None and launcher_created is not None:
        if abs(holder_created - launcher_created) > 0.5:
            return found
    elif holder_created is not None and started_at:
        if abs(holder_created - started_at) > 2:
            return found
    if scan is None:
        scan = _scan()
    for info in sorted(scan.values(), key=lambda i: i["pid"]):
        if info.get("sid") != launcher_pid or info.get("zombie"):
            continue
        proc, created = info.get("proc"), info.get("create_time")
        if proc is None:  # a short snapshot (not java): a closer look at this member only
            try:
                proc = psutil.Process(info["pid"])
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                created = proc.create_time()
            except psutil.Error:
                continue
        if started_at and created is not None and created < started_at - 2:
            continue
        found.append(proc)
    return found


def _describe(proc):
    try:
        return f"pid {proc.pid} ({' '.join(proc.cmdline())[:100]})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _wait_launcher_gone(name):
    """After the JVM is gone: give what is left of the recorded start's session (the launcher
    shell that waited on the JVM) up to _LAUNCHER_WAIT to exit by itself, so that a start
    right after this stop does not find "the previous start still in progress". Never signals
    it: a member that stays is reported by that start, as before."""
    saved = _read_state(name)
    deadline = time.monotonic() + _LAUNCHER_WAIT
    while _start_session(saved) and time.monotonic() < deadline:
        time.sleep(_GONE_POLL)


def _start_session(saved, scan=None):
    """_session_procs of the start recorded in ``saved`` (the offsets file)."""
    return _session_procs(
        saved.get("launcher_pid"), saved.get("started_at"), saved.get("launcher_created"), scan
    )


def _locate(ident, saved):
    """One process scan while waiting for a started JVM: (the service's JVM processes, True
    when none runs yet but a process of the start's session - ``saved`` - still lives)."""
    scan = _scan()
    matched, _, _ = _survey(ident, scan)
    procs = [info["proc"] for info in matched]
    return procs, (not procs and bool(_start_session(saved, scan)))


def _still_running(procs):
    """Those of ``procs`` still alive: a look at each known pid, no scan of every process
    (psutil compares start times, so a reused pid is not taken for the JVM)."""
    return [proc for proc in procs if not _is_gone(proc)]


def _spawn_detached(argv, cwd, env, output, user):
    """
    Double fork: an intermediate child starts the launcher in a new session and exits at once,
    so the launcher (and the JVM) is re-parented to init - never a zombie of the minion, never
    killed with the job. Return the launcher's pid.

    The intermediate drops to ``user`` (uid, gid, groups) before it opens ``output``: a symlink
    or hard link the service's user planted under that name never makes root write elsewhere.
    """
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
                if user is not None:  # for good: this process only starts the launcher
                    os.setgroups(user[2])
                    os.setgid(user[1])
                    os.setuid(user[0])
                out_fd = _open_output(output)
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out_fd,
                    stderr=out_fd,
                    close_fds=True,
                    start_new_session=True,
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
        os.close(rfd)
        if wfd is not None:
            os.close(wfd)
    answer = b"".join(chunks).decode("utf-8", "replace")
    if not answer.startswith("ok "):
        raise OSError(answer.removeprefix("error: ") or "launcher did not report")
    return int(answer.split()[1])


def _open_output(path):
    """Open the launcher's output for appending as the current user: never through a symlink
    (O_NOFOLLOW), never a FIFO that blocks (O_NONBLOCK), a device or a file with another name
    elsewhere (a hard link)."""
    if path == os.devnull:
        return os.open(path, os.O_WRONLY)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o640)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"output {path} is a symlink: refused") from None
        raise OSError(f"cannot open output {path}: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        os.close(fd)
        raise OSError(f"output {path} is not a plain file (a device, FIFO or hard link): refused")
    return fd


def _user(runas):
    if runas is None:
        return None, {}
    try:
        entry = pwd.getpwnam(runas)
    except KeyError:
        raise SaltInvocationError(
            f"runas user {runas!r} does not exist on {__utils__['rollout_ids.minion_id']()}"
        )
    if os.geteuid() != 0 and os.geteuid() != entry.pw_uid:
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: only root can start a service as {runas}"
        )
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name}
    return (entry.pw_uid, entry.pw_gid, groups), env


# --------------------------------------------------------------------------- public functions


def pids(**identity):
    """
    Return the sorted pids of the service's JVM(s) (empty list when it is not running).

    catalina_base
        Tomcat's CATALINA_BASE: matches ``-Dcatalina.base=<dir>`` exactly (realpaths) and the
        main class ``org.apache.catalina.startup.Bootstrap``.

    app_dir
        A standalone service's directory: matches a java process running in it (cwd) or
        launched from it (class path / ``-jar``) that runs ``main``.

    main
        With ``app_dir``: the main class, or the ``-jar`` file (a name ending in ``.jar``,
        relative to ``app_dir``). Default: what ``<app_dir>/startup.sh`` launches.

    user
        Only processes of this user (name or uid). Default: the owner of ``app_dir`` /
        ``catalina_base``.

    pidfile
        Optional pid file, checked against the above (stale ones are ignored).

    Only a real JVM counts (see the module's docstring); look-alikes are listed as
    ``strangers`` by :func:`status`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.pids catalina_base=/home/apache-tomcat-7.0.67
        salt '*' javaservice.pids app_dir=/home/schedule
        salt '*' javaservice.pids app_dir=/home/schedule main=lab.standalone.Main user=schedule
    """
    ident = _identity(identity)
    matched, _ = _find(ident)
    return [info["pid"] for info in matched]


def status(name, install_dir=None, **identity):
    """
    Report whether the service runs: ``{"name", "running", "pids", "started", "cmdline", "cwd",
    "release", "release_note", "strangers"}`` (``started`` is the ISO time the oldest of its
    JVMs started; ``cmdline``/``cwd`` are that JVM's; ``strangers`` lists the java processes
    that look like the service but are not it - ``{"pid", "user", "cmdline", "why"}`` - which
    no function here ever signals). With ``pidfile=`` the report also has
    ``"pidfile": {"path", "pid", "valid", "reason"}``.

    ``release`` is the release the running code came from: the program dir's deployed record
    (``release.read_record``) when the JVM started after that deploy; ``None`` with a
    ``release_note`` when it is not known (no record: deployed by hand; or the JVM is older
    than the deploy, so it still runs the code from before).

    name
        The service's name (a label for the report).

    install_dir
        The program dir whose deployed record names the release (default: ``app_dir``).

    catalina_base / app_dir / main / user / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.status ecsc catalina_base=/home/apache-tomcat-7.0.67 install_dir=/home/ecsc
        salt '*' javaservice.status schedule app_dir=/home/schedule
    """
    ident = _identity(identity)
    matched, strangers, report = _survey(ident)
    ret = {
        "name": name,
        "running": bool(matched),
        "pids": [info["pid"] for info in matched],
        "started": None,
        "cmdline": [],
        "cwd": None,
        "release": None,
        "release_note": "not running",
        "strangers": strangers,
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
    if "release.read_record" not in __salt__:
        return None, "the release module is not loaded"
    record = __salt__["release.read_record"](install_dir)
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

    Returns ``{"name", "pids", "strangers", "outcome", "signal", "seconds", "escalated",
    "thread_dump", "summary", "signal_seconds"}`` (plus ``"kill_seconds"`` after an escalation
    and ``"pidfile_removed": path`` when ``pidfile`` named the JVM it stopped, as
    ``catalina.sh stop`` does; with ``pidfile=``, ``"pidfile"``: its report as in
    :func:`status`):

    - ``outcome`` is ``"graceful"`` when every JVM exited on the requested signal within the
      timeout, ``"killed"`` whenever SIGKILL was sent - because it was asked for (``signal=KILL``,
      the runbook's ``kill -9``) or because the timeout ran out (then ``escalated`` is True) -
      and ``"not running"`` when nothing matched (``pids`` empty);
    - ``seconds`` is the wall time of the whole stop;
    - ``summary`` says what happened and how long each step took: ``SIGTERM, exited after
      1.2 s``, ``SIGTERM ignored for 30.0 s, SIGKILL, gone after 0.1 s``, ``SIGKILL, gone after
      0.1 s``; ``signal_seconds``/``kill_seconds`` are those durations;
    - ``strangers``: look-alike processes left alone (see :func:`status`).

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

    catalina_base / app_dir / main / user / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.stop ecsc catalina_base=/home/apache-tomcat-7.0.67 timeout=60
        salt '*' javaservice.stop schedule app_dir=/home/schedule signal=TERM thread_dump=True
    """
    sig = __utils__["rollout_ids.parse_signal"](signal)
    timeout = _seconds(timeout, "timeout")
    ident = _identity(identity)
    began = time.monotonic()
    matched, strangers, pidfile = _survey(ident)
    ret = {
        "name": name,
        "pids": [info["pid"] for info in matched],
        "strangers": strangers,
        "outcome": "not running",
        "signal": sig.name[3:],
        "seconds": 0.0,
        "escalated": False,
        "thread_dump": bool(thread_dump),
    }
    if pidfile is not None:
        ret["pidfile"] = pidfile
    if not matched:
        return ret
    procs = [info["proc"] for info in matched]
    log.info("%s: stopping %s pids %s with %s", __utils__["rollout_ids.minion_id"](), name,
             ret["pids"], sig.name)
    steps = []
    if thread_dump:
        procs = _send(procs, _signal.SIGQUIT)
        time.sleep(_THREAD_DUMP_WAIT)
        steps.append("SIGQUIT (thread dump)")
    alive, waited = _signal_and_wait(procs, sig, timeout)
    ret["signal_seconds"] = round(waited, 3)
    killed = sig == _signal.SIGKILL
    if killed:
        steps.append(f"SIGKILL, gone after {waited:.1f} s")
    elif not alive:
        steps.append(f"{sig.name}, exited after {waited:.1f} s")
    else:
        log.warning(
            "%s: %s pids %s still alive %.1fs after %s; sending SIGKILL",
            __utils__["rollout_ids.minion_id"](), name, [p.pid for p in alive], waited, sig.name,
        )
        ret["escalated"] = killed = True
        alive, kill_waited = _signal_and_wait(alive, _signal.SIGKILL, _KILL_WAIT)
        ret["kill_seconds"] = round(kill_waited, 3)
        steps.append(f"{sig.name} ignored for {waited:.1f} s, SIGKILL, gone after "
                     f"{kill_waited:.1f} s")
    if alive:
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: {name}: pid(s) "
            f"{', '.join(str(p.pid) for p in alive)} still alive {_KILL_WAIT:g}s after SIGKILL"
        )
    _wait_launcher_gone(name)
    ret["summary"] = ", ".join(steps)
    ret["outcome"] = "killed" if killed else "graceful"
    ret["seconds"] = round(time.monotonic() - began, 3)
    if pidfile and pidfile["valid"]:
        # like `catalina.sh stop`: a pid file naming a dead JVM makes catalina.sh refuse to start
        # once that pid is reused ("Tomcat appears to still be running")
        try:
            os.unlink(pidfile["path"])
            ret["pidfile_removed"] = pidfile["path"]
        except OSError as exc:
            log.warning("%s: cannot remove pid file %s: %s", __utils__["rollout_ids.minion_id"](),
                        pidfile["path"], exc)
    return ret


def start(name, command, cwd=None, env=None, logs=None, output=None, runas=None,
          running_ok=False, **identity):
    """
    Start the service detached - new session, stdin from /dev/null, stdout/stderr appended to
    ``output``, other descriptors closed, double-forked so the launcher is never the minion's
    child - and return at once. Both launchers work: Tomcat's ``startup.sh`` forks the JVM and
    exits; ``sh startup.sh`` of a standalone service runs java in the foreground.

    Before launching, records the byte size of each of ``logs`` (a missing file counts as 0) and
    keeps it, with the launcher pid, in ``<cachedir>/javaservice/<name>.json`` for
    :func:`wait_ready`. Returns ``{"name", "offsets": {path: int}, "command", "cwd", "output",
    "launcher_pid", "started_at", "running": False, "strangers"}`` (``started_at``: the launch,
    seconds since the epoch; ``strangers``: see :func:`status`). One
    scan of the processes serves both checks below: it runs while the service is down.

    Raises CommandExecutionError if the service is already running (unless ``running_ok``),
    or a previous start's
    processes (its session) are still alive without a JVM yet (no second JVM either way; a
    process that merely got the old launcher's pid later does not count), if ``cwd`` is not a
    directory, if ``output`` is refused or if the command cannot be executed.

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
        goes - so pass e.g. ``/home/schedule/nohup.out``. It is opened as ``runas`` (after the
        privileges are dropped), never through a symlink, and only if it is a plain file with
        no other name: a link planted by the service's user never makes root write elsewhere.

    runas
        User to run as (root only); HOME/USER/LOGNAME are set for it.

    running_ok : False
        True: a service that already runs is not an error; nothing is started and the return
        is ``{"name", "running": True, "pids", "strangers"}`` (``javaservice.running`` uses
        this: one scan instead of a status and then a start).

    catalina_base / app_dir / main / user / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.start ecsc '["/home/apache-tomcat-7.0.67/bin/startup.sh"]' catalina_base=/home/apache-tomcat-7.0.67 logs='["/home/apache-tomcat-7.0.67/logs/catalina.out"]'
        salt '*' javaservice.start schedule 'sh startup.sh' app_dir=/home/schedule output=/home/schedule/nohup.out logs='["/home/schedulelog/schedule.log"]'
    """
    __utils__["rollout_ids.check_name"](name, "service name")
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
    scan = _scan()
    matched, strangers, _ = _survey(ident, scan)
    if matched and running_ok:
        return {"name": name, "running": True, "pids": [i["pid"] for i in matched],
                "strangers": strangers}
    cwd = cwd or ident["given"]
    if not os.path.isdir(cwd):
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: cannot start {name}: {cwd} is not a "
            "directory"
        )
    user, user_env = _user(runas)

    if matched:
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: {name} is already running (pid(s) "
            f"{', '.join(str(i['pid']) for i in matched)}); not starting a second JVM"
        )
    previous = _read_state(name)
    starting = _start_session(previous, scan)
    if starting:
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: {name}: the previous start (launcher pid "
            f"{previous.get('launcher_pid')}) is still in progress: "
            f"{', '.join(_describe(p) for p in starting)}; not starting a second JVM"
        )

    offsets, inodes = __utils__["rollout_logs.offsets"](logs)
    full_env = dict(os.environ)
    full_env.update(user_env)
    full_env.update({str(k): str(v) for k, v in (env or {}).items()})
    started_at = time.time()
    try:
        launcher = _spawn_detached(argv, cwd, full_env, output, user)
    except OSError as exc:
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: cannot start {name}: {shlex.join(argv)} "
            f"(in {cwd}): {exc}"
        )
    log.info("%s: started %s: %s (launcher pid %s)", __utils__["rollout_ids.minion_id"](), name,
             shlex.join(argv), launcher)
    try:  # to tell our launcher from a later process that gets the same pid
        launcher_created = psutil.Process(launcher).create_time()
    except psutil.Error:
        launcher_created = None  # gone already: a later holder of the pid is compared by time
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
            "launcher_created": launcher_created,
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
        "started_at": started_at,
        "running": False,
        "strangers": strangers,
    }


def wait_ready(
    name,
    logs=None,
    offsets=None,
    ready=None,
    fatal=None,
    url=None,
    timeout=120,
    interval=0.1,
    settle=3,
    **identity,
):
    """
    Wait until the service is ready, or fail loudly. Ready means all of:

    - every ``ready`` pattern appeared in its log after the byte offset recorded before the start
      (lines are matched one by one; old lines before the offset never count);
    - no ``fatal`` pattern appeared after the offset (checked before readiness: Tomcat logs
      "Server startup in" even when a connector could not bind);
    - the JVM runs (if it exits, or the start command exits without leaving a JVM, fail at once);
    - ``url``, if given, answers HTTP 200 (redirects followed on the same host only, no proxy);
    - then, for ``settle`` seconds, the same JVM (same pids) stays alive, ``url`` keeps
      answering 200 and no ``fatal`` pattern appears: a JVM that dies right after it became
      ready (a crash loop) fails the gate.

    Returns ``{"name", "ready": True, "seconds", "ready_at", "matched": {pattern: {"log",
    "line"}}, "http_status", "pids", "settled"}`` (``seconds``: of this wait until ready,
    before the settle time; ``ready_at``: when, seconds since the epoch).
    On timeout, death or a failed settle raises CommandExecutionError naming the minion, the
    service, what was missing (patterns, HTTP status) with the last 20 lines of each log (only
    regular files in the directories of ``logs``, and the start's ``output``).

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

    interval : 0.1
        Seconds between checks (per HTTP request timeout is at most 5 s). Short, because
        every moment between ready and the next look is downtime of the host.

    settle : 3
        Seconds the service must stay up and healthy after it became ready (0: no settle).

    catalina_base / app_dir / main / user / pidfile
        The identity, see :func:`pids`.

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.wait_ready ecsc catalina_base=/home/apache-tomcat-7.0.67 ready='["TOMCAT_READY"]' url=http://25.0.3.17:8080/ecsc/ timeout=180 settle=5
        salt '*' javaservice.wait_ready schedule app_dir=/home/schedule ready='[{"log": "/home/schedulelog/schedule.log", "pattern": "started"}]'
    """
    __utils__["rollout_ids.check_name"](name, "service name")
    gate = _ReadyGate(name, _identity(identity), url)
    gate.configure(logs, offsets, ready, fatal, timeout, interval, settle)
    gate.wait_until_ready()
    gate.hold()
    return gate.result()


class _ReadyGate:
    """The steps of :func:`wait_ready`: configure (validate, open the log followers), wait
    until ready, hold through the settle time, and build the result or the error."""

    def __init__(self, name, ident, url):
        if url is not None and not (
            isinstance(url, str) and url.lower().startswith(("http://", "https://"))
        ):
            raise SaltInvocationError(f"url must be an http(s) URL, got {url!r}")
        self.name, self.ident, self.url = name, ident, url
        self.poll_ident = dict(ident, pidfile=None)  # a pid file is stale until the JVM writes it
        self.saved = _read_state(name)
        self.matched = {}
        self.http_status = self.http_error = None
        self.http_checked = False
        self.pids = []
        self.procs = []  # the JVM's psutil.Process objects, once found
        self.starting = False  # no JVM yet, but the start's session lives (last scan)
        self.began = time.monotonic()
        self.ready_at = None

    # ------------------------------------------------------------------ configure

    def configure(self, logs, offsets, ready, fatal, timeout, interval, settle):
        self.timeout = _seconds(timeout, "timeout")
        self.interval = _seconds(interval, "interval", minimum=0.01)
        self.settle = _seconds(settle, "settle")
        self.ready_specs = _patterns(ready, "ready")
        self.fatal_specs = _patterns(DEFAULT_FATAL if fatal is None else fatal, "fatal")
        inodes = {}
        if offsets is None:
            offsets = self.saved.get("offsets")
            inodes = self.saved.get("inodes") or {}
        elif not isinstance(offsets, dict):
            raise SaltInvocationError(
                f"offsets must be a dict of path: byte offset, got {offsets!r}"
            )
        offsets = {os.path.abspath(k): v for k, v in (offsets or {}).items()}
        if not inodes and offsets and offsets == self.saved.get("offsets"):
            inodes = self.saved.get("inodes") or {}  # the offsets start returned: its inodes
        given = _abs_paths(logs, "logs") if logs is not None else list(offsets)
        # Tails are quoted only from the directories of the logs given (not pattern logs).
        self.log_dirs = sorted({os.path.dirname(path) for path in given})
        self.log_list = list(given)
        for logfile, _, _ in self.ready_specs + self.fatal_specs:
            if logfile and logfile not in self.log_list:
                self.log_list.append(logfile)
        missing = [path for path in self.log_list if path not in offsets]
        if missing:
            raise SaltInvocationError(
                f"{__utils__['rollout_ids.minion_id']()}: {self.name}: no start offset for "
                f"{', '.join(missing)}: call javaservice.start with these logs first, or pass "
                "offsets="
            )
        if any(spec[0] is None for spec in self.ready_specs) and not self.log_list:
            raise SaltInvocationError(f"{self.name}: ready patterns need logs= to scan")
        follow = __utils__["rollout_logs.follow"]
        try:
            self.readers = {p: follow(p, int(offsets[p]), inodes.get(p)) for p in self.log_list}
        except (TypeError, ValueError):
            self.readers = None
        if self.readers is None or any(reader.pos < 0 for reader in self.readers.values()):
            raise SaltInvocationError(f"offsets must be byte offsets >= 0, got {offsets!r}")
        self.deadline = self.began + self.timeout

    # ------------------------------------------------------------------ the steps

    def wait_until_ready(self):
        """Poll logs, JVM and HTTP until all say ready; raise on fatal, death or timeout."""
        absent_since = None
        while True:
            self._scan_logs()
            current = self._jvm_pids()
            if current:
                self.pids, absent_since = current, None
            elif self.pids:
                raise self._error(
                    f"the JVM (pid(s) {', '.join(map(str, self.pids))}) exited before it was "
                    "ready"
                )
            else:
                absent_since = self._check_start_alive(absent_since)
            logs_ok = len(self.matched) == len(self.ready_specs)
            if logs_ok and current and self.url:
                self._check_http(max(self.deadline - time.monotonic(), 0.5))
            if logs_ok and current and (not self.url or self.http_status == 200):
                self.ready_at = time.monotonic()
                self.ready_wall = time.time()
                return
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(current)
            time.sleep(min(self.interval, remaining))

    def hold(self):
        """The settle time: the same JVM alive, HTTP 200, no fatal line, for ``settle`` s."""
        end = self.ready_at + self.settle
        while time.monotonic() < end:
            time.sleep(min(self.interval, max(end - time.monotonic(), 0)))
            self._scan_logs(settling=True)
            gone = sorted(set(self.pids) - set(self._jvm_pids()))
            if gone:
                raise self._error(
                    f"the JVM (pid(s) {', '.join(map(str, gone))}) exited "
                    f"{time.monotonic() - self.ready_at:.1f}s after it became ready (settle "
                    f"time {self.settle:g}s)"
                )
            if self.url:
                self._check_http(max(min(5.0, end - time.monotonic()), 0.5))
                if self.http_status != 200:
                    raise self._error(
                        f"{self.url} stopped answering 200 "
                        f"{time.monotonic() - self.ready_at:.1f}s after the service became "
                        f"ready (settle time {self.settle:g}s)"
                    )

    def result(self):
        return {
            "name": self.name,
            "ready": True,
            "seconds": round(self.ready_at - self.began, 3),
            "ready_at": self.ready_wall,
            "matched": self.matched,
            "http_status": self.http_status,
            "pids": self.pids,
            "settled": self.settle,
        }

    # ------------------------------------------------------------------ checks

    def _scan_logs(self, settling=False):
        """Read the new lines: a fatal pattern raises, ready patterns are recorded."""
        for path, reader in self.readers.items():
            for line in reader.poll():
                for logfile, regex, key in self.fatal_specs:
                    if (logfile is None or logfile == path) and regex.search(line):
                        when = " during the settle time" if settling else ""
                        raise self._error(f"fatal pattern '{key}' in {path}{when}: {line[:500]}")
                for logfile, regex, key in self.ready_specs:
                    if key not in self.matched and (logfile is None or logfile == path):
                        if regex.search(line):
                            self.matched[key] = {"log": path, "line": line[:2000]}

    def _jvm_pids(self):
        """Pids of the service's JVM now. Until it is found, each look is one scan of every
        process (which also tells whether the start's session still lives); from then on
        only its own pids are looked at: that it lives on is what counts, and a scan costs
        tens of milliseconds of CPU while the JVM starts."""
        if self.procs:
            self.procs = _still_running(self.procs)
        else:
            self.procs, self.starting = _locate(self.poll_ident, self.saved)
        return [proc.pid for proc in self.procs]

    def _check_start_alive(self, absent_since):
        """No JVM yet: fine while the start command lives; else fail after START_GRACE.
        Returns the new ``absent_since``."""
        if self.starting:
            return None
        if absent_since is None:
            # A process caught mid-exec (catalina.sh's child becoming java) can be missing
            # from one scan: only a JVM still absent a moment later is a failed start.
            return time.monotonic()
        if time.monotonic() - absent_since < START_GRACE:
            return absent_since
        launcher_pid = self.saved.get("launcher_pid")
        if launcher_pid:
            raise self._error(
                f"not running: no JVM found and the start command (launcher pid "
                f"{launcher_pid}) has exited"
            )
        raise self._error("not running: no JVM found (and no javaservice.start recorded for it)")

    def _check_http(self, limit):
        self.http_status, self.http_error = _http_status(self.url, min(5.0, limit))
        self.http_checked = True

    # ------------------------------------------------------------------ errors

    def _timeout_error(self, current):
        if current:
            return self._error(f"not ready within {self.timeout:g}s")
        return self._error(
            f"not running after {self.timeout:g}s: no java process matches "
            f"{self.ident['kind']}={self.ident['given']}; the start command's session still "
            "has " + ", ".join(_describe(p) for p in _start_session(self.saved))
        )

    def _error(self, reason):
        """A CommandExecutionError: reason, what is missing, HTTP, and the logs' tails."""
        parts = [
            f"{__utils__['rollout_ids.minion_id']()}: {self.name}: {reason} "
            f"(after {time.monotonic() - self.began:.1f}s)"
        ]
        for logfile, _, key in self.ready_specs:
            if key not in self.matched:
                where = logfile or ("any of " + ", ".join(self.log_list))
                parts.append(f"missing: pattern '{key}' in {where} after the start offset")
        if self.url:
            if not self.http_checked and reason.startswith("not ready"):
                self._check_http(2)
            if not self.http_checked:
                parts.append(f"HTTP {self.url}: not checked")
            elif self.http_status is None:
                parts.append(f"HTTP {self.url}: no answer ({self.http_error})")
            else:
                want = "" if self.http_status == 200 else " (want 200)"
                parts.append(f"HTTP {self.url}: status {self.http_status}{want}")
        tail_block = __utils__["rollout_logs.tail_block"]
        for path in self.log_list:
            parts.append(tail_block(path, self.log_dirs))
        out = self.saved.get("output")
        if out and out != os.devnull and out not in self.log_list:
            parts.append(tail_block(out, [os.path.dirname(out)]))
        return CommandExecutionError("\n".join(parts))


def last_start(name):
    """
    What the last :func:`start` of the service recorded (``{}`` when it was never started
    here): ``{"name", "command", "cwd", "output", "offsets": {path: byte offset}, "inodes",
    "launcher_pid", "launcher_created", "started_at"}``. The offsets are where the lines of
    the JVM that start launched begin in each log (``probe.log since_start=`` reads from them).

    name
        The service's name (as given to :func:`start`).

    CLI Example:

    .. code-block:: bash

        salt '*' javaservice.last_start ecsc
    """
    __utils__["rollout_ids.check_name"](name, "service name")
    return _read_state(name)


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
        return __utils__["rollout_logs.tail"](path, count)
    except OSError as exc:
        raise CommandExecutionError(
            f"{__utils__['rollout_ids.minion_id']()}: cannot read {path}: {exc.strerror or exc}"
        )
