"""Functional tests for the javaservice execution and state modules: real JVMs, real Tomcat.

The JVMs are tests/functional/javaservice_support/FakeService.java compiled with javac into a
temporary directory, and Debian's Tomcat 10 with CATALINA_BASEs written by lab/tomcat_base.py.
Every process a test starts is killed by pid when the test ends (see ``leftovers``).
"""

import os
import pathlib
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import psutil
import pytest
from salt.exceptions import CommandExecutionError

import lab.tomcat_base

SUPPORT = pathlib.Path(__file__).parent / "javaservice_support"
MINION = "func-tests-minion"
JAVA_OPTS = "-Xmx16m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto"
FAKE_ADDR = "127.0.3.213"  # FakeService HTTP; Tomcats use .211 (ours) and .212 (decoy)
TOMCAT_READY = r"Server startup in \[?\d+\]? (ms|milliseconds)"

# The runbook's standalone services: run from their directory (cd /home/schedule && nohup sh
# startup.sh &), java in the foreground as a child of this shell (which is not java, and whose
# cwd is the app dir: it must never be matched).
STARTUP_SH = f"""#!/bin/sh
java {JAVA_OPTS} -cp lib FakeService "$@"
"""

pytestmark = [
    pytest.mark.skipif(not shutil.which("javac"), reason="needs a JDK (javac)"),
]


# --------------------------------------------------------------------------- helpers


