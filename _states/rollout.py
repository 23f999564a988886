"""
The orchestrations' own master-side steps (rollout lock, answering, gates between waves, run
report, compliance report), run in place: ``rollout.runner`` calls one of the repo's runners
(``_runners/rollout.py``, ``rolloutlock.py``, ``rolloutreport.py``) inside the
orchestration's own state run on the master.

Why not ``salt.runner``: that state goes through ``saltutil.runner``, which builds a new
RunnerClient for every step, and with it a MasterMinion; the client's ``_low`` walks
``functions.keys()``, which imports every runner module Salt ships; then it fires the job's
events and stores the job. That is 0.5-0.7 s per step on the lab, on the critical path of
every run: the lock before the first host, each gate between two waves, the report at the
end. This state loads only the runner module it calls, with the orchestration's own opts
and utils.

The return is the one ``salt.runner`` gives: ``changes.return`` holds the runner's return; a
runner that raises fails the step, with ``Exception occurred in runner <name>: <traceback>``
in ``changes.return``; a runner that sets ``__context__["retcode"]`` non-zero (compliance.report
on drift) fails it too, as ``saltutil.runner`` reads it; under ``test=True`` nothing runs
(result None). Outputters and tests read both alike. orch.compliance runs its one step,
``compliance.report``, the same way.

``rollout.turn`` is a host wave's step of orch.upgrade: the wave's state job was published
ahead (``rollout.publish``) and waits on its hosts; this step gives them their turn and
collects the returns, and its return is ``salt.state``'s (it runs Salt's own ``salt.state``
with the job's gathering in place of a new publish), so ``allow_fail``, ``expect_minions``
and the outputters work as with ``salt.state``.

Master side only (``__virtual__`` refuses on minions); ``salt-run saltutil.sync_all`` (or
``sync_states`` and ``sync_runners``) syncs it and the runners to the master.

:depends: the repo's runners synced to the master
"""

import logging
import threading
import time
import traceback

import salt.client
import salt.loader
import salt.utils.args
from salt.exceptions import CommandExecutionError

log = logging.getLogger(__name__)

__virtualname__ = "rollout"

#: The repo's runner modules (``_runners/``), loaded together: a runner may call another
#: through ``__salt__`` (compliance.report asks rolloutlock.holder). Salt's own are not loaded.
_REPO_RUNNERS = ("rollout", "rolloutlock", "rolloutreport", "compliance")


def __virtual__():
    if __opts__.get("__role") != "master":
        return (False, "rollout states run on the master only (in orchestrations)")
    return __virtualname__


def runner(name, **kwargs):
    """
    Run the master runner ``name`` (``<module>.<function>``) with ``kwargs``, in this state
    run. Result False when the runner raises (its exception in ``changes.return``) or is
    not synced to the master.

    .. code-block:: yaml

        rollout-lock:
          rollout.runner:
            - name: rolloutlock.acquire
            - kind: upgrade
            - owner: 0f3c...
    """
    if __opts__.get("test"):
        return {"name": name, "result": None, "changes": {},
                "comment": f"Runner function '{name}' would be executed."}
    ret = {"name": name, "changes": {}, "result": False,
           "comment": f"Runner function '{name}' failed."}
    context = {}
    runners = _runners(context)
    if name not in runners:
        ret["changes"] = {"return": f"runner {name} is not available on the master: "
                                    "salt-run saltutil.sync_all"}
        return ret
    try:
        out = runners[name](**salt.utils.args.clean_kwargs(**kwargs))
    except Exception:  # pylint: disable=broad-except
        # As salt.runner words it: the runner's own message stays readable in the return.
        ret["changes"] = {"return": f"Exception occurred in runner {name}: "
                                    f"{traceback.format_exc()}"}
        return ret
    ret["changes"] = {"return": out}
    if context.get("retcode"):
        # The runner's own verdict (e.g. drift): the step fails, salt-run exits non-zero.
        return ret
    ret.update(result=True, comment=f"Runner function '{name}' executed.")
    return ret


#: How often a wave step looks for its hosts' returns (seconds).
GATHER_POLL = 0.1


#: How long a wave step waits for a host Salt's own liveness ping gave up on to say whether
#: it still runs the wave's job (seconds); a dead minion is called gone this much later.
LIVENESS_WAIT = 30


