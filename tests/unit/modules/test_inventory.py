"""inventory: validation names the pillar key, the rollout order survives merges, and a host's
paths, commands and checks resolve under its root."""

import copy

import pytest
import yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO_ROOT, load_repo_module, repo_utils

inventory = load_repo_module("modules", "inventory")

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
    opts = {"id": "ecmc-1"}
    return {inventory: {"__opts__": opts, "__pillar__": pillar, "__utils__": repo_utils(opts)}}


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


def _pairs(plan):
    return [{"service": pair["service"], "hosts": pair["hosts"]} for pair in plan]


def test_targeting(pillar):
    assert _pairs(inventory.plan(services=["ecmc"], pillar=pillar)) == [
        {"service": "ecmc", "hosts": ["ecmc-1", "ecmc-2"]}
    ]
    assert _pairs(inventory.plan(hosts=["schedule-2", "ecsc-1"], pillar=pillar)) == [
        {"service": "ecsc", "hosts": ["ecsc-1"]}, {"service": "schedule", "hosts": ["schedule-2"]}
    ]


def test_the_runbooks_pairs_need_no_policy_keys_one_host_at_a_time(pillar):
    for pair in inventory.plan(pillar=pillar):
        assert pair["waves"] == [[host] for host in pair["hosts"]]
        assert (pair["policy"]["batch"], pair["policy"]["max_fail"]) == (1, 1)


def test_a_policy_groups_hosts_in_waves_and_bad_values_are_named(pillar):
    ecsc = pillar["inventory"]["services"]["ecsc"]
    ecsc["hosts"]["ecsc-3"] = {"address": "25.0.3.99"}
    pillar["inventory"]["order"] = pillar["inventory"]["order"] + ["ecsc-3"]
    ecsc.update({"batch": 2, "max_fail": 1})
    plan = inventory.plan(services=["ecsc"], pillar=pillar)
    assert plan[0]["waves"] == [["ecsc-1", "ecsc-2"], ["ecsc-3"]]
    ecsc.update({"batch": "150%", "canary": 5, "drain": {"cmd": "lb {oops}"}})
    with pytest.raises(SaltInvocationError) as err:
        inventory.plan(services=["ecsc"], pillar=pillar)
    for key in ("inventory:services:ecsc:batch", "inventory:services:ecsc:canary",
                "inventory:services:ecsc:drain"):
        assert key in str(err.value)


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
    # Graceful by default (issue 8.5): SIGTERM, a bounded wait, then SIGKILL.
    assert host["stop"] == {"signal": "TERM", "timeout": 60, "thread_dump": False}
    assert host["settle"] == 3 and host["fatal"] is None  # javaservice's default patterns
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


# --------------------------------------------------------------------------- issue 8.1
# Each of these was accepted by the code before issue 8 (the run failed only after the stop).


