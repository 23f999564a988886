"""Steady traffic through the lab's balancers, counting the requests that fail.

    python -m lab.loadclient --seconds 30 --rate 20    # per service; prints JSON

One thread per service sends GET requests to its balancer (lab/balancer.py) at a fixed rate,
a new connection each time, until the time or the request count is reached. Bounded and
loopback only: every target must be in 127.0.0.0/8. A request fails when it does not answer
200 within the timeout.
"""

import argparse
import ipaddress
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from lab import balancer

MAX_SECONDS = 900
MAX_REQUESTS = 200_000
# No proxy from the environment: the targets are loopback addresses.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _check_loopback(url):
    host = urlsplit(url).hostname
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"loadclient: {url}: only loopback targets (127.0.0.0/8) are allowed")


class Load:
    """Drives every target in its own thread; ``start()``, ``stop()``, then ``result()``."""

    def __init__(self, targets, rate=20.0, seconds=60.0, max_requests=MAX_REQUESTS, timeout=2.0):
        for url in targets.values():
            _check_loopback(url)
        self.targets = targets
        self.interval = 1.0 / rate
        self.seconds = min(seconds, MAX_SECONDS)
        self.max_requests = min(max_requests, MAX_REQUESTS)
        self.timeout = timeout
        self._halt = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self.counts = {name: {"requests": 0, "failed": 0} for name in targets}
        self.failures = []  # (monotonic time, service, what)
        self._threads = [
            threading.Thread(target=self._drive, args=(name, url), daemon=True)
            for name, url in targets.items()
        ]

    def _take(self):
        with self._lock:
            if self._sent >= self.max_requests:
                return False
            self._sent += 1
            return True

    def _drive(self, name, url):
        deadline = time.monotonic() + self.seconds
        next_at = time.monotonic()
        while not self._halt.is_set() and time.monotonic() < deadline and self._take():
            failure = None
            try:
                with OPENER.open(url, timeout=self.timeout) as answer:
                    answer.read()
                    if answer.status != 200:
                        failure = f"HTTP {answer.status}"
            except urllib.error.HTTPError as exc:
                failure = f"HTTP {exc.code}"
            except OSError as exc:
                failure = type(exc).__name__
            with self._lock:
                self.counts[name]["requests"] += 1
                if failure:
                    self.counts[name]["failed"] += 1
                    self.failures.append((time.monotonic(), name, failure))
            next_at += self.interval
            self._halt.wait(max(0.0, next_at - time.monotonic()))

    def start(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._halt.set()
        for thread in self._threads:
            thread.join()
        return self

    def result(self):
        return {
            "requests": sum(c["requests"] for c in self.counts.values()),
            "failed": sum(c["failed"] for c in self.counts.values()),
            "per_service": self.counts,
            "failures": [{"service": s, "what": w} for _, s, w in self.failures[:50]],
        }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.loadclient", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second per service")
    parser.add_argument("--max-requests", type=int, default=MAX_REQUESTS)
    args = parser.parse_args(argv)
    targets = {name: balancer.url(name) for name in balancer.services()}
    load = Load(targets, args.rate, args.seconds, args.max_requests).start()
    try:
        for thread in load._threads:  # pylint: disable=protected-access
            thread.join()
    except KeyboardInterrupt:
        pass
    print(json.dumps(load.stop().result(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
