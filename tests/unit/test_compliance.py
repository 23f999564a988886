"""
Unit tests of the compliance check: each control's pass/fail/skip logic (minion side, with a
mocked ``__salt__``), and the master side's lock skipping, aggregation, table rendering,
report files and event.
"""

import importlib.util
import json
import os
from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO_ROOT


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compliance = _load("compliance_module", REPO_ROOT / "_modules" / "compliance.py")
compliance_state = _load("compliance_state", REPO_ROOT / "_states" / "compliance.py")

MINION = "ecsc-1"
RELEASE = "20170220"
INSTALL_DIR = "/home/ecsc"
IDS = [cid for cid, _ in compliance.CONTROLS]


def host_conf(**overrides):
    conf = {
        "id": MINION,
        "service": "ecsc",
        "install_dir": INSTALL_DIR,
        "identity": {"catalina_base": "/home/apache-tomcat-7.0.67"},
        "health_url": "http://25.0.3.17:8080/ecsc/health",
        "release": RELEASE,
        "keep_backups": 3,
    }
    conf.update(overrides)
    return conf


def healthy_salt():
    """__salt__ of a host that is exactly what release 20170220 made it."""
    return {
        "inventory.host": MagicMock(return_value=host_conf()),
        "javaservice.status": MagicMock(
            return_value={"name": "ecsc", "running": True, "pids": [4242], "started": "t"}
        ),
        "probe.http": MagicMock(
            return_value={"url": "u", "status": 200,
                          "body": json.dumps({"service": "ecsc", "release": RELEASE})}
        ),
        "release.deployed": MagicMock(
            return_value={
                "target": INSTALL_DIR, "release": RELEASE, "archive_sha256": "ab" * 32,
                "deployed": "2017-02-20T10:00:00+00:00", "intact": True,
                "modified": [], "added": [], "removed": [], "local_modified": [],
            }
        ),
        "backup.list": MagicMock(
            return_value=[{"tag": RELEASE, "path": f"{INSTALL_DIR}_{RELEASE}"},
                          {"tag": "20161201", "path": f"{INSTALL_DIR}_20161201"}]
        ),
        "backup.verify": MagicMock(
            return_value={"ok": True, "modified": [], "missing": [], "added": []}
        ),
        "release.leftovers": MagicMock(return_value=[]),
    }


@pytest.fixture
def salt_funcs():
    return healthy_salt()


@pytest.fixture
def configure_loader_modules(salt_funcs, tmp_path):
    opts = {
        "id": MINION,
        "test": False,
        "cachedir": str(tmp_path / "cache"),
        "sock_dir": str(tmp_path / "sock"),
        "conf_file": str(tmp_path / "master"),
    }
    return {
        compliance: {"__opts__": opts, "__salt__": salt_funcs},
        compliance_state: {
            "__opts__": opts,
            "__salt__": {
                "rolloutlock.holder": MagicMock(return_value=None),
                "compliance.controls": compliance.controls,
                "inventory.host": MagicMock(
                    side_effect=lambda minion_id=None, **_: host_conf(
                        id=minion_id, service=minion_id.rsplit("-", 1)[0]
                    )
                ),
            },
        },
    }


def run_check():
    report = compliance.check()
    assert [c["id"] for c in report["controls"]] == IDS
    return report, {c["id"]: c for c in report["controls"]}


# --------------------------------------------------------------------------- minion side


def test_controls_ids_are_stable():
    assert [c["id"] for c in compliance.controls()] == [
        "jvm-single", "health", "release", "tree-intact", "backup", "retention", "no-leftovers"
    ]
    # the master renders the module's controls in the same order
    assert compliance_state._controls() == list(compliance.CONTROLS)


