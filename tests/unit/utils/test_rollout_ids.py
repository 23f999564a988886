"""_utils/rollout_ids.py: the one name pattern and the one signal table."""

import signal

import pytest
from salt.exceptions import SaltInvocationError

from tests.conftest import repo_utils


@pytest.fixture
def utils():
    return repo_utils({"id": "unit-minion"})


def test_minion_id_comes_from_opts(utils):
    assert utils["rollout_ids.minion_id"]() == "unit-minion"


@pytest.mark.parametrize("value", ["20170220", "20170220.1", "ecsc", "schedule-res", "a_b"])
def test_names_accepted(utils, value):
    assert utils["rollout_ids.check_name"](value, "tag") == value


@pytest.mark.parametrize("value", ["", ".hidden", "-x", "a/b", "../etc", "a b", 20170220, None])
def test_names_refused_naming_what(utils, value):
    assert not utils["rollout_ids.is_name"](value)
    with pytest.raises(SaltInvocationError, match="release id"):
        utils["rollout_ids.check_name"](value, "release id")


@pytest.mark.parametrize("value,expected", [
    ("TERM", signal.SIGTERM), ("sigkill", signal.SIGKILL), (" SIGQUIT ", signal.SIGQUIT),
    (9, signal.SIGKILL), ("15", signal.SIGTERM), ("HUP", signal.SIGHUP),
])
def test_signals_by_name_or_number(utils, value, expected):
    assert utils["rollout_ids.parse_signal"](value) is expected


@pytest.mark.parametrize("value", ["STOP", "USR1", 19, True, "", None, "SIG"])
def test_other_signals_refused(utils, value):
    with pytest.raises(SaltInvocationError, match="unsupported signal"):
        utils["rollout_ids.parse_signal"](value)


def test_signal_name_is_short(utils):
    assert utils["rollout_ids.signal_name"](9) == "KILL"
