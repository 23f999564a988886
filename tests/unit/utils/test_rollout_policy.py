"""_utils/rollout_policy.py: a service's rollout policy from pillar, and the waves it gives."""

import pytest

from tests.conftest import repo_utils


@pytest.fixture
def policy():
    utils = repo_utils({"id": "unit-master"})
    return lambda conf, total=2: utils["rollout_policy.resolve"](conf, total, "svc")


@pytest.fixture
def waves():
    return repo_utils({"id": "unit-master"})["rollout_policy.waves"]


def test_no_keys_is_the_runbooks_pair_one_host_at_a_time(policy, waves):
    found, problems = policy({"kind": "tomcat"})
    assert problems == []
    assert found == {"batch": 1, "canary": 0, "soak": 0, "max_unavailable": 1, "max_fail": 1,
                     "drain": None, "undrain": None}
    assert waves(["a-1", "a-2"], found) == [["a-1"], ["a-2"]]


def test_twenty_hosts_canary_then_quarter_batches(policy, waves):
    found, problems = policy({"canary": 1, "soak": 60, "batch": "25%", "max_unavailable": "25%",
                              "max_fail": "10%"}, total=20)
    assert problems == []
    assert (found["batch"], found["max_unavailable"], found["max_fail"]) == (5, 5, 2)
    hosts = [f"h-{i}" for i in range(20)]
    got = waves(hosts, found)
    assert got[0] == ["h-0"] and [len(w) for w in got] == [1, 5, 5, 5, 4]
    assert [h for w in got for h in w] == hosts


def test_min_healthy_caps_how_many_go_down(policy):
    found, problems = policy({"batch": 2, "min_healthy": "50%"}, total=4)
    assert problems == [] and found["max_unavailable"] == 2
    _, problems = policy({"batch": 3, "min_healthy": 2}, total=4)
    assert problems == [("svc:batch", "3 hosts at once would exceed max_unavailable 2")]


@pytest.mark.parametrize("conf, key", [
    ({"batch": 0}, "svc:batch"),
    ({"batch": "0%"}, "svc:batch"),
    ({"batch": "150%"}, "svc:batch"),
    ({"batch": True}, "svc:batch"),
    ({"batch": "two"}, "svc:batch"),
    ({"max_fail": 0}, "svc:max_fail"),
    ({"soak": 30}, "svc:soak"),
    ({"canary": 1, "soak": -1}, "svc:soak"),
    ({"canary": 2}, "svc:canary"),
    ({"min_healthy": 2}, "svc:min_healthy"),
    ({"batch": 2, "max_unavailable": 1}, "svc:batch"),
    ({"drain": "lb off"}, "svc:drain"),
    ({"drain": {"cmd": "x", "http": "http://lb/"}}, "svc:drain"),
    ({"drain": {"http": "ftp://lb/"}}, "svc:drain:http"),
    ({"drain": {"cmd": "lb {nope}"}}, "svc:drain"),
    ({"drain": {"cmd": "lb", "timeout": 0}}, "svc:drain:timeout"),
    ({"undrain": {"cmd": "lb", "wait": 3}}, "svc:undrain:wait"),
])
def test_bad_values_are_named_by_key(policy, conf, key):
    _, problems = policy(conf)
    assert key in [k for k, _ in problems], problems


def test_hooks_are_split_and_filled_per_host(policy):
    utils = repo_utils({"id": "unit-master"})
    found, problems = policy({
        "drain": {"cmd": "python -m lab.balancer drain {host} --timeout 5", "timeout": 8},
        "undrain": {"http": "http://127.0.3.250:9000/up/{service}/{host}"},
    })
    assert problems == []
    drain = utils["rollout_policy.fill"](found["drain"], "ecsc-1", "127.0.3.17", "ecsc")
    assert drain == {"cmd": ["python", "-m", "lab.balancer", "drain", "ecsc-1", "--timeout", "5"],
                     "timeout": 8}
    undrain = utils["rollout_policy.fill"](found["undrain"], "ecsc-1", "127.0.3.17", "ecsc")
    assert undrain == {"http": "http://127.0.3.250:9000/up/ecsc/ecsc-1", "method": "POST",
                       "timeout": 10}
