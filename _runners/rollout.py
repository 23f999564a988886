"""
Master-side pre-flight of an upgrade or rollback, in as few job rounds as it can:

- :func:`survey` (orch.upgrade's render, read-only, one job): which targeted hosts are already
  on the release with their service up and healthy, which minions' custom modules differ from
  the master's, which run a state job.
- :func:`publish` and :func:`close` (orch.upgrade's waves): the next wave's state job is
  published while a wave runs and waits on its hosts for their turn (``turn`` module), so a
  wave starts with one tiny job; ``close`` ends the wait of hosts a failed run never reached.
- :func:`answering` (right after the rollout lock): every targeted minion answers, none is
  still running a state job (one left by an interrupted run, e.g. a killed ``salt-run``: the
  minion finishes it on its own; this run waits for it, then resumes the host from where that
  job left it), and the minions whose modules are stale are synced - only those, only the
  module types this repo ships, and their modules reloaded only when something changed.

:depends: none (the master's LocalClient and file server)
"""

import json
import logging
import time

import salt.client
import salt.fileclient
from salt.exceptions import CommandExecutionError, SaltClientError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "rollout"


def __virtual__():
    return __virtualname__


POLL_SECONDS = 0.5
# The custom module types the repo ships to minions: salt://_<type>/ -> extmods/<type>/.
# utils first: the modules and states that use them load them.
SHIPPED_CODE = ("utils", "modules", "states")


def _cmd(hosts, fun, timeout, arg=()):
    """{id: return} of ``fun`` (a function or a list of them: one compound job; ``arg`` then
    one argument list per function) on the hosts that answered within ``timeout`` seconds."""
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        return client.cmd(hosts, fun, arg=list(arg), tgt_type="list", timeout=timeout) or {}
    finally:
        client.destroy()


def _hosts(hosts):
    if isinstance(hosts, str):
        hosts = [h.strip() for h in hosts.split(",") if h.strip()]
    if not isinstance(hosts, (list, tuple)) or not hosts:
        raise SaltInvocationError(f"hosts must be a non-empty list of minion ids, got {hosts!r}")
    return list(hosts)


def _state_jobs(jobs):
    """["<fun> jid <jid>", ...] of the state jobs in a ``saltutil.running`` return."""
    return [f"{job['fun']} jid {job.get('jid')}" for job in (jobs if isinstance(jobs, list) else [])
            if isinstance(job, dict) and str(job.get("fun", "")).startswith("state.")]


def _current_arg(pillar, **flags):
    """The keyword argument of an ``inventory.current`` job: the orchestration's pillar and
    the flags (``preflight``, ``quick``)."""
    return {"__kwarg__": True, **({"pillar": pillar} if pillar else {}), **flags}


def master_code():
    """
    {"<type>/<file>": sha256} of the custom modules the master's file server ships to minions
    (``salt://_modules``, ``_states``, ``_utils``), as :func:`survey` compares them.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.master_code
    """
    client = salt.fileclient.FSClient(__opts__)
    try:
        found = {}
        for kind in SHIPPED_CODE:
            for path in client.file_list("base", prefix=f"_{kind}/"):
                name = path[len(kind) + 2:]
                if "/" not in name and name.endswith(".py"):
                    found[f"{kind}/{name}"] = client.hash_file(f"salt://{path}", "base")["hsum"]
        return found
    finally:
        client.destroy()


