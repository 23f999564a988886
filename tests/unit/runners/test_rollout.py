"""Unit tests of the master-side pre-flight runner (_runners/rollout.py): a minion that does
not answer stops the run before any host is touched, named, with the command for the rest;
state jobs left by an interrupted run are waited for; only stale minions are synced, and
reloaded only when the sync changed something; the render's survey tells hosts with nothing
to do from the others."""

import json
import shlex
from unittest.mock import patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO_ROOT, load_repo_module

rollout = load_repo_module("runners", "rollout")
HOSTS = ["ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2"]
CODE = {"modules/release.py": "a" * 64}


@pytest.fixture
def configure_loader_modules(tmp_path):
    return {rollout: {"__opts__": {"conf_file": str(tmp_path / "master")}}}


class Jobs:
    """A fake LocalClient: answers per function name, and the jobs it was given."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    def __call__(self, hosts, fun, timeout, arg=()):
        self.calls.append((list(hosts), fun, list(arg)))
        answer = self.answers[fun if isinstance(fun, str) else "+".join(fun)]
        answer = next(answer) if hasattr(answer, "__next__") else answer
        got = {h: (answer(h) if callable(answer) else answer) for h in hosts}
        return {h: v for h, v in got.items() if v is not None}


def test_every_minion_answers_in_one_job():
    jobs = Jobs(**{"saltutil.running": []})
    with patch.object(rollout, "_cmd", jobs):
        assert rollout.answering(HOSTS, timeout=4) == {"answered": HOSTS, "waited_for": {}}
    assert jobs.calls == [(HOSTS, "saltutil.running", [])]


def test_hosts_the_survey_saw_idle_are_not_asked_again():
    jobs = Jobs(**{"saltutil.running": []})
    with patch.object(rollout, "_cmd", jobs):
        assert rollout.answering(HOSTS, checked=HOSTS)["answered"] == HOSTS
        rollout.answering(HOSTS, checked=HOSTS[1:])
    assert jobs.calls == [(["ecsc-1"], "saltutil.running", [])]


def test_a_state_job_left_by_an_interrupted_run_is_waited_for():
    job = {"fun": "state.sls", "jid": "20261129", "pid": 42}
    running = iter([[job, {"fun": "test.ping", "jid": "1"}], [job], []])
    jobs = Jobs(**{"saltutil.running": lambda h: next(running) if h == "ecsc-1" else []})
    with patch.object(rollout, "_cmd", jobs), patch.object(rollout, "POLL_SECONDS", 0):
        ret = rollout.answering(HOSTS)
    assert ret["waited_for"] == {"ecsc-1": ["state.sls jid 20261129"]}


def test_a_state_job_that_does_not_end_stops_the_run():
    job = {"fun": "state.sls", "jid": "20261129"}
    jobs = Jobs(**{"saltutil.running": lambda h: [job] if h == "ecmc-2" else []})
    with patch.object(rollout, "_cmd", jobs):
        with pytest.raises(CommandExecutionError,
                           match="still running after 0s: ecmc-2: state.sls jid 20261129"):
            rollout.answering(HOSTS, wait=0)


def test_a_silent_minion_is_named_with_the_command_for_the_others():
    jobs = Jobs(**{"saltutil.running": lambda h: None if h == "ecmc-1" else []})
    with patch.object(rollout, "_cmd", jobs):
        with pytest.raises(CommandExecutionError) as err:
            rollout.answering(HOSTS, command="orch.rollback", timeout=4)
    message = str(err.value)
    assert message.startswith("ecmc-1: the minion did not answer within 4s")
    assert "no host was touched" in message
    command = message.split("without it: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:3] == ["salt-run", "state.orchestrate", "orch.rollback"]
    assert json.loads(argv[3].split("=", 1)[1]) == {"hosts": ["ecsc-1", "ecsc-2", "ecmc-2"]}


def test_a_minion_salt_reports_as_not_returned_is_silent_too():
    """LocalClient.cmd fills a minion that did not return with a string (seen on the lab with
    a stopped minion): it is silent, not an answer with no jobs."""
    jobs = Jobs(**{"saltutil.running": lambda h: "Minion did not return. [No response]"
                   if h == "ecmc-1" else []})
    with patch.object(rollout, "_cmd", jobs):
        with pytest.raises(CommandExecutionError, match="ecmc-1: the minion did not answer"):
            rollout.answering(HOSTS, sync=True)
    assert [fun for _, fun, _ in jobs.calls] == ["saltutil.running"]  # no sync was tried


def test_no_minion_answers():
    with patch.object(rollout, "_cmd", Jobs(**{"saltutil.running": lambda h: None})):
        with pytest.raises(CommandExecutionError, match="no targeted minion answers"):
            rollout.answering(HOSTS[:2])


def test_hosts_required():
    with pytest.raises(SaltInvocationError):
        rollout.answering([])


SYNC = "saltutil.sync_utils+saltutil.sync_modules+saltutil.sync_states"


def test_only_the_hosts_asked_are_synced_and_only_changed_ones_reloaded():
    synced = {"ecsc-1": {"saltutil.sync_utils": [], "saltutil.sync_modules": ["modules.release"],
                         "saltutil.sync_states": []},
              "ecsc-2": {"saltutil.sync_utils": [], "saltutil.sync_modules": [],
                         "saltutil.sync_states": []}}
    jobs = Jobs(**{"saltutil.running": [], SYNC: synced.get, "saltutil.refresh_modules": True})
    with patch.object(rollout, "_cmd", jobs):
        ret = rollout.answering(HOSTS, sync=["ecsc-1", "ecsc-2"], checked=HOSTS)
    assert ret["synced"] == {"ecsc-1": ["modules.release"]}
    (sync_hosts, funs, args), (reload_hosts, reload, reload_args) = jobs.calls
    assert sync_hosts == ["ecsc-1", "ecsc-2"]
    assert funs == ["saltutil.sync_utils", "saltutil.sync_modules", "saltutil.sync_states"]
    assert all(a == [{"refresh": False, "__kwarg__": True}] for a in args)  # no reload each
    assert (reload_hosts, reload) == (["ecsc-1"], "saltutil.refresh_modules")
    assert reload_args == [{"async": False, "__kwarg__": True}]  # waits for the reload
    # Nothing changed: no reload job at all.
    jobs.calls.clear()
    with patch.object(rollout, "_cmd", jobs):
        assert rollout.answering(HOSTS, sync=["ecsc-2"], checked=HOSTS)["synced"] == {}
    assert [fun for _, fun, _ in jobs.calls] == [funs]


def test_a_failed_sync_stops_the_run():
    jobs = Jobs(**{SYNC: lambda h: {"saltutil.sync_utils": "Traceback: boom",
                                     "saltutil.sync_modules": [], "saltutil.sync_states": []}})
    with patch.object(rollout, "_cmd", jobs):
        with pytest.raises(CommandExecutionError, match="ecsc-1: saltutil.sync_utils failed"):
            rollout.answering(["ecsc-1"], sync=True, checked=["ecsc-1"])


def _current(on_release=True, code=None, why=None, preflight=None):
    ret = {"id": "x", "release": "20170220", "on_release": on_release, "why": why,
           "code": CODE if code is None else code}
    if preflight is not None:
        ret["preflight"] = {"result": preflight, "comment": f"preflight {preflight}"}
    return ret


def test_survey_tells_hosts_with_nothing_to_do_from_the_others():
    answers = {
        "ecsc-1": {"saltutil.running": [], "inventory.current": _current()},
        "ecsc-2": {"saltutil.running": [{"fun": "state.sls", "jid": "7"}],
                   "inventory.current": _current()},
        "ecmc-1": {"saltutil.running": [],
                   "inventory.current": _current(False, why="/home/ecmc is on 20161201",
                                                 preflight=True)},
        # old modules: not judged (its pre-flight neither), synced
        "ecmc-2": {"saltutil.running": [],
                   "inventory.current": _current(False, code={}, preflight=True)},
        # a refused pre-flight, and one passed while a state job runs: both get the job
        "schedule-res-1": {"saltutil.running": [],
                           "inventory.current": _current(False, preflight=False)},
        "schedule-res-2": {"saltutil.running": [{"fun": "state.sls", "jid": "8"}],
                           "inventory.current": _current(False, preflight=True)},
        "schedule-1": {"saltutil.running": [],
                       "inventory.current": "'inventory.current' is not available."},
    }
    jobs = Jobs(**{"saltutil.running+inventory.current": answers.get})
    with patch.object(rollout, "_cmd", jobs), \
            patch.object(rollout, "master_code", return_value=CODE):
        ret = rollout.survey(list(answers) + ["schedule-2"], pillar={"release": {"id": "r"}})
    assert ret["current"] == ["ecsc-1"]
    assert ret["busy"] == {"ecsc-2": ["state.sls jid 7"], "schedule-res-2": ["state.sls jid 8"]}
    # A silent host is only silent (the orchestration syncs stale and silent hosts).
    assert ret["stale"] == ["ecmc-2", "schedule-1"]
    assert ret["silent"] == ["schedule-2"]
    assert ret["why"]["ecmc-1"] == "/home/ecmc is on 20161201"
    # Only ecmc-1's pre-flight counts: idle, the master's modules, passed.
    assert ret["preflight"] == {"ecmc-1": "preflight True"}
    # One job, the orchestration's pillar passed to the minions, the pre-flight asked for.
    assert jobs.calls == [(list(answers) + ["schedule-2"], ["saltutil.running", "inventory.current"],
                           [[], [{"__kwarg__": True, "pillar": {"release": {"id": "r"}},
                                  "preflight": True}]])]


def test_master_code_hashes_the_shipped_modules_of_the_file_server(tmp_path):
    import hashlib

    import salt.config

    master = salt.config.master_config(None)
    master.update(file_roots={"base": [str(REPO_ROOT / "salt")]}, cachedir=str(tmp_path / "cache"),
                  file_ignore_regex=[r"(^|/)\.(venv|git|lab|pytest_cache)/", r"__pycache__"])
    with patch.dict(rollout.__opts__, master):
        code = rollout.master_code()
    want = {f"{kind}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for kind in ("modules", "states", "utils")
            for p in (REPO_ROOT / f"_{kind}").glob("*.py")}
    assert code == want


# ------------------------------------------------------------ orch.upgrade's render


def _render_upgrade(survey, pillar_extra=None, test=False):
    """Render salt/orch/upgrade.sls (#!py) with the repo's pillar, every host a known minion,
    and ``survey`` as rollout.survey's answer (``test``: a dry run's render)."""
    import types

    import yaml

    inventory = load_repo_module("modules", "inventory")
    pillar = {}
    for name in ("inventory", "release"):
        pillar.update(yaml.safe_load((REPO_ROOT / "pillar" / f"{name}.sls").read_text()))
    pillar["release"]["sha256"] = {svc: "ab" * 32 for svc in pillar["inventory"]["services"]}
    pillar.update(pillar_extra or {})
    from tests.conftest import repo_utils

    opts = {"id": "master", "test": test}
    module = types.ModuleType("orch_upgrade")
    text = (REPO_ROOT / "salt" / "orch" / "upgrade.sls").read_text().split("\n", 1)[1]
    exec(compile(text, "upgrade.sls", "exec"), module.__dict__)  # pylint: disable=exec-used
    hosts = [h for conf in pillar["inventory"]["services"].values() for h in conf["hosts"]]
    with patch.dict(inventory.__dict__, {"__pillar__": pillar, "__opts__": opts,
                                         "__utils__": repo_utils(opts)}):
        module.__dict__.update(__pillar__=pillar, __opts__=opts,
                               __salt__={"inventory.plan": inventory.plan})
        module._known_minions = lambda: set(hosts)
        module._survey = lambda h, p: survey
        return module.run(), hosts


def _check_requisites(states):
    """Every requisite names a step of the render by the state module that step runs."""
    for sid, step in states.items():
        (fun, args), = step.items()
        for item in args:
            for key in ("require", "onfail"):
                for req in item.get(key, []):
                    (mod, other), = req.items()
                    assert other in states, (sid, req)
                    assert next(iter(states[other])).split(".")[0] == mod, (sid, req)


def _survey_of(current=(), stale=(), busy=None, silent=(), preflight=()):
    return {"current": list(current), "stale": list(stale), "busy": busy or {},
            "silent": list(silent), "preflight": {h: f"{h}: ok" for h in preflight}, "why": {}}


def test_render_gives_hosts_already_on_the_release_no_job_and_syncs_only_stale_ones():
    current = ["ecsc-1", "ecsc-2", "schedule-1"]
    states, hosts = _render_upgrade(_survey_of(current=current, stale=["ecmc-1"],
                                               silent=["ecmc-2"]), {"publish_ahead": True})
    for host in hosts:
        (fun, args), = states[f"upgrade-{host}"].items()
        if host in current:
            assert fun == "test.configurable_test_state", host  # no job on the minion
            assert {"changes": False} in args and {"result": True} in args
        else:
            assert fun == "rollout.turn" and {"sls": "release.upgrade"} in args, host
    # Only the hosts with work have a job: ecmc-1's step publishes ecmc-2's ahead.
    assert _args(states["upgrade-ecmc-1"])[1]["then"] == {
        "jid": _args(states["upgrade-ecmc-2"])[1]["jid"], "tgt": ["ecmc-2"]}
    assert "then" not in _args(states["upgrade-schedule-2"])[1]
    # No sync_all step: the answering runner syncs the stale hosts with work, only them.
    assert not any("saltutil.sync_all" in str(step) for step in states.values())
    answer = dict(kv for item in states["minions-answer"]["rollout.runner"] for kv in item.items())
    work = [h for h in hosts if h not in current]
    # The stale host and the silent one (synced once it answers).
    assert answer["hosts"] == work and answer["sync"] == ["ecmc-1", "ecmc-2"]
    assert answer["checked"] == [h for h in work if h != "ecmc-2"]  # the silent one is asked
    preflight = dict(kv for item in states["preflight"]["salt.state"] for kv in item.items())
    assert preflight["tgt"] == work
    # ecsc-2 (nothing to do) follows ecsc-1 (nothing to do): requisites name the test state.
    ecsc2 = dict(kv for item in states["upgrade-ecsc-2"]["test.configurable_test_state"]
                 for kv in item.items())
    assert {"test": "upgrade-ecsc-1"} in ecsc2["require"] and ecsc2["parallel"] is True
    schedule2 = dict(kv for item in states["upgrade-schedule-2"]["rollout.turn"]
                     for kv in item.items())
    assert {"test": "upgrade-schedule-1"} in schedule2["require"]


def test_render_runs_a_preflight_job_only_on_hosts_the_survey_did_not_preflight():
    """The survey's pre-flight (inventory.current preflight=True) counts for the hosts it
    passed on; the others (here ecmc-2: stale, silent or refused) get the job, after the
    lock and the answering step; with all passed, no pre-flight job at all."""
    work = ["ecmc-1", "ecmc-2", "schedule-1", "schedule-2", "schedule-res-1", "schedule-res-2"]
    current = ["ecsc-1", "ecsc-2"]
    states, _ = _render_upgrade(_survey_of(current=current, stale=["ecmc-2"],
                                           preflight=[h for h in work if h != "ecmc-2"]))
    fun, preflight = _args(states["preflight"])
    assert fun == "salt.state" and preflight["sls"] == "release.preflight"
    assert preflight["tgt"] == ["ecmc-2"] and preflight["require"] == [{"rollout": "minions-answer"}]
    fun, ecmc1 = _args(states["upgrade-ecmc-1"])
    assert fun == "rollout.turn" and {"salt": "preflight"} in ecmc1["require"]

    states, _ = _render_upgrade(_survey_of(current=current, preflight=work))
    _check_requisites(states)
    fun, preflight = _args(states["preflight"])
    assert fun == "test.configurable_test_state"
    # Every host with work answered idle with the master's modules: no answering step either.
    assert "minions-answer" not in states
    assert preflight["result"] is True and preflight["require"] == [{"rollout": "rollout-lock"}]
    assert "ecmc-1, ecmc-2, schedule-1" in preflight["comment"]
    assert not any(step.get("salt.state") and _args(step)[1]["sls"] == "release.preflight"
                   for step in states.values())
    fun, ecmc1 = _args(states["upgrade-ecmc-1"])
    assert fun == "rollout.turn" and {"test": "preflight"} in ecmc1["require"]
    # The lock still guards the real work: taken first, given back after success or failure.
    assert {"test": "preflight"} in _args(states["rollout-unlock"])[1]["require"]
    assert {"test": "preflight"} in _args(states["rollout-unlock-after-failure"])[1]["onfail"]


def test_render_asks_the_minions_again_only_when_the_survey_could_not_tell():
    """The answering step only for a host the survey did not see answer idle, or modules to
    sync; hosts it saw idle with the master's modules are not asked again."""
    for survey, sync, checked in (
            (_survey_of(silent=["ecmc-2"]), ["ecmc-2"], "ecmc-2"),
            (_survey_of(busy={"ecmc-2": ["state.sls jid 7"]}), [], "ecmc-2"),
            (_survey_of(stale=["ecmc-2"]), ["ecmc-2"], None)):
        states, hosts = _render_upgrade(survey)
        _check_requisites(states)
        fun, answer = _args(states["minions-answer"])
        assert answer["name"] == "rollout.answering" and answer["sync"] == sync
        assert answer["hosts"] == hosts and answer["require"] == [{"rollout": "rollout-lock"}]
        assert answer["checked"] == [h for h in hosts if h != checked]
        assert _args(states["preflight"])[1]["require"] == [{"rollout": "minions-answer"}]
    states, hosts = _render_upgrade(_survey_of())
    assert "minions-answer" not in states
    assert _args(states["preflight"])[1]["require"] == [{"rollout": "rollout-lock"}]


