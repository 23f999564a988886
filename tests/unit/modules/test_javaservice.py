"""Unit tests for _modules/javaservice.py and _states/javaservice.py (fake processes, real files)."""

import importlib.util
import os
import re
import signal
import sys
import time
from unittest.mock import MagicMock, patch

import psutil
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO_ROOT


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


javaservice = _load("javaservice_module_under_test", REPO_ROOT / "_modules" / "javaservice.py")
javaservice_state = _load("javaservice_state_under_test", REPO_ROOT / "_states" / "javaservice.py")

MINION = "unit-minion"
JAVA = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"


@pytest.fixture
def configure_loader_modules(tmp_path):
    opts = {"id": MINION, "cachedir": str(tmp_path / "cache"), "test": False}
    salt_funcs = {
        f"javaservice.{fun}": getattr(javaservice, fun)
        for fun in ("pids", "status", "stop", "start", "wait_ready", "tail")
    }
    return {
        javaservice: {"__opts__": opts, "__salt__": {}},
        javaservice_state: {"__opts__": opts, "__salt__": salt_funcs},
    }


class FakeProc:
    """Just enough of psutil.Process for javaservice."""

    def __init__(self, pid, cmdline, exe=JAVA, cwd="/", name=None, status="sleeping",
                 create_time=1000.0, dies_on=(signal.SIGTERM, signal.SIGKILL), exe_denied=False):
        self.pid = pid
        self._cmdline = list(cmdline)
        self._exe = exe
        self._cwd = cwd
        self._name = name if name is not None else os.path.basename(exe)
        self._status = status
        self._create_time = create_time
        self.dies_on = set(dies_on)
        self.exe_denied = exe_denied
        self.dead = False
        self.signals = []

    def _check(self):
        if self.dead:
            raise psutil.NoSuchProcess(self.pid)

    def status(self):
        self._check()
        return self._status

    def exe(self):
        self._check()
        if self.exe_denied:
            raise psutil.AccessDenied(self.pid)
        return self._exe

    def name(self):
        self._check()
        return self._name

    def cmdline(self):
        self._check()
        return self._cmdline

    def cwd(self):
        self._check()
        return self._cwd

    def create_time(self):
        self._check()
        return self._create_time

    def is_running(self):
        return not self.dead

    def send_signal(self, sig):
        self._check()
        self.signals.append(sig)
        if sig in self.dies_on:
            self.dead = True

    def wait(self, timeout=None):
        if self.dead:
            return 0
        time.sleep(min(timeout or 0, 0.01))
        raise psutil.TimeoutExpired(timeout, self.pid)


def tomcat(pid, base, cwd="/"):
    return FakeProc(pid, [JAVA, "-Dnop", "--add-opens=java.base/java.lang=ALL-UNNAMED",
                          "-Xmx64m", "-classpath",
                          "/usr/share/tomcat10/bin/bootstrap.jar:/usr/share/tomcat10/bin/tomcat-juli.jar",
                          f"-Dcatalina.base={base}", "-Dcatalina.home=/usr/share/tomcat10",
                          "org.apache.catalina.startup.Bootstrap", "start"], cwd=cwd)


@pytest.fixture
def procs():
    """A host running many things; tests add to it."""
    found = []
    with patch.object(javaservice, "_fresh_processes", side_effect=lambda: list(found)):
        yield found


# --------------------------------------------------------------------------- identity


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "catalina_base=<dir>"),
        ({"pidfile": "/run/x.pid"}, "pidfile= alone"),
        ({"catalina_base": "/home/t", "app_dir": "/home/ecsc"}, "not both"),
        ({"app_dir": "home/schedule"}, "absolute path"),
        ({"app_dir": "/"}, "every java process"),
        ({"catalinabase": "/home/t"}, "unknown argument(s) catalinabase"),
    ],
)
def test_identity_is_required_and_checked(procs, kwargs, message):
    with pytest.raises(SaltInvocationError, match=re.escape(message)):
        javaservice.pids(**kwargs)


