"""Issue 11 on the lab, the small case that runs in `make test`: ecsc grown to three hosts
(a scale lab of nine), `batch: 2`, `max_fail: 1`, its drain/undrain hooks wired to the lab's
HAProxy, and steady traffic through the balancer during the whole `orch.upgrade`.

Shown on the real thing: the first wave (ecsc-1 + ecsc-2) is one job and the third host goes
only after it; every host ends on v2 with a new JVM; the prober never sees more ecsc hosts down
at once than max_unavailable (2); no request through the balancer failed; the lab goes back to
its eight hosts."""

import argparse
import json

import pytest

from lab import balancer, faults, loadclient
from lab.prober import Prober
from tests.integration.conftest import run_cli

RELEASE_V2 = "20170220"


@pytest.fixture
def nine(lab):
    """The lab with a ninth host, ecsc-3; back to the eight afterwards (its minion key, JVM,
    root and balancer backend go)."""
    lab.up(argparse.Namespace(hosts=9))
    try:
        yield {h["id"]: h for h in lab.load_hosts()}
    finally:
        lab.up(argparse.Namespace(hosts=None))


def test_three_hosts_in_waves_of_two_under_load_lose_no_request(lab, nine):
    ecsc = [nine[h] for h in ("ecsc-1", "ecsc-2", "ecsc-3")]
    faults.reset_hosts(ecsc)
    before = {h["id"]: set(lab.service_pids(h)) for h in ecsc}
    hooks = {"drain": balancer.hook("drain"), "undrain": balancer.hook("undrain")}
    pillar = {"services": ["ecsc"], "inventory": {"services": {"ecsc": {
        "batch": 2, "max_fail": 1, **hooks}}}}
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
    # One job for the first wave, then ecsc-3 after the gate.
    assert sorted(steps["upgrade-ecsc-wave-1"]["changes"]["ret"]) == ["ecsc-1", "ecsc-2"]
    assert list(steps["upgrade-ecsc-3"]["changes"]["ret"]) == ["ecsc-3"]
    assert steps["gate-ecsc-1"]["result"] is True and steps["gate-ecsc-2"]["result"] is True
    for host in ecsc:
        assert lab.health(host)["release"] == RELEASE_V2, host["id"]
        assert set(lab.service_pids(host)).isdisjoint(before[host["id"]]), host["id"]
    report = probe.report()
    windows = {h: report["hosts"][h]["windows"] for h in ("ecsc-1", "ecsc-2", "ecsc-3")}
    assert all(len(w) == 1 for w in windows.values()), windows
    assert report["services"]["ecsc"]["max_down"] <= 2
    # ecsc-3 stopped only after both hosts of the first wave answered again.
    assert windows["ecsc-3"][0]["start"] > max(windows[h][0]["end"] for h in ("ecsc-1", "ecsc-2"))
    # The drain hooks kept every request off the stopping JVMs.
    assert traffic["requests"] > 100 and traffic["failed"] == 0, traffic
