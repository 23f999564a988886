"""bench/upgrade_bench.py's reading of `salt-run --out=json state.orchestrate` output (the
shape Salt 3008 gives: data -> <master>_master -> salt.state step -> changes.ret -> minion ->
state) and its summary against the goals."""

import importlib.util
import json

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