def test_render_of_a_fleet_already_on_the_release_runs_no_minion_job():
    states, hosts = _render_upgrade(_survey_of(current=[
        "ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2", "schedule-1", "schedule-2", "schedule-res-1",
        "schedule-res-2"]))
    _check_requisites(states)
    assert "minions-answer" not in states
    assert not any(fun in ("salt.state", "salt.function")
                   for step in states.values() for fun in step)
    # Nothing to guard: no lock taken or given back; the report (and its summary) still.
    assert not any(sid.startswith(("rollout-lock", "rollout-unlock")) for sid in states)
    fun, report = _args(states["rollout-report"])
    assert fun == "rollout.runner" and report["name"] == "rolloutreport.write"
    assert report["unchanged"] == hosts
    assert {"test": "upgrade-ecsc-1"} in report["require"]
    assert [sid for sid, step in states.items() if "rollout.runner" in step] == ["rollout-report"]
    # Nothing runs in the background: no step is forked off the state loop.
    assert not any({"parallel": True} in args for step in states.values()
                   for args in step.values())


def test_render_keeps_every_step_after_the_hosts_parallel_in_a_parallel_run():
    """A step that is not parallel and requires the host steps would hold Salt's state loop
    until every running host 1 ended: each pair's host 2 would wait for the slowest host 1."""
    states, hosts = _render_upgrade(_survey_of())
    for sid, step in states.items():
        (fun, args), = step.items()
        if sid.startswith("upgrade-") or sid.startswith("rollout-") and sid != "rollout-lock":
            assert {"parallel": True} in args, sid
    _check_requisites(states)
    # The master's own steps run in this state run (rollout.runner), none through salt.runner.
    assert not any("salt.runner" in step for step in states.values())
    assert {sid for sid, step in states.items() if "rollout.runner" in step} == {
        "rollout-lock", "rollout-report",
        "rollout-report-after-failure", "rollout-unlock", "rollout-unlock-after-failure"}
    states, _ = _render_upgrade(_survey_of(), {"parallel": False})
    _check_requisites(states)
    assert not any({"parallel": True} in args for step in states.values()
                   for args in step.values())


