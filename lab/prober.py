"""Availability prober: polls every lab host's health URL during a run and records, per host,
each window when it did not answer 200, and per pair of hosts of one service each window when
both were down at once (the runbook's pairs exist so that this never happens).

    python -m lab.prober --out .bench/probe.json -- salt-run state.orchestrate orch.upgrade
    python -m lab.prober --hosts ecsc,schedule-1 --duration 30 --out probe.json

As a library::

    with Prober() as probe:          # every host of lab.labctl.load_hosts()
        run_the_upgrade()
    report = probe.report()          # JSON-serialisable dict, see Prober.report()

One thread per host polls every ``interval`` seconds (50 ms) with a short per-request timeout,
each poll a fresh TCP connection, so a closed listener is seen at once. Only loopback
addresses are probed. The threads keep only the state changes, so a long run costs no memory.

Window semantics: a host is down from the first poll that did not get 200 to the first poll
that got 200 again (so a window is never shorter than what was seen, and at worst one poll
longer than the truth). A window still open when the prober stops ends at the stop and is
marked ``open``. Two hosts are both down where their windows overlap by more than zero.
"""

import argparse
import datetime
import http.client
import ipaddress
import itertools
import json
import pathlib
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

INTERVAL = 0.05
TIMEOUT = 1.0


# ---------------------------------------------------------------- window logic (pure)


def down_windows(samples, end=None):
    """Windows when a host did not answer 200, from its samples in time order.

    ``samples``: iterable of ``(t, ok)`` or ``(t, ok, reason)``; only state changes matter, so
    the full list or only its transitions give the same windows. ``end``: when sampling
    stopped (default: the last sample's time); a window still open then ends there.
    Returns ``[{"start", "end", "seconds", "open", "reason"}]``.
    """
    windows = []
    current = None
    last_t = None
    for sample in samples:
        t, ok = sample[0], sample[1]
        reason = sample[2] if len(sample) > 2 else None
        last_t = t
        if not ok and current is None:
            current = {"start": t, "reason": reason}
        elif ok and current is not None:
            windows.append(_window(current["start"], t, False, current["reason"]))
            current = None
    if current is not None:
        stop = end if end is not None else last_t
        windows.append(_window(current["start"], max(stop, current["start"]), True,
                               current["reason"]))
    return windows


def _window(start, end, is_open, reason=None):
    return {"start": round(start, 3), "end": round(end, 3),
            "seconds": round(end - start, 3), "open": is_open, "reason": reason}


def overlaps(windows_a, windows_b):
    """Windows when both hosts were down: the intersections of positive length of two lists
    of windows (each sorted, non-overlapping, as ``down_windows`` gives them)."""
    both = []
    i = j = 0
    while i < len(windows_a) and j < len(windows_b):
        a, b = windows_a[i], windows_b[j]
        start, end = max(a["start"], b["start"]), min(a["end"], b["end"])
        if start < end:
            both.append(_window(start, end, a["open"] and b["open"]))
        # Drop whichever window ends first; the other may still meet the next one.
        if a["end"] <= b["end"]:
            i += 1
        else:
            j += 1
    return both


def max_down(window_lists):
    """The largest number of hosts down at one instant, given each host's windows."""
    edges = []
    for windows in window_lists:
        for w in windows:
            edges.append((w["start"], 1))
            edges.append((w["end"], -1))
    # At equal times count the ends first: a window that ends where another starts never met it.
    edges.sort(key=lambda e: (e[0], e[1]))
    down = peak = 0
    for _, step in edges:
        down += step
        peak = max(peak, down)
    return peak


def summarise(hosts, samples, end=None):
    """The report from per-host samples (pure: unit tests feed it synthetic samples).

    ``hosts``: ``[{"id", "service", "url"}]``; ``samples``: ``{host id: [(t, ok[, reason])]}``
    with ``t`` in seconds from the start of probing; ``end``: when probing stopped.
    """
    per_host = {}
    for host in hosts:
        windows = down_windows(samples.get(host["id"], []), end)
        per_host[host["id"]] = {
            "service": host["service"],
            "url": host.get("url"),
            "down_s": round(sum(w["seconds"] for w in windows), 3),
            "down_count": len(windows),
            "windows": windows,
        }
    services = {}
    for host in hosts:
        services.setdefault(host["service"], []).append(host["id"])
    per_service = {}
    for service, ids in services.items():
        pairs = {}
        for a, b in itertools.combinations(ids, 2):
            both = overlaps(per_host[a]["windows"], per_host[b]["windows"])
            pairs[f"{a}+{b}"] = {"both_down": len(both),
                                 "both_down_s": round(sum(w["seconds"] for w in both), 3),
                                 "windows": both}
        per_service[service] = {
            "hosts": ids,
            "both_down": sum(p["both_down"] for p in pairs.values()),
            "both_down_s": round(sum(p["both_down_s"] for p in pairs.values()), 3),
            "max_down": max_down([per_host[h]["windows"] for h in ids]),
            "pairs": pairs,
        }
    return {
        "hosts": per_host,
        "services": per_service,
        "both_down": sum(s["both_down"] for s in per_service.values()),
    }


# ---------------------------------------------------------------- probing


