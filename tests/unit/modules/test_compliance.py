"""
Unit tests of the compliance check's controls (minion side, ``_modules/compliance.py``): each
control's pass/fail/skip logic with a mocked ``__salt__``.
"""

import json
from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module, repo_utils

compliance = load_repo_module("modules", "compliance")

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
        "release.status": MagicMock(
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
def configure_loader_modules(salt_funcs):
    opts = {"id": MINION, "test": False}
    return {compliance: {"__opts__": opts, "__salt__": salt_funcs, "__utils__": repo_utils(opts)}}


def run_check():
    report = compliance.check()
    assert [c["id"] for c in report["controls"]] == IDS
    return report, {c["id"]: c for c in report["controls"]}


# --------------------------------------------------------------------------- minion side


def test_controls_ids_are_stable():
    assert [c["id"] for c in compliance.controls()] == [
        "jvm-single", "health", "release", "tree-intact", "backup", "retention", "no-leftovers"
    ]


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
    # release and tree-intact share one (hashing) release.status call
    salt_funcs["release.status"].assert_called_once_with(INSTALL_DIR)
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
    salt_funcs["release.status"].return_value = {
        "target": INSTALL_DIR, "release": None, "intact": None,
        "modified": [], "added": [], "removed": [], "local_modified": [],
    }
    report, ctl = run_check()
    assert ctl["release"]["status"] == "failed"
    assert ctl["release"]["found"] == "no deployed record: deployed by hand?"
    assert ctl["tree-intact"]["status"] == "skipped"
    assert report["status"] == "failed"


def test_release_other(salt_funcs):
    salt_funcs["release.status"].return_value.update(release="20161201")
    _, ctl = run_check()
    assert ctl["release"]["status"] == "failed"
    assert ctl["release"]["expected"] == RELEASE
    assert ctl["release"]["found"] == "20161201"


def test_tree_drift_is_named(salt_funcs):
    salt_funcs["release.status"].return_value.update(
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
    salt_funcs["release.status"].return_value.update(intact=False, added=added)
    _, ctl = run_check()
    assert "(+15 more)" in ctl["tree-intact"]["found"]
    assert ctl["tree-intact"]["evidence"]["added"] == added


def test_host_local_change_is_not_drift(salt_funcs):
    salt_funcs["release.status"].return_value.update(local_modified=["conf/host.properties"])
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
    salt_funcs["release.status"].side_effect = CommandExecutionError("cannot read record")
    salt_funcs["release.leftovers"].side_effect = RuntimeError("boom")
    report, ctl = run_check()
    for cid in ("release", "tree-intact", "no-leftovers"):
        assert ctl[cid]["status"] == "failed"
    assert ctl["release"]["evidence"] == "cannot read record"
    assert ctl["no-leftovers"]["found"] == "boom"
    assert ctl["jvm-single"]["status"] == "passed"
    assert report["status"] == "failed"
    salt_funcs["release.status"].assert_called_once()


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


def test_strangers_are_evidence_never_the_service(salt_funcs):
    stranger = {"pid": 777, "user": "ops", "why": "runs SomeTool, not lab.standalone.Main",
                "cmdline": ["java", "-cp", "/home/ecsc/lib/x.jar", "SomeTool"]}
    salt_funcs["javaservice.status"].return_value = {
        "running": True, "pids": [4242], "started": "t", "strangers": [stranger]}
    _, ctl = run_check()
    jvm = ctl["jvm-single"]
    assert jvm["status"] == "passed"
    assert jvm["found"].startswith("1 JVM: pid 4242; not the service: pid 777 (ops: runs SomeTool")
    assert jvm["evidence"]["pids"] == [4242] and jvm["evidence"]["strangers"] == [stranger]


def test_a_stranger_alone_is_not_running(salt_funcs):
    salt_funcs["javaservice.status"].return_value = {
        "running": False, "pids": [], "strangers": [{"pid": 9, "user": "x", "why": "other user"}]}
    _, ctl = run_check()
    assert ctl["jvm-single"]["status"] == "failed"
    assert ctl["jvm-single"]["found"] == "not running; not the service: pid 9 (x: other user)"


def test_retention_counts_families_not_directories(salt_funcs):
    # A <tag>.<n> copy (the tree a swap or restore replaced) belongs to <tag>'s upgrade.
    listing = [{"tag": RELEASE, "family": RELEASE}, {"tag": f"{RELEASE}.1", "family": RELEASE},
               {"tag": "20161201", "family": "20161201"}]
    salt_funcs["backup.list"].return_value = listing
    salt_funcs["inventory.host"].return_value = host_conf(keep_backups=2)
    _, ctl = run_check()
    assert ctl["retention"]["status"] == "passed"
    assert ctl["retention"]["found"].startswith("2 backups")
    assert f"{RELEASE}.1" in ctl["retention"]["found"]