def test_cli_pub_kwargs_are_ignored(procs):
    procs.append(tomcat(10, "/home/tomcat"))
    assert javaservice.pids(catalina_base="/home/tomcat", __pub_fun="javaservice.pids") == [10]


def test_catalina_base_exact_not_prefix(procs):
    procs.extend([tomcat(10, "/home/tomcat"), tomcat(11, "/home/tomcat2"), tomcat(12, "/home/tomcat/x")])
    assert javaservice.pids(catalina_base="/home/tomcat") == [10]
    assert javaservice.pids(catalina_base="/home/tomcat/") == [10]
    assert javaservice.pids(catalina_base="/home/tomcat2") == [11]
    assert javaservice.pids(catalina_base="/home/tomca") == []


def test_catalina_base_realpath_and_relative(procs, tmp_path):
    real = tmp_path / "apache-tomcat-7.0.67"
    real.mkdir()
    link = tmp_path / "tomcat"
    link.symlink_to(real)
    procs.extend([tomcat(20, str(link)), tomcat(21, "apache-tomcat-7.0.67", cwd=str(tmp_path))])
    assert javaservice.pids(catalina_base=str(real)) == [20, 21]
    assert javaservice.pids(catalina_base=str(link)) == [20, 21]


def test_catalina_base_last_option_wins_and_app_args_do_not_count(procs):
    last_wins = tomcat(30, "/home/other")
    last_wins._cmdline.insert(1, "-Dcatalina.base=/home/tomcat")
    in_app_args = FakeProc(31, [JAVA, "-cp", "/opt/x.jar", "Decoy", "-Dcatalina.base=/home/tomcat"])
    procs.extend([last_wins, in_app_args])
    assert javaservice.pids(catalina_base="/home/tomcat") == []
    assert javaservice.pids(catalina_base="/home/other") == [30]


def test_app_dir_by_cwd_classpath_and_jar(procs):
    procs.extend(
        [
            FakeProc(40, [JAVA, "-Xmx16m", "-cp", "lib/a.jar:lib/b.jar", "com.x.Main"], cwd="/home/schedule"),
            FakeProc(41, [JAVA, "-cp", "lib/*", "com.x.Main"], cwd="/home/schedule"),
            FakeProc(42, [JAVA, "-classpath", "schedule/lib/*", "com.x.Main"], cwd="/home"),
            FakeProc(43, [JAVA, "-Dx=1", "-jar", "/home/schedule/app.jar", "--port", "1"], cwd="/"),
            FakeProc(44, [JAVA, "--class-path=/home/schedule/classes", "Main"], cwd="/tmp"),
        ]
    )
    assert javaservice.pids(app_dir="/home/schedule") == [40, 41, 42, 43, 44]


def test_app_dir_never_matches_prefix_dir_name_in_args_or_non_java(procs):
    procs.extend(
        [
            # schedule-res: /home/schedule is a string prefix of its directory
            FakeProc(50, [JAVA, "-cp", "lib/*", "Main"], cwd="/home/schedule-res"),
            FakeProc(51, [JAVA, "-cp", "/home/schedule-res/lib/x.jar", "Main"], cwd="/"),
            # the service's name and paths only as -D values or application arguments
            FakeProc(52, [JAVA, "-Dwatch=/home/schedule", "-cp", "/opt/ship.jar", "Ship",
                          "schedule", "/home/schedule/lib/x.jar", "lib/x.jar"], cwd="/home"),
            FakeProc(53, [JAVA, "-jar", "/opt/tool.jar", "-cp", "/home/schedule/lib"], cwd="/"),
            # not java: the startup.sh wrapper in the app dir, a grep, a tail
            FakeProc(54, ["sh", "startup.sh"], exe="/usr/bin/dash", cwd="/home/schedule"),
            FakeProc(55, ["grep", "java"], exe="/usr/bin/grep", cwd="/home/schedule"),
            FakeProc(56, ["tail", "-f", "/home/schedulelog/schedule.log"], exe="/usr/bin/tail",
                     cwd="/home/schedule"),
            # a program whose comm says java but whose executable is not
            FakeProc(57, ["java"], exe="/usr/bin/python3.11", name="java", cwd="/home/schedule"),
            # an exited JVM nobody reaped
            FakeProc(58, [], status=psutil.STATUS_ZOMBIE, cwd="/home/schedule"),
        ]
    )
    assert javaservice.pids(app_dir="/home/schedule") == []
    assert javaservice.pids(app_dir="/home/schedule-res") == [50, 51]


