#!py
"""The rolling upgrade, generated from the pillar inventory (run on the master):

    salt-run state.orchestrate orch.upgrade                          # all four services
    salt-run state.orchestrate orch.upgrade pillar='{"services": ["ecmc"]}'
    salt-run state.orchestrate orch.upgrade pillar='{"hosts": ["ecsc-1"]}'
    salt-run state.orchestrate orch.upgrade test=True                # the plan, nothing touched

Targeting and policy from pillar: services, hosts (lists), parallel (default true: pairs run
side by side; false keeps the runbook's order, one host at a time), failhard (stop the whole
run at the first failed host; without it the other pairs go on). A failed host is still rolled
back either way: failhard is built from requisites here, never passed to the minion, whose
own failhard would skip the host's armed rollback.

Steps: the inventory is validated while this file renders (a bad key fails the run before
anything is touched; rendering changes nothing: `state.show_sls` and test=True take no lock)
and every targeted host is asked once, read-only (runner rollout.survey): is it already on
the release (record intact, JVM up since the deploy, health 200, no state job running, its
modules the master's)? If not, its pre-flight (pillar entry checked on the host, archive
valid, disk room) runs in the same job. A host on the release gets no state job: its step
says so; a run in which every host is on the release takes no lock and runs no job, only
the report. Otherwise: rollout-lock (runner rolloutlock.acquire: one rollout at a time; a
lock left by a killed run is reported and taken over) -> minions-answer (runner
rollout.answering: every host with work answers, else the run stops before any host is
touched and says how to run the others; state jobs left by an interrupted run are waited
for; modules synced to the minions whose modules differ from the master's, only those) ->
pre-flight: a job (release.preflight) only on the hosts with work whose survey pre-flight
did not pass on the master's modules (stale, silent or busy then, or refused: its job then
fails the run with the detail, before any host is touched) -> per service, in waves (its
rollout policy; the runbook's pairs: host 1, then host 2 only if host 1 passed every gate),
one step per wave (rollout.turn): the step publishes its wave's release.upgrade job and
collects the returns as salt.state would (looking every 0.1 s, not blocking). A failed host
rolls itself back to its backup. With pillar publish_ahead: true, every step also publishes
the next wave's job (rollout.publish), which compiles and renders on its hosts while this
wave runs, then waits there, touching nothing, for its turn (pillar rollout_turn, state
turn.taken); the next wave's step gives the turn (turn.give: a job that writes one small
file) instead of publishing. A run that stops before some hosts' waves then ends their wait
(rollout-close: runner rollout.close, verdict abort; they touch nothing); so does the next
run that takes over the lock of a killed one. A dry run (test=True) publishes nothing: plain
salt.state steps. Then, after success or failure:
rollout-report (runner rolloutreport.write: the run report from this run's events, which
carry the lock's owner token as ``run``, pillar rollout_run) and rollout-unlock (runner
rolloutlock.release), which never waits for the report: a report that fails still gives the
lock back.
"""

import logging
import time
import uuid

# The py renderer binds the name `salt` to __salt__: import Salt's modules under other names.
import salt.loader as salt_loader
import salt.key as salt_key
import salt.utils.jid as salt_jid
from salt.exceptions import SaltInvocationError

log = logging.getLogger(__name__)


def _step(sls, tgt, passthrough, **extra):
    args = [
        {"tgt": tgt},
        {"tgt_type": "list" if isinstance(tgt, list) else "glob"},
        {"sls": sls},
        {"pillar": passthrough},
    ]
    return {"salt.state": args + [{k: v} for k, v in extra.items()]}


def _runner(fun, **kwargs):
    # rollout.runner (_states/rollout.py): the runner in this state run; salt.runner would
    # build a RunnerClient, a MasterMinion and every Salt runner module for each step.
    return {"rollout.runner": [{"name": fun}] + [{k: v} for k, v in kwargs.items()]}