def svc(pillar, name):
    return pillar["inventory"]["services"][name]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: svc(p, "schedule").update(start="sh startup.sh", ready=[
            {"log": "app", "pattern": "("}]),
         "pillar inventory:services:schedule:ready:0:pattern: '(' is not a valid regular"),
        (lambda p: svc(p, "ecmc").update(fatal=[{"log": "app", "pattern": "[oops"}]),
         "pillar inventory:services:ecmc:fatal:0:pattern: '[oops' is not a valid regular"),
        (lambda p: svc(p, "ecmc").update(fatal=[{"log": "nolog", "pattern": "x"}]),
         "pillar inventory:services:ecmc:fatal:0:log: 'nolog' must name one of the logs"),
        (lambda p: svc(p, "ecmc")["logs"].update(app="ecmclog/ecmc.log"),
         "pillar inventory:services:ecmc:logs:app: 'ecmclog/ecmc.log' is not an absolute path"),
        (lambda p: svc(p, "ecmc").update(health_url="file:///etc/passwd"),
         "pillar inventory:services:ecmc:health_url: 'file:///etc/passwd' must be http:// or"),
        (lambda p: svc(p, "ecmc").update(health_url="http://10.9.9.9:8080/ecmc/health"),
         "pillar inventory:services:ecmc:health_url: 'http://10.9.9.9:8080/ecmc/health' must "
         "point at the host's own address 25.0.3.27"),
        (lambda p: svc(p, "ecmc").update(health_url="http://{address}:99999/ecmc/health"),
         "pillar inventory:services:ecmc:health_url: 'http://25.0.3.27:99999/ecmc/health' is "
         "not a URL"),
        (lambda p: svc(p, "ecmc").update(install_dir="/"),
         "pillar inventory:services:ecmc:install_dir: '/' is a system directory"),
        (lambda p: svc(p, "ecmc").update(install_dir="/home"),
         "pillar inventory:services:ecmc:install_dir: '/home' is a system directory"),
        (lambda p: svc(p, "ecmc").update(install_dir="/home/../etc"),
         "pillar inventory:services:ecmc:install_dir: '/home/../etc' is not normalised"),
        (lambda p: svc(p, "ecmc").update(install_dir="/usr/local"),
         "pillar inventory:services:ecmc:install_dir: '/usr/local' is a system directory"),
        (lambda p: svc(p, "ecmc").update(catalina_base="apache-tomcat-7.0.67"),
         "pillar inventory:services:ecmc:catalina_base: 'apache-tomcat-7.0.67' is not an absolute"),
        (lambda p: svc(p, "ecmc").update(start={"cmd": "x"}),
         "pillar inventory:services:ecmc:start: must be a list of words or a string"),
        (lambda p: svc(p, "ecmc").update(start="'unclosed"),
         "pillar inventory:services:ecmc:start: \"'unclosed\" cannot be split into words"),
        (lambda p: svc(p, "ecmc").update(start=["/home/../bin/startup.sh"]),
         "pillar inventory:services:ecmc:start: '/home/../bin/startup.sh' is not normalised"),
        (lambda p: svc(p, "ecmc").update(settle=-1),
         "pillar inventory:services:ecmc:settle: must be a number of seconds >= 0"),
        (lambda p: svc(p, "ecmc").update(settle="3"),
         "pillar inventory:services:ecmc:settle: must be a number of seconds >= 0"),
        (lambda p: svc(p, "ecmc").update(user="root; rm -rf /"),
         "pillar inventory:services:ecmc:user: 'root; rm -rf /' is not a user name or uid"),
        (lambda p: svc(p, "ecmc").update(main="lab.Main"),
         "pillar inventory:services:ecmc:main: is for standalone services"),
        (lambda p: svc(p, "schedule").update(main="not a class"),
         "pillar inventory:services:schedule:main: 'not a class' is neither a Java class name"),
        (lambda p: svc(p, "schedule").update(main="../other/app.jar"),
         "pillar inventory:services:schedule:main: '../other/app.jar' must be a normalised path"),
        (lambda p: svc(p, "ecmc").update(ready_timout=10),
         "pillar inventory:services:ecmc:ready_timout: unknown key"),
        (lambda p: svc(p, "ecmc")["hosts"]["ecmc-1"].update(root="lab/ecmc-1"),
         "pillar inventory:services:ecmc:hosts:ecmc-1:root: 'lab/ecmc-1' is not an absolute path"),
        (lambda p: svc(p, "ecmc")["hosts"]["ecmc-2"].update(address="25.0.3.40; x"),
         "pillar inventory:services:ecmc:hosts:ecmc-2:address: '25.0.3.40; x' is neither"),
        (lambda p: svc(p, "schedule").update(keep=["../../etc/passwd"]),
         "pillar inventory:services:schedule:keep: '../../etc/passwd' must be a glob inside"),
        (lambda p: p["release"]["checks"]["ecmc"][0]["http"].update(url="http://evil/x"),
         "pillar release:checks:ecmc:0:http:url: 'http://evil/x' must point at the host's own"),
        (lambda p: p["release"].update(keep_backups="three"),
         "pillar release:keep_backups: must be a whole number >= 1, got 'three'"),
        (lambda p: p["release"].update(keep_reports=0),
         "pillar release:keep_reports: must be a whole number >= 1, got 0"),
        (lambda p: p["release"]["checks"]["schedule"][0]["log"].update(pattern="(("),
         "pillar release:checks:schedule:0:log:pattern: '((' is not a valid regular"),
    ],
    ids=["ready-regex", "fatal-regex", "fatal-log-name", "relative-log", "file-url",
         "url-to-another-host", "url-bad-port", "install-dir-root", "install-dir-home", "install-dir-dotdot",
         "install-dir-usr-local", "relative-catalina-base", "start-mapping", "start-unsplittable",
         "start-program-dotdot", "negative-settle", "string-settle", "bad-user", "main-on-tomcat",
         "main-not-a-class", "main-jar-outside", "misspelt-key", "relative-root", "bad-address",
         "keep-outside", "check-url-elsewhere", "keep-backups", "keep-reports",
         "check-regex"],
)
def test_every_bad_value_is_refused_naming_the_key(pillar, change, message):
    change(pillar)
    with pytest.raises(SaltInvocationError) as exc:
        inventory.plan(pillar=pillar)
    assert message in str(exc.value)


