"""`make bench-scale`: issue 11's figures: `orch.upgrade` on a scale lab of 8, 16 and 32 hosts,
with `batch: 1` and `batch: 25%`, each beside the no-Salt floor (lab/floor.py) doing the same
hosts in the same batches.

    .venv/bin/python bench/scale_bench.py [--sizes 8 16 32] [--batches 1 25%]

Per size the lab is brought to that many hosts (`labctl up --hosts N`); per batch: reset to
v1 -> the floor -> reset -> `orch.upgrade pillar=<batch for every service>`, both under the
availability prober (its polls, 20 per second per host, load the JVMs and the cores: at 32
hosts that is most of this machine, so both are timed under it). Printed and written to
`.bench/scale.json` (a list, one object per run): hosts, batch (as given), wall_s, floor_s,
master_cpu_s (the salt-master's processes plus the salt-run process), minions_cpu_s (the lab's
minions and their job processes), machine_cpu_s and floor_machine_cpu_s (the whole machine
busy during orch.upgrade and during the floor), master_rss_mib (peak of the salt-master's
processes), max_down (most hosts of one service down at one instant, from the prober),
max_unavailable, and floor_max_down (the same count for the floor). Each run takes the lab
lock for itself. The bench ends with the lab back at its eight hosts, reset to v1.

Goals (issue 11): overhead (wall - floor) at 32 hosts <= 1.25 x the overhead at 8 hosts;
at 32 hosts `batch: 25%` <= 0.5 x the wall time of `batch: 1`; max_down <= max_unavailable.
"""

import argparse
import contextlib
import json
import math
import os
import resource
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psutil  # noqa: E402  pylint: disable=wrong-import-position

from bench import upgrade_bench as ub  # noqa: E402  pylint: disable=wrong-import-position
from lab import faults, labctl  # noqa: E402  pylint: disable=wrong-import-position
from lab.prober import Prober  # noqa: E402  pylint: disable=wrong-import-position

OUT = ub.OUT_DIR / "scale.json"


def batch_count(batch, per_service):
    """A batch as the policy reads it ("25%" of a service's hosts, rounded up), as a count."""
    text = str(batch)
    if text.endswith("%"):
        return max(1, math.ceil(per_service * int(text[:-1]) / 100))
    return int(text)


def batch_pillar(batch, services):
    """The pillar that sets one batch for every service (default max_unavailable: the batch)."""
    value = batch if str(batch).endswith("%") else int(batch)
    return {"inventory": {"services": {s: {"batch": value} for s in services}}}


def master_tree():
    pid = labctl._daemon_pid(labctl.master_pidfile(), "salt-master")  # pylint: disable=protected-access
    if not pid:
        raise SystemExit("bench-scale: the salt-master is not running")
    root = psutil.Process(pid)
    return [root] + root.children(recursive=True)


def cpu_seconds(procs, reaped=False):
    """CPU seconds of ``procs``; with ``reaped``, also of their ended children (a minion's
    job processes are reaped by its process manager: their time is in its children's)."""
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = proc.cpu_times()
            total += times.user + times.system
            if reaped:
                total += times.children_user + times.children_system
    return total


def minion_trees(hosts):
    """Every lab minion's processes (its daemon and the children it runs jobs in)."""
    return [proc for host in hosts for proc in faults.minion_tree(host["id"])]