def test_all_pass(salt_funcs):
    report, ctl = run_check()
    assert report["status"] == "passed"
    assert report["host"] == MINION and report["service"] == "ecsc"
    assert report["release_expected"] == RELEASE
    assert all(c["status"] == "passed" for c in report["controls"])
    assert set(report) == {"host", "service", "release_expected", "status", "controls", "seconds"}
    for control in report["controls"]:
        assert set(control) == {"id", "title", "status", "expected", "found", "evidence"}
    assert ctl["jvm-single"]["found"] == "1 JVM: pid 4242"
    salt_funcs["javaservice.status"].assert_called_once_with(
        "ecsc", catalina_base="/home/apache-tomcat-7.0.67"
    )
    salt_funcs["inventory.host"].assert_called_once_with(archive=False, pillar=None)
    # release and tree-intact share one (hashing) release.deployed call
    salt_funcs["release.deployed"].assert_called_once_with(INSTALL_DIR)
    salt_funcs["backup.list"].assert_called_once_with(INSTALL_DIR)
    salt_funcs["backup.verify"].assert_called_once_with(INSTALL_DIR, RELEASE)
    assert salt_funcs["probe.http"].call_args.args[0] == "http://25.0.3.17:8080/ecsc/health"


def test_pillar_is_passed_to_inventory(salt_funcs):
    pillar = {"inventory": {}, "release": {"id": RELEASE}}
    compliance.check(pillar=pillar)
    salt_funcs["inventory.host"].assert_called_once_with(archive=False, pillar=pillar)


def test_jvm_not_running(salt_funcs):
    salt_funcs["javaservice.status"].return_value = {"running": False, "pids": []}
    report, ctl = run_check()
    assert ctl["jvm-single"]["status"] == "failed"
    assert ctl["jvm-single"]["found"] == "not running"
    assert report["status"] == "failed"


def test_jvm_twice_names_the_pids(salt_funcs):
    salt_funcs["javaservice.status"].return_value = {"running": True, "pids": [11, 12]}
    _, ctl = run_check()
    assert ctl["jvm-single"]["status"] == "failed"
    assert "11" in ctl["jvm-single"]["found"] and "12" in ctl["jvm-single"]["found"]
    assert ctl["jvm-single"]["evidence"]["pids"] == [11, 12]


def test_jvm_without_javaservice_module_fails_clearly(salt_funcs):
    del salt_funcs["javaservice.status"]
    report, ctl = run_check()
    assert ctl["jvm-single"]["status"] == "failed"
    assert "javaservice.status is not available" in ctl["jvm-single"]["found"]
    # the other controls still ran
    assert all(ctl[cid]["status"] == "passed" for cid in IDS if cid != "jvm-single")
    assert report["status"] == "failed"


def test_health_wrong_release(salt_funcs):
    salt_funcs["probe.http"].return_value = {"status": 200, "body": '{"release":"20161201"}'}
    _, ctl = run_check()
    assert ctl["health"]["status"] == "failed"
    assert ctl["health"]["found"] == "200 with release 20161201"
    assert RELEASE in ctl["health"]["expected"]


def test_health_not_200(salt_funcs):
    salt_funcs["probe.http"].side_effect = CommandExecutionError(
        "ecsc-1: GET http://25.0.3.17:8080/ecsc/health answered 503, expected 200"
    )
    _, ctl = run_check()
    assert ctl["health"]["status"] == "failed"
    assert "answered 503" in ctl["health"]["found"]
    assert "answered 503" in ctl["health"]["evidence"]


def test_health_body_not_json(salt_funcs):
    salt_funcs["probe.http"].return_value = {"status": 200, "body": "<html>ok</html>"}
    _, ctl = run_check()
    assert ctl["health"]["status"] == "failed"
    assert "not a JSON object" in ctl["health"]["found"]


def test_health_probe_is_bounded_and_its_failure_named(salt_funcs):
    salt_funcs["probe.http"].side_effect = CommandExecutionError(
        "ecsc-1: GET http://127.0.3.17:8080/ecsc/health answered None, expected 200"
    )
    with patch.object(compliance, "HEALTH_TIMEOUT", 0.3):
        _, ctl = run_check()
    salt_funcs["probe.http"].assert_called_once()
    assert salt_funcs["probe.http"].call_args.kwargs["timeout"] == 0.3
    assert ctl["health"]["status"] == "failed"
    assert "answered None, expected 200" in ctl["health"]["found"]
    assert ctl["release"]["status"] == "passed"


def test_release_deployed_by_hand(salt_funcs):
    salt_funcs["release.deployed"].return_value = {
        "target": INSTALL_DIR, "release": None, "intact": None,
        "modified": [], "added": [], "removed": [], "local_modified": [],
    }
    report, ctl = run_check()
    assert ctl["release"]["status"] == "failed"
    assert ctl["release"]["found"] == "no deployed record: deployed by hand?"
    assert ctl["tree-intact"]["status"] == "skipped"
    assert report["status"] == "failed"