def test_plan_names_every_problem_of_every_targeted_host_at_once(pillar):
    svc(pillar, "ecsc").update(install_dir="/home")
    svc(pillar, "schedule-res")["hosts"]["schedule-res-2"].update(address="")
    with pytest.raises(SaltInvocationError) as exc:
        inventory.plan(pillar=pillar)
    assert "inventory:services:ecsc:install_dir: '/home' is a system directory" in str(exc.value)
    assert "inventory:services:schedule-res:hosts:schedule-res-2:address: is required" in (
        str(exc.value))
    # An untargeted service's problem does not block the others.
    assert inventory.plan(services=["ecmc"], pillar=pillar)


def test_a_start_string_is_split_like_shell_words(pillar):
    svc(pillar, "schedule").update(start="sh 'start up.sh' --fast")
    host = inventory.host("schedule-1", pillar=pillar)
    assert host["start"] == ["sh", "start up.sh", "--fast"]


def test_host_refuses_what_plan_refuses(pillar):
    svc(pillar, "ecmc").update(health_url="file:///etc/passwd")
    with pytest.raises(SaltInvocationError, match="ecmc:health_url: 'file:///etc/passwd'"):
        inventory.host("ecmc-1", pillar=pillar)


def test_new_keys_reach_the_host(pillar):
    svc(pillar, "schedule").update(main="lib/schedule.jar", user="schedule", settle=0,
                                   fatal=[{"log": "app", "pattern": "FATAL {service}"}])
    svc(pillar, "ecmc").update(user="tomcat")
    sched = inventory.host("schedule-2", pillar=pillar)
    assert sched["identity"] == {"app_dir": "/home/schedule", "main": "lib/schedule.jar",
                                 "user": "schedule"}
    assert sched["settle"] == 0
    assert sched["fatal"] == [{"log": "/home/schedulelog/schedule.log", "pattern": "FATAL schedule"}]
    assert inventory.host("ecmc-1", pillar=pillar)["identity"] == {
        "catalina_base": "/home/apache-tomcat-7.0.67", "user": "tomcat"}


def test_stop_signal_by_number_is_named(pillar):
    svc(pillar, "ecmc")["stop"].update(signal=9)
    assert inventory.host("ecmc-1", pillar=pillar)["stop"]["signal"] == "KILL"


# --------------------------------------------------------------------------- check_host


@pytest.fixture
def lab_host(pillar, tmp_path):
    """schedule-1 under a root in tmp_path, laid out as the runbook's host, its address local."""
    root = tmp_path / "schedule-1"
    (root / "home" / "schedule").mkdir(parents=True)
    (root / "home" / "schedule" / "startup.sh").write_text("exec java lab.Main\n")
    (root / "home" / "schedulelog").mkdir()
    svc(pillar, "schedule")["hosts"]["schedule-1"].update(address="127.0.0.1", root=str(root))
    svc(pillar, "schedule")["health_url"] = "http://{address}:8090/health"
    return root


