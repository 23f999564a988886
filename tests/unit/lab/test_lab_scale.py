"""labctl's scale lab: N hosts spread over the four services (no lab needed)."""

import collections
import json
import types

import pytest

from lab import labctl


def test_the_default_lab_is_the_runbooks_eight(tmp_path, monkeypatch):
    monkeypatch.setattr(labctl, "SCALE_FILE", tmp_path / "scale.json")
    hosts = labctl.load_hosts()
    assert [h["id"] for h in hosts][:2] == ["ecsc-1", "ecsc-2"] and len(hosts) == 8


def test_a_scale_lab_adds_hosts_round_robin_on_their_own_addresses(tmp_path, monkeypatch):
    monkeypatch.setattr(labctl, "SCALE_FILE", tmp_path / "scale.json")
    (tmp_path / "scale.json").write_text(json.dumps({"hosts": 32}))
    hosts = labctl.load_hosts()
    assert len(hosts) == 32
    per_service = collections.Counter(h["service"] for h in hosts)
    assert set(per_service.values()) == {8}
    ids = [h["id"] for h in hosts]
    addresses = [h["address"] for h in hosts]
    assert len(set(ids)) == 32 and len(set(addresses)) == 32
    assert ids[8:12] == ["ecsc-3", "ecmc-3", "schedule-3", "schedule-res-3"]
    assert all(a.startswith("127.0.3.") for a in addresses)
    # an extra host carries its service's whole config, so the lab provisions it the same way
    assert hosts[8]["conf"] is hosts[0]["conf"] and hosts[8]["kind"] == "tomcat"


@pytest.mark.parametrize("size", [7, labctl.MAX_HOSTS + 1])
def test_sizes_outside_the_range_are_refused(size):
    with pytest.raises(SystemExit, match="--hosts must be 8 to"):
        labctl.load_hosts(size)


def test_the_lab_pillar_puts_extra_hosts_in_the_rollout_order(tmp_path, monkeypatch):
    monkeypatch.setattr(labctl, "LAB", tmp_path)
    monkeypatch.setattr(labctl, "sha256_of", lambda release, service: "0" * 64)
    hosts = labctl.load_hosts(10)
    labctl.write_pillar(hosts)
    data = labctl.yaml.safe_load((tmp_path / "pillar.yaml").read_text())
    assert data["inventory"]["order"] == [h["id"] for h in hosts]
    assert data["inventory"]["services"]["ecsc"]["hosts"]["ecsc-3"]["address"] == "127.0.3.100"
    labctl.write_pillar(labctl.load_hosts(8))
    data = labctl.yaml.safe_load((tmp_path / "pillar.yaml").read_text())
    assert "order" not in data["inventory"]


def test_lab_up_deletes_the_keys_of_hosts_no_longer_in_the_lab(monkeypatch):
    # A lab shrunk while its master was down kept the extra hosts' keys: `salt '*'` then
    # waited for minions that no longer exist.
    calls = []

    def fake_salt_cmd(*args, timeout=60):
        calls.append(args)
        accepted = {"minions": [h["id"] for h in labctl.load_hosts(10)]}
        return types.SimpleNamespace(returncode=0, stdout=json.dumps(accepted) if "-l" in args else "")

    monkeypatch.setattr(labctl, "salt_cmd", fake_salt_cmd)
    labctl._drop_stale_keys(labctl.load_hosts(8))
    assert calls[1:] == [("salt-key", "-y", "-d", "ecmc-3"), ("salt-key", "-y", "-d", "ecsc-3")]


def test_a_salt_cli_that_does_not_finish_means_not_answered_yet(monkeypatch):
    # 32 minions starting at once kept `salt '*' test.ping` busy past salt_cmd's timeout:
    # lab-up must ask again until its own deadline, not die with TimeoutExpired.
    import subprocess

    calls = []

    def salt_cmd(*args, **_):
        calls.append(args)
        if len(calls) == 1:
            raise subprocess.TimeoutExpired(list(args), 60)
        return types.SimpleNamespace(stdout=json.dumps({"ecsc-1": True, "ecsc-2": True}))

    monkeypatch.setattr(labctl, "salt_cmd", salt_cmd)
    assert labctl.ping_all(["ecsc-1", "ecsc-2"]) is False
    assert labctl.wait_for(lambda: labctl.ping_all(["ecsc-1", "ecsc-2"]), 5, "ping",
                           interval=0.01) is True