def _known_minions():
    """Ids of the minions whose keys the master accepted (None when it cannot tell)."""
    try:
        # The master's key store directly (what the wheel's key.list reads): a WheelClient
        # would leave an unclosed MasterMinion behind (a warning, and a returner import
        # traceback when the process exits). __opts__ is the loader's proxy: pass a dict.
        with salt_key.get_key(dict(__opts__)) as keys:
            return set(keys.list_status("accepted").get("minions", []))
    except Exception as exc:  # pylint: disable=broad-except
        log.warning("orch.upgrade: cannot list accepted minion keys: %s", exc)
        return None  # the pre-flight, which every host must answer, still catches it


def _survey(hosts, passthrough):
    """What the targeted hosts run now (runner rollout.survey: one read-only job)."""
    runners = salt_loader.runner(dict(__opts__))
    return runners["rollout.survey"](hosts, pillar=passthrough)


def _nothing_to_do(comment, require, parallel=False):
    return {"test.configurable_test_state": [
        {"changes": False}, {"result": True}, {"comment": comment}, {"require": require},
    ] + ([{"parallel": True}] if parallel else [])}


def _req(states, sids):
    """Requisites on the steps ``sids`` (already in ``states``), each named by the state
    module it runs (test, rollout or salt), as Salt's requisites want."""
    return [{next(iter(states[sid])).split(".")[0]: sid} for sid in dict.fromkeys(sids)]