#: How long a first wave's step waits for its hosts to begin their states before it
#: publishes the next wave's job anyway (seconds).
BEGIN_WAIT = 60


def _begun(client, hosts, jid, run):
    """Wait (up to BEGIN_WAIT s) until each of ``hosts`` fired this run's ``begin`` event
    (its job compiled, rendered and started its states) or returned. Job returns seen
    meanwhile stay pending for the gathering (subscribed)."""
    waiting = set(hosts)
    deadline = time.monotonic() + BEGIN_WAIT
    while waiting and time.monotonic() < deadline:
        event = client.event.get_event(wait=GATHER_POLL, tag="rollout/upgrade/", full=True)
        outer = (event or {}).get("data") or {}
        # event.send from a minion: the master's event wraps the state's data in "data".
        data = outer.get("data", outer) if isinstance(outer, dict) else {}
        if event and event["tag"].endswith("/begin") and data.get("run") == run:
            waiting.discard(data.get("host"))
        # A host whose job returned already (it failed before its states) fires no begin.
        waiting -= set(client.get_cache_returns(jid))


def _still_running(client, jid, hosts, found):
    """Of ``hosts`` (no return of job ``jid`` yet), those still running it. A return that
    reached the job cache meanwhile goes into ``found``. The others are asked (one
    saltutil.find_job, up to LIVENESS_WAIT s for the answers, back as soon as all answered):
    a host that does not answer, or no longer runs the job and left no return, is gone."""
    if not hosts:
        return set()
    cached = client.get_cache_returns(jid)
    found.update({host: cached[host] for host in hosts if host in cached})
    ask = sorted(set(hosts) - set(found))
    if not ask:
        return set()
    try:
        answers = client.cmd(ask, "saltutil.find_job", arg=[jid], tgt_type="list",
                             timeout=LIVENESS_WAIT)
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("rollout.turn: cannot ask %s about job %s: %s", ", ".join(ask), jid, exc)
        return set()
    # find_job answers the job's data while it runs, {} when not; LocalClient.cmd gives a
    # silent minion a string ("Minion did not return. [No response]") or False.
    running = {host for host in ask
               if isinstance(answers.get(host), dict) and answers[host].get("jid") == jid}
    if running:
        log.warning("rollout.turn: %s still running job %s (Salt's liveness ping timed out):"
                    " waiting for the returns", ", ".join(sorted(running)), jid)
    # A job that ended between the two looks: its return is in the cache now.
    cached = client.get_cache_returns(jid)
    found.update({host: cached[host] for host in ask if host in cached and host not in running})
    return running


def _take_turn(hosts, jid, run, publish, publish_next):
    """{host: {"ret": ...}} of the state job ``jid`` on ``hosts``, as ``saltutil.cmd`` gives
    a job's returns to ``salt.state``: published ahead (waiting for the turn ``run``), its
    hosts get the turn while ``publish_next`` runs in a thread; not published yet (the
    first wave), ``publish(jid, hosts)`` starts it now and ``publish_next`` runs once
    these hosts began their states. Then the returns are collected."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    ahead = None
    try:
        # Listen before anything can return; a host whose job ended before its turn (its
        # render failed, another state job ran) is in the job cache already.
        client.event.connect_pub()
        client.event.subscribe(f"salt/job/{jid}")
        client.event.subscribe("rollout/upgrade/")
        found = {}
        if not client.returns_for_job(jid):
            try:
                publish(jid, hosts)
            except CommandExecutionError as exc:
                return {host: {"failed": True, "ret": str(exc)} for host in hosts}
            going = list(hosts)
            # The next wave's job compiles and renders while this one upgrades, not while
            # this one compiles and renders too (two waves' jobs at once would slow both).
            if publish_next:
                _begun(client, going, jid, run)
                publish_next()
        else:
            # The next wave's job is published while this wave gets its turn (both wait
            # on the master): on a loaded master its compile and render can outlast a
            # short wave.
            if publish_next:
                ahead = threading.Thread(target=publish_next, name="publish next", daemon=True)
                ahead.start()
            found = {host: ret for host, ret in client.get_cache_returns(jid).items()
                     if host in hosts}
            ask = [host for host in hosts if host not in found]
            given = client.cmd(ask, "turn.give", arg=[run], tgt_type="list") if ask else {}
            going = [host for host in ask if given.get(host) == "go"]
            for host in ask:
                if host not in going:  # its job never starts: do not wait for it
                    found[host] = {"failed": True, "ret": (
                        f"{host} did not take its turn in run {run}: turn.give answered "
                        f"{given.get(host)!r}; nothing was touched")}
        pending = set(going)
        while pending:
            # Not blocking: get_iter_returns would look for events every 10 ms, in each of
            # a run's parallel wave steps, on the master's CPU that the JVMs need; 0.1 s
            # is this step's latency bar.
            for item in client.get_iter_returns(jid, set(pending), tgt=sorted(pending),
                                                tgt_type="list", block=False):
                if item is None:
                    time.sleep(GATHER_POLL)
                    continue
                found.update({host: ret for host, ret in item.items() if host in pending})
            pending -= set(found)
            # Salt gave up on these: its liveness ping (saltutil.find_job) got no answer
            # within gather_job_timeout. On a loaded machine a host still upgrading answers
            # later than that (32 hosts at load 35: the run ended while two hosts were
            # mid-upgrade), so ask them once more, patiently, before calling them gone.
            pending = _still_running(client, jid, pending, found)
        for host in going:
            found.setdefault(host, {"failed": True})  # as Salt's expect_minions: no return
        return found
    finally:
        if ahead is not None:
            ahead.join()
        client.destroy()


def _runners(context=None):
    """The repo's runners (not Salt's own), with this state run's opts and utils."""
    context = {} if context is None else context
    return salt.loader.runner(__opts__, utils=__utils__, context=context,
                              whitelist=list(_REPO_RUNNERS))


