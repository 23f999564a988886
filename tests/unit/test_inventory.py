"""inventory: validation names the pillar key, the rollout order survives merges, and a host's
paths, commands and checks resolve under its root."""

import copy
import importlib.util

import pytest
import yaml
from salt.exceptions import SaltInvocationError

from tests.conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location("inventory", REPO_ROOT / "_modules" / "inventory.py")
inventory = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(inventory)

SHA = "ab" * 32
RUNBOOK_ORDER = ["ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2", "schedule-1", "schedule-2",
                 "schedule-res-1", "schedule-res-2"]


def production_pillar():
    """The repo's own pillar files, as production sees them, with archive sums filled in."""
    pillar = {}
    for name in ("inventory", "release"):
        pillar.update(yaml.safe_load((REPO_ROOT / "pillar" / f"{name}.sls").read_text()))
    pillar["release"]["sha256"] = {svc: SHA for svc in pillar["inventory"]["services"]}
    return pillar


@pytest.fixture
def pillar():
    return production_pillar()


@pytest.fixture
def configure_loader_modules(pillar):
    return {inventory: {"__opts__": {"id": "ecmc-1"}, "__pillar__": pillar}}


def test_plan_follows_the_runbook_order(pillar):
    plan = inventory.plan(pillar=pillar)
    assert [h for pair in plan for h in pair["hosts"]] == RUNBOOK_ORDER
    assert [pair["service"] for pair in plan] == ["ecsc", "ecmc", "schedule", "schedule-res"]


def test_order_survives_a_merge_that_moves_a_service_first(pillar):
    services = pillar["inventory"]["services"]
    # What a command-line override of ecmc does to the mapping's order.
    pillar["inventory"]["services"] = {"ecmc": services.pop("ecmc"), **services}
    plan = inventory.plan(pillar=pillar)
    assert [h for pair in plan for h in pair["hosts"]] == RUNBOOK_ORDER
    assert inventory.host("ecmc-2", pillar=pillar)["pair"] == ["ecmc-1", "ecmc-2"]


def test_targeting(pillar):
    assert inventory.plan(services=["ecmc"], pillar=pillar) == [
        {"service": "ecmc", "hosts": ["ecmc-1", "ecmc-2"]}
    ]
    assert inventory.plan(hosts=["schedule-2", "ecsc-1"], pillar=pillar) == [
        {"service": "ecsc", "hosts": ["ecsc-1"]}, {"service": "schedule", "hosts": ["schedule-2"]}
    ]


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (None, {"services": ["nope"]}, "pillar services: unknown service 'nope'"),
        (None, {"services": "ecmc"}, "pillar services: must be a list"),
        (None, {"hosts": ["x-1"]}, "pillar hosts: unknown host 'x-1'"),
        (lambda p: p["release"]["sha256"].pop("ecmc"), {}, "pillar release:sha256:ecmc: missing"),
        (lambda p: p["release"]["sha256"].update(ecmc="xyz"), {},
         "pillar release:sha256:ecmc: 'xyz' is not a sha256"),
        (lambda p: p["release"].update(id="../x"), {}, "pillar release:id: '../x' must match"),
        (lambda p: p["inventory"]["services"]["ecsc"]["stop"].update(signal="BOOM"), {},
         "pillar inventory:services:ecsc:stop:signal: unknown signal 'BOOM'"),
        (lambda p: p["inventory"]["services"]["ecsc"]["stop"].update(timeout=-1), {},
         "pillar inventory:services:ecsc:stop:timeout: must be a positive number"),
        (lambda p: p["inventory"]["services"]["ecmc"].update(ready_timeout=0), {},
         "pillar inventory:services:ecmc:ready_timeout: must be a positive number"),
        (lambda p: p["inventory"]["services"]["ecmc"]["hosts"].update({"ecsc-1": {}}), {},
         "pillar inventory:services:ecmc:hosts:ecsc-1: duplicate host"),
        (lambda p: p["inventory"]["services"]["ecmc"].update(kind="jboss"), {},
         "pillar inventory:services:ecmc:kind: 'jboss' is not one of tomcat, standalone"),
        (lambda p: p["inventory"]["services"]["ecmc"].pop("catalina_base"), {},
         "pillar inventory:services:ecmc:catalina_base: is required for a tomcat service"),
        (lambda p: p["inventory"].update(order=["ecsc-1", "ghost-1"]), {},
         "pillar inventory:order: 'ghost-1' is not under"),
    ],
    ids=["unknown-service", "services-not-a-list", "unknown-host", "missing-sha256", "bad-sha256",
         "bad-release-id", "unknown-signal", "negative-timeout", "zero-ready-timeout",
         "duplicate-host", "unknown-kind", "no-catalina-base", "order-names-a-stranger"],
)
def test_bad_pillar_names_the_key(pillar, change, kwargs, message):
    if change:
        change(pillar)
    with pytest.raises(SaltInvocationError) as exc:
        inventory.plan(pillar=pillar, **kwargs)
    assert message in str(exc.value)