def run():
    pillar = __pillar__
    plan = __salt__["inventory.plan"](
        services=pillar.get("services"), hosts=pillar.get("hosts"), pillar=pillar
    )
    hosts = [host for pair in plan for host in pair["hosts"]]
    known = _known_minions()
    if known is not None:
        for pair in plan:
            for host in pair["hosts"]:
                if host not in known:
                    raise SaltInvocationError(
                        f"pillar inventory:services:{pair['service']}:hosts:{host}: "
                        f"no accepted minion with that id"
                    )
    # The minions get the same inventory and release the master planned with (including any
    # pillar given on the command line).
    passthrough = {key: pillar[key] for key in ("inventory", "release") if key in pillar}
    parallel = pillar.get("parallel", True) is not False
    failhard = bool(pillar.get("failhard", False))

    survey = _survey(hosts, passthrough)
    # Hosts already on the release get no job at all; only the others are synced (when their
    # modules differ from the master's, or they did not say), pre-flighted and upgraded.
    work = [host for host in hosts if host not in survey["current"]]
    idle = [host for host in work if host not in survey["silent"] + list(survey["busy"])]
    sync = [host for host in work if host in survey["stale"] + survey["silent"]]
    # The survey already ran the pre-flight (inventory.current preflight=True) on the hosts
    # with work that answered idle with the master's modules: only the others get a
    # pre-flight job. A host whose survey pre-flight failed is one of them: its job fails
    # the run with the states' own detail, before any host is touched.
    unchecked = [host for host in work if host not in survey["preflight"]]
    release = passthrough.get("release", {}).get("id")

    owner = uuid.uuid4().hex  # names this run's lock; rendering takes none
    # Each service goes in waves (its rollout policy, inventory.plan: the runbook's pairs are
    # one host per wave, host 1 then host 2).
    def wave_id(pair, index, wave):
        return f"upgrade-{wave[0]}" if len(wave) == 1 else f"upgrade-{pair['service']}-wave-{index + 1}"

    # The waves with work, in run order, each with the state job its hosts' upgrades run in
    # (a jid made here, so that the steps can name it). With publish_ahead, a wave's step
    # also publishes the next wave's job (the same service's in parallel, the next in the
    # run when one at a time) while it runs: that job renders meanwhile and waits on its
    # hosts for their turn. Off by default: on the lab, where every host shares the
    # master's two cores, it cost 2.6 s of wall and 7 s of CPU per run (A/B, README).
    # A dry run has plain salt.state steps (nothing published), so no jobs of its own.
    wave_jobs = bool(work) and not __opts__.get("test")
    publish_ahead = pillar.get("publish_ahead", False)
    if not isinstance(publish_ahead, bool):
        raise SaltInvocationError(
            f"pillar publish_ahead: expected true or false, got {publish_ahead!r}")
    waves = [(pair["service"], wave_id(pair, index, wave), [h for h in wave if h in work])
             for pair in plan for index, wave in enumerate(pair["waves"])]
    waves = [(service, sid, tgt) for service, sid, tgt in waves if tgt and wave_jobs]
    jobs = {sid: {"jid": salt_jid.gen_jid(__opts__), "tgt": tgt} for _, sid, tgt in waves}
    then = {}
    for index, (service, sid, _) in enumerate(waves if publish_ahead else []):
        later = [other for svc, other, _ in waves[index + 1:] if svc == service or not parallel]
        if later:
            then[sid] = jobs[later[0]]
    # What the lock records and rollout-close ends, should the run stop before a wave: the
    # jobs published ahead (a first wave's job never waits for a turn, and its hosts may be
    # the very ones that stopped answering).
    published = [{"jid": job["jid"], "hosts": job["tgt"]} for job in then.values()]
    started = time.time()
    # Every host step's progress event carries the token (its `run`): the report's filter.
    passthrough["rollout_run"] = owner
    states = {}
    if work:
        # The lock guards real work only: a run with nothing to do takes none (it changes
        # nothing, so it needs no lock, no answering step and no pre-flight).
        states["rollout-lock"] = _runner("rolloutlock.acquire", kind="upgrade", owner=owner,
                                         hosts=hosts, jobs=published)
        after_lock = [{"rollout": "rollout-lock"}]
        if sync or set(work) - set(idle):
            # Only when it has something to do: a host the survey did not see answer idle,
            # or modules to sync (every host it saw idle with the master's modules needs
            # neither, and the step would cost a runner round for nothing).
            states["minions-answer"] = _runner(
                "rollout.answering", hosts=work, command="orch.upgrade", sync=sync,
                checked=idle, require=after_lock,
            )
            after_lock = [{"rollout": "minions-answer"}]
        if unchecked:
            states["preflight"] = _step(
                "release.preflight", unchecked, passthrough,
                expect_minions=True, require=after_lock,
            )
        else:
            states["preflight"] = _nothing_to_do(
                f"pre-flight passed while the run planned (pillar entry, archive verified, "
                f"room for backup and staging): {', '.join(work)}", after_lock)
    else:
        states["preflight"] = _nothing_to_do(f"every targeted host is already on {release}", [])
        # Nothing runs in the background: every step in turn, none forked (a parallel step
        # is a process of its own, and the state loop polls for it).
        parallel = False
    # A canary wave soaks in rotation, watched (pillar rollout_soak: {host: seconds}).
    soaks = {host: pair["policy"]["soak"] for pair in plan
             if pair["policy"]["canary"] and pair["policy"]["soak"]
             for host in pair["waves"][0] if host in work}
    job_pillar = {**passthrough, **({"rollout_soak": soaks} if soaks else {})}
    # A job published ahead waits at most one wave (and a canary's soak) for its turn: the
    # jobs of a killed run give up, touching nothing.
    turn_timeout = 1200 + max([0] + list(soaks.values()))
    # Not parallel: steps run one at a time in the order written here, the runbook's order.
    # A wave runs only if the one before it passed.
    # failhard stops the whole run at the first failed host: one at a time, each wave requires
    # every wave before it; in parallel, no service goes on to its next wave unless every
    # service's first wave passed.
    first_waves = [wave_id(pair, 0, pair["waves"][0]) for pair in plan]
    done = []
    for pair in plan:
        policy = pair["policy"]
        # A policy beyond the runbook's pairs (batches, a canary, failures tolerated) is
        # enforced between waves by a gate (runner rollout.gate): failed hosts against
        # max_fail, hosts down now (health) against max_unavailable; the last gate fails the
        # run if any host failed. The runbook's pairs need none: a failed host fails its step.
        gated = (policy["max_fail"] > 1 or policy["canary"] > 0
                 or any(len(wave) > 1 for wave in pair["waves"]))
        service_work = [host for host in pair["hosts"] if host in work]
        before, upgraded = None, []
        for index, wave in enumerate(pair["waves"]):
            sid = wave_id(pair, index, wave)
            requires = ["preflight"] + ([before] if before else [])
            if failhard:
                requires += done if not parallel else (first_waves if before else [])
            wave_work = [host for host in wave if host in work]
            if wave_work:
                extra = {"expect_minions": True, "require": _req(states, requires)}
                if policy["max_fail"] > 1:
                    # Failed hosts within max_fail do not fail the step: the gate counts them.
                    extra["allow_fail"] = policy["max_fail"] - 1
                if parallel:
                    extra["parallel"] = True
                tgt = wave_work[0] if len(wave_work) == 1 else wave_work
                if wave_jobs:
                    # The step publishes its wave's job, unless the wave before published
                    # it ahead (then): this step then gives the turn.
                    states[sid] = {"rollout.turn": [
                        {"tgt": tgt}, {"jid": jobs[sid]["jid"]}, {"run": owner},
                        {"sls": "release.upgrade"}, {"pillar": job_pillar},
                        {"timeout": turn_timeout},
                    ] + ([{"then": then[sid]}] if sid in then else [])
                      + [{k: v} for k, v in extra.items()]}
                else:
                    states[sid] = _step("release.upgrade", tgt, job_pillar, **extra)
            else:
                states[sid] = _nothing_to_do(
                    f"{', '.join(wave)}: already on {release} (deployed record intact, its JVM "
                    "started after the deploy, health answers 200): not touched",
                    _req(states, requires), parallel=parallel)
            before = sid
            done.append(sid)
            upgraded = upgraded + wave  # a new list: each gate keeps its own
            last = index == len(pair["waves"]) - 1
            if gated and service_work and (wave_work or last):
                gid = f"gate-{pair['service']}-{index + 1}"
                states[gid] = _runner(
                    "rollout.gate", service=pair["service"], done=upgraded,
                    hosts=pair["hosts"], max_fail=policy["max_fail"],
                    max_unavailable=policy["max_unavailable"],
                    wave=[] if last else pair["waves"][index + 1], final=last,
                    pillar=passthrough, require=_req(states, [sid]),
                    **({"parallel": True} if parallel else {}))
                before = gid
                done.append(gid)
    # The run report, after every step passed or after a failure (never when this run did
    # not take the lock); the unlock below also follows a report that failed.
    steps = _req(states, [sid for sid in states if sid != "rollout-lock"])
    locked = "rollout-lock" in states
    report = {
        "kind": "upgrade", "owner": owner, "hosts": hosts, "release": release,
        "pairs": [{"service": pair["service"], "hosts": pair["hosts"]} for pair in plan],
        "unchanged": [host for host in hosts if host not in work], "started": started,
        "keep": (pillar.get("release") or {}).get("keep_reports", 20),
    }
    # Parallel in a parallel run: see the unlock steps below.
    last = {"parallel": True} if parallel else {}
    states["rollout-report"] = _runner("rolloutreport.write", **report, require=steps, **last)
    if not locked:
        return states  # nothing to do: no step can fail, and no lock to give back
    if published:
        # A run that stopped before some hosts' waves (a failed host, max_fail, failhard)
        # ends their wait: their jobs end touching nothing.
        states["rollout-close"] = _runner(
            "rollout.close", jobs=published, run=owner,
            require=[{"rollout": "rollout-lock"}], onfail=steps, **last)
    states["rollout-report-after-failure"] = _runner(
        "rolloutreport.write", **report, failed=True, require=[{"rollout": "rollout-lock"}],
        onfail=steps, **last
    )
    # Give the lock back whatever happened: after every step passed, or (onfail: any step
    # that ran and failed) after a failure, but never when this run did not take it.
    # In parallel these wait as parallel steps do: Salt's state loop blocks at a step that is
    # not parallel until every running step it requires has ended, and only then starts the
    # second hosts, so each pair's host 2 would wait for the slowest host 1 of all pairs.
    # Any later step that requires the host steps must be parallel for the same reason.
    steps = _req(states, [sid for sid in states if sid != "rollout-lock"])
    states["rollout-unlock"] = _runner("rolloutlock.release", owner=owner, require=steps, **last)
    states["rollout-unlock-after-failure"] = _runner(
        "rolloutlock.release", owner=owner, require=[{"rollout": "rollout-lock"}], onfail=steps,
        **last
    )
    return states
