"""Fake processes for the javaservice unit tests (modules and states): just enough of
psutil.Process, a fake Java home that passes the real-JVM check, and the loader set-up."""

import atexit
import collections
import contextlib
import os
import pathlib
import shutil
import signal
import tempfile
import time
from unittest.mock import patch

import psutil
import pytest

from tests.conftest import load_repo_module, repo_utils

javaservice = load_repo_module("modules", "javaservice")
javaservice_state = load_repo_module("states", "javaservice")

MINION = "unit-minion"
SERVICE_UID = os.getuid()  # the owner the tests' nonexistent service dirs are given


def _fake_java_home():
    """A Java home as the real-JVM check sees one: bin/java next to lib/modules."""
    home = pathlib.Path(tempfile.mkdtemp(prefix="fake-jdk-"))
    (home / "bin").mkdir()
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "lib").mkdir()
    (home / "lib" / "modules").write_bytes(b"")
    atexit.register(shutil.rmtree, home, True)
    return home


JAVA_HOME = _fake_java_home()
JAVA = str(JAVA_HOME / "bin" / "java")


@pytest.fixture
def configure_loader_modules(tmp_path):
    opts = {"id": MINION, "cachedir": str(tmp_path / "cache"), "test": False}
    utils = repo_utils(opts)
    salt_funcs = {
        f"javaservice.{fun}": getattr(javaservice, fun)
        for fun in ("pids", "status", "stop", "start", "wait_ready", "tail")
    }
    return {
        javaservice: {"__opts__": opts, "__salt__": {}, "__utils__": utils},
        javaservice_state: {"__opts__": opts, "__salt__": salt_funcs, "__utils__": utils},
    }


_Uids = collections.namedtuple("_Uids", "real effective saved")


class FakeProc:
    """Just enough of psutil.Process for javaservice."""

    def __init__(self, pid, cmdline, exe=JAVA, cwd="/", name=None, status="sleeping",
                 create_time=1000.0, dies_on=(signal.SIGTERM, signal.SIGKILL), exe_denied=False,
                 uid=SERVICE_UID):
        self.pid = pid
        self._cmdline = list(cmdline)
        self._exe = exe
        self._cwd = cwd
        self._name = name if name is not None else os.path.basename(exe)
        self._status = status
        self._create_time = create_time
        self._uid = uid
        self.dies_on = set(dies_on)
        self.exe_denied = exe_denied
        self.dead = False
        self.signals = []

    def _check(self):
        if self.dead:
            raise psutil.NoSuchProcess(self.pid)

    def _get(self, value):
        self._check()
        return value

    def status(self):
        return self._get(self._status)

    def exe(self):
        if self.exe_denied and not self.dead:
            raise psutil.AccessDenied(self.pid)
        return self._get(self._exe)

    def name(self):
        return self._get(self._name)

    def cmdline(self):
        return self._get(self._cmdline)

    def cwd(self):
        return self._get(self._cwd)

    def create_time(self):
        return self._get(self._create_time)

    def uids(self):
        return self._get(_Uids(self._uid, self._uid, self._uid))

    def is_running(self):
        return not self.dead

    @contextlib.contextmanager
    def oneshot(self):
        yield

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


def tomcat(pid, base, cwd="/", **kwargs):
    return FakeProc(pid, [JAVA, "-Dnop", "--add-opens=java.base/java.lang=ALL-UNNAMED",
                          "-Xmx64m", "-classpath",
                          "/usr/share/tomcat10/bin/bootstrap.jar:/usr/share/tomcat10/bin/tomcat-juli.jar",
                          f"-Dcatalina.base={base}", "-Dcatalina.home=/usr/share/tomcat10",
                          "org.apache.catalina.startup.Bootstrap", "start"], cwd=cwd, **kwargs)


@pytest.fixture
def procs():
    """A host running many things; tests add to it. Service dirs that do not exist (the
    tests' /home/...) are owned by SERVICE_UID."""
    found = []
    real_user_of = javaservice._user_of

    def user_of(path, user):
        if user is None and not os.path.exists(path):
            return {"uid": SERVICE_UID, "user": javaservice._user_name(SERVICE_UID)}
        return real_user_of(path, user)

    with patch.object(javaservice, "_fresh_processes", side_effect=lambda wanted=None: list(found)), \
            patch.object(javaservice, "_user_of", side_effect=user_of):
        yield found