def test_check_host_passes_on_a_good_host(pillar, lab_host):
    ret = inventory.check_host("schedule-1", pillar=pillar)
    assert ret["id"] == "schedule-1" and ret["service"] == "schedule"
    assert f"start script {lab_host}/home/schedule/startup.sh" in ret["checked"]
    assert ret["host"]["install_dir"] == f"{lab_host}/home/schedule"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, root: (root / "home" / "schedule" / "startup.sh").unlink(),
         "pillar inventory:services:schedule:start: script 'startup.sh' not found in"),
        (lambda p, root: svc(p, "schedule").update(start=["/opt/app/bin/missing.sh"]),
         "/opt/app/bin/missing.sh' not found on schedule-1"),
        (lambda p, root: svc(p, "schedule").update(start=["./startup.sh"]),
         "pillar inventory:services:schedule:start: program "),
        (lambda p, root: (root / "home" / "schedulelog").rmdir(),
         "pillar inventory:services:schedule:logs:app: "),
        (lambda p, root: svc(p, "schedule").update(user="no-such-user-here"),
         "pillar inventory:services:schedule:user: no user 'no-such-user-here' on schedule-1"),
        (lambda p, root: svc(p, "schedule").update(user=64999),
         "pillar inventory:services:schedule:user: no user 64999 on schedule-1"),
        (lambda p, root: svc(p, "schedule")["hosts"]["schedule-1"].update(address="192.0.2.1"),
         "pillar inventory:services:schedule:hosts:schedule-1:address: 192.0.2.1 is not an "
         "address of schedule-1"),
        (lambda p, root: svc(p, "schedule").update(main="lib/missing.jar"),
         "pillar inventory:services:schedule:main: "),
        (lambda p, root: svc(p, "schedule").update(install_dir="/home/gone"),
         "pillar inventory:services:schedule:install_dir: program dir "),
    ],
    ids=["script-missing", "program-missing", "program-not-executable", "log-dir-missing",
         "no-user", "no-uid", "address-not-local", "main-jar-missing", "program-dir-missing"],
)
def test_check_host_finds_what_only_the_host_knows(pillar, lab_host, change, message):
    inventory.plan(pillar=pillar)  # the master finds nothing wrong...
    change(pillar, lab_host)
    inventory.plan(pillar=pillar)
    with pytest.raises(CommandExecutionError) as exc:  # ...the host does
        inventory.check_host("schedule-1", pillar=pillar)
    assert str(exc.value).startswith("schedule-1: ")
    assert message in str(exc.value)


def test_check_host_refuses_a_program_dir_linked_to_a_system_dir(pillar, lab_host):
    target = lab_host / "home" / "schedule"
    target.rename(lab_host / "home" / "schedule.real")
    target.symlink_to("/usr/lib")
    with pytest.raises(CommandExecutionError,
                       match="install_dir: program dir .* resolves to the system directory /usr/lib"):
        inventory.check_host("schedule-1", pillar=pillar)


def test_pillar_example_is_a_valid_inventory():
    example = yaml.safe_load((REPO_ROOT / "pillar.example").read_text())
    plan = inventory.plan(pillar=example)
    assert _pairs(plan) == [{"service": "ecsc", "hosts": ["ecsc-1", "ecsc-2"]}]
    host = inventory.host("ecsc-1", pillar=example)
    assert host["stop"]["signal"] == "TERM" and host["settle"] == 3