def survey(hosts, pillar=None, timeout=10):
    """
    Ask every one of ``hosts``, in one job and read-only, ``inventory.current`` with its
    pre-flight (is it on the release, intact, its JVM up since the deploy, its health 200;
    if not, does its pillar entry hold on it, is the archive there and valid, is there room;
    the sha256 of its synced modules) and ``saltutil.running``. Returns ``{"current": [hosts
    with nothing to do: on the release, healthy, idle, modules the master's], "stale": [hosts
    that answered with modules other than the master's, or could not say], "busy": {host:
    [state jobs]}, "silent": [hosts that did not answer], "preflight": {host: comment} (hosts
    with work whose pre-flight passed here, on the master's modules, with no state job
    running: they need no pre-flight job), "why": {host: what is not as planned}}``. Never
    raises for a host: a host it cannot judge is simply not "current" (the run then treats
    it in full, pre-flight job included).

    hosts
        Minion ids (a list).

    pillar
        The inventory/release pillar the orchestration plans with (passed to the minions).

    timeout
        Seconds to wait for the answers.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.survey hosts='[ecsc-1, ecsc-2]'
    """
    hosts = _hosts(hosts)
    try:
        answers = _cmd(hosts, ["saltutil.running", "inventory.current"], timeout,
                       arg=[[], [_current_arg(pillar, preflight=True)]])
    except SaltClientError as exc:
        log.warning("rollout.survey: cannot ask the minions: %s", exc)
        answers = {}
    master = master_code()
    ret = {"current": [], "stale": [], "busy": {}, "silent": [], "preflight": {}, "why": {}}
    for host in hosts:
        answer = answers.get(host)
        if not isinstance(answer, dict):
            ret["silent"].append(host)
            continue
        busy = _state_jobs(answer.get("saltutil.running"))
        if busy:
            ret["busy"][host] = busy
        now = answer.get("inventory.current")
        if not isinstance(now, dict):  # not synced yet, or it raised: the text says why
            ret["stale"].append(host)
            ret["why"][host] = str(now)
            continue
        if now.get("code") != master:
            ret["stale"].append(host)
        elif now.get("on_release") and not busy:
            ret["current"].append(host)
        elif not busy and (now.get("preflight") or {}).get("result") is True:
            ret["preflight"][host] = now["preflight"]["comment"]
        if now.get("why"):
            ret["why"][host] = now["why"]
    return ret


def answering(hosts, command="orch.upgrade", timeout=10, wait=600, sync=None, checked=None):
    """
    Check that every one of ``hosts`` answers within ``timeout`` seconds, or raise
    ``CommandExecutionError`` naming the silent ones and the command that runs the others
    without them. Then wait (up to ``wait`` seconds) until none of them runs a state job any
    more (one left by an interrupted run), or raise naming the host and the job. Then sync
    the repo's custom modules (``_utils``, ``_modules``, ``_states``) to the hosts in ``sync``
    and reload the modules of those where the sync changed something.

    hosts
        Minion ids (a list).

    command
        The orchestration being run, for the hint (``orch.upgrade`` or ``orch.rollback``).

    timeout
        Seconds to wait for the answers.

    wait
        Seconds to wait for state jobs already running on the hosts to end.

    sync
        Hosts to sync (a list; ``True``: all of ``hosts``; default none).

    checked
        Hosts :func:`survey` already saw answer with no state job running (while this run
        rendered): not asked again.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.answering hosts='[ecsc-1, ecsc-2]'
        salt-run rollout.answering hosts='[ecsc-1, ecsc-2]' sync=True
    """
    hosts = _hosts(hosts)
    ask = [host for host in hosts if host not in (checked or [])]
    waited = {}
    if ask:
        try:
            running = _cmd(ask, "saltutil.running", timeout)
        except SaltClientError as exc:
            raise CommandExecutionError(
                f"cannot ask the minions whether they answer (is the salt-master running?): "
                f"{exc}; no host was touched"
            ) from exc
        # LocalClient.cmd gives a minion that did not return a "Minion did not return"
        # string; saltutil.running answers a list.
        silent = [host for host in ask if not isinstance(running.get(host), list)]
        if silent:
            raise _silent_error(hosts, silent, command, timeout)
        busy = {host: jobs for host, jobs in
                ((h, _state_jobs(running[h])) for h in ask) if jobs}
        if busy:
            waited = _wait_idle(list(busy), busy, timeout, wait)
    ret = {"answered": hosts, "waited_for": waited}
    targets = hosts if sync is True else [host for host in hosts if host in (sync or [])]
    if targets:
        ret["synced"] = _sync(targets, timeout)
    return ret


def _silent_error(hosts, silent, command, timeout):
    rest = [host for host in hosts if host not in silent]
    hint = (
        f"to run the others without {'it' if len(silent) == 1 else 'them'}: salt-run "
        f"state.orchestrate {command} pillar='{json.dumps({'hosts': rest})}'"
        if rest
        else "no targeted minion answers"
    )
    return CommandExecutionError(
        f"{', '.join(silent)}: the minion did not answer within {timeout}s; "
        f"no host was touched. Bring it back (salt-key -L, its salt-minion service) and run "
        f"{command} again, or {hint}"
    )


