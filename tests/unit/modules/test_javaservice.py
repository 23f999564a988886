"""Unit tests for _modules/javaservice.py (fake processes, real files)."""

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from unittest.mock import MagicMock, patch

import psutil
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.unit.javaservice_fakes import (  # noqa: F401 (fixtures)
    JAVA,
    MINION,
    FakeProc,
    configure_loader_modules,
    javaservice,
    javaservice_state,
    procs,
    tomcat,
)


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
            FakeProc(44, [JAVA, "--class-path=/home/schedule/classes", "com.x.Main"], cwd="/tmp"),
        ]
    )
    assert javaservice.pids(app_dir="/home/schedule", main="com.x.Main") == [40, 41, 42, 44]
    assert javaservice.pids(app_dir="/home/schedule", main="app.jar") == [43]


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
    assert javaservice.pids(app_dir="/home/schedule", main="Main") == []
    assert javaservice.pids(app_dir="/home/schedule-res", main="Main") == [50, 51]


def test_unreadable_exe_is_not_proven_a_jvm(procs):
    # Issue 8.2: a process whose executable cannot be read cannot be proven a real JVM (for a
    # non-root minion that only happens for another user's process anyway): a stranger.
    procs.append(FakeProc(60, [JAVA, "Main"], cwd="/home/schedule", exe_denied=True))
    procs.append(FakeProc(61, ["/bin/sh"], exe="/bin/sh", cwd="/home/schedule", exe_denied=True))
    st = javaservice.status("schedule", app_dir="/home/schedule", main="Main")
    assert st["pids"] == []
    assert [(s["pid"], s["why"]) for s in st["strangers"]] == [
        (60, "its executable (unreadable) is not a JVM")
    ]


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
        "release": None, "release_note": "not running", "strangers": [],
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
    with patch.dict(javaservice.__salt__, {"release.read_record": recorded}):
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
def test_signal_parsing(procs, value, expected):
    proc = tomcat(89, "/home/tomcat")
    procs.append(proc)
    ret = javaservice.stop("ecsc", signal=value, timeout=0.1, catalina_base="/home/tomcat")
    assert proc.signals[0] == expected and ret["signal"] == expected.name[3:]


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


def test_tail(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert javaservice.tail(str(path), lines=3) == ["line 4997", "line 4998", "line 4999"]
    path.write_text("a\nb")
    assert javaservice.tail(str(path)) == ["a", "b"]
    assert javaservice.tail(str(path), lines=0) == []
    with pytest.raises(CommandExecutionError, match=f"{MINION}: cannot read .*missing"):
        javaservice.tail(str(tmp_path / "missing"))


@pytest.fixture
def jvm_up():
    """wait_ready finds a running JVM (pid 4242) for the identity."""
    with patch.object(javaservice, "_locate", return_value=([FakeProc(4242, [JAVA])], False)):
        yield


class DiesAfter(FakeProc):
    """A JVM that is alive for its first ``looks`` looks at its pid, then gone."""

    def __init__(self, pid, looks):
        super().__init__(pid, [JAVA])
        self.looks = looks

    def is_running(self):
        self.looks -= 1
        return self.looks >= 0


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
                                 settle=0, catalina_base="/home/tomcat")
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
    ret = javaservice.wait_ready("ecsc", ready=ready, timeout=1, settle=0,
                                 catalina_base="/home/tomcat")
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
                                 timeout=1, settle=0, catalina_base="/home/tomcat")
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
    with patch.object(javaservice, "_locate", return_value=([DiesAfter(7, 0)], False)):
        with pytest.raises(CommandExecutionError, match=r"JVM \(pid\(s\) 7\) exited before it was ready"):
            javaservice.wait_ready("schedule", offsets=offsets, ready=["never"], timeout=60,
                                   interval=0.01, app_dir="/home/schedule", main="Main")


def test_wait_ready_launcher_gone_without_jvm(tmp_path, procs):
    javaservice._write_state("schedule", {"offsets": {}, "launcher_pid": 999999, "started_at": 1.0})
    with pytest.raises(CommandExecutionError, match="launcher pid 999999\\) has exited"):
        javaservice.wait_ready("schedule", timeout=60, app_dir="/home/schedule", main="Main")