def _args(step):
    (fun, args), = step.items()
    return fun, dict(kv for item in args for kv in item.items())


def test_render_of_a_batched_service_gives_one_job_per_wave_and_gates_between():
    """ecsc with a third host, batch 2, max_fail 2 and a canary soaking 30 s: the canary alone
    (with the soak in its pillar), then both others in one job, a gate after each wave, the
    last one final; the other services keep their pairs and no gate."""
    import yaml

    inventory = yaml.safe_load((REPO_ROOT / "pillar" / "inventory.sls").read_text())["inventory"]
    ecsc = inventory["services"]["ecsc"]
    ecsc["hosts"]["ecsc-3"] = {"address": "25.0.3.99"}
    ecsc.update({"batch": 2, "max_fail": 2, "canary": 1, "soak": 30})
    inventory["order"].append("ecsc-3")
    states, _ = _render_upgrade(_survey_of(), {"inventory": inventory, "publish_ahead": True})
    _check_requisites(states)
    fun, canary = _args(states["upgrade-ecsc-1"])
    assert fun == "rollout.turn" and canary["tgt"] == "ecsc-1" and canary["allow_fail"] == 1
    # One pillar for every job (each published ahead by the wave before): the soak is the
    # canary's only; the canary's step publishes the batch's job.
    assert canary["pillar"]["rollout_soak"] == {"ecsc-1": 30}
    assert canary["timeout"] >= 1200 + 30
    fun, gate = _args(states["gate-ecsc-1"])
    assert fun == "rollout.runner" and gate["name"] == "rollout.gate"
    assert (gate["done"], gate["wave"], gate["final"]) == (["ecsc-1"], ["ecsc-2", "ecsc-3"], False)
    assert gate["max_unavailable"] == 2
    fun, batch = _args(states["upgrade-ecsc-wave-2"])
    assert batch["tgt"] == ["ecsc-2", "ecsc-3"] and canary["then"] == {
        "jid": batch["jid"], "tgt": ["ecsc-2", "ecsc-3"]}
    assert {"rollout": "gate-ecsc-1"} in batch["require"]
    fun, last = _args(states["gate-ecsc-2"])
    assert last["final"] is True and last["done"] == ["ecsc-1", "ecsc-2", "ecsc-3"]
    assert not any(sid.startswith("gate-ecmc") for sid in states)
    fun, ecmc2 = _args(states["upgrade-ecmc-2"])
    assert {"rollout": "upgrade-ecmc-1"} in ecmc2["require"] and "allow_fail" not in ecmc2
    # A dry run publishes nothing ahead: plain salt.state steps, the soak in the canary's
    # pillar (read by its host id).
    states, _ = _render_upgrade(_survey_of(), {"inventory": inventory}, test=True)
    _check_requisites(states)
    assert "rollout-close" not in states
    fun, canary = _args(states["upgrade-ecsc-1"])
    assert fun == "salt.state" and canary["pillar"]["rollout_soak"] == {"ecsc-1": 30}