def test_release_other(salt_funcs):
    salt_funcs["release.deployed"].return_value.update(release="20161201")
    _, ctl = run_check()
    assert ctl["release"]["status"] == "failed"
    assert ctl["release"]["expected"] == RELEASE
    assert ctl["release"]["found"] == "20161201"


def test_tree_drift_is_named(salt_funcs):
    salt_funcs["release.deployed"].return_value.update(
        intact=False,
        modified=["WEB-INF/web.xml"],
        added=["WEB-INF/lib/debug.jar"],
        removed=["index.html"],
    )
    _, ctl = run_check()
    tree = ctl["tree-intact"]
    assert tree["status"] == "failed"
    for path in ("WEB-INF/web.xml", "WEB-INF/lib/debug.jar", "index.html"):
        assert path in tree["found"]
    assert tree["evidence"]["modified"] == ["WEB-INF/web.xml"]
    assert tree["evidence"]["added"] == ["WEB-INF/lib/debug.jar"]
    assert tree["evidence"]["removed"] == ["index.html"]
    assert ctl["release"]["status"] == "passed"


def test_tree_long_lists_are_cut_in_found_not_in_evidence(salt_funcs):
    added = [f"junk/{i:02d}" for i in range(25)]
    salt_funcs["release.deployed"].return_value.update(intact=False, added=added)
    _, ctl = run_check()
    assert "(+15 more)" in ctl["tree-intact"]["found"]
    assert ctl["tree-intact"]["evidence"]["added"] == added


def test_host_local_change_is_not_drift(salt_funcs):
    salt_funcs["release.deployed"].return_value.update(local_modified=["conf/host.properties"])
    _, ctl = run_check()
    assert ctl["tree-intact"]["status"] == "passed"
    assert "conf/host.properties" in ctl["tree-intact"]["found"]


def test_backup_missing(salt_funcs):
    salt_funcs["backup.list"].return_value = [{"tag": "20161201"}]
    _, ctl = run_check()
    assert ctl["backup"]["status"] == "failed"
    assert ctl["backup"]["found"] == f"no backup {INSTALL_DIR}_{RELEASE}"
    salt_funcs["backup.verify"].assert_not_called()


def test_backup_hand_made_copy(salt_funcs, tmp_path):
    install_dir = tmp_path / "ecsc"
    (tmp_path / f"ecsc_{RELEASE}").mkdir()  # cp -R without manifest
    salt_funcs["inventory.host"].return_value = host_conf(install_dir=str(install_dir))
    salt_funcs["backup.list"].return_value = []
    _, ctl = run_check()
    assert ctl["backup"]["status"] == "failed"
    assert "hand-made" in ctl["backup"]["found"]


def test_backup_does_not_verify(salt_funcs):
    salt_funcs["backup.verify"].return_value = {
        "ok": False, "modified": ["WEB-INF/lib/ecsc.jar"], "missing": ["index.html"], "added": []
    }
    _, ctl = run_check()
    assert ctl["backup"]["status"] == "failed"
    assert "WEB-INF/lib/ecsc.jar" in ctl["backup"]["found"]
    assert "index.html" in ctl["backup"]["found"]


def test_backup_verify_raises(salt_funcs):
    salt_funcs["backup.verify"].side_effect = CommandExecutionError("manifest unreadable")
    report, ctl = run_check()
    assert ctl["backup"]["status"] == "failed"
    assert ctl["backup"]["found"] == "manifest unreadable"
    assert ctl["backup"]["evidence"] == "manifest unreadable"
    assert report["status"] == "failed"


@pytest.mark.parametrize("count,keep,status", [(3, 3, "passed"), (4, 3, "failed"), (4, 5, "passed")])
def test_retention(salt_funcs, count, keep, status):
    tags = [RELEASE] + [f"2016120{i}" for i in range(1, count)]
    salt_funcs["backup.list"].return_value = [{"tag": t} for t in tags]
    salt_funcs["inventory.host"].return_value = host_conf(keep_backups=keep)
    _, ctl = run_check()
    assert ctl["retention"]["status"] == status
    assert ctl["retention"]["found"].startswith(f"{count} backups")
    assert ctl["retention"]["expected"] == f"at most {keep} backups"