def test_wait_ready_http(jvm_up, tmp_path):
    with patch.object(javaservice, "_http_status", side_effect=[(None, "refused"), (503, None), (200, None)]):
        ret = javaservice.wait_ready("ecsc", offsets={}, url="http://127.0.0.1:1/", timeout=5,
                                     interval=0.01, settle=0, catalina_base="/home/tomcat")
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


# --------------------------------------------------------------------------- issue 8.2: identity


LAB_STARTUP_SH = """#!/bin/sh
# schedule release 20161201: start in the foreground; generated by lab/build.py.
cd "$(dirname "$0")" || exit 1
exec "${JAVA_HOME:+$JAVA_HOME/bin/}java" \\
  -Xms8m -Xmx32m -Dservice.name=schedule \\
  -cp lib/schedule.jar lab.standalone.Main conf/host.properties
"""


@pytest.mark.parametrize(
    "script, main",
    [
        (LAB_STARTUP_SH, "lab.standalone.Main"),
        ("#!/bin/sh\n# java -jar old.jar\nnohup java -Xmx1g -jar lib/app.jar --port 1 &\n",
         "lib/app.jar"),
        ("#!/bin/sh\njava -Xmx16m -cp lib FakeService \"$@\"\n", "FakeService"),
        ("#!/bin/sh\n$JAVA_HOME/bin/java --module-path mods -m app/app.Main\n", "app/app.Main"),
        ("#!/bin/sh\necho no java here\n", None),
        ("#!/bin/sh\nJAVA_OPTS=-Xmx1g exec java $JAVA_OPTS -cp x.jar a.B\n", "a.B"),
    ],
)
def test_main_is_read_from_startup_sh(tmp_path, script, main):
    (tmp_path / "startup.sh").write_text(script)
    assert javaservice._main_from_script(str(tmp_path / "startup.sh")) == main


def test_standalone_is_its_main_class_not_any_jvm_of_its_jar(procs, tmp_path):
    app = tmp_path / "schedule"
    (app / "lib").mkdir(parents=True)
    (app / "startup.sh").write_text(LAB_STARTUP_SH)
    service = FakeProc(10, [JAVA, "-Xmx32m", "-cp", "lib/schedule.jar", "lab.standalone.Main",
                            "conf/host.properties"], cwd=str(app))
    # the decoy: another main class with the service's jar on its class path
    decoy = FakeProc(11, [JAVA, "-cp", f"/opt/other.jar:{app}/lib/schedule.jar", "SomeTool"])
    # another main class run from the program dir
    tool = FakeProc(12, [JAVA, "-cp", "lib/schedule.jar", "lab.standalone.Repair"], cwd=str(app))
    procs.extend([service, decoy, tool])
    st = javaservice.status("schedule", app_dir=str(app))
    assert st["pids"] == [10]
    assert {s["pid"]: s["why"] for s in st["strangers"]} == {
        11: "runs SomeTool, not lab.standalone.Main",
        12: "runs lab.standalone.Repair, not lab.standalone.Main",
    }
    assert st["strangers"][0]["cmdline"].endswith("SomeTool")
    ret = javaservice.stop("schedule", timeout=1, app_dir=str(app))
    assert ret["pids"] == [10] and [s["pid"] for s in ret["strangers"]] == [11, 12]
    assert service.signals == [signal.SIGTERM] and decoy.signals == [] and tool.signals == []
    # main= overrides startup.sh; a jar is matched as -jar <app_dir>/<jar>
    assert javaservice.pids(app_dir=str(app), main="SomeTool") == [11]  # its jar is in app
    procs.append(FakeProc(13, [JAVA, "-jar", "lib/schedule.jar"], cwd=str(app)))
    assert javaservice.pids(app_dir=str(app), main="lib/schedule.jar") == [13]