def test_render_by_default_has_each_wave_publish_its_own_job_and_nothing_wait():
    """Without publish_ahead no job waits for a turn: each wave's step publishes its own
    job (its own jid, no ``then``), the lock records no job and there is nothing to close."""
    states, hosts = _render_upgrade(_survey_of())
    _check_requisites(states)
    steps = {host: _args(states[f"upgrade-{host}"]) for host in hosts}
    assert {fun for fun, _ in steps.values()} == {"rollout.turn"}
    assert len({step["jid"] for _, step in steps.values()}) == 8
    assert not any("then" in step for _, step in steps.values())
    assert _args(states["rollout-lock"])[1]["jobs"] == []
    assert "rollout-close" not in states
    with pytest.raises(SaltInvocationError, match="pillar publish_ahead: expected true or false"):
        _render_upgrade(_survey_of(), {"publish_ahead": "yes"})


def test_render_publishes_each_wave_ahead_and_closes_the_waits_of_a_failed_run():
    """Each wave's upgrade is a job of its own (a jid made at render): the first wave's step
    publishes its own, every step publishes the next wave's ahead (then: the same service's
    in parallel, the next in the run one at a time), the lock records the jobs published ahead, and a
    failed run ends the waits of the hosts it never reached (rollout-close, onfail)."""
    states, hosts = _render_upgrade(_survey_of(), {"publish_ahead": True})
    _check_requisites(states)
    _, lock = _args(states["rollout-lock"])
    steps = {host: _args(states[f"upgrade-{host}"])[1] for host in hosts}
    assert len({step["jid"] for step in steps.values()}) == 8
    for host, step in steps.items():
        assert step["run"] == lock["owner"] and step["pillar"]["rollout_run"] == lock["owner"]
        assert "inventory" in step["pillar"] and step["timeout"] >= 1200
    assert [step.get("then") for host, step in steps.items()] == [
        {"jid": steps[host.replace("-1", "-2")]["jid"], "tgt": [host.replace("-1", "-2")]}
        if host.endswith("-1") else None for host in hosts]
    # Only the jobs published ahead wait for a turn: a first wave's job is never aborted (its
    # hosts may be the ones that stopped answering; an abort to them would wait it out).
    assert lock["jobs"] == [{"jid": steps[h]["jid"], "hosts": [h]} for h in hosts
                            if h.endswith("-2")]
    fun, close = _args(states["rollout-close"])
    assert close["name"] == "rollout.close" and close["jobs"] == lock["jobs"]
    assert {"rollout": "upgrade-ecsc-2"} in close["onfail"] and close["run"] == lock["owner"]
    # One at a time: each step publishes the next step's job, whatever its service.
    states, _ = _render_upgrade(_survey_of(), {"parallel": False, "publish_ahead": True})
    _check_requisites(states)
    order = [sid for sid in states if sid.startswith("upgrade-")]
    for sid, nxt in zip(order, order[1:]):
        assert _args(states[sid])[1]["then"]["jid"] == _args(states[nxt])[1]["jid"], sid
    assert "then" not in _args(states[order[-1]])[1]