def test_leftovers_named(salt_funcs):
    salt_funcs["release.leftovers"].return_value = ["/home/.ecsc.staging", "/home/ecsc.tar"]
    _, ctl = run_check()
    assert ctl["no-leftovers"]["status"] == "failed"
    assert "/home/.ecsc.staging" in ctl["no-leftovers"]["found"]
    assert "/home/ecsc.tar" in ctl["no-leftovers"]["found"]


def test_a_raising_control_does_not_crash_the_check(salt_funcs):
    salt_funcs["release.deployed"].side_effect = CommandExecutionError("cannot read record")
    salt_funcs["release.leftovers"].side_effect = RuntimeError("boom")
    report, ctl = run_check()
    for cid in ("release", "tree-intact", "no-leftovers"):
        assert ctl[cid]["status"] == "failed"
    assert ctl["release"]["evidence"] == "cannot read record"
    assert ctl["no-leftovers"]["found"] == "boom"
    assert ctl["jvm-single"]["status"] == "passed"
    assert report["status"] == "failed"
    salt_funcs["release.deployed"].assert_called_once()


def test_unknown_host(salt_funcs):
    salt_funcs["inventory.host"].side_effect = SaltInvocationError(
        "nohost: not in pillar inventory:services:*:hosts (no service runs here)"
    )
    report = compliance.check()
    assert report["status"] == "failed"
    assert [c["id"] for c in report["controls"]] == ["inventory"]
    assert "not in pillar" in report["controls"][0]["found"]


def test_all_skipped_is_skipped():
    controls = [{"status": "skipped"}] * 2
    assert compliance._overall(controls) == "skipped"
    assert compliance._overall(controls + [{"status": "passed"}]) == "passed"
    assert compliance._overall(controls + [{"status": "failed"}]) == "failed"


# --------------------------------------------------------------------------- master side

HOSTS = ["ecsc-1", "ecsc-2", "ecmc-1"]


def minion_report(host, failed=()):
    controls = [
        {"id": cid, "title": title, "status": "failed" if cid in failed else "passed",
         "expected": f"want-{cid}", "found": f"got-{cid}" if cid in failed else "ok",
         "evidence": None}
        for cid, title in compliance.CONTROLS
    ]
    return {"host": host, "service": host.rsplit("-", 1)[0], "release_expected": RELEASE,
            "status": "failed" if failed else "passed", "controls": controls, "seconds": 0.1}


class FakeClient:
    def __init__(self, returns):
        self.returns = returns
        self.calls = []

    def cmd(self, tgt, fun, **kwargs):
        self.calls.append((tgt, fun, kwargs))
        return {host: self.returns[host] for host in tgt if host in self.returns}

    def destroy(self):
        pass


@pytest.fixture
def client():
    return FakeClient({h: {"ret": minion_report(h), "retcode": 0} for h in HOSTS})


@pytest.fixture
def fired():
    events = []
    with patch.object(compliance_state, "_fire", side_effect=events.append):
        yield events


@pytest.fixture
def run_report(client, fired, tmp_path):
    def _run(**kwargs):
        with patch.object(compliance_state, "_local_client", return_value=client):
            kwargs.setdefault("tgt", HOSTS)
            kwargs.setdefault("tgt_type", "list")
            return compliance_state.report("compliance", **kwargs)

    return _run


def report_dir(tmp_path):
    return tmp_path / "cache" / "compliance"


def test_report_all_passed(run_report, client, fired, tmp_path):
    ret = run_report(pillar={"release": {"id": RELEASE}}, timeout=7)
    assert ret["result"] is True
    assert ret["changes"] == {}
    assert client.calls == [
        (HOSTS, "compliance.check",
         {"kwarg": {"pillar": {"release": {"id": RELEASE}}}, "tgt_type": "list",
          "timeout": 7, "full_return": True})
    ]
    latest = json.loads((report_dir(tmp_path) / "latest.json").read_text())
    summary = latest["summary"]
    assert summary["status"] == "passed"
    assert (summary["hosts"], summary["passed"], summary["failed"], summary["skipped"]) == (3, 3, 0, 0)
    assert summary["failed_controls"] == []
    assert summary["report"] == str(report_dir(tmp_path) / "latest.json")
    assert [r["host"] for r in latest["reports"]] == HOSTS
    assert fired == [summary]
    assert "PASSED" in ret["comment"]