def test_java_by_name_when_exe_unreadable(procs):
    procs.append(FakeProc(60, [JAVA, "Main"], cwd="/home/schedule", exe_denied=True))
    procs.append(FakeProc(61, ["/bin/sh"], exe="/bin/sh", cwd="/home/schedule", exe_denied=True))
    assert javaservice.pids(app_dir="/home/schedule") == [60]


def test_pidfile_valid_and_stale(procs, tmp_path):
    procs.extend(
        [
            tomcat(70, "/home/tomcat"),
            tomcat(71, "/home/tomcat2"),
            FakeProc(72, ["sleep", "9"], exe="/usr/bin/sleep"),
        ]
    )
    pidfile = tmp_path / "catalina.pid"

    def report(text):
        if text is None:
            pidfile.unlink(missing_ok=True)
        else:
            pidfile.write_text(text)
        st = javaservice.status("ecsc", catalina_base="/home/tomcat", pidfile=str(pidfile))
        assert st["pids"] == [70]  # the pid file never adds or removes a process
        return st["pidfile"]

    assert report("70\n") == {"path": str(pidfile), "pid": 70, "valid": True, "reason": "ok"}
    assert "another java process" in report("71")["reason"]
    assert "not java" in report("72")["reason"]
    assert "no process 99999" in report("99999")["reason"]
    assert "does not hold a pid" in report("garbage")["reason"]
    assert report(None)["reason"] == "missing"


def test_status_reports_oldest(procs):
    procs.extend([tomcat(81, "/home/tomcat"), tomcat(80, "/home/tomcat", cwd="/home")])
    procs[0]._create_time, procs[1]._create_time = 2000.0, 1000.0
    st = javaservice.status("ecsc", catalina_base="/home/tomcat")
    assert st["running"] is True and st["pids"] == [80, 81]
    assert st["cwd"] == "/home" and st["cmdline"][0] == JAVA
    assert st["started"].startswith(time.strftime("%Y", time.localtime(1000.0)))
    assert javaservice.status("ecsc", catalina_base="/home/none") == {
        "name": "ecsc", "running": False, "pids": [], "started": None, "cmdline": [], "cwd": None,
        "release": None, "release_note": "not running",
    }


@pytest.mark.parametrize(
    "record, started, release, note",
    [
        (None, 5000.0, None, "deployed by hand"),
        ({"release": "20170220", "deployed": "1970-01-01T01:00:00+00:00"}, 5000.0, "20170220",
         "deployed 1970-01-01T01:00:00+00:00"),
        ({"release": "20170220", "deployed": "1970-01-01T01:00:00+00:00"}, 1000.0, None,
         "it runs the code from before"),
    ],
    ids=["no-record", "started-after-deploy", "started-before-deploy"],
)
def test_status_names_the_release_the_running_code_came_from(procs, record, started, release,
                                                              note):
    procs.append(tomcat(80, "/home/tomcat"))
    procs[0]._create_time = started
    recorded = MagicMock(return_value=record)
    with patch.dict(javaservice.__salt__, {"release.recorded": recorded}):
        st = javaservice.status("ecsc", catalina_base="/home/tomcat", install_dir="/home/ecsc")
    recorded.assert_called_once_with("/home/ecsc")
    assert st["release"] == release and note in st["release_note"]


# --------------------------------------------------------------------------- signals and stop


