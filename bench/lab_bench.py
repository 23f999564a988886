"""Lab budgets, measured on the real lab (not a test: figures, with targets).

    .venv/bin/python bench/lab_bench.py            # full: lab rebuilt from nothing
    .venv/bin/python bench/lab_bench.py --keep     # skip the rebuild, measure the running lab

1. `make lab-up` from nothing (JDK and venv present): the lab's state folder is removed after
   `lab-down` (keys, caches, host roots, builds), then `labctl up` is timed until all eight
   services answer health. Target 90 s.
2. Resident memory of the whole lab (master, 8 minions, 8 JVMs) after the upgrade: RSS sum
   (counts pages shared by forked salt processes once per process, an upper bound) and PSS.
   Target 2.5 GiB.
3. `salt-run state.orchestrate orch.upgrade` wall time (v1 -> v2, 8 hosts), then
   `orch.compliance` wall time over the eight hosts (best of 3). Target 5 s.
Exit status 1 if any target is missed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lab import labctl  # noqa: E402  pylint: disable=wrong-import-position

TARGETS = {"lab_up_s": 90.0, "rss_gib": 2.5, "compliance_s": 5.0}


def salt_run(*args):
    env = labctl.salt_env()
    t0 = time.monotonic()
    proc = subprocess.run(["salt-run", *args], cwd=labctl.REPO, env=env, capture_output=True,
                          text=True, timeout=1800)
    return time.monotonic() - t0, proc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="do not rebuild the lab")
    args = parser.parse_args()
    os.chdir(labctl.REPO)
    figures = {}
    if not args.keep:
        labctl.down(None)
        # Nothing left: keys, caches, host roots, built classes and release archives.
        shutil.rmtree(labctl.LAB, ignore_errors=True)
        t0 = time.monotonic()
        labctl.up(None)
        figures["lab_up_s"] = time.monotonic() - t0
    else:
        labctl.up(None)
    labctl.reset(None)
    seconds, proc = salt_run("state.orchestrate", "orch.upgrade")
    figures["upgrade_s"] = seconds
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        raise SystemExit("bench: the upgrade failed")
    time.sleep(3)  # let the JVMs settle after their start
    mem = labctl.memory()
    figures["rss_gib"] = mem["total"]["rss_mib"] / 1024
    figures["pss_gib"] = mem["total"]["pss_mib"] / 1024
    runs = []
    for _ in range(3):
        seconds, proc = salt_run("state.orchestrate", "orch.compliance")
        runs.append((seconds, proc.returncode))
    figures["compliance_s"] = min(s for s, _ in runs)

    print("\nlab budgets (2 cores):")
    print(f"  lab-up from nothing   {figures.get('lab_up_s', float('nan')):7.1f} s"
          f"   target <= {TARGETS['lab_up_s']:.0f} s")
    print(f"  orch.upgrade 8 hosts  {figures['upgrade_s']:7.1f} s")
    print(f"  lab memory RSS        {figures['rss_gib']:7.2f} GiB target <= {TARGETS['rss_gib']} GiB"
          f"  (PSS {figures['pss_gib']:.2f} GiB; {mem['total']['processes']} processes:"
          f" salt {mem['salt']['rss_mib']} MiB, JVMs {mem['jvm']['rss_mib']} MiB RSS)")
    print(f"  orch.compliance       {figures['compliance_s']:7.2f} s   target <= "
          f"{TARGETS['compliance_s']:.0f} s  (runs: "
          + ", ".join(f"{s:.2f}s rc={rc}" for s, rc in runs) + ")")
    missed = [k for k, limit in TARGETS.items() if k in figures and figures[k] > limit]
    if any(rc != 0 for _, rc in runs):
        missed.append("compliance exit code")
    if missed:
        print("MISSED:", ", ".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