def test_report_failed_control(run_report, client, fired, tmp_path):
    client.returns["ecsc-2"]["ret"] = minion_report("ecsc-2", failed=("release", "tree-intact"))
    ret = run_report()
    assert ret["result"] is False
    assert ret["changes"] == {}
    summary = fired[0]
    assert summary["status"] == "failed"
    assert (summary["passed"], summary["failed"]) == (2, 1)
    assert summary["failed_controls"] == [
        {"host": "ecsc-2", "control": "release", "found": "got-release"},
        {"host": "ecsc-2", "control": "tree-intact", "found": "got-tree-intact"},
    ]
    text = (report_dir(tmp_path) / "latest.txt").read_text()
    assert "ecsc-2 release: expected want-release; found got-release" in text
    assert text in ret["comment"]


def test_minion_that_does_not_return_is_a_failed_host(run_report, client, fired):
    del client.returns["ecmc-1"]
    client.returns["ecsc-2"] = {"ret": "Minion did not return. [No response]\n...",
                                "retcode": 1, "out": "no_return"}
    ret = run_report(timeout=9)
    assert ret["result"] is False
    failed = {f["host"]: f for f in fired[0]["failed_controls"]}
    assert failed["ecmc-1"]["control"] == "minion"
    assert failed["ecmc-1"]["found"] == "did not return within 9s"
    assert failed["ecsc-2"]["found"].startswith("did not return within 9s")
    assert fired[0]["failed"] == 2


def test_minion_without_the_module_gets_a_sync_hint(run_report, client, fired):
    client.returns["ecsc-1"] = {"ret": "'compliance.check' is not available.", "retcode": 254}
    run_report()
    found = fired[0]["failed_controls"][0]["found"]
    assert "is not available" in found and "saltutil.sync_all" in found


def test_lock_skips_the_hosts_it_names(run_report, client, fired, tmp_path):
    holder = {"kind": "upgrade", "pid": 99, "started": "2017-02-20T10:00:00+00:00",
              "detail": "hosts ecsc-1, ecsc-2"}
    compliance_state.__salt__["rolloutlock.holder"].return_value = holder
    ret = run_report()
    assert client.calls[0][0] == ["ecmc-1"]
    summary = fired[0]
    assert (summary["passed"], summary["skipped"], summary["failed"]) == (1, 2, 0)
    assert summary["status"] == "passed"
    assert ret["result"] is True
    latest = json.loads((report_dir(tmp_path) / "latest.json").read_text())
    skipped = [r for r in latest["reports"] if r["status"] == "skipped"]
    assert [r["host"] for r in skipped] == ["ecsc-1", "ecsc-2"]
    assert skipped[0]["service"] == "ecsc"
    assert all(c["status"] == "skipped" for c in skipped[0]["controls"])
    assert skipped[0]["controls"][0]["found"].startswith("upgrade in progress")
    assert "SKIPPED ecsc-1, ecsc-2: upgrade in progress" in ret["comment"]


def test_lock_without_hosts_skips_everything(run_report, client, fired):
    compliance_state.__salt__["rolloutlock.holder"].return_value = {"kind": "rollback", "pid": 5}
    ret = run_report()
    assert client.calls == []
    assert fired[0]["status"] == "skipped"
    assert fired[0]["skipped"] == 3
    assert ret["result"] is True


@pytest.mark.parametrize(
    "detail,expected",
    [
        ("hosts ecsc-1, ecmc-1", {"ecsc-1", "ecmc-1"}),
        ("hosts ecsc-2", {"ecsc-2"}),
        ("hosts other-1", set()),
        (["ecsc-1"], {"ecsc-1"}),
        (None, set(HOSTS)),
        ("something else", set(HOSTS)),
    ],
)
def test_locked_hosts(detail, expected):
    assert compliance_state._locked_hosts({"kind": "upgrade", "detail": detail}, HOSTS) == expected
    assert compliance_state._locked_hosts(None, HOSTS) == set()


