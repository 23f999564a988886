"""
Names shared by every module of the rollout: the minion id used in messages, the one pattern
for tags, release ids and service names, and the stop signals the pillar may name.

Reached as ``__utils__["rollout_ids.<function>"]`` from execution and state modules (synced
to minions and the master with ``saltutil.sync_utils``/``sync_all``).

:depends: none
"""

import re
import signal

from salt.exceptions import SaltInvocationError

__virtualname__ = "rollout_ids"


def __virtual__():
    # Utilities of this formula, always available where it runs (minions and master).
    return __virtualname__


# Tags (the backup's ``<dir>_<tag>``), release ids and service names: they become file names.
NAME_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z._-]*$"
_NAME_RE = re.compile(NAME_PATTERN)

# The signals a pillar ``stop:signal`` may name, by name and by number.
SIGNALS = {
    "TERM": signal.SIGTERM,
    "KILL": signal.SIGKILL,
    "INT": signal.SIGINT,
    "QUIT": signal.SIGQUIT,
    "HUP": signal.SIGHUP,
}


def minion_id(default="<unknown minion>"):
    """The id of the minion (or master) this code runs on, for error messages."""
    try:
        return __opts__.get("id") or default  # pylint: disable=undefined-variable
    except NameError:  # outside the loader
        return default


def name_pattern():
    """The regular expression tags, release ids and service names must match."""
    return NAME_PATTERN


def is_name(value):
    """True when value is a str usable as a tag, release id or service name."""
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value))


def check_name(value, what):
    """Return value when it is a valid name; raise SaltInvocationError naming ``what``."""
    if not is_name(value):
        raise SaltInvocationError(f"{what} {value!r} must match {NAME_PATTERN}")
    return value


def parse_signal(value):
    """
    The ``signal.Signals`` for TERM/KILL/INT/QUIT/HUP (any case, with or without ``SIG``) or
    their numbers; SaltInvocationError naming anything else.
    """
    sig = None
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            sig = SIGNALS.get(text[3:] if text.startswith("SIG") else text)
    if number is not None:
        sig = next((s for s in SIGNALS.values() if int(s) == number), None)
    if sig is None:
        allowed = ", ".join(f"{n} ({int(s)})" for n, s in SIGNALS.items())
        raise SaltInvocationError(f"unsupported signal {value!r}: use one of {allowed}")
    return sig


def signal_name(value):
    """The short name (``TERM``) of a signal given by name or number; see parse_signal."""
    return parse_signal(value).name[3:]