# ---------------------------------------------------------------- rollout.gate (waves)


def _answers(on_release=(), healthy=()):
    def fake_cmd(hosts, fun, timeout, arg=()):
        # Between waves: the deployed record and health only, no tree hashing.
        assert fun == "inventory.current" and list(arg) == [{"__kwarg__": True, "quick": True}]
        return {h: {"on_release": h in on_release, "healthy": h in healthy,
                    "why": None if h in on_release else f"{h} is on 20161201"} for h in hosts}
    return fake_cmd


def test_gate_passes_within_max_fail_and_stops_the_service_at_it(monkeypatch):
    from tests.conftest import load_repo_module

    rollout = load_repo_module("runners", "rollout")
    hosts = ["ecsc-1", "ecsc-2", "ecsc-3", "ecsc-4"]
    monkeypatch.setattr(rollout, "_cmd", _answers(on_release=["ecsc-1"], healthy=hosts))
    ret = rollout.gate("ecsc", ["ecsc-1", "ecsc-2"], hosts, max_fail=2, max_unavailable=2,
                       wave=["ecsc-3", "ecsc-4"])
    assert ret["failed"] == ["ecsc-2"]
    with pytest.raises(CommandExecutionError, match=r"ecsc: 1 of 2 upgraded hosts failed .*"
                       r"ecsc-2: ecsc-2 is on 20161201; not touched, still on their release: "
                       r"ecsc-3, ecsc-4"):
        rollout.gate("ecsc", ["ecsc-1", "ecsc-2"], hosts, max_fail=1, max_unavailable=2,
                     wave=["ecsc-3", "ecsc-4"])
    with pytest.raises(CommandExecutionError, match="last wave"):
        rollout.gate("ecsc", hosts, hosts, max_fail=3, final=True)