def _wait_idle(hosts, busy, timeout, wait):
    """Wait until no host runs a state job; the jobs that were waited for."""
    deadline = time.monotonic() + float(wait)
    waited = {}
    while True:
        for host, jobs in busy.items():
            waited[host] = sorted(set(waited.get(host, []) + jobs))
        if time.monotonic() >= deadline:
            running = "; ".join(f"{host}: {', '.join(jobs)}" for host, jobs in sorted(busy.items()))
            raise CommandExecutionError(
                f"still running after {wait}s: {running} (left by an interrupted run?); no host "
                "was touched. Let it finish (salt-run jobs.active) and run this again"
            )
        log.warning("rollout: waiting for state jobs to end: %s", busy)
        time.sleep(POLL_SECONDS)
        running = _cmd(hosts, "saltutil.running", timeout)
        busy = {host: jobs for host, jobs in
                ((h, _state_jobs(running.get(h))) for h in hosts) if jobs}
        if not busy:
            return waited


def _sync(hosts, timeout):
    """Sync the shipped module types to ``hosts`` (one job, no reload), then reload the
    modules where a file changed (one more job, only then). {host: [changed files]}."""
    funs = [f"saltutil.sync_{kind}" for kind in SHIPPED_CODE]
    arg = [[{"refresh": False, "__kwarg__": True}] for _ in funs]
    # A sync of eight minions on a loaded master outlasts a ping's timeout.
    synced = _cmd(hosts, funs, max(timeout, 60), arg=arg)
    missing = [host for host in hosts if not isinstance(synced.get(host), dict)]
    if missing:
        raise CommandExecutionError(
            f"{', '.join(missing)}: the module sync did not return "
            f"({', '.join(str(synced.get(h)) for h in missing)}); no host was touched"
        )
    changed = {}
    for host in hosts:
        for fun, files in synced[host].items():
            if not isinstance(files, list):
                raise CommandExecutionError(f"{host}: {fun} failed: {files}; no host was touched")
            changed.setdefault(host, []).extend(files)
    changed = {host: files for host, files in changed.items() if files}
    if changed:
        # Wait for the reload: the next state job must find the new modules.
        _cmd(list(changed), "saltutil.refresh_modules", max(timeout, 60),
             arg=[{"async": False, "__kwarg__": True}])
    return changed


def _landed(hosts, pillar, timeout):
    """{host: inventory.current's quick answer: deployed record and health, no hashing} (one
    job; a host that did not answer is missing)."""
    answers = _cmd(hosts, "inventory.current", timeout, arg=[_current_arg(pillar, quick=True)])
    return {host: ret for host, ret in answers.items() if isinstance(ret, dict)}


def gate(service, done, hosts, max_fail=1, max_unavailable=1, wave=None, final=False,
         pillar=None, timeout=10, wait=60):
    """
    Between two waves of one service's rollout (orch.upgrade runs it when the service has a
    rollout policy): count the hosts of the waves done that are not on the release now (they
    failed and were rolled back, or went quiet: one quick ``inventory.current`` job, the
    deployed record and the health URL only, no tree hashed) and stop the service's rollout
    once they reach
    ``max_fail``; then wait (up to ``wait`` seconds) until the hosts down now plus the next
    wave are no more than ``max_unavailable`` (down: the health URL does not answer 200, as
    the availability prober sees it). ``final``: after the last wave, any failed host fails
    the run (the others are on the release; the exit is non-zero).

    Raises ``CommandExecutionError`` naming the service, the failed or down hosts and the
    hosts left untouched (still on their release).

    service
        The service (for messages).

    done
        The hosts of the waves that ran (a list).

    hosts
        Every targeted host of the service (a list).

    max_fail, max_unavailable
        The service's policy (counts).

    wave
        The hosts of the next wave (a list; none when ``final``).

    CLI Example:

    .. code-block:: bash

        salt-run rollout.gate ecsc done='[ecsc-1, ecsc-2]' hosts='[ecsc-1, ecsc-2, ecsc-3]' max_fail=2 max_unavailable=2 wave='[ecsc-3]'
    """
    done, hosts, wave = _hosts(done), _hosts(hosts), list(wave or [])
    untouched = [host for host in hosts if host not in done]
    deadline = time.monotonic() + float(wait)
    while True:
        now = _landed(hosts, pillar, timeout)
        failed = [host for host in done if not (now.get(host) or {}).get("on_release")]
        if failed and (final or len(failed) >= int(max_fail)):
            why = "; ".join(f"{host}: {(now.get(host) or {}).get('why') or 'no answer'}"
                            for host in failed)
            left = (f"; not touched, still on their release: {', '.join(untouched)}"
                    if untouched else "")
            raise CommandExecutionError(
                f"{service}: {len(failed)} of {len(done)} upgraded hosts failed "
                f"(max_fail {max_fail}{'' if not final else ', last wave'}): {why}{left}")
        down = [host for host in hosts if host not in wave and not (now.get(host) or {}).get(
            "healthy")]
        if final or len(down) + len(wave) <= int(max_unavailable):
            return {"service": service, "failed": failed, "down": down, "next": wave}
        if time.monotonic() >= deadline:
            raise CommandExecutionError(
                f"{service}: {len(down)} hosts down now ({', '.join(down)}) and {len(wave)} in "
                f"the next wave ({', '.join(wave)}) would exceed max_unavailable "
                f"{max_unavailable} (waited {wait}s); not touched: {', '.join(untouched)}")
        log.warning("rollout.gate: %s: waiting for %s to answer health", service, down)
        time.sleep(POLL_SECONDS)


