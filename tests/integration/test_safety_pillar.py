"""Issue 8.1 on the lab: a bad pillar value never stops a service.

Each value is given on the command line as an operator would (`salt-run state.orchestrate
orch.upgrade pillar='{...}'`). The master refuses it while the orchestration renders, naming
the pillar key; a value only the host can find wrong (a start program that is not there) is
refused by the host's pre-flight, before any host is stopped. Either way the run exits non-zero
and not one JVM pid of the eight hosts changes. Nothing here changes the lab (it stays on the
release it was on).
"""

import json

import pytest

from tests.integration.conftest import run_cli, salt_json

pytestmark = pytest.mark.lab


def orchestrate(pillar, test=False):
    args = ["salt-run", "--out=json", "state.orchestrate", "orch.upgrade",
            "pillar=" + json.dumps(pillar)]
    if test:
        args.append("test=True")
    return run_cli(*args, timeout=600)


def all_pids(lab, hosts):
    return {host_id: lab.service_pids(host) for host_id, host in hosts.items()}


@pytest.fixture(scope="module")
def pids_before(lab, hosts):
    pids = all_pids(lab, hosts)
    assert all(pids.values()), pids  # every service runs before we try to break anything
    return pids


def services(**conf):
    return {"inventory": {"services": conf}}


@pytest.mark.parametrize(
    "pillar, message",
    [
        (services(schedule={"start": "'sh startup.sh"}),
         "pillar inventory:services:schedule:start: \"'sh startup.sh\" cannot be split"),
        (services(ecmc={"ready": [{"log": "app", "pattern": "ecmc started ("}]}),
         "pillar inventory:services:ecmc:ready:0:pattern: 'ecmc started (' is not a valid "
         "regular expression"),
        (services(ecmc={"fatal": [{"log": "app", "pattern": "[oops"}]}),
         "pillar inventory:services:ecmc:fatal:0:pattern: '[oops' is not a valid regular"),
        (services(schedule={"logs": {"app": "schedulelog/schedule.log"}}),
         "pillar inventory:services:schedule:logs:app: 'schedulelog/schedule.log' is not an "
         "absolute path"),
        (services(ecsc={"health_url": "file:///etc/passwd"}),
         "pillar inventory:services:ecsc:health_url: 'file:///etc/passwd' must be http:// or "
         "https://"),
        (services(ecmc={"install_dir": "/"}),
         "pillar inventory:services:ecmc:install_dir: '/' is a system directory"),
        (services(ecmc={"install_dir": "/home"}),
         "pillar inventory:services:ecmc:install_dir: '/home' is a system directory"),
        (services(ecmc={"install_dir": "/home/../etc"}),
         "pillar inventory:services:ecmc:install_dir: '/home/../etc' is not normalised"),
        (services(ecsc={"catalina_base": "home/apache-tomcat-7.0.67"}),
         "pillar inventory:services:ecsc:catalina_base: 'home/apache-tomcat-7.0.67' is not an "
         "absolute path"),
        (services(schedule={"settle": -1}),
         "pillar inventory:services:schedule:settle: must be a number of seconds >= 0"),
    ],
    ids=["start-unsplittable", "ready-regex", "fatal-regex", "relative-log", "file-url",
         "install-dir-root", "install-dir-home", "install-dir-dotdot", "relative-catalina-base",
         "negative-settle"],
)
def test_bad_value_is_refused_on_the_master(lab, hosts, pids_before, pillar, message):
    proc = orchestrate(pillar)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]
    assert all_pids(lab, hosts) == pids_before


def test_every_problem_is_named_in_one_run(lab, hosts, pids_before):
    proc = orchestrate(services(ecsc={"install_dir": "/home"},
                                schedule={"health_url": "http://127.0.0.1:8090/health"}))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "pillar inventory:services:ecsc:install_dir: '/home' is a system directory" in out
    assert ("pillar inventory:services:schedule:health_url: 'http://127.0.0.1:8090/health' must "
            "point at the host's own address 127.0.3.26") in out
    assert all_pids(lab, hosts) == pids_before


def test_a_value_only_the_host_can_refuse_stops_nothing(lab, hosts, pids_before):
    """The master cannot see that ecsc's start program is missing on the hosts: their
    pre-flight refuses it, so no host of the run (all eight) is stopped."""
    proc = orchestrate(services(ecsc={"start": ["/home/apache-tomcat-7.0.67/bin/nostart.sh"]}))
    assert proc.returncode != 0
    data = json.loads(proc.stdout)
    steps = {key.split("_|-")[1]: ret for ret in data.get("data", data).values()
             if isinstance(ret, dict) for key, ret in ret.items()}
    preflight = steps["preflight"]
    assert preflight["result"] is False
    for host_id in ("ecsc-1", "ecsc-2"):
        comments = [ret["comment"] for ret in preflight["changes"]["ret"][host_id].values()]
        assert any(c.startswith(f"{host_id}: pillar inventory:services:ecsc:start: program ")
                   and "nostart.sh' not found" in c for c in comments), comments
    for host_id in hosts:
        assert steps[f"upgrade-{host_id}"]["result"] is False, host_id
        assert "requisite failed" in steps[f"upgrade-{host_id}"]["comment"], host_id
    assert all_pids(lab, hosts) == pids_before


def test_a_start_string_is_split_like_shell_words(lab, hosts, pids_before):
    """`start: "sh startup.sh"` is two words (not one per character): the master accepts it
    (a dry run passes) and each schedule host's pre-flight finds `sh` and the script in the
    program dir."""
    pillar = services(schedule={"start": "sh startup.sh"})
    proc = orchestrate({"services": ["schedule"], **pillar}, test=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    ret = salt_json("-L", "schedule-1,schedule-2", "state.sls", "release.preflight",
                    "pillar=" + json.dumps(pillar), "test=True")
    for host_id in ("schedule-1", "schedule-2"):
        check = next(v for k, v in ret[host_id].items() if "preflight-pillar" in k)
        assert check["result"] is True, check
        script = lab.in_root(hosts[host_id], "/home/schedule/startup.sh")
        assert f"start script {script}" in check["comment"], check["comment"]
    assert all_pids(lab, hosts) == pids_before
