"""The availability prober on the lab: a stopped JVM is seen as down, its partner is not, and
a one-host stop shows no both-down instant for the pair."""

import time

from lab.prober import Prober


def wait_until(predicate, limit, what):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit}s waiting for {what}")


def test_prober_sees_a_stopped_jvm_down_and_no_both_down(lab, hosts):
    host, partner = hosts["schedule-res-1"], hosts["schedule-res-2"]
    pids = lab.service_pids(host)
    assert len(pids) == 1 and lab.health(host) and lab.health(partner)
    try:
        with Prober(["schedule-res"]) as probe:
            assert probe.is_down("schedule-res-1") is False
            lab.stop_pids(pids)
            assert lab.service_pids(host) == []
            wait_until(lambda: probe.is_down("schedule-res-1"), 10, "the prober to see it down")
            lab.start_service(host)
            wait_until(lambda: probe.is_down("schedule-res-1") is False, 90,
                       "the restarted JVM to answer health")
    finally:
        if not lab.service_pids(host):  # leave the lab healthy whatever failed above
            lab.start_service(host)
            wait_until(lambda: lab.health(host), 90, "schedule-res-1 to answer health")
    report = probe.report()
    down = report["hosts"]["schedule-res-1"]
    assert down["down_count"] == 1 and down["down_s"] > 0
    assert not down["windows"][0]["open"]
    assert report["hosts"]["schedule-res-2"]["windows"] == []
    assert report["services"]["schedule-res"]["both_down"] == 0
    assert report["both_down"] == 0
    assert lab.service_pids(host) and lab.service_pids(host) != pids