def wait_for(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def free_port(address):
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def logged_pid(log):
    """The pid FakeService wrote into its log ("FakeService starting pid N")."""

    def find():
        if not log.exists():
            return None
        for line in log.read_text().splitlines():
            if "FakeService starting pid " in line:
                return int(line.rsplit(" ", 1)[1])
        return None

    return wait_for(find, f"FakeService to start ({log})")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    out = tmp_path_factory.mktemp("fakeservice-classes")
    subprocess.run(
        ["javac", "-nowarn", "-d", str(out), str(SUPPORT / "FakeService.java"),
         str(SUPPORT / "SomeTool.java")],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(autouse=True)
def leftovers(tmp_path):
    """Popen objects to kill; afterwards also every process of this test's tmp_path, by pid.

    Detached JVMs (javaservice.start, Tomcat's startup.sh) are not our children; all of them
    carry this test's tmp_path in their command line or working directory.
    """
    popens = []
    yield popens
    for popen in popens:
        if popen.poll() is None:
            popen.kill()
        popen.wait()
    root = str(tmp_path)
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            cmdline, cwd = proc.cmdline(), proc.cwd()
        except psutil.Error:
            continue
        if any(root in arg for arg in cmdline) or cwd == root or cwd.startswith(root + os.sep):
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def home(tmp_path, classes):
    """A host's /home: schedule and schedule-res installed, log dirs."""
    home = tmp_path / "home"
    for name in ("schedule", "schedule-res"):
        app = home / name
        shutil.copytree(classes, app / "lib")
        (app / "startup.sh").write_text(STARTUP_SH)
        (home / f"{name.replace('-', '')}log").mkdir(parents=True)
    return home


@pytest.fixture
def decoys(home, classes, leftovers):
    """JVMs (and a tail) that a sloppy `ps | grep` would take for schedule's."""
    app = home / "schedule"
    log = home / "schedulelog" / "schedule.log"
    log.touch()
    java = ["java", *JAVA_OPTS.split()]
    spawn = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    found = {
        # schedule-res: its directory has /home/schedule as a string prefix
        "res": subprocess.Popen([*java, "-cp", "lib", "FakeService", "name=schedule-res"],
                                cwd=home / "schedule-res", **spawn),
        # a JVM that names the service and its paths in -D values and its own arguments
        "named": subprocess.Popen([*java, f"-Dwatch={app}", "-cp", str(classes), "FakeService",
                                   "name=schedule", str(app), str(app / "lib"), "lib"],
                                  cwd=home, **spawn),
        # not java at all, sitting in the app dir
        "tail": subprocess.Popen(["tail", "-f", str(log)], cwd=app, **spawn),
    }
    leftovers.extend(found.values())
    wait_for(lambda: all(
        psutil.Process(p.pid).name() in ("java", "tail") for p in found.values()
    ), "decoys to exec")
    return found


def start_schedule(modules, home, *args, logs=True, output=None):
    """javaservice.start for schedule the runbook's way; return (start result, log path)."""
    log = home / "schedulelog" / "schedule.log"
    ret = modules.javaservice.start(
        "schedule",
        ["sh", "startup.sh", f"log={log}", *args],
        logs=[str(log)] if logs else None,
        output=str(output) if output else None,
        app_dir=str(home / "schedule"),
    )
    return ret, log


# --------------------------------------------------------------------------- execution module


def test_start_detached_ready_and_precise(modules, home, decoys, minion_opts):
    app = home / "schedule"
    log = home / "schedulelog" / "schedule.log"
    log.write_text("old run\nScheduler started\n")  # the previous run's marker
    old_size = log.stat().st_size
    port = free_port(FAKE_ADDR)
    nohup = app / "nohup.out"
    started, _ = start_schedule(modules, home, "delay=300", "ready=Scheduler started",
                                f"http={FAKE_ADDR}:{port}", output=nohup)
    assert started["offsets"] == {str(log): old_size}
    assert started["command"][:2] == ["sh", "startup.sh"]
    cache = pathlib.Path(minion_opts["cachedir"]) / "javaservice" / "schedule.json"
    assert cache.exists()

    # wait_ready takes the offsets start persisted: the old marker does not count
    ready = modules.javaservice.wait_ready(
        "schedule", ready=["Scheduler started"], url=f"http://{FAKE_ADDR}:{port}/health",
        timeout=30, app_dir=str(app),
    )
    pid = logged_pid(log)
    assert ready["ready"] is True and ready["http_status"] == 200 and ready["pids"] == [pid]
    assert ready["matched"]["Scheduler started"]["line"].endswith(" Scheduler started")

    # detached: alive after start returned, own session (the launcher's), not our child
    assert alive(pid)
    assert os.getsid(pid) == started["launcher_pid"] != os.getsid(0)
    assert psutil.Process(pid).ppid() != os.getpid()
    assert psutil.Process(started["launcher_pid"]).ppid() != os.getpid()
    assert not [c.pid for c in psutil.Process().children() if c.status() == psutil.STATUS_ZOMBIE]
    assert "FakeService starting" in nohup.read_text()  # stdout went to output=

    # precise: only the service's JVM, never the decoys or the startup.sh shell in the app dir
    assert modules.javaservice.pids(app_dir=str(app)) == [pid]
    assert modules.javaservice.pids(app_dir=str(home / "schedule-res")) == [decoys["res"].pid]
    status = modules.javaservice.status("schedule", app_dir=str(app))
    assert status["running"] is True and status["pids"] == [pid]
    assert status["cwd"] == str(app) and os.path.basename(status["cmdline"][0]) == "java"

    with pytest.raises(CommandExecutionError, match=f"{MINION}: schedule is already running"):
        start_schedule(modules, home)
    assert modules.javaservice.pids(app_dir=str(app)) == [pid]


def test_stop_graceful_leaves_decoys_alone(modules, home, decoys):
    started, log = start_schedule(modules, home)
    pid = logged_pid(log)
    before = {name: p.pid for name, p in decoys.items()}
    ret = modules.javaservice.stop("schedule", timeout=20, app_dir=str(home / "schedule"))
    assert ret["outcome"] == "graceful" and ret["pids"] == [pid] and ret["signal"] == "TERM"
    assert not alive(pid)
    assert "FakeService stopping" in log.read_text()  # its shutdown hook ran
    assert {name: p.pid for name, p in decoys.items()} == before
    assert all(p.poll() is None and alive(p.pid) for p in decoys.values())
    wait_for(lambda: not alive(started["launcher_pid"]), "startup.sh to exit with its java")
    again = modules.javaservice.stop("schedule", app_dir=str(home / "schedule"))
    assert again["outcome"] == "not running" and again["pids"] == []


def test_stop_kills_a_jvm_that_ignores_term(modules, home, decoys):
    _, log = start_schedule(modules, home, "ignoreTerm=true")
    pid = logged_pid(log)
    ret = modules.javaservice.stop("schedule", timeout=1, app_dir=str(home / "schedule"))
    assert ret["outcome"] == "killed" and ret["escalated"] is True and ret["pids"] == [pid]
    assert not alive(pid)
    assert "FakeService ignoring SIGTERM" in log.read_text()
    assert all(alive(p.pid) for p in decoys.values())


def test_stop_with_kill_like_the_runbook(modules, home):
    _, log = start_schedule(modules, home)
    pid = logged_pid(log)
    ret = modules.javaservice.stop("schedule", signal=9, app_dir=str(home / "schedule"))
    assert (ret["outcome"], ret["signal"], ret["escalated"]) == ("killed", "KILL", False)
    assert not alive(pid)
    assert "FakeService stopping" not in log.read_text()


def test_old_tomcat_marker_does_not_count(modules, home):
    log = home / "schedulelog" / "schedule.log"
    log.write_text("INFO: Server startup in [123] milliseconds\nINFO: Server startup in 45 ms\n")
    start_schedule(modules, home)  # a JVM that never logs a new marker
    pid = logged_pid(log)
    with pytest.raises(CommandExecutionError) as err:
        modules.javaservice.wait_ready("schedule", ready=["TOMCAT_READY"], timeout=1.5,
                                       app_dir=str(home / "schedule"))
    message = str(err.value)
    assert message.startswith(f"{MINION}: schedule: not ready within 1.5s")
    assert f"missing: pattern '{TOMCAT_READY}'" in message
    assert f"--- last 20 lines of {log} ---" in message
    assert "Server startup in [123] milliseconds" in message and "FakeService starting" in message

    with open(log, "a") as handle:  # a fresh marker after the offset does count
        handle.write("INFO: Server startup in [77] milliseconds\n")
    ready = modules.javaservice.wait_ready("schedule", ready=["TOMCAT_READY"], timeout=10,
                                           app_dir=str(home / "schedule"))
    assert ready["pids"] == [pid]
    assert ready["matched"][TOMCAT_READY]["line"] == "INFO: Server startup in [77] milliseconds"


def test_wait_ready_fails_at_once_when_the_jvm_exits(modules, home):
    start_schedule(modules, home, "delay=200", "exitAfter=300")
    with pytest.raises(CommandExecutionError) as err:
        modules.javaservice.wait_ready("schedule", ready=["never logged"], timeout=120,
                                       app_dir=str(home / "schedule"))
    message = str(err.value)
    assert "exited before it was ready" in message or "has exited" in message
    assert "FakeService exiting" in message  # the log's tail


def test_wait_ready_start_command_leaves_no_jvm(modules, home):
    out = home / "schedule" / "nohup.out"
    started = modules.javaservice.start("schedule", ["sh", "-c", "echo no java here; exit 1"],
                                        logs=[], output=str(out), app_dir=str(home / "schedule"))
    with pytest.raises(CommandExecutionError) as err:
        modules.javaservice.wait_ready("schedule", timeout=120, app_dir=str(home / "schedule"))
    message = str(err.value)
    assert f"launcher pid {started['launcher_pid']}) has exited" in message
    assert "no java here" in message  # the output's tail


def test_wait_ready_fatal_line(modules, home):
    start_schedule(modules, home, "delay=100", "fatal=java.lang.OutOfMemoryError: Java heap space",
                   "ready=Scheduler started")
    with pytest.raises(CommandExecutionError, match="fatal pattern 'java.*OutOfMemoryError"):
        modules.javaservice.wait_ready("schedule", ready=["Scheduler started"], timeout=30,
                                       app_dir=str(home / "schedule"))


def test_start_does_not_hand_down_ignored_signals(modules, home):
    # A JVM started with SIGTERM ignored (inherited through exec, as `nohup` does for SIGHUP)
    # never installs its shutdown handler: it would ignore every graceful stop.
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
        _, log = start_schedule(modules, home)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGTERM, old_term)
    pid = logged_pid(log)
    fields = dict(line.split(":\t", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    assert not int(fields["SigIgn"], 16) & (1 << (signal.SIGTERM - 1))
    ret = modules.javaservice.stop("schedule", timeout=20, app_dir=str(home / "schedule"))
    assert ret["outcome"] == "graceful"


def test_start_env_and_errors(modules, home):
    out = home / "schedule" / "env.out"
    modules.javaservice.start("envcheck", ["sh", "-c", 'echo "FOO=$FOO BAR=$BAR"'], logs=[],
                              env=[{"FOO": "from-sls"}, {"BAR": 2}], output=str(out),
                              app_dir=str(home / "schedule"))
    wait_for(lambda: out.exists() and out.read_text(), "the command's output")
    assert out.read_text() == "FOO=from-sls BAR=2\n"

    with pytest.raises(CommandExecutionError, match=f"{MINION}: cannot start schedule: ./nope.sh"):
        modules.javaservice.start("schedule", "./nope.sh", app_dir=str(home / "schedule"))
    with pytest.raises(CommandExecutionError, match="is not a directory"):
        modules.javaservice.start("schedule", ["sh", "startup.sh"], cwd=str(home / "missing"),
                                  app_dir=str(home / "schedule"))
    # a start whose processes are still alive without a JVM: no second start
    slow = modules.javaservice.start("schedule", ["sh", "-c", "sleep 30; exec sh startup.sh"],
                                     logs=[], app_dir=str(home / "schedule"))
    with pytest.raises(CommandExecutionError) as err:
        start_schedule(modules, home)
    assert f"launcher pid {slow['launcher_pid']}) is still in progress" in str(err.value)
    assert "sleep 30" in str(err.value)
    with pytest.raises(CommandExecutionError) as err:
        modules.javaservice.wait_ready("schedule", timeout=0.5, app_dir=str(home / "schedule"))
    assert "not running after 0.5s: no java process matches app_dir=" in str(err.value)


# --------------------------------------------------------------------------- states


def test_states_standalone_idempotent(states, modules, home, decoys):
    app = str(home / "schedule")
    log = home / "schedulelog" / "schedule.log"
    kwargs = dict(
        name="schedule",
        app_dir=app,
        start=["sh", "startup.sh", f"log={log}", "delay=200", "ready=Scheduler started"],
        logs=[str(log)],
        ready=["Scheduler started"],
        timeout=30,
    )
    ret = states.javaservice.running(test=True, **kwargs)
    assert ret.result is None and ret.changes == {}
    assert "would start schedule: sh startup.sh" in ret.comment
    time.sleep(0.3)
    assert modules.javaservice.pids(app_dir=app) == []

    ret = states.javaservice.running(**kwargs)
    assert ret.result is True, ret.comment
    pid = logged_pid(log)
    assert ret.changes["started"]["pids"] == [pid]

    ret = states.javaservice.running(**kwargs)
    assert ret.result is True and ret.changes == {}
    assert modules.javaservice.pids(app_dir=app) == [pid]

    ret = states.javaservice.dead(name="schedule", app_dir=app, test=True)
    assert ret.result is None and ret.changes == {}
    assert f"would stop schedule: pid(s) {pid} with SIGTERM" in ret.comment
    assert alive(pid)

    ret = states.javaservice.dead(name="schedule", app_dir=app, timeout=20)
    assert ret.result is True
    assert ret.changes["stopped"]["pids"] == [pid]
    assert ret.changes["stopped"]["outcome"] == "graceful"
    assert not alive(pid)

    ret = states.javaservice.dead(name="schedule", app_dir=app)
    assert ret.result is True and ret.changes == {}
    assert all(alive(p.pid) for p in decoys.values())


def test_state_running_fails_with_tail(states, home):
    log = home / "schedulelog" / "schedule.log"
    ret = states.javaservice.running(
        name="schedule",
        app_dir=str(home / "schedule"),
        start=["sh", "startup.sh", f"log={log}"],
        logs=[str(log)],
        ready=["Scheduler started"],
        timeout=5,  # time for the JVM to log its first line on a loaded host
    )
    assert ret.result is False
    assert ret.comment.startswith(f"{MINION}: schedule: not ready within 5s")
    assert "FakeService starting" in ret.comment
    assert ret.changes["started"]["ready"] is False and ret.changes["started"]["pids"]


# --------------------------------------------------------------------------- real Tomcat


@pytest.fixture
def tomcats(tmp_path):
    """Our CATALINA_BASE (home/tomcat, 127.0.3.211) and a decoy (home/tomcat2, 127.0.3.212)."""
    if not (lab.tomcat_base.CATALINA_HOME / "bin" / "startup.sh").exists():
        pytest.skip("needs Debian's tomcat10")
    app = tmp_path / "demo"
    (app / "WEB-INF").mkdir(parents=True)
    shutil.copy(SUPPORT / "demo-web.xml", app / "WEB-INF" / "web.xml")
    (app / "index.html").write_text("demo\n")
    ours = lab.tomcat_base.write(tmp_path / "home" / "tomcat", "127.0.3.211", 8080, app, "/demo",
                                 pidfile=True)
    decoy = lab.tomcat_base.write(tmp_path / "home" / "tomcat2", "127.0.3.212", 8080, app, "/demo")
    return ours, decoy


def test_real_tomcat(states, modules, tomcats):
    base, decoy_base = tomcats
    catalina_out = base / "logs" / "catalina.out"
    catalina_out.write_text("INFO: Server startup in [123] milliseconds\n")  # an old run's marker
    subprocess.run([str(decoy_base / "bin" / "startup.sh")], check=True, capture_output=True,
                   stdin=subprocess.DEVNULL, timeout=60)
    decoy_pid = wait_for(lambda: modules.javaservice.pids(catalina_base=str(decoy_base)),
                         "decoy Tomcat")
    assert modules.javaservice.pids(catalina_base=str(base)) == []

    kwargs = dict(
        name="ecsc",
        catalina_base=str(base),
        pidfile=str(base / "temp" / "catalina.pid"),
        start=[str(base / "bin" / "startup.sh")],
        logs=[str(catalina_out)],
        ready=["TOMCAT_READY"],
        url="http://127.0.3.211:8080/demo/index.html",
        timeout=60,
    )
    ret = states.javaservice.running(test=True, **kwargs)
    assert ret.result is None and modules.javaservice.pids(catalina_base=str(base)) == []

    ret = states.javaservice.running(**kwargs)
    assert ret.result is True, ret.comment
    pids = ret.changes["started"]["pids"]
    assert len(pids) == 1 and pids[0] != decoy_pid[0]
    assert int((base / "temp" / "catalina.pid").read_text()) == pids[0]
    assert "HTTP 200" in ret.comment

    ret = states.javaservice.running(**kwargs)
    assert ret.result is True and ret.changes == {}, ret.comment
    assert modules.javaservice.pids(catalina_base=str(base)) == pids

    ret = states.javaservice.dead(name="ecsc", catalina_base=str(base), timeout=30)
    assert ret.result is True, ret.comment
    assert ret.changes["stopped"]["pids"] == pids
    assert ret.changes["stopped"]["outcome"] == "graceful"
    assert not alive(pids[0])

    # the decoy Tomcat was never touched
    assert modules.javaservice.pids(catalina_base=str(decoy_base)) == decoy_pid
    assert alive(decoy_pid[0])

    # catalina.pid now names a dead JVM: ignored and reported
    status = modules.javaservice.status("ecsc", catalina_base=str(base),
                                        pidfile=str(base / "temp" / "catalina.pid"))
    assert status["running"] is False and status["pidfile"]["valid"] is False
    assert status["pidfile"]["reason"].startswith("stale")

    ret = states.javaservice.dead(name="ecsc", catalina_base=str(base))
    assert ret.result is True and ret.changes == {}


# --------------------------------------------------------------------------- issue 8 (safety)


def test_look_alikes_are_strangers_never_signalled(modules, states, home, classes, leftovers,
                                                   tmp_path):
    """8.2: a real JVM running another main class with the service's classes on its class path,
    and a program called java that is no JVM, both in/naming the program dir: never the
    service, reported as strangers, alive after the stop."""
    app = home / "schedule"
    spawn = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tool = subprocess.Popen(["java", *JAVA_OPTS.split(), "-cp", f"{classes}:{app / 'lib'}",
                             "SomeTool"], cwd=home, **spawn)
    fake_bin = tmp_path / "notajdk" / "bin"
    fake_bin.mkdir(parents=True)
    shutil.copy("/bin/sh", fake_bin / "java")
    fake = subprocess.Popen([str(fake_bin / "java"), "-c", "sleep 120; true", "-cp", "lib",
                             "FakeService"], cwd=app, **spawn)
    leftovers.extend([tool, fake])
    wait_for(lambda: psutil.Process(tool.pid).name() == "java", "the decoy JVM")
    _, log = start_schedule(modules, home)
    pid = logged_pid(log)

    status = modules.javaservice.status("schedule", app_dir=str(app))
    assert status["pids"] == [pid]
    why = {s["pid"]: s["why"] for s in status["strangers"]}
    assert why[tool.pid] == "runs SomeTool, not FakeService"
    assert why[fake.pid].endswith(f"{fake_bin / 'java'} is not a JVM")

    ret = states.javaservice.dead(name="schedule", app_dir=str(app), timeout=20)
    assert ret.result is True and ret.changes["stopped"]["pids"] == [pid]
    assert "; left alone (not the service): " in ret.comment
    assert f"pid {tool.pid} (root: runs SomeTool" in ret.comment
    assert f"pid {fake.pid} (root: " in ret.comment
    assert not alive(pid) and alive(tool.pid) and alive(fake.pid)


def test_output_is_never_written_through_a_planted_symlink(modules, home, tmp_path):
    """8.4: the service user replaces nohup.out with a symlink to a root-owned file."""
    target = tmp_path / "root-owned.conf"
    target.write_text("precious\n")
    out = home / "schedule" / "nohup.out"
    out.symlink_to(target)
    with pytest.raises(CommandExecutionError, match="nohup.out is a symlink: refused"):
        modules.javaservice.start("schedule", ["sh", "-c", "echo overwritten"], logs=[],
                                  output=str(out), app_dir=str(home / "schedule"))
    time.sleep(0.5)
    assert target.read_text() == "precious\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="runas needs root")
def test_output_is_opened_as_the_runas_user(modules, tmp_path):
    """8.4: the output file is opened after dropping to runas (so it is that user's file and
    the kernel's permission checks are that user's)."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="javaservice-runas-", dir="/tmp"))
    try:
        work.chmod(0o777)
        (work / "startup.sh").write_text("#!/bin/sh\njava -cp lib Main\n")
        out = work / "nohup.out"
        modules.javaservice.start("runas", ["sh", "-c", "id -un"], logs=[], output=str(out),
                                  runas="nobody", app_dir=str(work))
        wait_for(lambda: out.exists() and out.read_text(), "the command's output")
        assert out.read_text() == "nobody\n"
        assert out.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    finally:
        shutil.rmtree(work)


# --------------------------------------------------------------------------- issue 9 (faults)


def test_a_jvm_ignoring_term_is_killed_and_the_comment_says_so(states, home):
    """9.1: SIGTERM ignored -> SIGKILL within the timeout; the comment says which and how long."""
    app = str(home / "schedule")
    log = home / "schedulelog" / "schedule.log"
    ret = states.javaservice.running(
        name="schedule", app_dir=app, start=["sh", "startup.sh", f"log={log}", "ignoreTerm=true",
                                             "ready=Scheduler started"],
        logs=[str(log)], ready=["Scheduler started"], timeout=30, settle=0,
    )
    assert ret.result is True, ret.comment
    pid = ret.changes["started"]["pids"][0]
    ret = states.javaservice.dead(name="schedule", app_dir=app, timeout=1)
    assert ret.result is True and ret.changes["stopped"]["outcome"] == "killed"
    assert re.search(r": SIGTERM ignored for 1\.\d s, SIGKILL, gone after \d+\.\d s$",
                     ret.comment), ret.comment
    assert not alive(pid) and "FakeService ignoring SIGTERM" in log.read_text()


def test_settle_catches_a_jvm_that_exits_right_after_ready(modules, home):
    """9.2: ready (marker + HTTP 200), then the JVM exits a second later: the gate fails."""
    port = free_port(FAKE_ADDR)
    _, log = start_schedule(modules, home, "ready=Scheduler started", f"http={FAKE_ADDR}:{port}",
                            "exitAfter=1000")
    with pytest.raises(CommandExecutionError) as err:
        modules.javaservice.wait_ready("schedule", ready=["Scheduler started"],
                                       url=f"http://{FAKE_ADDR}:{port}/health", timeout=30,
                                       settle=6, app_dir=str(home / "schedule"))
    message = str(err.value)
    # whichever it sees first: the HTTP server closing or the process gone
    assert re.search(r"after (it|the service) became ready \(settle time 6s\)", message)
    assert "FakeService exiting" in message  # the log's tail


def test_health_200_with_a_fatal_line_is_not_ready(modules, home):
    """9.12: the health URL answers 200, but the app log shows a fatal pattern: not ready -
    before the ready marker, and after it (within the settle time)."""
    port = free_port(FAKE_ADDR)
    url = f"http://{FAKE_ADDR}:{port}/health"
    for when in ([], ["fatalAfter=1500"]):
        _, log = start_schedule(modules, home, "delay=300", f"http={FAKE_ADDR}:{port}",
                                "fatal=java.lang.OutOfMemoryError: Java heap space",
                                "ready=Scheduler started", *when)
        with pytest.raises(CommandExecutionError, match="fatal pattern 'java.*OutOfMemoryError"):
            modules.javaservice.wait_ready("schedule", ready=["Scheduler started"], url=url,
                                           timeout=30, settle=5, app_dir=str(home / "schedule"))
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200  # healthy by HTTP, and still not ready
        pid = logged_pid(log)
        assert alive(pid)
        modules.javaservice.stop("schedule", timeout=20, app_dir=str(home / "schedule"))
        log.unlink()
