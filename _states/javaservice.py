"""
Keep one Java service's JVM running (started, and proven ready) or dead (stopped).

Thin states over the ``javaservice`` execution module; see its docstring for how a service is
identified (``catalina_base=`` for Tomcat, ``app_dir=`` for a standalone JVM, optional
``pidfile=``) and what "ready" means.

.. code-block:: yaml

    stop-ecsc:
      javaservice.dead:
        - name: ecsc
        - catalina_base: /home/apache-tomcat-7.0.67
        - timeout: 60

    start-ecsc:
      javaservice.running:
        - name: ecsc
        - catalina_base: /home/apache-tomcat-7.0.67
        - start: [/home/apache-tomcat-7.0.67/bin/startup.sh]
        - logs: [/home/apache-tomcat-7.0.67/logs/catalina.out, /home/ecsclog/ecsc.log]
        - ready:
          - {log: /home/apache-tomcat-7.0.67/logs/catalina.out, pattern: TOMCAT_READY}
        - url: http://25.0.3.17:8080/ecsc/
        - timeout: 180

    start-schedule:
      javaservice.running:
        - name: schedule
        - app_dir: /home/schedule
        - start: sh startup.sh
        - output: /home/schedule/nohup.out
        - logs: [/home/schedulelog/schedule.log]
        - ready: ['Scheduler .* started']

:depends: the ``javaservice`` execution module (``_modules/javaservice.py``)
"""

import logging
import os
import shlex

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "javaservice"

def __virtual__():
    if "javaservice.pids" in __salt__:
        return __virtualname__
    return (False, "javaservice state: the javaservice execution module is not available")


def _pattern_logs(*pattern_lists):
    """Logs named by {"log": ..., "pattern": ...} entries of ready/fatal."""
    found = []
    for patterns in pattern_lists:
        if isinstance(patterns, (str, dict)):
            patterns = [patterns]
        for item in patterns or []:
            if isinstance(item, dict) and isinstance(item.get("log"), str):
                found.append(item["log"])
    return found


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _strangers_note(strangers):
    """For a comment: the look-alike processes left alone, and why they are not the service."""
    if not strangers:
        return ""
    return "; left alone (not the service): " + ", ".join(
        f"pid {s['pid']} ({s['user']}: {s['why']})" for s in strangers
    )


def _command_text(command):
    return command if isinstance(command, str) else shlex.join(str(arg) for arg in command)


