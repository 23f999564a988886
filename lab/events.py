"""The rollout's progress events, read from the master's event bus (what `salt-run
state.event` shows an operator). Tags: rollout/<upgrade|rollback>/<host>/<step>."""

import threading
import time

import salt.config
import salt.utils.event

from lab import labctl

TAG_PREFIX = "rollout/"
# A host's state run opens with `begin` and closes with `end` (for the run report): no step.
MARKERS = ("begin", "end")


class Listener(threading.Thread):
    """Collects rollout events in a background thread; ``on_event(tag, data)`` sees each."""

    def __init__(self, on_event=None):
        super().__init__(daemon=True)
        self.events = []
        self.on_event = on_event
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self):
        opts = salt.config.master_config(str(labctl.MASTER_CONFIG_DIR / "master"))
        with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True) as bus:
            bus.subscribe(TAG_PREFIX)
            self.ready.set()
            while not self._halt.is_set():
                event = bus.get_event(wait=0.5, tag=TAG_PREFIX, full=True)
                if not event:
                    continue
                data = event["data"].get("data", event["data"])
                self.events.append((time.monotonic(), event["tag"], data))
                if self.on_event:
                    self.on_event(event["tag"], data)

    def __enter__(self):
        self.start()
        self.ready.wait(10)
        return self

    def __exit__(self, *exc):
        time.sleep(0.5)  # the last events are on their way
        self._halt.set()
        self.join(5)

    def steps(self, kind="upgrade"):
        """{host: [step, ...]} in arrival order (the begin/end markers left out)."""
        found = {}
        for _, tag, _ in self.events:
            parts = tag.split("/")
            if len(parts) == 4 and parts[1] == kind and parts[3] not in MARKERS:
                found.setdefault(parts[2], []).append(parts[3])
        return found