def test_test_mode_checks_but_writes_and_fires_nothing(run_report, client, fired, tmp_path):
    client.returns["ecsc-1"]["ret"] = minion_report("ecsc-1", failed=("backup",))
    with patch.dict(compliance_state.__opts__, {"test": True}):
        ret = run_report()
    assert client.calls  # still checked
    assert ret["result"] is False
    assert ret["changes"] == {}
    assert fired == []
    assert not report_dir(tmp_path).exists()
    assert "test=True" in ret["comment"]
    assert "ecsc-1 backup: expected want-backup; found got-backup" in ret["comment"]


def test_report_dir_override_replaces_the_previous_report(run_report, client, tmp_path):
    target = tmp_path / "reports"
    run_report(report_dir=str(target))
    client.returns["ecmc-1"]["ret"] = minion_report("ecmc-1", failed=("health",))
    run_report(report_dir=str(target))
    assert sorted(os.listdir(target)) == ["latest.json", "latest.txt"]
    assert json.loads((target / "latest.json").read_text())["summary"]["failed"] == 1
    assert not report_dir(tmp_path).exists()


def test_event_failure_fails_the_state(client, tmp_path):
    with patch.object(compliance_state, "_local_client", return_value=client), \
            patch.object(compliance_state, "_fire", side_effect=OSError("no bus")):
        ret = compliance_state.report("compliance", tgt=HOSTS, tgt_type="list")
    assert ret["result"] is False
    assert "NOT fired: no bus" in ret["comment"]


def test_missing_lock_module_fails(run_report):
    del compliance_state.__salt__["rolloutlock.holder"]
    ret = run_report()
    assert ret["result"] is False
    assert "saltutil.sync_all" in ret["comment"]


def test_bad_timeout(run_report):
    assert run_report(timeout=0)["result"] is False


def test_glob_target_is_expanded(run_report, client):
    ckminions = MagicMock()
    ckminions.return_value.check_minions.return_value = {"minions": ["ecsc-2", "ecsc-1"]}
    with patch.object(compliance_state.salt.utils.minions, "CkMinions", ckminions):
        run_report(tgt="ecsc-*", tgt_type="glob")
    ckminions.return_value.check_minions.assert_called_once_with("ecsc-*", "glob")
    assert client.calls[0][0] == ["ecsc-1", "ecsc-2"]


def test_table():
    reports = [
        minion_report("ecsc-1"),
        minion_report("schedule-res-2", failed=("jvm-single",)),
        compliance_state._failed_host("ecmc-1", "ecmc", "did not return within 15s"),
        compliance_state._skipped_report("ecmc-2", "ecmc", {"kind": "upgrade", "pid": 1}),
    ]
    reports[1]["controls"][0]["found"] = "2 JVMs:\n pids 11, 12"
    summary = compliance_state.summarize(reports, generated="2017-02-21T00:00:00+00:00")
    assert (summary["hosts"], summary["passed"], summary["failed"], summary["skipped"]) == (4, 1, 2, 1)
    text = compliance_state.render(summary, reports)
    lines = text.splitlines()
    assert lines[0] == (
        "compliance 2017-02-21T00:00:00+00:00: FAILED - 4 hosts: 1 passed, 2 failed, "
        f"1 skipped (expected release {RELEASE})"
    )
    header = lines[2].split()
    assert header == ["HOST", "SERVICE", "STATUS"] + IDS
    rows = {line.split()[0]: line.split() for line in lines[3:7]}
    assert rows["ecsc-1"][2:] == ["PASS"] * 8
    assert rows["schedule-res-2"][2:] == ["FAIL", "FAIL"] + ["PASS"] * 6
    assert rows["ecmc-1"][2:] == ["FAIL"] + ["-"] * 7
    assert rows["ecmc-2"][2:] == ["SKIP"] * 8
    # columns line up
    assert len({line.index("jvm-single") for line in lines[2:3]}) == 1
    assert lines[3][lines[2].index("health"):].startswith("PASS")
    assert "FAILED CONTROLS" in lines
    assert "schedule-res-2 jvm-single: expected want-jvm-single; found 2 JVMs: pids 11, 12" in lines
    assert "ecmc-1 minion: expected a compliance.check report; found did not return within 15s" in lines
    assert lines[-1].startswith("SKIPPED ecmc-2: upgrade in progress")