def turn(name, tgt, jid, run, pillar=None, timeout=1800, then=None, **kwargs):
    """
    Run one wave of orch.upgrade: give ``tgt`` (a minion id or a list) its turn in ``run``
    in the state job ``jid`` that the wave before published ahead (or publish that job now,
    when none did: the first wave), publish the next wave's job (``then``) so that it
    renders while this wave runs, and collect this wave's returns. The other arguments are
    ``salt.state``'s (``sls``, ``allow_fail``, ``expect_minions``, ...), and so is the
    return: result False when a host's state run failed or it did not return.

    pillar
        The pillar of the jobs (inventory, release, rollout_run, rollout_soak).

    timeout
        Seconds a job published ahead waits for its turn.

    then
        The next wave's job: ``{"jid": ..., "tgt": [...]}``.

    .. code-block:: yaml

        upgrade-ecsc-1:
          rollout.turn:
            - tgt: ecsc-1
            - jid: '20261130080000000000'
            - run: 6f1c0a...
            - sls: release.upgrade
            - then: {jid: '20261130080000000001', tgt: [ecsc-2]}
    """
    hosts = [tgt] if isinstance(tgt, str) else list(tgt)
    if __opts__.get("test"):
        return {"name": name, "changes": {}, "result": None,
                "comment": f"would give {', '.join(hosts)} their turn in job {jid}"}
    sls = kwargs.get("sls", "release.upgrade")
    publisher = _runners()["rollout.publish"]  # loaded here, before any thread uses it

    def publish(job, targets, **turn_kw):
        return publisher(targets, job, pillar=pillar, sls=sls, **turn_kw)

    ahead = []

    def publish_next():
        try:
            publish(str(then["jid"]), then["tgt"], run=str(run), timeout=timeout)
        except Exception as exc:  # pylint: disable=broad-except
            # Not this wave's failure: the next wave's step publishes its job itself.
            ahead.append(f"the next wave's job was not published ahead: {exc}")
            log.warning("rollout.turn %s: %s", name, ahead[0])

    gathered = _take_turn(hosts, str(jid), str(run), publish, publish_next if then else None)

    def returns(*_args, **_kwargs):  # stands in for saltutil.cmd: no new job
        return gathered

    states = salt.loader.states(__opts__, {"saltutil.cmd": returns}, __utils__, {},
                                whitelist=["salt"])  # saltmod.py, virtual name salt
    ret = states["salt.state"](name=name, tgt=hosts, tgt_type="list",
                               **salt.utils.args.clean_kwargs(**kwargs))
    if ahead:
        ret["comment"] += f" ({ahead[0]})"
    return ret