def test_gate_waits_for_hosts_down_then_refuses_to_exceed_max_unavailable(monkeypatch):
    from tests.conftest import load_repo_module

    rollout = load_repo_module("runners", "rollout")
    hosts = ["ecsc-1", "ecsc-2", "ecsc-3"]
    monkeypatch.setattr(rollout, "POLL_SECONDS", 0.01)
    monkeypatch.setattr(rollout, "_cmd", _answers(on_release=["ecsc-1"],
                                                  healthy=["ecsc-1", "ecsc-3"]))
    with pytest.raises(CommandExecutionError, match=r"1 hosts down now \(ecsc-2\) and 1 in the "
                       r"next wave \(ecsc-3\) would exceed max_unavailable 1"):
        rollout.gate("ecsc", ["ecsc-1"], hosts, max_fail=2, max_unavailable=1,
                     wave=["ecsc-3"], wait=0.05)


@pytest.mark.parametrize("parallel", [True, False])
def test_render_of_rollback_names_every_requisite_by_the_module_of_its_step(parallel):
    """orch.rollback's master-side steps run through rollout.runner: a requisite that still
    said ``salt: rollout-lock`` named no step, and the whole rollback failed on the lab."""
    import types

    import yaml

    from tests.conftest import repo_utils

    inventory = load_repo_module("modules", "inventory")
    pillar = {}
    for name in ("inventory", "release"):
        pillar.update(yaml.safe_load((REPO_ROOT / "pillar" / f"{name}.sls").read_text()))
    pillar["parallel"] = parallel
    opts = {"id": "master"}
    module = types.ModuleType("orch_rollback")
    text = (REPO_ROOT / "salt" / "orch" / "rollback.sls").read_text().split("\n", 1)[1]
    exec(compile(text, "rollback.sls", "exec"), module.__dict__)  # pylint: disable=exec-used
    with patch.dict(inventory.__dict__, {"__pillar__": pillar, "__opts__": opts,
                                         "__utils__": repo_utils(opts)}):
        module.__dict__.update(__pillar__=pillar, __opts__=opts,
                               __salt__={"inventory.plan": inventory.plan})
        states = module.run()
    _check_requisites(states)
    assert {sid for sid, step in states.items() if "rollout.runner" in step} == {
        "rollout-lock", "minions-answer", "rollout-report", "rollout-report-after-failure",
        "rollout-unlock", "rollout-unlock-after-failure"}
    assert sum("salt.state" in step for step in states.values()) == 8


