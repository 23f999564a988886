"""The integration session's lab teardown (tests/integration/conftest.py) fails loudly when
`labctl.down` leaves a lab process or port behind (no lab: labctl's probes are replaced)."""

import os

import pytest

from lab import labctl
from tests.integration import conftest as integration


@pytest.fixture
def quiet_lab(monkeypatch):
    """A lab with nothing running, whose down() does nothing."""
    monkeypatch.setattr(labctl, "_daemon_pid", lambda pidfile, marker: None)
    monkeypatch.setattr(labctl, "lab_jvm_pids", lambda: [])
    monkeypatch.setattr(labctl, "listening_lab_ports", lambda: [])
    monkeypatch.setattr(labctl, "down", lambda args: None)
    return monkeypatch


def test_teardown_passes_when_nothing_is_left(quiet_lab):
    integration.take_lab_down()


def test_teardown_names_a_jvm_left_alive(quiet_lab):
    quiet_lab.setattr(labctl, "lab_jvm_pids", lambda: [os.getpid()])
    with pytest.raises(AssertionError, match=f"lab JVMs.*{os.getpid()}"):
        integration.take_lab_down()


def test_teardown_names_a_port_left_listening(quiet_lab):
    def down(args):
        raise SystemExit("lab: still listening after down: ['127.0.3.17:8080 (pid 1)']")

    quiet_lab.setattr(labctl, "down", down)
    with pytest.raises(AssertionError, match="127.0.3.17:8080"):
        integration.take_lab_down()