def test_tomcat_needs_bootstrap_its_user_and_a_real_jvm(procs, tmp_path):
    base = tmp_path / "apache-tomcat-7.0.67"
    base.mkdir()
    fake_home = tmp_path / "fake" / "bin"
    fake_home.mkdir(parents=True)
    (fake_home / "java").write_text("#!/bin/sh\n")  # a file named java, no Java home around it
    other_uid = os.getuid() + 4242
    ours = tomcat(20, str(base))
    procs.extend([
        ours,
        tomcat(21, str(base), uid=other_uid),  # another user's Tomcat on the same base
        tomcat(22, str(base), exe=str(fake_home / "java")),  # not a JVM
        FakeProc(23, [JAVA, f"-Dcatalina.base={base}", "-cp", "/opt/t.jar", "Tool"]),
        FakeProc(24, [JAVA, "-cp", "/opt/ship.jar", "Ship", f"{base}/logs/catalina.out"]),
        tomcat(25, f"{base}2"),  # another Tomcat: unrelated, not even a stranger
    ])
    st = javaservice.status("ecsc", catalina_base=str(base))  # user: the owner of the base
    assert st["pids"] == [20]
    why = {s["pid"]: s["why"] for s in st["strangers"]}
    assert sorted(why) == [21, 22, 23, 24]
    assert why[21] == f"user {other_uid}, not {javaservice._user_name(os.getuid())}"
    assert why[22] == f"{fake_home / 'java'} is not a JVM"
    assert why[23] == "runs Tool, not org.apache.catalina.startup.Bootstrap"
    assert why[24].startswith("its -Dcatalina.base is not set; runs Ship")
    javaservice.stop("ecsc", timeout=1, catalina_base=str(base))
    assert ours.signals == [signal.SIGTERM]
    assert all(p.signals == [] for p in procs[1:])
    # user= names whose JVM it is
    assert javaservice.pids(catalina_base=str(base), user=str(other_uid)) == [21]
    with pytest.raises(SaltInvocationError, match="does not exist"):
        javaservice.pids(catalina_base=str(base), user="no-such-user-here")
    with pytest.raises(SaltInvocationError, match="always runs org.apache.catalina"):
        javaservice.pids(catalina_base=str(base), main="Other")


def test_app_dir_without_a_known_main_is_refused(procs, tmp_path):
    with pytest.raises(SaltInvocationError, match=r"cannot tell what .* runs.*give main="):
        javaservice.pids(app_dir=str(tmp_path))


# --------------------------------------------------------------------------- issue 8.4


def test_a_reused_launcher_pid_does_not_block_the_next_start(tmp_path):
    # A process that got the old launcher's pid (here: a new session leader started an hour
    # after the recorded start) is not "the previous start still in progress".
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        javaservice._write_state("svc", {
            "offsets": {}, "launcher_pid": sleeper.pid, "started_at": time.time() - 3600,
            "launcher_created": psutil.Process(sleeper.pid).create_time() - 3600,
        })
        ret = javaservice.start("svc", ["sh", "-c", "exit 0"], logs=[],
                                catalina_base=str(tmp_path))
        assert ret["launcher_pid"] != sleeper.pid
        assert sleeper.poll() is None  # never touched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_error_tails_come_only_from_the_service_log_dirs(jvm_up, tmp_path):
    logs, secret = tmp_path / "logs", tmp_path / "etc" / "shadow"
    logs.mkdir()
    secret.parent.mkdir()
    secret.write_text("root:SECRET-HASH\n")
    app = logs / "app.log"
    offsets = {**_seed(app, "booting\n"), str(secret): 0}
    with pytest.raises(CommandExecutionError) as err:
        javaservice.wait_ready("svc", logs=[str(app)], offsets=offsets, timeout=0.1,
                               ready=[{"log": str(secret), "pattern": "never"}],
                               catalina_base="/home/tomcat")
    message = str(err.value)
    assert "booting" in message
    assert "SECRET" not in message and "outside the service's log directories" in message


# --------------------------------------------------------------------------- issue 8.5


def test_stop_says_what_happened_and_how_long_each_step_took(procs):
    polite, stubborn = tomcat(30, "/home/tomcat"), tomcat(31, "/home/tomcat2")
    stubborn.dies_on = {signal.SIGKILL}
    procs.extend([polite, stubborn])
    ret = javaservice.stop("ecsc", timeout=1, catalina_base="/home/tomcat")
    assert re.fullmatch(r"SIGTERM, exited after \d+\.\d s", ret["summary"])
    ret = javaservice.stop("ecmc", timeout=0.2, catalina_base="/home/tomcat2")
    assert re.fullmatch(r"SIGTERM ignored for 0\.\d s, SIGKILL, gone after \d+\.\d s",
                        ret["summary"])
    assert ret["escalated"] is True and ret["kill_seconds"] >= 0
    assert stubborn.signals == [signal.SIGTERM, signal.SIGKILL]