# ------------------------------------------------- rollout.publish / rollout.close (turns)


class _JobClient:
    def __init__(self, loads, returns, minions=None):
        self.loads, self.returns, self.minions = loads, returns, minions
        self.cmds, self.jobs = [], []

    def returns_for_job(self, jid):
        return self.loads.get(jid, {})

    def get_cache_returns(self, jid):
        return self.returns.get(jid, {})

    def cmd(self, tgt, fun, arg=(), tgt_type="glob", timeout=None):
        self.cmds.append((list(tgt), fun, list(arg)))
        return {host: "abort" for host in tgt}

    def run_job(self, tgt, fun, arg=(), tgt_type="glob", jid="", kwarg=None):
        self.jobs.append((list(tgt), fun, list(arg), jid, kwarg))
        return {"jid": jid, "minions": self.minions if self.minions is not None else list(tgt)}

    def destroy(self):
        pass


def test_close_aborts_only_the_published_hosts_that_have_not_returned(monkeypatch):
    rollout = load_repo_module("runners", "rollout")
    client = _JobClient(
        loads={"j1": {"minions": ["ecsc-1", "ecsc-2"]}, "j2": {"minions": ["ecmc-2"]}},
        returns={"j1": {"ecsc-1": {"ret": {}}}})
    monkeypatch.setattr(rollout.salt.client, "get_local_client", lambda *_: client)
    with patch.dict(rollout.__dict__, {"__opts__": {"conf_file": "x"}}):
        ret = rollout.close([{"jid": "j1", "hosts": ["ecsc-1", "ecsc-2"]},
                             {"jid": "j2", "hosts": ["ecmc-2"]},
                             {"jid": "j3", "hosts": ["ecmc-3"]}], "run1")  # j3: not published
    assert client.cmds == [(["ecsc-2", "ecmc-2"], "turn.give", ["run1", "abort"])]
    assert ret == {"aborted": {"ecsc-2": "abort", "ecmc-2": "abort"}}
    client = _JobClient(loads={}, returns={})
    monkeypatch.setattr(rollout.salt.client, "get_local_client", lambda *_: client)
    with patch.dict(rollout.__dict__, {"__opts__": {"conf_file": "x"}}):
        assert rollout.close([{"jid": "j1", "hosts": ["ecsc-2"]}], "run1") == {"aborted": {}}
    assert client.cmds == []