def running(
    name,
    start,
    cwd=None,
    env=None,
    logs=None,
    output=None,
    ready=None,
    fatal=None,
    url=None,
    timeout=120,
    runas=None,
    settle=3,
    **identity,
):
    """
    Ensure the service's JVM runs and is ready.

    Already running: no changes (result True) - when ``url`` is given it must answer 200 (it is
    waited for up to ``timeout``; a running but unhealthy JVM fails the state and is NOT
    restarted). Not running: ``javaservice.start`` then ``javaservice.wait_ready`` with the
    offsets recorded by the start; changes ``{"started": {"pids", "seconds"}}`` (``seconds``:
    start-to-ready, from the launch until ready, before the settle time). A JVM that
    started but never became ready (or died within the settle time) is left as it is for
    diagnosis (result False, changes say it was started). Java processes that look like the
    service but are not it (another user's, another main class, not a real JVM) never count as
    "already running"; the comment lists them.

    name
        The service's name.

    start
        The start command (list, or string split into words): ``[sh, startup.sh]`` or
        ``[/home/apache-tomcat-7.0.67/bin/startup.sh]``.

    cwd, env, output, runas
        See ``javaservice.start`` (cwd defaults to app_dir / catalina_base).

    logs, ready, fatal, url, timeout, settle
        See ``javaservice.wait_ready``. Logs named in ``ready``/``fatal`` entries are watched too.
        ``settle`` (default 3 s) applies to a start, not to an already running JVM.

    catalina_base / app_dir / main / user / pidfile
        The service's identity.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        all_logs = []
        for path in _as_list(logs) + _pattern_logs(ready, fatal):
            if path not in all_logs:
                all_logs.append(path)
        if __opts__["test"]:
            status = __salt__["javaservice.status"](name, **identity)
        else:
            # Right after a stop this runs while the service is down: one process scan both
            # finds a JVM that already runs and, when none does, starts it.
            status = __salt__["javaservice.start"](
                name, start, cwd=cwd, env=env, logs=all_logs, output=output, runas=runas,
                running_ok=True, **identity
            )
        strangers = _strangers_note(status.get("strangers"))

        if status.get("pids"):
            ret.update(_already_running(name, status["pids"], all_logs, url, timeout, identity))
            ret["comment"] += strangers
            return ret

        if __opts__["test"]:
            what = []
            if ready:
                what.append(f"log pattern(s) {_as_list(ready)!r}")
            if url:
                what.append(f"HTTP 200 from {url}")
            ret.update(
                result=None,
                comment=f"would start {name}: {_command_text(start)}"
                + (f" in {cwd}" if cwd else "")
                + f"; then wait up to {timeout}s for "
                + (" and ".join(what) if what else "the JVM to run")
                + (f", then {settle}s of settle time" if settle else "")
                + strangers,
            )
            return ret

        started = status
        try:
            result = __salt__["javaservice.wait_ready"](
                name,
                logs=all_logs,
                offsets=started["offsets"],
                ready=ready,
                fatal=fatal,
                url=url,
                timeout=timeout,
                settle=settle,
                **identity,
            )
        except CommandExecutionError as exc:
            try:
                now = __salt__["javaservice.pids"](**identity)
            except (CommandExecutionError, SaltInvocationError):
                now = []
            ret["changes"] = {
                "started": {
                    "pids": now,
                    "launcher_pid": started["launcher_pid"],
                    "ready": False,
                }
            }
            ret["comment"] = str(exc) + strangers
            return ret
        # Start-to-ready: from the launch (the JVM starts then, before this wait began).
        seconds = result["seconds"]
        if result.get("ready_at") and started.get("started_at"):
            seconds = round(max(result["ready_at"] - started["started_at"], 0.0), 3)
        ret["changes"] = {"started": {"pids": result["pids"], "seconds": seconds}}
        details = [f"'{key}'" for key in result["matched"]]
        if result.get("http_status") is not None:
            details.append(f"HTTP {result['http_status']}")
        settled = result.get("settled")
        settled = f"; up and healthy for {settled:g}s more" if settled else ""
        ret.update(
            result=True,
            comment=f"started {name} (pid(s) {', '.join(map(str, result['pids']))}), ready "
            f"after {seconds}s" + (f": {', '.join(details)}" if details else "")
            + settled + strangers,
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
    return ret


def _already_running(name, pids, all_logs, url, timeout, identity):
    """result/comment for a service that runs: healthy (url answers 200) or not."""
    running_msg = f"{name} is already running (pid(s) {', '.join(map(str, pids))})"
    if not url:
        return {"result": True, "comment": running_msg}
    health = dict(
        logs=all_logs,
        offsets=__utils__["rollout_logs.offsets"](all_logs)[0],
        ready=[],
        fatal=[],
        url=url,
        settle=0,
        **identity,
    )
    if __opts__["test"]:
        try:
            __salt__["javaservice.wait_ready"](name, timeout=0, **health)
        except CommandExecutionError:
            return {
                "result": None,
                "comment": f"{running_msg} but {url} does not answer 200 yet; would wait up to "
                f"{timeout}s for it (and fail, not restart, if it does not)",
            }
    else:
        __salt__["javaservice.wait_ready"](name, timeout=timeout, **health)
    return {"result": True, "comment": f"{running_msg} and {url} answers 200"}


def dead(name, signal="TERM", timeout=30, thread_dump=False, **identity):
    """
    Ensure the service's JVM is not running: ``javaservice.stop`` (``signal``, wait ``timeout``
    seconds, then SIGKILL). Changes ``{"stopped": {"pids", "outcome", "seconds",
    "signal_seconds"}}`` with outcome ``graceful`` or ``killed`` (``seconds``: the whole stop;
    ``signal_seconds``: from the signal until the JVM was gone); the comment says what happened and how long each step
    took (``SIGTERM, exited after 1.2 s`` / ``SIGTERM ignored for 30.0 s, SIGKILL, gone after
    0.1 s``). Not running means no changes. Look-alike processes that are not the service
    (see ``javaservice.status``'s ``strangers``) are never signalled; the comment lists them.

    name
        The service's name.

    signal : TERM
        TERM, KILL, INT, QUIT or HUP (or 15, 9, 2, 3, 1). KILL is the runbook's ``kill -9``
        and always reports ``killed``.

    timeout : 30
        Seconds to wait before SIGKILL.

    thread_dump : False
        SIGQUIT first (a thread dump in catalina.out / the service's stdout).

    catalina_base / app_dir / main / user / pidfile
        The service's identity.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        # validated as javaservice.stop does, so test=True refuses what a real run would
        sig = __utils__["rollout_ids.signal_name"](signal)
        if __opts__["test"]:
            res = __salt__["javaservice.status"](name, **identity)
        else:
            # One process scan finds the JVM and signals it (no status scan before it).
            res = __salt__["javaservice.stop"](
                name, signal=sig, timeout=timeout, thread_dump=thread_dump, **identity
            )
        note = ""
        pidfile = res.get("pidfile")
        if pidfile and not pidfile["valid"] and pidfile["reason"] != "missing":
            note = f" (ignored pid file {pidfile['path']}: {pidfile['reason']})"
        note += _strangers_note(res.get("strangers"))
        if not res["pids"]:
            ret.update(result=True, comment=f"{name} is not running{note}")
            return ret
        if __opts__["test"]:
            ret.update(
                result=None,
                comment=f"would stop {name}: pid(s) {', '.join(map(str, res['pids']))} with "
                f"SIG{sig}"
                + ("" if sig == "KILL" else f", SIGKILL after {timeout}s")
                + (" (thread dump first)" if thread_dump else "")
                + note,
            )
            return ret
        ret["changes"] = {
            "stopped": {"pids": res["pids"], "outcome": res["outcome"], "seconds": res["seconds"],
                        # from the signal on: the JVM's own part (seconds has the scan before)
                        "signal_seconds": res.get("signal_seconds")}
        }
        ret.update(
            result=True,
            comment=f"stopped {name} (pid(s) {', '.join(map(str, res['pids']))}): "
            f"{res['summary']}{note}",
        )
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
    return ret
