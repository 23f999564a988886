"""lab/balancer.py's HAProxy config and lab/loadclient.py's loopback-only rule (no lab needed;
the balancer's drain/undrain on real HAProxy is exercised in the lab)."""

import subprocess
import shutil

import pytest

from lab import balancer, loadclient

HOSTS = [
    {"id": "ecsc-1", "service": "ecsc", "address": "127.0.3.17",
     "conf": {"health_url": "http://{address}:8080/ecsc/health"}},
    {"id": "ecsc-2", "service": "ecsc", "address": "127.0.3.18",
     "conf": {"health_url": "http://{address}:8080/ecsc/health"}},
    {"id": "schedule-1", "service": "schedule", "address": "127.0.3.26",
     "conf": {"health_url": "http://{address}:8090/health"}},
]


def test_each_service_gets_its_own_address_port_and_health_check():
    found = balancer.services(HOSTS)
    assert found["ecsc"]["address"] == "127.0.3.201"
    assert found["schedule"]["address"] == "127.0.3.202"
    assert (found["ecsc"]["port"], found["ecsc"]["health_path"]) == (8080, "/ecsc/health")
    assert balancer.url("schedule", HOSTS) == "http://127.0.3.202:8090/health"
    text = balancer.config_text(HOSTS)
    assert "bind 127.0.3.201:8080" in text
    assert "server ecsc-2 127.0.3.18:8080 check" in text
    assert "option httpchk GET /ecsc/health" in text
    assert f"stats socket {balancer.ADMIN_SOCKET}" in text


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy not installed (make deps)")
def test_haproxy_accepts_the_config(tmp_path):
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(balancer.config_text(HOSTS))
    done = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_load_client_refuses_a_target_off_loopback():
    with pytest.raises(SystemExit, match="only loopback"):
        loadclient.Load({"ecsc": "http://10.0.0.1:8080/ecsc/health"})
    load = loadclient.Load({"ecsc": "http://127.0.3.201:8080/ecsc/health"}, seconds=10_000)
    assert load.seconds == loadclient.MAX_SECONDS