def test_current_says_on_release_only_when_record_jvm_and_health_agree(tmp_path, pillar):
    """inventory.current (orch.upgrade's survey): on the release only when the record names
    it intact from the pillar's archive, the JVM runs it and health answers 200; and the
    sha256 of each synced module."""
    import hashlib
    from unittest.mock import MagicMock, patch

    rel = pillar["release"]["id"]
    ext = tmp_path / "extmods"
    (ext / "modules").mkdir(parents=True)
    (ext / "modules" / "release.py").write_text("x = 1\n")
    (ext / "grains").mkdir()
    (ext / "grains" / "other.py").write_text("")  # not a type the repo ships
    status = {"release": rel, "intact": True, "archive_sha256": SHA}
    jvm = {"running": True, "release": rel, "release_note": "deployed ..."}
    salt_funcs = {"release.status": MagicMock(side_effect=lambda t: dict(status)),
                  "javaservice.status": MagicMock(side_effect=lambda *a, **k: dict(jvm))}
    answer = {"status": 200}
    get = MagicMock(side_effect=lambda *a, **k: dict(answer))
    checked = MagicMock(side_effect=lambda *a, **k: {"host": inventory.host(*a, **k)})
    with patch.dict(inventory.__opts__, {"extension_modules": str(ext)}), \
            patch.dict(inventory.__utils__, {"rollout_http.get": get}), \
            patch.object(inventory, "check_host", checked), \
            patch.object(inventory, "__salt__", salt_funcs, create=True):
        now = inventory.current(pillar=pillar)
        assert now["on_release"] is True and now["why"] is None and now["id"] == "ecmc-1"
        assert now["code"] == {"modules/release.py": hashlib.sha256(b"x = 1\n").hexdigest()}
        for change, why in (
            (lambda: status.update(release="20161201"), "is on 20161201"),
            (lambda: status.update(intact=False), "differs from its deployed record"),
            (lambda: status.update(archive_sha256="cd" * 32), "came from another archive"),
            (lambda: jvm.update(running=False), "is not running"),
            (lambda: jvm.update(release=None, release_note="the JVM started before"),
             "does not run"),
            (lambda: answer.update(status=503), "answers 503"),
        ):
            saved = (dict(status), dict(jvm), dict(answer))
            change()
            now = inventory.current(pillar=pillar)
            assert now["on_release"] is False and why in now["why"], (why, now)
            status.update(saved[0]), jvm.update(saved[1]), answer.update(saved[2])
        # A pillar entry that does not hold on the host (its pre-flight would refuse it):
        # never on the release, so the run pre-flights the host and stops there.
        checked.side_effect = CommandExecutionError(
            "ecmc-1: pillar inventory:services:ecmc:start: program 'x' not found")
        now = inventory.current(pillar=pillar)
        assert now["on_release"] is False and "program 'x' not found" in now["why"]
        assert now["code"]  # the modules are still reported


def _current_env(tmp_path, pillar, record, answer, jvm=None):
    """Patches for inventory.current: release.read_record/status, javaservice.status,
    release.preflight and the health GET as MagicMocks (the mocks returned too)."""
    from unittest.mock import MagicMock, patch

    rel = pillar["release"]["id"]
    funcs = {
        "release.read_record": MagicMock(side_effect=lambda t: dict(record)),
        "release.status": MagicMock(side_effect=lambda t: {**record, "intact": True}),
        "javaservice.status": MagicMock(side_effect=lambda *a, **k: dict(
            jvm or {"running": True, "release": rel, "release_note": ""})),
        "release.preflight": MagicMock(return_value={"comment": "salt://x verified"}),
    }
    get = MagicMock(side_effect=lambda *a, **k: dict(answer))
    checked = MagicMock(side_effect=lambda *a, **k: {"host": inventory.host(*a, **k)})
    funcs["check_host"] = checked  # not a __salt__ function: patched on the module below
    patches = (patch.object(inventory, "check_host", checked),
               patch.dict(inventory.__opts__, {"extension_modules": str(tmp_path / "none")}),
               patch.dict(inventory.__utils__, {"rollout_http.get": get}),
               patch.object(inventory, "__salt__", funcs, create=True))
    return patches, funcs