# --------------------------------------------------------------------------- issue 9.2: settle


def test_settle_catches_a_jvm_that_exits_right_after_ready(tmp_path):
    log = tmp_path / "app.log"
    offsets = _seed(log, "")
    log.write_text("started\n")
    with patch.object(javaservice, "_locate", return_value=([DiesAfter(7, 2)], False)):
        with pytest.raises(CommandExecutionError, match=r"JVM \(pid\(s\) 7\) exited .*after it "
                                                        r"became ready \(settle time 5s\)"):
            javaservice.wait_ready("svc", offsets=offsets, ready=["started"], timeout=10,
                                   interval=0.01, settle=5, catalina_base="/home/tomcat")


def test_settle_catches_health_and_fatal_after_ready(jvm_up, tmp_path):
    with patch.object(javaservice, "_http_status", side_effect=[(200, None), (200, None),
                                                                (503, None)] + [(200, None)] * 99):
        with pytest.raises(CommandExecutionError, match="stopped answering 200"):
            javaservice.wait_ready("svc", offsets={}, url="http://127.0.0.1:1/", timeout=5,
                                   interval=0.01, settle=5, catalina_base="/home/tomcat")
    log = tmp_path / "app.log"
    offsets = _seed(log, "")
    log.write_text("started\n")
    timer = threading.Timer(0.2, lambda: log.open("a").write("java.lang.OutOfMemoryError\n"))
    timer.start()
    with pytest.raises(CommandExecutionError, match="OutOfMemoryError' in .* during the settle"):
        javaservice.wait_ready("svc", offsets=offsets, ready=["started"], timeout=5,
                               interval=0.02, settle=5, catalina_base="/home/tomcat")
    timer.join()
    ret = javaservice.wait_ready("svc", offsets=_seed(log, ""), ready=[], timeout=5,
                                 interval=0.02, settle=0.1, catalina_base="/home/tomcat")
    assert ret["settled"] == 0.1 and ret["pids"] == [4242]


