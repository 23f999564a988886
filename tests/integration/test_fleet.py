"""Issue 11 on the lab, the small case that runs in `make test`: ecsc grown to three hosts
(a scale lab of nine), a canary with a short soak, then `batch: 2`, `max_fail: 1`; the lab
pillar's drain/undrain hooks (HTTP calls to the lab balancer's agent, in front of HAProxy's
runtime API), and steady traffic through the balancer during the whole `orch.upgrade`.

Shown on the real thing: the canary (ecsc-1) goes alone, drained before its stop, back in
rotation after its gates, then soaked there (serving) before the gate; the second wave (ecsc-2
+ ecsc-3) is one job and stops only after the canary answered again; every host ends on v2
with a new JVM; the prober never sees more ecsc hosts down at once than max_unavailable (2); no
request through the balancer failed; the lab goes back to its eight hosts."""

import argparse
import json

import pytest

from lab import balancer, faults, loadclient
from lab.prober import Prober
from tests.integration.conftest import run_cli

RELEASE_V2 = "20170220"
SOAK = 1  # seconds: the canary's soak in rotation (kept short: this runs in `make test`)


def _seconds(clock):
    """Seconds since midnight of a state's ``start_time`` (HH:MM:SS.ffffff, this machine's
    clock: the master and the minions run on it)."""
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.fixture
def nine(lab):
    """The lab with a ninth host, ecsc-3; back to the eight afterwards (its minion key, JVM,
    root and balancer backend go)."""
    lab.up(argparse.Namespace(hosts=9))
    try:
        yield {h["id"]: h for h in lab.load_hosts()}
    finally:
        lab.up(argparse.Namespace(hosts=None))


def test_a_canary_then_a_wave_of_two_under_load_lose_no_request(lab, nine):
    ecsc = [nine[h] for h in ("ecsc-1", "ecsc-2", "ecsc-3")]
    faults.reset_hosts(ecsc)
    before = {h["id"]: set(lab.service_pids(h)) for h in ecsc}
    # The hooks are the lab pillar's (lab/labctl.py write_pillar): none given here.
    # publish_ahead: the wave's job is published while the canary runs, and waits for its turn.
    pillar = {"services": ["ecsc"], "publish_ahead": True, "inventory": {"services": {"ecsc": {
        "canary": 1, "soak": SOAK, "batch": 2, "max_fail": 1}}}}
    load = loadclient.Load({"ecsc": balancer.url("ecsc")}, rate=40, seconds=300)
    with Prober(["ecsc"]) as probe:
        load.start()
        try:
            proc = run_cli("salt-run", "--out=json", "state.orchestrate", "orch.upgrade",
                           f"pillar={json.dumps(pillar)}")
        finally:
            traffic = load.stop().result()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    steps = {key.split("_|-")[1]: ret for key, ret in
             next(iter(json.loads(proc.stdout)["data"].values())).items()}
    # The canary alone, then one job for the second wave after the gate.
    canary = steps["upgrade-ecsc-1"]["changes"]["ret"]
    assert list(canary) == ["ecsc-1"]
    assert sorted(steps["upgrade-ecsc-wave-2"]["changes"]["ret"]) == ["ecsc-2", "ecsc-3"]
    assert steps["gate-ecsc-1"]["result"] is True and steps["gate-ecsc-2"]["result"] is True
    # Every host drained and undrained through the lab pillar's hooks (the balancer's agent).
    wave = steps["upgrade-ecsc-wave-2"]["changes"]["ret"]
    step = steps["upgrade-ecsc-1"]
    canary_end = _seconds(step["start_time"]) + step["duration"] / 1000
    for minion, states in [*canary.items(), *wave.items()]:
        states = {key.split("_|-")[1]: ret for key, ret in states.items()}
        for sid, verb in (("drained", "drain"), ("in-rotation", "undrain")):
            assert states[sid]["result"] is True, (minion, states[sid])
            assert states[sid]["changes"][f"{verb}ed"]["hook"] == (
                f"POST {balancer.AGENT_URL}/{verb}/{minion}?timeout=10"), (minion, states[sid])
        # Published ahead: the second wave's hosts reached their turn while the canary's step
        # still ran, and took it (the gate passed); the canary's own job had no turn to wait.
        if minion != "ecsc-1":
            assert states["turn"]["result"] is True, states["turn"]
            assert _seconds(states["turn"]["start_time"]) < canary_end, (minion, canary_end)
        else:
            assert "turn" not in states
        # The canary soaked after it was back in rotation; the others did not soak.
        if minion == "ecsc-1":
            assert states["soaked"]["result"] is True, states["soaked"]
            assert states["soaked"]["changes"]["soaked"]["seconds"] == SOAK
            assert states["soaked"]["__run_num__"] > states["in-rotation"]["__run_num__"]
        else:
            assert "soaked" not in states
    for host in ecsc:
        assert lab.health(host)["release"] == RELEASE_V2, host["id"]
        assert set(lab.service_pids(host)).isdisjoint(before[host["id"]]), host["id"]
    report = probe.report()
    windows = {h: report["hosts"][h]["windows"] for h in ("ecsc-1", "ecsc-2", "ecsc-3")}
    assert all(len(w) == 1 for w in windows.values()), windows
    assert report["services"]["ecsc"]["max_down"] <= 2
    # The second wave stopped only after the canary answered again (and soaked).
    assert min(windows[h][0]["start"] for h in ("ecsc-2", "ecsc-3")) > windows["ecsc-1"][0]["end"]
    # The drain hooks kept every request off the stopping JVMs.
    assert traffic["requests"] > 100 and traffic["failed"] == 0, traffic
