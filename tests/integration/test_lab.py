"""The rehearsal lab is what the runbook describes: eight hosts at release v1 with its bugs."""

import hashlib
import json
import re

import pytest

from tests.integration.conftest import http_get, run_cli, salt_json

EXPECTED_ADDRESSES = {
    "ecsc-1": "127.0.3.17", "ecsc-2": "127.0.3.39", "ecmc-1": "127.0.3.27",
    "ecmc-2": "127.0.3.40", "schedule-1": "127.0.3.26", "schedule-2": "127.0.3.38",
    "schedule-res-1": "127.0.3.51", "schedule-res-2": "127.0.3.61",
}


@pytest.fixture(scope="module", autouse=True)
def at_v1(lab, hosts):
    """These tests look at the lab as lab-up leaves it: every host at v1, deployed by hand."""
    if any((lab.health(h) or {}).get("release") != lab.RELEASE_V1 for h in hosts.values()):
        lab.reset(None)


def test_eight_minions_answer(lab):
    answered = salt_json("*", "test.ping")
    assert answered == {host: True for host in EXPECTED_ADDRESSES}


def test_salt_run_works_through_saltfile(lab):
    proc = run_cli("salt-run", "--out=json", "manage.up")
    assert proc.returncode == 0, proc.stderr
    assert sorted(json.loads(proc.stdout)) == sorted(EXPECTED_ADDRESSES)


def test_hosts_have_the_runbook_addresses(hosts):
    assert {h: hosts[h]["address"] for h in hosts} == EXPECTED_ADDRESSES


def test_every_service_healthy_at_v1_on_its_own_address(lab, hosts):
    for host_id, host in hosts.items():
        status, body = http_get(lab.health_url(host))
        assert status == 200, f"{host_id}: {body}"
        health = json.loads(body)
        assert health["service"] == host["service"]
        assert health["release"] == lab.RELEASE_V1, host_id
        assert host["address"] in lab.health_url(host)


def test_hosts_share_no_file(hosts):
    roots = [str(h["root"]) for h in hosts.values()]
    assert len(set(roots)) == 8
    for host in hosts.values():
        assert (host["root"] / "home" / host["service"]).is_dir()


def test_ecmc_1_shows_the_rounded_balance_of_v1(hosts):
    status, body = http_get("http://127.0.3.27:8080/ecmc/customers")
    assert status == 200
    balances = {c["id"]: c for c in json.loads(body, parse_float=str)["customers"]}
    assert balances[1]["balance"] == "12.35"  # bug #9427: 12.345 rounded at the 3rd decimal


def test_schedule_1_money_lines_carry_no_timestamp(lab, hosts):
    log = lab.app_log(hosts["schedule-1"]).read_text().splitlines()
    money = [line for line in log if "log.money." in line]
    assert money, "schedule-1 wrote no money line"
    assert all(line.startswith("log.money.") for line in money), money[-3:]


def test_v2_build_exists_with_its_sha256(lab):
    for service in ("ecsc", "ecmc", "schedule", "schedule-res"):
        tar = lab.ARTIFACTS / lab.RELEASE_V2 / f"{service}.tar"
        recorded = (tar.parent / f"{service}.tar.sha256").read_text().split()
        assert recorded[1] == f"{service}.tar"
        assert re.fullmatch(r"[0-9a-f]{64}", recorded[0])
        assert hashlib.sha256(tar.read_bytes()).hexdigest() == recorded[0]