@pytest.mark.parametrize(
    "value, expected",
    [("TERM", signal.SIGTERM), ("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM),
     (15, signal.SIGTERM), ("15", signal.SIGTERM), (9, signal.SIGKILL), ("KILL", signal.SIGKILL),
     ("INT", signal.SIGINT), ("QUIT", signal.SIGQUIT), ("HUP", signal.SIGHUP)],
)
def test_signal_parsing(value, expected):
    assert javaservice._parse_signal(value) is expected


@pytest.mark.parametrize("value", ["USR1", "SIGSTOP", 10, 0, -9, True, None, "", "9x", 15.0])
def test_signal_parsing_rejects(value, procs):
    with pytest.raises(SaltInvocationError, match=re.escape(repr(value))):
        javaservice.stop("ecsc", signal=value, catalina_base="/home/tomcat")


def test_stop_graceful_touches_only_the_service(procs):
    ours, decoy = tomcat(90, "/home/tomcat"), tomcat(91, "/home/tomcat2")
    procs.extend([ours, decoy])
    ret = javaservice.stop("ecsc", timeout=1, catalina_base="/home/tomcat")
    assert ret["outcome"] == "graceful" and ret["pids"] == [90] and ret["signal"] == "TERM"
    assert ret["escalated"] is False
    assert ours.signals == [signal.SIGTERM] and decoy.signals == []


def test_stop_escalates_to_kill(procs):
    stubborn = tomcat(92, "/home/tomcat")
    stubborn.dies_on = {signal.SIGKILL}
    procs.append(stubborn)
    ret = javaservice.stop("ecsc", timeout=0.2, thread_dump=True, catalina_base="/home/tomcat")
    assert ret["outcome"] == "killed" and ret["escalated"] is True
    assert stubborn.signals == [signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL]


def test_stop_with_kill_is_killed(procs):
    proc = tomcat(93, "/home/tomcat")
    procs.append(proc)
    ret = javaservice.stop("ecsc", signal=9, catalina_base="/home/tomcat")
    assert (ret["outcome"], ret["signal"], ret["escalated"]) == ("killed", "KILL", False)
    assert proc.signals == [signal.SIGKILL]


def test_stop_survivor_raises(procs):
    proc = tomcat(94, "/home/tomcat")
    proc.dies_on = set()
    procs.append(proc)
    with patch.object(javaservice, "_KILL_WAIT", 0.1):
        with pytest.raises(CommandExecutionError, match=f"{MINION}: ecsc: pid\\(s\\) 94 still alive"):
            javaservice.stop("ecsc", timeout=0.1, catalina_base="/home/tomcat")


def test_stop_removes_the_pid_file_it_proved(procs, tmp_path):
    pidfile = tmp_path / "catalina.pid"
    pidfile.write_text("96\n")
    procs.append(tomcat(96, "/home/tomcat"))
    ret = javaservice.stop("ecsc", catalina_base="/home/tomcat", pidfile=str(pidfile))
    assert ret["outcome"] == "graceful" and ret["pidfile_removed"] == str(pidfile)
    assert not pidfile.exists()
    # a pid file naming another JVM is left alone
    pidfile.write_text("97\n")
    procs[:] = [tomcat(97, "/home/tomcat2"), tomcat(98, "/home/tomcat")]
    ret = javaservice.stop("ecsc", catalina_base="/home/tomcat", pidfile=str(pidfile))
    assert ret["pids"] == [98] and "pidfile_removed" not in ret and pidfile.exists()


def test_stop_not_running(procs):
    ret = javaservice.stop("ecsc", catalina_base="/home/tomcat")
    assert ret["outcome"] == "not running" and ret["pids"] == []


def test_zombie_counts_as_gone():
    zombie = FakeProc(95, [], status=psutil.STATUS_ZOMBIE)
    assert javaservice._wait_gone([zombie], 0.1) == []


# --------------------------------------------------------------------------- logs


@pytest.mark.parametrize(
    "line, ready",
    [
        ("INFO: Server startup in 2345 ms", True),  # Tomcat 7
        ("Feb 20, 2017 INFO [main] org.apache.catalina.startup.Catalina.start "
         "Server startup in [2345] milliseconds", True),  # Tomcat 8.5+
        ("INFO: Server startup in [541] milliseconds", True),  # Tomcat 10 (JUL SimpleFormatter)
        ("Server startup in", False),
        ("Server startup in progress", False),
    ],
)
def test_tomcat_ready_marker(line, ready):
    assert bool(re.search(javaservice.TOMCAT_READY, line)) is ready


def test_log_reader_reads_only_after_offset_and_buffers_partial_lines(tmp_path):
    path = tmp_path / "catalina.out"
    path.write_text("INFO: Server startup in [123] milliseconds\n")
    reader = javaservice._LogReader(str(path), path.stat().st_size, path.stat().st_ino)
    assert reader.poll() == []
    with open(path, "a") as handle:
        handle.write("one\ntw")
    assert reader.poll() == ["one"]
    with open(path, "a") as handle:
        handle.write("o\r\n")
    assert reader.poll() == ["two"]


def test_log_reader_truncated_and_replaced(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("old line 1\nold line 2\n")
    reader = javaservice._LogReader(str(path), path.stat().st_size, path.stat().st_ino)
    path.write_text("new\n")  # truncated in place (same inode), shorter than the offset
    assert reader.poll() == ["new"]
    replacement = tmp_path / "app.log.new"
    replacement.write_text("fresh\n")
    os.replace(replacement, path)  # rotated/replaced: another inode
    assert reader.poll() == ["fresh"]
    assert reader.restarts == 2


def test_log_reader_waits_for_missing_file(tmp_path):
    path = tmp_path / "later.log"
    reader = javaservice._LogReader(str(path), 0)
    assert reader.poll() == []
    path.write_text("hello\n")
    assert reader.poll() == ["hello"]


def test_tail(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert javaservice.tail(str(path), lines=3) == ["line 4997", "line 4998", "line 4999"]
    assert javaservice._tail(str(path), 2, block=7) == ["line 4998", "line 4999"]
    path.write_text("a\nb")
    assert javaservice.tail(str(path)) == ["a", "b"]
    assert javaservice.tail(str(path), lines=0) == []
    with pytest.raises(CommandExecutionError, match=f"{MINION}: cannot read .*missing"):
        javaservice.tail(str(tmp_path / "missing"))


@pytest.fixture
def jvm_up():
    """wait_ready sees a running JVM (pid 4242) for the identity."""
    with patch.object(javaservice, "_find", return_value=([{"pid": 4242}], None)):
        yield


def _seed(path, text):
    path.write_text(text)
    return {str(path): path.stat().st_size}


def test_wait_ready_ignores_marker_before_offset(jvm_up, tmp_path):
    log = tmp_path / "catalina.out"
    offsets = _seed(log, "INFO: Server startup in [123] milliseconds\nINFO: Server startup in 99 ms\n")
    with pytest.raises(CommandExecutionError) as err:
        javaservice.wait_ready("ecsc", offsets=offsets, ready=["TOMCAT_READY"], timeout=0.3,
                               interval=0.05, catalina_base="/home/tomcat")
    message = str(err.value)
    assert message.startswith(f"{MINION}: ecsc: not ready within 0.3s")
    assert f"missing: pattern '{javaservice.TOMCAT_READY}'" in message
    assert f"--- last 20 lines of {log} ---" in message
    assert "Server startup in [123] milliseconds" in message  # the tail shows the old line


@pytest.mark.parametrize("marker", ["INFO: Server startup in 2345 ms",
                                    "INFO: Server startup in [2345] milliseconds"])
def test_wait_ready_matches_new_marker_either_format(jvm_up, tmp_path, marker):
    log = tmp_path / "catalina.out"
    offsets = _seed(log, "INFO: Server startup in [1] milliseconds\n")
    with open(log, "a") as handle:
        handle.write(f"{marker}\n")
    ret = javaservice.wait_ready("ecsc", offsets=offsets, ready=["TOMCAT_READY"], timeout=1,
                                 catalina_base="/home/tomcat")
    assert ret["ready"] is True and ret["pids"] == [4242] and ret["http_status"] is None
    assert ret["matched"] == {javaservice.TOMCAT_READY: {"log": str(log), "line": marker}}


def test_wait_ready_per_log_patterns_and_persisted_offsets(jvm_up, tmp_path):
    cat, app = tmp_path / "catalina.out", tmp_path / "ecsc.log"
    cat.write_text("boot\n")
    app.write_text("Application started\n")  # old: must not count
    javaservice._write_state("ecsc", {"offsets": {str(cat): 5, str(app): app.stat().st_size}})
    with open(cat, "a") as handle:
        handle.write("Application started\n")  # right text, wrong log
    ready = [{"log": str(app), "pattern": "Application started"}]
    with pytest.raises(CommandExecutionError, match="missing: pattern"):
        javaservice.wait_ready("ecsc", ready=ready, timeout=0.2, interval=0.05,
                               catalina_base="/home/tomcat")
    with open(app, "a") as handle:
        handle.write("Application started again\n")
    ret = javaservice.wait_ready("ecsc", ready=ready, timeout=1, catalina_base="/home/tomcat")
    assert ret["matched"][f"{app}: Application started"]["line"] == "Application started again"


def test_wait_ready_fatal_wins_over_ready(jvm_up, tmp_path):
    log = tmp_path / "catalina.out"
    offsets = _seed(log, "")
    log.write_text("SEVERE: Failed to initialize connector\njava.net.BindException: Address already in use\n"
                   "INFO: Server startup in [10] milliseconds\n")
    with pytest.raises(CommandExecutionError, match=re.escape("fatal pattern 'java\\.net\\.BindException'")):
        javaservice.wait_ready("ecsc", offsets=offsets, ready=["TOMCAT_READY"], timeout=1,
                               catalina_base="/home/tomcat")
    # fatal=[] switches the defaults off
    ret = javaservice.wait_ready("ecsc", offsets=offsets, ready=["TOMCAT_READY"], fatal=[],
                                 timeout=1, catalina_base="/home/tomcat")
    assert ret["ready"] is True


def test_wait_ready_needs_offsets(jvm_up, tmp_path):
    with pytest.raises(SaltInvocationError, match="no start offset for"):
        javaservice.wait_ready("ecsc", logs=[str(tmp_path / "x.log")], ready=["x"],
                               catalina_base="/home/tomcat")
    with pytest.raises(SaltInvocationError, match="not a valid regex"):
        javaservice.wait_ready("ecsc", offsets={}, ready=["("], catalina_base="/home/tomcat")


def test_wait_ready_jvm_death_fails_at_once(tmp_path):
    log = tmp_path / "app.log"
    offsets = _seed(log, "")
    seq = iter([([{"pid": 7}], None)] + [([], None)] * 100)
    with patch.object(javaservice, "_find", side_effect=lambda ident: next(seq)):
        with pytest.raises(CommandExecutionError, match=r"JVM \(pid\(s\) 7\) exited before it was ready"):
            javaservice.wait_ready("schedule", offsets=offsets, ready=["never"], timeout=60,
                                   interval=0.01, app_dir="/home/schedule")


def test_wait_ready_launcher_gone_without_jvm(tmp_path, procs):
    javaservice._write_state("schedule", {"offsets": {}, "launcher_pid": 999999, "started_at": 1.0})
    with pytest.raises(CommandExecutionError, match="launcher pid 999999\\) has exited"):
        javaservice.wait_ready("schedule", timeout=60, app_dir="/home/schedule")


def test_wait_ready_http(jvm_up, tmp_path):
    with patch.object(javaservice, "_http_status", side_effect=[(None, "refused"), (503, None), (200, None)]):
        ret = javaservice.wait_ready("ecsc", offsets={}, url="http://127.0.0.1:1/", timeout=5,
                                     interval=0.01, catalina_base="/home/tomcat")
    assert ret["http_status"] == 200
    with patch.object(javaservice, "_http_status", return_value=(503, None)):
        with pytest.raises(CommandExecutionError, match=r"HTTP http://127.0.0.1:1/: status 503 \(want 200\)"):
            javaservice.wait_ready("ecsc", offsets={}, url="http://127.0.0.1:1/", timeout=0.1,
                                   interval=0.01, catalina_base="/home/tomcat")


def test_start_refuses_second_jvm_and_bad_input(procs, tmp_path):
    procs.append(tomcat(100, "/home/tomcat"))
    with pytest.raises(CommandExecutionError, match=f"{MINION}: ecsc is already running \\(pid\\(s\\) 100\\)"):
        javaservice.start("ecsc", ["/bin/true"], cwd=str(tmp_path), catalina_base="/home/tomcat")
    with pytest.raises(SaltInvocationError, match="service name"):
        javaservice.start("../x", ["/bin/true"], catalina_base="/home/tomcat")
    with pytest.raises(SaltInvocationError, match="non-empty"):
        javaservice.start("ecsc", [], catalina_base="/home/tomcat")


# --------------------------------------------------------------------------- states


def test_state_dead_test_mode_and_errors(procs):
    procs.append(tomcat(110, "/home/tomcat"))
    with patch.dict(javaservice_state.__opts__, {"test": True}):
        ret = javaservice_state.dead("ecsc", catalina_base="/home/tomcat")
    assert ret["result"] is None and ret["changes"] == {}
    assert "would stop ecsc: pid(s) 110 with SIGTERM" in ret["comment"]
    assert procs[0].signals == []
    ret = javaservice_state.dead("ecsc", signal="USR1", catalina_base="/home/tomcat")
    assert ret["result"] is False and "unsupported signal 'USR1'" in ret["comment"]
    ret = javaservice_state.dead("ecsc")
    assert ret["result"] is False and "catalina_base=<dir>" in ret["comment"]


def test_state_dead_stops_and_is_idempotent(procs):
    procs.append(tomcat(111, "/home/tomcat"))
    ret = javaservice_state.dead("ecsc", timeout=1, catalina_base="/home/tomcat")
    assert ret["result"] is True
    assert ret["changes"]["stopped"]["pids"] == [111]
    assert ret["changes"]["stopped"]["outcome"] == "graceful"
    procs.clear()
    ret = javaservice_state.dead("ecsc", catalina_base="/home/tomcat")
    assert ret == {"name": "ecsc", "changes": {}, "result": True, "comment": "ecsc is not running"}


def test_state_running_test_mode_and_already_running(procs):
    with patch.dict(javaservice_state.__opts__, {"test": True}):
        ret = javaservice_state.running("ecsc", ["/home/tomcat/bin/startup.sh"],
                                        ready=["TOMCAT_READY"], catalina_base="/home/tomcat")
    assert ret["result"] is None and ret["changes"] == {}
    assert ret["comment"].startswith("would start ecsc: /home/tomcat/bin/startup.sh")
    procs.append(tomcat(120, "/home/tomcat"))
    ret = javaservice_state.running("ecsc", ["/home/tomcat/bin/startup.sh"], catalina_base="/home/tomcat")
    assert ret["result"] is True and ret["changes"] == {}
    assert "already running (pid(s) 120)" in ret["comment"]


def test_state_running_reports_start_failure(procs, tmp_path):
    ret = javaservice_state.running("ecsc", [str(tmp_path / "missing.sh")], cwd=str(tmp_path),
                                    catalina_base="/home/tomcat")
    assert ret["result"] is False and ret["changes"] == {}
    assert ret["comment"].startswith(f"{MINION}: cannot start ecsc:")
