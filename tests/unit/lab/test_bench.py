"""bench/upgrade_bench.py's reading of `salt-run --out=json state.orchestrate` output (the
shape Salt 3008 gives: data -> <master>_master -> salt.state step -> changes.ret -> minion ->
state) and its summary against the goals."""

import importlib.util
import json

import pytest

from tests.conftest import REPO_ROOT

SPEC = importlib.util.spec_from_file_location("upgrade_bench", REPO_ROOT / "bench" / "upgrade_bench.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def _state(start, ms, changes=None):
    return {"start_time": start, "duration": ms, "changes": changes or {}, "result": True}


ORCH = {"data": {"lab_master": {
    "salt_|-sync-modules_|-saltutil.sync_all_|-function": _state("10:00:00.500", 9000.0),
    "salt_|-upgrade-ecsc-1_|-upgrade-ecsc-1_|-state": _state("10:00:10.000", 12000.0, {"ret": {
        "ecsc-1": {
            "javaservice_|-stopped_|-ecsc_|-dead": _state(
                "10:00:12.000", 500.0, {"stopped": {"pids": [1], "seconds": 0.4}}),
            "javaservice_|-ready_|-ecsc_|-running": _state(
                "10:00:12.600", 9000.0, {"started": {"pids": [2], "seconds": 5.5}}),
        }}}),
    "salt_|-rollout-lock_|-rolloutlock.acquire_|-runner": _state("10:00:00.000", 300.0),
}}}


def test_steps_jvm_seconds_and_profile():
    steps = bench.orch_steps(json.dumps(ORCH))
    assert set(steps) == {"sync-modules", "upgrade-ecsc-1", "rollout-lock"}
    assert bench.jvm_seconds(steps) == {"ecsc-1": 5.9}
    prof = bench.profile(steps)["steps"]
    assert [r["step"] for r in prof] == ["rollout-lock", "sync-modules", "upgrade-ecsc-1"]
    host = prof[2]
    assert host["start_s"] == 10.0 and host["seconds"] == 12.0
    assert host["minions"]["ecsc-1"]["states_s"] == 9.5 and host["salt_overhead_s"] == 2.5
    assert "ready 9.00" in bench.format_profile({"steps": prof})


def test_jvm_seconds_counts_the_stop_from_the_signal_when_the_state_says():
    # The stop's ``seconds`` also holds the process scan before the signal (tool time): the
    # JVM's own part is signal_seconds, where the stop state gives it.
    steps = bench.orch_steps(json.dumps(ORCH))
    stop = steps["upgrade-ecsc-1"]["changes"]["ret"]["ecsc-1"]["javaservice_|-stopped_|-ecsc_|-dead"]
    stop["changes"]["stopped"]["signal_seconds"] = 0.25
    assert bench.jvm_seconds(steps) == {"ecsc-1": 5.75}


def test_summary_median_min_max_goal():
    figures = {key: [] for key in bench.GOALS}
    figures["upgrade_minus_floor_s"] = [4.0, 2.0, 2.5]
    figures["both_down"] = [0, 0, 1]
    result = bench.summarise(figures)
    assert set(result) == set(bench.GOALS)  # exactly the keys of .bench/latest.json
    assert result["upgrade_minus_floor_s"] == {"median": 2.5, "min": 2.0, "max": 4.0, "runs": 3,
                                               "goal": "<= 3", "met": True}
    assert result["both_down"]["median"] == 0 and result["both_down"]["met"] is True
    assert result["compliance_s"]["median"] is None and result["compliance_s"]["met"] is None


def test_the_floor_is_timed_under_the_same_prober_as_orch_upgrade(monkeypatch, tmp_path):
    # The prober's 20 polls per second per host cost the floor 2.9 s of its 14.4 s on the
    # lab: timed without it, the floor would be compared with an orch.upgrade timed under it.
    import contextlib

    active = []
    probed = {}

    class Prober:
        def __enter__(self):
            active.append(1)
            return self

        def __exit__(self, *exc):
            active.pop()

        def report(self):
            return {"both_down": 0, "hosts": {"ecsc-1": {"down_s": 6.0}}}

    def timed(*argv, **_):
        probed.setdefault(" ".join(argv[-2:]), []).append(len(active))
        out = json.dumps(ORCH) if "orch.upgrade" in argv else "{}"
        if "state.orchestrate_high" in argv:
            out = _minimal_output(True)
        return 1.0, type("Done", (), {"returncode": 0, "stdout": out, "stderr": ""})()

    monkeypatch.setattr(bench, "lab_lock", lambda what: contextlib.nullcontext())
    monkeypatch.setattr(bench, "quiet", lambda func: None)
    monkeypatch.setattr(bench, "timed", timed)
    monkeypatch.setattr(bench, "Prober", Prober)
    monkeypatch.setattr(bench.labctl, "memory", lambda: {"total": {"rss_mib": 1}})
    monkeypatch.setattr(bench.labctl, "load_hosts", lambda: HOSTS)
    figures = {key: [] for key in bench.GOALS}
    detail = {"runs": []}
    bench.fast_round(figures, detail, keep_json=False, last=False)
    assert figures["salt_state_round_s"] == [1.0] and figures["salt_ping_round_s"] == [1.0]
    assert probed["-m lab.floor"] == [1]
    # The v1->v2 run under the prober; the no-op run after it not.
    assert probed["state.orchestrate orch.upgrade"] == [1, 0]
    assert detail["runs"][0]["floor_downtime_by_prober"] == {"ecsc-1": 6.0}


HOSTS = [{"id": "ecsc-1", "service": "ecsc"}, {"id": "ecsc-2", "service": "ecsc"},
         {"id": "ecmc-1", "service": "ecmc"}, {"id": "ecmc-2", "service": "ecmc"}]


def _minimal_output(result):
    """What `salt-run --out=json state.orchestrate_high` prints (Salt 3008): an error line
    when no minion matched, a progress document, then the return."""
    ret = {"vm_master": {"salt_|-minimum_|-state.single_|-function": {
        "name": "state.single", "changes": {}, "result": result, "__id__": "minimum",
        "comment": "Function ran successfully." if result else "No minions responded"}}}
    progress = {"suffix": "progress", "event": {"data": ret, "outputter": "highstate"}}
    head = "" if result else "No minions matched the target. No command was sent.\n"
    return head + json.dumps(progress, indent=4) + "\n" + json.dumps(ret, indent=4) + "\n"


def test_salt_minimum_is_one_job_on_the_first_wave_and_must_have_run(monkeypatch):
    # orchestrate_high exits 0 even when its step failed or never ran: the bench checks the
    # step, else it would time salt-run alone and call that Salt's minimum.
    seen = []

    def timed(*argv, **_):
        seen.append(json.loads(argv[-1]))
        ok = "nosuch" not in argv[-1]
        return 2.0, type("Done", (), {"returncode": 0, "stdout": _minimal_output(ok),
                                      "stderr": ""})()

    monkeypatch.setattr(bench, "timed", timed)
    assert bench.salt_minimum(HOSTS) == (2.0, 2.0)
    state, ping = (entry["minimum"]["salt"] for entry in seen)
    assert state[0] == "function" and {"name": "state.single"} in state
    assert {"tgt": ["ecsc-1", "ecmc-1"]} in state and {"arg": ["test.nop", "minimum"]} in state
    assert {"name": "test.ping"} in ping and {"tgt": [h["id"] for h in HOSTS]} in ping
    assert bench.minimal_step_passed(_minimal_output(True))
    assert not bench.minimal_step_passed(_minimal_output(False))
    with pytest.raises(SystemExit, match="did not run its step"):
        bench.salt_minimum([{"id": "nosuch-1", "service": "x"}])


def test_a_goal_below_salt_s_own_minimum_is_named():
    figures = {key: [] for key in bench.GOALS}
    figures["upgrade_minus_floor_s"] = [9.0]
    figures["salt_state_round_s"] = [3.6, 3.2, 4.0]
    figures["compliance_s"] = [3.4]
    figures["salt_ping_round_s"] = [2.9]
    result = bench.summarise(figures)
    lines = bench.below_minimum(result)
    assert len(lines) == 1 and lines[0].startswith("upgrade_minus_floor_s: goal <= 3")
    assert "3.600" in lines[0]
    assert result["upgrade_minus_floor_s"]["salt_minimum"] == 3.6
    assert result["compliance_s"]["salt_minimum"] == 2.9  # 2.9 <= 3: reachable, not named
