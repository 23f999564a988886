"""`make bench-lb`: requests lost during a full `orch.upgrade`, with and without the
drain/undrain hooks (issue 11).

    .venv/bin/python bench/lb_bench.py [--rate 20]

The lab puts HAProxy in front of every service (lab/balancer.py); each service's
`drain`/`undrain` hooks call its runtime API (`lab/balancer.py drain|undrain <host>`). A load
client (lab/loadclient.py: steady GETs through every service's balancer, loopback only,
bounded) runs during the whole upgrade, twice: reset to v1 -> `orch.upgrade` with the hooks
given for every service on the command line, then reset -> `orch.upgrade` with the hooks set
to null. Printed and written to `.bench/lb.json`: requests (both runs),
failed_with_drain, failed_without_drain, and per run the requests and the failures seen.
Goal: failed_with_drain == 0. Ends with the lab reset to v1.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import upgrade_bench as ub  # noqa: E402  pylint: disable=wrong-import-position
from lab import balancer, labctl, loadclient  # noqa: E402  pylint: disable=wrong-import-position

OUT = ub.OUT_DIR / "lb.json"


def hooks_pillar(services, on):
    """Every service's drain/undrain hooks: the lab balancer's commands, or null (none)."""
    hooks = {verb: balancer.hook(verb) if on else None for verb in ("drain", "undrain")}
    return {"inventory": {"services": {s: dict(hooks) for s in services}}}


def one_run(rate, hooks):
    services = list(balancer.services())
    extra = [f"pillar={json.dumps(hooks_pillar(services, hooks))}"]
    with ub.lab_lock(f"orch.upgrade under load, hooks {'on' if hooks else 'off'}"):
        ub.reset()
        balancer.up()
        load = loadclient.Load({s: balancer.url(s) for s in services}, rate=rate,
                               seconds=loadclient.MAX_SECONDS).start()
        try:
            seconds, _ = ub.must(ub.orchestrate("orch.upgrade", *extra), "orch.upgrade")
        finally:
            result = load.stop().result()
    return {"hooks": hooks, "seconds": round(seconds, 1), **result}


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
              f"{run['failed']} failed, orch.upgrade {run['seconds']} s")
    print(f"written: {OUT}")
    return 0 if with_drain["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