def publish(hosts, jid, run=None, pillar=None, sls="release.upgrade", timeout=1800):
    """
    Publish ``state.sls <sls>`` to ``hosts``, as job ``jid``. With ``run``, each job waits
    on its host for its turn in that run (pillar ``rollout_turn``, the SLS's first state
    ``turn.taken``) before it touches anything: orch.upgrade's wave step (``rollout.turn``)
    publishes the next wave's job so while its own wave runs, and gives the turn when that
    wave may start. Without ``run`` the job starts at once. Raises ``CommandExecutionError``
    naming the hosts the publish did not reach.

    hosts
        Minion ids (a list).

    jid
        The job id to publish under (orch.upgrade makes one per wave when it renders, so
        that the wave steps can name it).

    run
        The run's token (the rollout lock's owner): the jobs wait for their turn in it.

    pillar
        The pillar the jobs run with (inventory, release, rollout_run, rollout_soak).

    timeout
        Seconds a host waits for its turn before its job gives up, touching nothing.

    CLI Example:

    .. code-block:: bash

        salt-run rollout.publish hosts='[ecsc-2]' jid=20261130080000000000 run=manual-1
    """
    hosts = _hosts(hosts)
    pillar = dict(pillar or {})
    if run:
        pillar["rollout_turn"] = {"run": str(run), "timeout": int(timeout)}
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        pub = client.run_job(hosts, "state.sls", arg=[sls], tgt_type="list", jid=str(jid),
                             kwarg={"pillar": pillar, "queue": False})
    except SaltClientError as exc:
        raise CommandExecutionError(f"cannot publish {sls} to {', '.join(hosts)}: {exc}; "
                                    "no host was touched") from exc
    finally:
        client.destroy()
    missing = [host for host in hosts if host not in (pub or {}).get("minions", [])]
    if missing:
        raise CommandExecutionError(
            f"{', '.join(missing)}: the {sls} job {jid} did not reach "
            f"{'it' if len(missing) == 1 else 'them'} (no accepted minion?); no host was touched")
    return {"jid": pub["jid"], "hosts": hosts}


def close(jobs, run, timeout=10):
    """
    End the wait of the hosts of ``jobs`` (published by :func:`publish` to wait for their
    turn in ``run``) that have not returned: they get the verdict ``abort`` (a host that
    already has its ``go`` keeps it), so their jobs end touching nothing. A job that was
    never published is skipped. Run when a run stops before some hosts' waves (a failed
    host, max_fail, failhard), and when a killed run's lock is taken over.

    jobs
        ``[{"jid": ..., "hosts": [...]}, ...]``

    CLI Example:

    .. code-block:: bash

        salt-run rollout.close '[{"jid": "20261130080000000000", "hosts": ["ecsc-2"]}]' run=manual-1
    """
    client = salt.client.get_local_client(__opts__["conf_file"])
    try:
        waiting = []
        for job in jobs or []:
            jid, hosts = str(job["jid"]), _hosts(job["hosts"])
            load = client.returns_for_job(jid)
            if not load:
                continue  # never published
            returned = client.get_cache_returns(jid) or {}
            waiting += [host for host in hosts
                        if host in (load.get("minions") or hosts) and host not in returned]
        if not waiting:
            return {"aborted": {}}
        given = client.cmd(waiting, "turn.give", arg=[str(run), "abort"], tgt_type="list",
                           timeout=timeout) or {}
    finally:
        client.destroy()
    return {"aborted": {host: given.get(host) for host in waiting}}
