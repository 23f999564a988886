"""Unit tests for _states/javaservice.py (fake processes through the real execution module)."""

import os
import re
import signal
from unittest.mock import patch

from tests.unit.javaservice_fakes import (  # noqa: F401 (fixtures)
    MINION,
    configure_loader_modules,
    javaservice,
    javaservice_state,
    procs,
    tomcat,
)


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


def test_state_running_never_takes_another_users_jvm_for_the_service(procs, tmp_path):
    # Issue 8.2: a JVM of another user with the right catalina.base is not "already running".
    base = tmp_path / "tomcat"
    base.mkdir()
    procs.append(tomcat(130, str(base), uid=os.getuid() + 4242))
    with patch.dict(javaservice_state.__opts__, {"test": True}):
        ret = javaservice_state.running("ecsc", [str(base / "bin" / "startup.sh")],
                                        catalina_base=str(base))
    assert ret["result"] is None and "already running" not in ret["comment"]
    assert ret["comment"].startswith("would start ecsc")
    assert "left alone (not the service): pid 130" in ret["comment"]
    ret = javaservice_state.dead("ecsc", catalina_base=str(base))
    assert ret["result"] is True and ret["changes"] == {} and procs[0].signals == []
    assert ret["comment"].startswith("ecsc is not running; left alone (not the service): pid 130")


def test_state_dead_says_which_signal_worked_and_how_long(procs):
    # Issue 8.5: the comment says what happened and how long each step took.
    procs.append(tomcat(140, "/home/tomcat"))
    ret = javaservice_state.dead("ecsc", timeout=5, catalina_base="/home/tomcat")
    assert re.search(r": SIGTERM, exited after \d+\.\d s$", ret["comment"]), ret["comment"]
    stubborn = tomcat(141, "/home/tomcat")
    stubborn.dies_on = {signal.SIGKILL}
    procs[:] = [stubborn]
    ret = javaservice_state.dead("ecsc", timeout=0.2, catalina_base="/home/tomcat")
    assert ret["changes"]["stopped"]["outcome"] == "killed"
    assert re.search(r": SIGTERM ignored for 0\.\d s, SIGKILL, gone after \d+\.\d s$",
                     ret["comment"]), ret["comment"]


def test_state_dead_scans_once_before_the_signal(procs):
    """Issue 10 (c): one pass over the processes finds the JVM and signals it (there were
    two: a status, then the stop's own)."""
    passes = []
    jvm = tomcat(150, "/home/tomcat")
    real_send = jvm.send_signal
    jvm.send_signal = lambda sig: (passes.append(("signal", sig)), real_send(sig))
    procs.append(jvm)

    def fresh_processes(wanted=None):
        passes.append("pass")
        return list(procs)

    with patch.object(javaservice, "_fresh_processes", side_effect=fresh_processes):
        ret = javaservice_state.dead("ecsc", timeout=1, catalina_base="/home/tomcat")
        assert ret["result"] is True and ret["changes"]["stopped"]["pids"] == [150]
        assert passes == ["pass", ("signal", signal.SIGTERM)]
        # a service that does not run: one pass, nothing signalled
        passes.clear()
        ret = javaservice_state.dead("ecsc", catalina_base="/home/tomcat")
    assert ret["comment"] == "ecsc is not running" and passes == ["pass"]


def test_state_running_reports_start_to_ready_from_the_launch(procs, tmp_path):
    """Issue 10 (c): the JVM starts at the launch, before the ready wait begins: the state's
    seconds run from the launch (the wait's own seconds left out what came between)."""
    def wait_ready(name, **kwargs):
        launched = javaservice._read_state(name)["started_at"]
        return {"name": name, "ready": True, "seconds": 1.0, "ready_at": launched + 2.5,
                "matched": {}, "http_status": None, "pids": [160], "settled": 0}

    with patch.object(javaservice, "_spawn_detached", return_value=4321), \
            patch.dict(javaservice_state.__salt__, {"javaservice.wait_ready": wait_ready}):
        ret = javaservice_state.running("ecsc", ["/bin/startup.sh"], cwd=str(tmp_path),
                                        catalina_base="/home/tomcat")
    assert ret["result"] is True
    assert ret["changes"] == {"started": {"pids": [160], "seconds": 2.5}}
    assert "ready after 2.5s" in ret["comment"]
