"""bench/scale_bench.py's arithmetic: batches as the policy reads them, and issue 11's goals."""

from bench import scale_bench


def test_a_percent_batch_counts_hosts_of_one_service_rounded_up():
    assert scale_bench.batch_count("25%", 2) == 1
    assert scale_bench.batch_count("25%", 8) == 2
    assert scale_bench.batch_count("25%", 6) == 2
    assert scale_bench.batch_count("1", 8) == 1
    assert scale_bench.batch_pillar("1", ["ecsc"]) == {
        "inventory": {"services": {"ecsc": {"batch": 1}}}}
    assert scale_bench.batch_pillar("25%", ["ecsc"])["inventory"]["services"]["ecsc"] == {
        "batch": "25%"}


def _run(hosts, batch, wall, floor, max_down=1, max_unavailable=1):
    return {"hosts": hosts, "batch": batch, "wall_s": wall, "floor_s": floor,
            "max_down": max_down, "max_unavailable": max_unavailable}


def test_goals_compare_overheads_and_batch_walls():
    runs = [_run(8, "1", 30, 20), _run(32, "1", 80, 68), _run(8, "25%", 30, 20),
            _run(32, "25%", 35, 24, max_down=3, max_unavailable=2)]
    found = scale_bench.goals(runs)
    assert found["overhead_32_over_8[batch 1]"] == 1.2
    assert found["overhead_32_over_8[batch 25%]"] == 1.1
    assert found["wall_32_batch25_over_batch1"] == 0.44
    assert found["max_down_within_max_unavailable"] is False
