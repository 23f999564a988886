"""`make bench-lb`: requests lost during a full `orch.upgrade`, with and without the
drain/undrain hooks (issue 11).

    .venv/bin/python bench/lb_bench.py [--rate 20]

The lab puts HAProxy in front of every service (lab/balancer.py) and its pillar wires each
service's `drain`/`undrain` hooks to the balancer's agent (HTTP calls onto HAProxy's runtime
API). A load client (lab/loadclient.py: steady GETs through every service's balancer, loopback
only, bounded) runs during the whole upgrade, twice: reset to v1 -> `orch.upgrade` as is (the
lab pillar's hooks), then reset -> `orch.upgrade` with every service's hooks switched off on
the command line (null). Printed and written to `.bench/lb.json`: requests (both runs),
failed_with_drain, failed_without_drain, and per run the requests, the failures seen and the
seconds the drain and undrain states took per host (median and max, from the run's JSON).
Goal: failed_with_drain == 0. Ends with the lab reset to v1.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import upgrade_bench as ub  # noqa: E402  pylint: disable=wrong-import-position
from lab import balancer, labctl, loadclient  # noqa: E402  pylint: disable=wrong-import-position

OUT = ub.OUT_DIR / "lb.json"


def hooks_off(services):
    """The pillar that switches every service's drain/undrain hooks off (null: none)."""
    return {"inventory": {"services": {s: {verb: None for verb in balancer.VERBS}
                                       for s in services}}}


def hook_seconds(stdout):
    """{"drained": [s, ...], "in-rotation": [...]}: each host's drain/undrain state time."""
    found = {"drained": [], "in-rotation": []}
    for sid, step in ub.orch_steps(stdout).items():
        if sid.startswith("upgrade-"):
            for states in ub.host_states(step).values():
                for name, seconds in found.items():
                    if (states.get(name) or {}).get("duration") is not None:
                        seconds.append(states[name]["duration"] / 1000)
    return {name: {"median": round(statistics.median(s), 3), "max": round(max(s), 3),
                   "hosts": len(s)} for name, s in found.items() if s}


def one_run(rate, hooks):
    services = list(balancer.services())
    extra = [] if hooks else [f"pillar={json.dumps(hooks_off(services))}"]
    with ub.lab_lock(f"orch.upgrade under load, hooks {'on' if hooks else 'off'}"):
        ub.quiet(labctl.up)  # the lab as it should be (another lab user may have taken it down)
        ub.reset()
        load = loadclient.Load({s: balancer.url(s) for s in services}, rate=rate,
                               seconds=loadclient.MAX_SECONDS).start()
        try:
            seconds, proc = ub.must(ub.orchestrate("orch.upgrade", *extra), "orch.upgrade")
        finally:
            result = load.stop().result()
    return {"hooks": hooks, "seconds": round(seconds, 1),
            "hook_seconds": hook_seconds(proc.stdout), **result}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s per service")
    args = parser.parse_args(argv)
    try:
        with_drain = one_run(args.rate, hooks=True)
        without = one_run(args.rate, hooks=False)
    finally:
        with ub.lab_lock("lab reset"):
            ub.reset()
    figures = {"requests": with_drain["requests"] + without["requests"],
               "failed_with_drain": with_drain["failed"],
               "failed_without_drain": without["failed"],
               "runs": [with_drain, without]}
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    for run in (with_drain, without):
        print(f"hooks {'on ' if run['hooks'] else 'off'}: {run['requests']} requests, "
              f"{run['failed']} failed, orch.upgrade {run['seconds']} s; per host "
              + (", ".join(f"{name} {s['median']} s (max {s['max']})"
                           for name, s in run["hook_seconds"].items()) or "no hook ran"))
    print(f"written: {OUT}")
    return 0 if with_drain["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