def check_loopback(url):
    """The URL's host must be a loopback address: the prober never sends traffic elsewhere."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"prober: {url!r} is not an http:// URL")
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if not loopback:
        raise ValueError(f"prober: {url!r} is not on a loopback address; only loopback is probed")
    return parts


def poll(parts, timeout):
    """(True, None) when the URL answered 200, else (False, why)."""
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        conn.request("GET", path, headers={"Connection": "close"})
        status = conn.getresponse().status
        return (True, None) if status == 200 else (False, f"HTTP {status}")
    except (OSError, http.client.HTTPException) as exc:
        return False, type(exc).__name__
    finally:
        conn.close()


def targets(hosts=None):
    """``[{"id", "service", "url"}]`` from lab host dicts, host ids or service names (default:
    every lab host). A dict that already has a ``url`` is taken as it is."""
    if hosts is not None and all(isinstance(h, dict) and "url" in h for h in hosts):
        return [{"id": h["id"], "service": h.get("service", h["id"]), "url": h["url"]}
                for h in hosts]
    from lab import labctl

    lab_hosts = labctl.load_hosts()
    if hosts is None:
        chosen = lab_hosts
    else:
        names = [h["id"] if isinstance(h, dict) else h for h in hosts]
        known = {h["id"] for h in lab_hosts} | {h["service"] for h in lab_hosts}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"prober: unknown host or service {unknown}; known: {sorted(known)}")
        chosen = [h for h in lab_hosts if h["id"] in names or h["service"] in names]
    return [{"id": h["id"], "service": h["service"], "url": labctl.health_url(h)} for h in chosen]


class Prober:
    """Polls each host's health URL in its own thread until stopped; see the module doc."""

    def __init__(self, hosts=None, interval=INTERVAL, timeout=TIMEOUT):
        self.hosts = targets(hosts)
        self._parts = {h["id"]: check_loopback(h["url"]) for h in self.hosts}
        self.interval = interval
        self.timeout = timeout
        self._halt = threading.Event()
        self._lock = threading.Lock()
        # Per host: the state changes only, plus how many polls were made.
        self._changes = {h["id"]: [] for h in self.hosts}
        self._polls = {h["id"]: 0 for h in self.hosts}
        self._threads = []
        self._t0 = None
        self._started = None
        self._end = None

    def _run(self, host_id):
        parts = self._parts[host_id]
        changes = self._changes[host_id]
        next_poll = time.monotonic()
        while not self._halt.is_set():
            ok, reason = poll(parts, self.timeout)
            t = time.monotonic() - self._t0
            with self._lock:
                self._polls[host_id] += 1
                if not changes or changes[-1][1] != ok:
                    changes.append((t, ok, reason))
            next_poll += self.interval
            # A slow answer pushes the schedule; never poll in a burst to catch up.
            next_poll = max(next_poll, time.monotonic())
            self._halt.wait(next_poll - time.monotonic())

    def start(self):
        """Start one polling thread per host; returns once every host was polled once."""
        self._t0 = time.monotonic()
        self._started = datetime.datetime.now(datetime.timezone.utc)
        for host in self.hosts:
            thread = threading.Thread(target=self._run, args=(host["id"],), daemon=True,
                                      name=f"prober-{host['id']}")
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + self.timeout + 5
        while time.monotonic() < deadline and not all(self._polls.values()):
            time.sleep(self.interval / 5)
        return self

    def stop(self):
        if self._end is None:
            self._end = time.monotonic() - self._t0
            self._halt.set()
            for thread in self._threads:
                thread.join(self.timeout + 1)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def is_down(self, host_id):
        """Whether the last poll of the host did not get 200 (None before its first poll)."""
        with self._lock:
            changes = self._changes[host_id]
            return None if not changes else not changes[-1][1]

    def report(self):
        """Per host total downtime and windows, per service both-down count and windows.

        Times are seconds from the start of probing; ``started`` is its UTC wall time. While
        the prober still runs, open windows end now.
        """
        end = self._end if self._end is not None else time.monotonic() - self._t0
        with self._lock:
            samples = {h: list(c) for h, c in self._changes.items()}
            polls = dict(self._polls)
        report = summarise(self.hosts, samples, end)
        for host_id, row in report["hosts"].items():
            row["polls"] = polls[host_id]
        return {"started": self._started.isoformat(timespec="milliseconds"),
                "interval_s": self.interval, "timeout_s": self.timeout,
                "duration_s": round(end, 3), **report}


def format_report(report):
    """A short text table: per host downtime, per service both-down count."""
    lines = [f"{'HOST':<16} {'SERVICE':<13} {'DOWN':>7} {'WINDOWS':>7}  POLLS"]
    for host_id, row in report["hosts"].items():
        lines.append(f"{host_id:<16} {row['service']:<13} {row['down_s']:>6.2f}s"
                     f" {row['down_count']:>7}  {row.get('polls', '')}")
    lines.append("both-down instants per service: " + ", ".join(
        f"{s} {r['both_down']}" for s, r in report["services"].items()))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m lab.prober", description=__doc__.splitlines()[0],
        epilog="With a command after '--', probes while it runs and exits with its code; "
               "otherwise probes for --duration seconds or until SIGINT/SIGTERM.")
    parser.add_argument("--hosts", help="comma-separated host ids or service names (default: all)")
    parser.add_argument("--out", help="write the JSON report here")
    parser.add_argument("--interval", type=float, default=INTERVAL, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="per-request timeout")
    parser.add_argument("--duration", type=float, help="seconds to probe (no command)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command to run while probing")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    hosts = args.hosts.split(",") if args.hosts else None

    halt = threading.Event()
    # SIGINT/SIGTERM end the probing and still write the report (the command, in our process
    # group, gets the same SIGINT from a terminal).
    previous = {sig: signal.signal(sig, lambda *_: halt.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        with Prober(hosts, interval=args.interval, timeout=args.timeout) as probe:
            if command:
                code = subprocess.run(command).returncode
            else:
                halt.wait(args.duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report = probe.report()
    if command:
        report["command"] = command
        report["returncode"] = code
    if args.out:
        out = pathlib.Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_report(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
