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
    assert found["floor_32_batch25_over_batch1"] == 0.35  # 24 / 68
    assert found["max_down_within_max_unavailable"] is False


class _FakeProber:
    """Stands for lab.prober.Prober: records whether a poll is running; one host down."""

    active = 0

    def __enter__(self):
        _FakeProber.active += 1
        return self

    def __exit__(self, *exc):
        _FakeProber.active -= 1

    def report(self):
        return {"both_down": 0, "services": {"ecsc": {"max_down": 1}},
                "hosts": {"ecsc-1": {"down_s": 1.0}}}


def test_the_floor_and_orch_upgrade_both_run_under_the_prober(monkeypatch):
    # The prober's polls load the JVMs and the cores (most of the machine at 32 hosts):
    # a floor timed without it would be compared with an orch.upgrade timed under it.
    import contextlib

    from bench import upgrade_bench as ub

    probed = {}

    def timed(*argv, **_):
        probed[" ".join(argv[-4:])] = _FakeProber.active
        return 1.0, type("Done", (), {"returncode": 0, "stdout": "{}", "stderr": ""})()

    monkeypatch.setattr(scale_bench.labctl, "load_hosts",
                        lambda: [{"id": "ecsc-1", "service": "ecsc"},
                                 {"id": "ecsc-2", "service": "ecsc"}])
    monkeypatch.setattr(ub, "lab_lock", lambda what: contextlib.nullcontext())
    monkeypatch.setattr(ub, "reset", lambda: None)
    monkeypatch.setattr(ub, "timed", timed)
    monkeypatch.setattr(scale_bench, "Prober", _FakeProber)
    monkeypatch.setattr(scale_bench, "master_tree", lambda: [])
    run = scale_bench.one_run(2, "1")
    floor = [cmd for cmd in probed if "lab.floor" in cmd]
    upgrade = [cmd for cmd in probed if "orch.upgrade" in cmd]
    assert floor and upgrade
    assert probed[floor[0]] == 1 and probed[upgrade[0]] == 1
    assert run["floor_max_down"] == 1 and run["max_down"] == 1