def test_rollback_plan_needs_no_archive(pillar):
    pillar["release"]["sha256"] = {}
    assert inventory.plan(archive=False, pillar=pillar)
    with pytest.raises(SaltInvocationError, match="release:sha256:ecsc: missing"):
        inventory.plan(pillar=pillar)


def test_host_resolves_production_paths(pillar):
    host = inventory.host(pillar=pillar)  # this minion: ecmc-1
    assert host["service"] == "ecmc" and host["address"] == "25.0.3.27"
    assert host["install_dir"] == "/home/ecmc"
    assert host["identity"] == {"catalina_base": "/home/apache-tomcat-7.0.67"}
    assert host["start"] == ["/home/apache-tomcat-7.0.67/bin/startup.sh"]
    assert host["start_cwd"] == "/home"
    assert host["health_url"] == "http://25.0.3.27:8080/ecmc/health"
    assert host["stop"] == {"signal": "KILL", "timeout": 30, "thread_dump": False}
    assert host["source"] == "salt://releases/20170220/ecmc.tar" and host["sha256"] == SHA
    assert {"log": "/home/ecmclog/ecmc.log", "pattern": r"ecmc started release=20170220"} in (
        host["ready"])
    assert host["checks"][0]["http"]["url"] == "http://25.0.3.27:8080/ecmc/customers"
    assert host["partner"] == ["ecmc-2"]


def test_host_under_a_lab_root(pillar):
    pillar["inventory"]["services"]["schedule"]["hosts"]["schedule-1"].update(
        address="127.0.3.26", root="/lab/hosts/schedule-1")
    host = inventory.host("schedule-1", pillar=pillar)
    assert host["install_dir"] == "/lab/hosts/schedule-1/home/schedule"
    assert host["identity"] == {"app_dir": "/lab/hosts/schedule-1/home/schedule"}
    assert host["start"] == ["sh", "startup.sh"] and host["start_cwd"] == host["install_dir"]
    assert host["logs"] == {"app": "/lab/hosts/schedule-1/home/schedulelog/schedule.log"}
    assert host["checks"][0]["log"]["path"] == host["logs"]["app"]
    assert host["keep"] == ["conf/host.properties"]


def test_ready_patterns_for_a_rollback_accept_any_release(pillar):
    host = inventory.host("ecsc-1", release="20161201", archive=False, ready_release=r"\S+",
                          pillar=pillar)
    assert {"log": "/home/ecsclog/ecsc.log", "pattern": r"ecsc started release=\S+"} in (
        host["ready"])


def test_host_not_in_the_inventory(pillar):
    with pytest.raises(SaltInvocationError, match="nobody-1: not in pillar inventory"):
        inventory.host("nobody-1", pillar=pillar)


def test_pillar_is_not_modified(pillar):
    before = copy.deepcopy(pillar)
    inventory.plan(pillar=pillar)
    inventory.host(pillar=pillar)
    assert pillar == before