def test_publish_makes_the_job_wait_for_its_turn_and_names_hosts_it_missed(monkeypatch):
    rollout = load_repo_module("runners", "rollout")
    client = _JobClient({}, {})
    monkeypatch.setattr(rollout.salt.client, "get_local_client", lambda *_: client)
    with patch.dict(rollout.__dict__, {"__opts__": {"conf_file": "x"}}):
        rollout.publish(["ecsc-2"], "j1", run="run1", pillar={"rollout_run": "run1"},
                        timeout=1230)
        rollout.publish(["ecsc-1"], "j0", pillar={"rollout_run": "run1"})
    (tgt, fun, arg, jid, kwarg), (_, _, _, _, first) = client.jobs
    assert (tgt, fun, arg, jid) == (["ecsc-2"], "state.sls", ["release.upgrade"], "j1")
    assert kwarg == {"pillar": {"rollout_run": "run1",
                                "rollout_turn": {"run": "run1", "timeout": 1230}},
                     "queue": False}
    assert "rollout_turn" not in first["pillar"]  # no run: it starts at once
    client = _JobClient({}, {}, minions=["ecsc-2"])
    monkeypatch.setattr(rollout.salt.client, "get_local_client", lambda *_: client)
    with patch.dict(rollout.__dict__, {"__opts__": {"conf_file": "x"}}), \
            pytest.raises(CommandExecutionError, match=r"ecsc-3: the release.upgrade job j1 "
                          r"did not reach it .*no host was touched"):
        rollout.publish(["ecsc-2", "ecsc-3"], "j1", run="run1")