def machine_busy_seconds():
    """CPU seconds the whole machine spent busy since boot (/proc/stat, all cpus)."""
    with open("/proc/stat", encoding="ascii") as handle:
        ticks = [int(v) for v in handle.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class PeakRss(threading.Thread):
    """Samples the salt-master's processes' RSS every 0.2 s; ``peak_mib`` after ``stop()``."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(0.2):
            rss = 0
            for proc in master_tree():
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += proc.memory_info().rss
            self.peak = max(self.peak, rss)

    def stop(self):
        self._halt.set()
        self.join()
        return round(self.peak / 2**20)


def one_run(size, batch):
    hosts = labctl.load_hosts()
    services = sorted({h["service"] for h in hosts})
    per_service = len(hosts) // len(services)
    count = batch_count(batch, per_service)
    with ub.lab_lock(f"{size} hosts, batch {batch}: floor"):
        ub.reset()
        with Prober() as floor_probe:
            busy = machine_busy_seconds()
            floor_s, _ = ub.must(ub.timed(str(labctl.VENV_BIN / "python"), "-m", "lab.floor",
                                          "--batch", str(count)), "floor")
            floor_busy = machine_busy_seconds() - busy
    with ub.lab_lock(f"{size} hosts, batch {batch}: orch.upgrade"):
        ub.reset()
        before = cpu_seconds(master_tree())
        minions = minion_trees(hosts)
        minions_before = cpu_seconds(minions, reaped=True)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = PeakRss()
        peak.start()
        with Prober() as probe:
            busy = machine_busy_seconds()
            wall_s, _ = ub.must(ub.orchestrate(
                "orch.upgrade", f"pillar={json.dumps(batch_pillar(batch, services))}"),
                "orch.upgrade")
            busy = machine_busy_seconds() - busy
        minions_cpu = cpu_seconds(minions, reaped=True) - minions_before
        rss = peak.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = cpu_seconds(master_tree()) - before + (after.ru_utime - children.ru_utime) + (
            after.ru_stime - children.ru_stime)
    report = probe.report()
    return {
        "hosts": size, "batch": batch, "wall_s": round(wall_s, 2), "floor_s": round(floor_s, 2),
        "master_cpu_s": round(cpu, 2), "master_rss_mib": rss,
        "max_down": max(s["max_down"] for s in report["services"].values()),
        "max_unavailable": count, "both_down": report["both_down"],
        "floor_max_down": max(s["max_down"] for s in floor_probe.report()["services"].values()),
        # Where the CPU went (the prober's share is in both machine figures).
        "minions_cpu_s": round(minions_cpu, 2), "machine_cpu_s": round(busy, 2),
        "floor_machine_cpu_s": round(floor_busy, 2),
    }


def goals(runs):
    """The three goals of issue 11 from the runs (None where a run is missing)."""
    by = {(r["hosts"], str(r["batch"])): r for r in runs}
    found = {}
    for batch in {str(r["batch"]) for r in runs}:
        small, large = by.get((8, batch)), by.get((32, batch))
        if small and large:
            found[f"overhead_32_over_8[batch {batch}]"] = round(
                (large["wall_s"] - large["floor_s"]) / (small["wall_s"] - small["floor_s"]), 2)
    if (32, "1") in by and (32, "25%") in by:
        found["wall_32_batch25_over_batch1"] = round(
            by[(32, "25%")]["wall_s"] / by[(32, "1")]["wall_s"], 2)
        # The same ratio for the floor (no Salt): what batching alone gains on this machine,
        # where all the hosts' JVMs share its cores. No tool can beat the floor's ratio.
        found["floor_32_batch25_over_batch1"] = round(
            by[(32, "25%")]["floor_s"] / by[(32, "1")]["floor_s"], 2)
    found["max_down_within_max_unavailable"] = all(
        r["max_down"] <= r["max_unavailable"] for r in runs)
    return found


def table(runs):
    lines = [f"{'HOSTS':>5} {'BATCH':>5} {'WALL':>7} {'FLOOR':>7} {'OVERHEAD':>8} "
             f"{'CPU s':>6} {'MINIONS':>7} {'MACHINE':>7} {'FLOOR M':>7} {'RSS MiB':>7} "
             f"{'MAX DOWN':>8} {'MAX UNAV':>8}"]
    for r in runs:
        lines.append(f"{r['hosts']:>5} {str(r['batch']):>5} {r['wall_s']:>7.1f} "
                     f"{r['floor_s']:>7.1f} {r['wall_s'] - r['floor_s']:>8.1f} "
                     f"{r['master_cpu_s']:>6.1f} {r.get('minions_cpu_s', 0):>7.1f} "
                     f"{r.get('machine_cpu_s', 0):>7.1f} {r.get('floor_machine_cpu_s', 0):>7.1f} "
                     f"{r['master_rss_mib']:>7} {r['max_down']:>8} "
                     f"{r['max_unavailable']:>8}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[8, 16, 32])
    parser.add_argument("--batches", nargs="+", default=["1", "25%"])
    args = parser.parse_args(argv)
    runs = []
    # One lock for the whole series: another lab user in between would resize the lab.
    with ub.lab_lock("the whole scale series"):
        _series(args, runs)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(runs, indent=2) + "\n")
    print(table(runs))
    print(json.dumps(goals(runs), indent=2))
    print(f"written: {OUT}")
    return 0


def _series(args, runs):
    try:
        for size in args.sizes:
            with ub.lab_lock(f"lab of {size} hosts"):
                ub.quiet(lambda _: labctl.up(argparse.Namespace(hosts=size)))
            for batch in args.batches:
                runs.append(one_run(size, batch))
                print(table(runs[-1:]).splitlines()[-1], flush=True)
                # Written after every run: a series that dies later keeps what it measured.
                OUT.parent.mkdir(exist_ok=True)
                OUT.write_text(json.dumps(runs, indent=2) + "\n")
    finally:
        with ub.lab_lock("lab back to eight hosts"):
            ub.quiet(lambda _: labctl.up(argparse.Namespace(hosts=None)))
            ub.reset()


if __name__ == "__main__":
    sys.exit(main())