def test_current_quick_reads_the_record_and_health_only(tmp_path, pillar):
    """Between waves (rollout.gate): no tree hashed (release.status), no JVM scan, no module
    hashes; on the release when the record names it from the pillar's archive and health
    answers 200."""
    import contextlib

    rel = pillar["release"]["id"]
    record = {"release": rel, "archive_sha256": SHA}
    answer = {"status": 200}
    patches, funcs = _current_env(tmp_path, pillar, record, answer)
    with contextlib.ExitStack() as stack:
        for item in patches:
            stack.enter_context(item)
        now = inventory.current(pillar=pillar, quick=True)
        assert now["on_release"] is True and now["healthy"] is True and now["code"] is None
        answer["status"] = 503
        now = inventory.current(pillar=pillar, quick=True)
        assert (now["on_release"], now["healthy"]) == (False, False) and "503" in now["why"]
        answer["status"] = 200
        record["release"] = "20161201"  # failed and rolled back
        now = inventory.current(pillar=pillar, quick=True)
        assert now["on_release"] is False and now["healthy"] is True
        assert "is on 20161201" in now["why"]
        record.update(release=rel, archive_sha256="cd" * 32)
        assert "another archive" in inventory.current(pillar=pillar, quick=True)["why"]
    funcs["release.status"].assert_not_called()
    funcs["javaservice.status"].assert_not_called()
    funcs["release.preflight"].assert_not_called()


def test_current_with_preflight_checks_the_archive_of_a_host_with_work(tmp_path, pillar):
    """The survey's pre-flight (orch.upgrade then needs no pre-flight job): a host not on the
    release gets the archive check, with its result; a host on the release none; a host
    whose entry does not hold fails it."""
    import contextlib

    rel = pillar["release"]["id"]
    record = {"release": "20161201", "archive_sha256": None}
    patches, funcs = _current_env(tmp_path, pillar, record, {"status": 200})
    with contextlib.ExitStack() as stack:
        for item in patches:
            stack.enter_context(item)
        now = inventory.current(pillar=pillar, preflight=True)
        assert now["preflight"] == {"result": True, "comment": "ecmc-1: salt://x verified"}
        host = inventory.host(pillar=pillar)
        funcs["release.preflight"].assert_called_once_with(
            host["install_dir"], host["source"], SHA)
        funcs["release.preflight"].side_effect = CommandExecutionError(
            "release on minion ecmc-1: release archive ...: sha256 mismatch")
        now = inventory.current(pillar=pillar, preflight=True)
        assert now["preflight"]["result"] is False and "sha256 mismatch" in now["preflight"]["comment"]
        # Without preflight (and on the release) no archive check.
        assert "preflight" not in inventory.current(pillar=pillar)
        record.update(release=rel, archive_sha256=SHA)
        calls = funcs["release.preflight"].call_count
        now = inventory.current(pillar=pillar, preflight=True)
        assert now["on_release"] is True and "preflight" not in now
        assert funcs["release.preflight"].call_count == calls
        # A pillar entry the host refuses: the pre-flight fails with it.
        funcs["check_host"].side_effect = CommandExecutionError(
            "ecmc-1: pillar inventory:services:ecmc:start: program 'x' not found")
        now = inventory.current(pillar=pillar, preflight=True)
        assert now["preflight"] == {"result": False, "comment": now["why"]}
        assert "program 'x' not found" in now["why"]


def test_policy_is_resolved_once_per_service_and_host(pillar):
    from unittest.mock import patch

    calls = []
    resolve = inventory.__utils__["rollout_policy.resolve"]

    def counting(conf, total, key):
        calls.append(key)
        return resolve(conf, total, key)

    with patch.dict(inventory.__utils__, {"rollout_policy.resolve": counting}):
        plan = inventory.plan(pillar=pillar)
        assert len(calls) == len(plan) == 4
        calls.clear()
        host = inventory.host("ecsc-1", pillar=pillar)
    assert calls == ["inventory:services:ecsc"]
    assert host["drain"] is None and plan[0]["policy"]["batch"] == 1