def test_pidfile_is_never_read_through_a_symlink(procs, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:SECRET\n")
    pidfile = tmp_path / "catalina.pid"
    pidfile.symlink_to(secret)
    st = javaservice.status("ecsc", catalina_base="/home/tomcat", pidfile=str(pidfile))
    assert st["pidfile"]["valid"] is False and st["pidfile"]["reason"].startswith("unreadable")
    assert "SECRET" not in str(st)


def test_last_start_is_what_start_recorded(procs, tmp_path):
    """probe.log since_start= reads the offsets the last start recorded."""
    assert javaservice.last_start("svc") == {}
    javaservice._write_state("svc", {"name": "svc", "offsets": {"/l/app.log": 42}})
    assert javaservice.last_start("svc")["offsets"] == {"/l/app.log": 42}
    with pytest.raises(SaltInvocationError):
        javaservice.last_start("../x")


# --------------------------------------------------------------------------- issue 10 (c)


def _counting(func):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        return func(*args, **kwargs)

    return wrapper, calls


def test_ready_gate_scans_until_the_jvm_is_found_then_looks_at_its_pids_only(procs, tmp_path):
    """Each scan of every process costs tens of ms of CPU while the JVM starts: the gate
    scans until it has the JVM, then only looks at its pids, through ready and settle."""
    jvm = tomcat(60, "/home/tomcat")
    log = tmp_path / "catalina.out"
    offsets = _seed(log, "")
    timer = threading.Timer(0.15, lambda: (procs.append(jvm),
                                           log.write_text("Server startup in 5 ms\n")))
    seen = []  # per scan: was the JVM there?
    real_scan = javaservice._scan

    def scan():
        seen.append(jvm in procs)
        return real_scan()

    with patch.object(javaservice, "_scan", side_effect=scan):
        timer.start()
        ret = javaservice.wait_ready("ecsc", offsets=offsets, ready=["TOMCAT_READY"], timeout=10,
                                     interval=0.01, settle=0.2, catalina_base="/home/tomcat")
        timer.join()
        assert ret["pids"] == [60] and ret["ready"] is True
        assert seen[0] is False and seen.count(True) == 1  # the scan that found it, no more
        # a death after it was found is seen by a look at its pid (no scan)
        jvm.dead = True
        assert javaservice._still_running([jvm]) == []
    assert seen.count(True) == 1


def test_start_scans_once_and_running_ok_starts_nothing(procs, tmp_path):
    """javaservice.running right after a stop: one pass over the processes before the launch
    (there were three: a status, then start's own look, then one for the previous start's
    session)."""
    passes = []

    def fresh_processes(wanted=None):
        passes.append("pass")
        return list(procs)

    launched = []

    def spawn(argv, *args):
        launched.append((len(passes), argv))
        return 4321

    # a previous start whose launcher (this process) still holds its pid
    javaservice._write_state("ecsc", {"offsets": {}, "launcher_pid": os.getpid(),
                                      "launcher_created": psutil.Process().create_time(),
                                      "started_at": time.time() - 60})
    with patch.object(javaservice, "_fresh_processes", side_effect=fresh_processes), \
            patch.object(javaservice, "_spawn_detached", side_effect=spawn):
        ret = javaservice_state.running("ecsc", ["/bin/startup.sh"], cwd=str(tmp_path),
                                        timeout=0.1, catalina_base="/home/tomcat")
        assert launched == [(1, ["/bin/startup.sh"])]
        assert ret["changes"]["started"]["launcher_pid"] == 4321  # (no JVM came: not ready)
        # already running: nothing started, its pids and the look-alikes reported
        procs.extend([tomcat(70, "/home/tomcat"), tomcat(71, "/home/tomcat", uid=os.getuid() + 1)])
        ret = javaservice.start("ecsc", ["/bin/startup.sh"], cwd=str(tmp_path), logs=[],
                                running_ok=True, catalina_base="/home/tomcat")
        assert ret["running"] is True and ret["pids"] == [70]
        assert [s["pid"] for s in ret["strangers"]] == [71]
        with pytest.raises(CommandExecutionError, match="already running"):
            javaservice.start("ecsc", ["/bin/startup.sh"], cwd=str(tmp_path), logs=[],
                              catalina_base="/home/tomcat")
        ret = javaservice_state.running("ecsc", ["/bin/startup.sh"], cwd=str(tmp_path),
                                        catalina_base="/home/tomcat")
        assert ret["result"] is True and "already running (pid(s) 70)" in ret["comment"]
        assert "left alone (not the service): pid 71" in ret["comment"]
    assert len(launched) == 1


def test_scan_builds_psutil_processes_only_for_java_candidates(tmp_path):
    """A scan runs while the service is down: a process whose executable is not java is
    seen by a readlink of /proc/<pid>/exe and its session id only (a psutil.Process for
    each of a few hundred processes cost tens of ms); a java one gets the full snapshot."""
    fake_java = tmp_path / "bin" / "java"
    fake_java.parent.mkdir()
    shutil.copy(shutil.which("sleep"), fake_java)  # an executable named java: a candidate
    plain = subprocess.Popen(["sleep", "30"], start_new_session=True)
    named = subprocess.Popen([str(fake_java), "30"])
    built = []
    real_process = psutil.Process

    def process(pid):
        built.append(pid)
        return real_process(pid)

    try:
        wait_until = time.monotonic() + 10
        while os.readlink(f"/proc/{named.pid}/exe") != str(fake_java):
            assert time.monotonic() < wait_until
            time.sleep(0.01)
        with patch.object(javaservice.psutil, "Process", side_effect=process):
            scan = javaservice._scan()
            assert plain.pid not in built
            assert scan[plain.pid]["java"] is False and scan[plain.pid]["proc"] is None
            assert scan[plain.pid]["sid"] == plain.pid
            assert scan[plain.pid]["what"] == os.path.realpath(shutil.which("sleep"))
            assert named.pid in built and scan[named.pid]["java"] is True
            assert scan[named.pid]["proc"].pid == named.pid
            # the session check takes a closer look at a short snapshot's member only
            members = javaservice._session_procs(plain.pid, time.time(), scan=scan)
            assert [p.pid for p in members] == [plain.pid]
    finally:
        for proc in (plain, named):
            proc.kill()
            proc.wait()
