"""
Unit tests of the compliance report runner (_runners/compliance.py): targets, lock skipping,
aggregation, table rendering, report files, event and exit code. The controls' own tests
(minion side) are in tests/unit/modules/test_compliance.py.
"""

import json
import os
from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO_ROOT, load_repo_module

compliance = load_repo_module("modules", "compliance")
runner = load_repo_module("runners", "compliance")

RELEASE = "20170220"
IDS = [cid for cid, _ in compliance.CONTROLS]


def host_conf(minion_id):
    return {"id": minion_id, "service": minion_id.rsplit("-", 1)[0], "release": RELEASE}


@pytest.fixture
def execution_modules():
    """The master's execution modules the runner uses (patched in: no MasterMinion)."""
    funcs = {
        "compliance.controls": compliance.controls,
        "inventory.host": MagicMock(side_effect=lambda minion_id=None, **_: host_conf(minion_id)),
        "inventory.plan": MagicMock(),
    }
    with patch.object(runner, "_execution_modules", return_value=funcs):
        yield funcs


@pytest.fixture
def configure_loader_modules(tmp_path, execution_modules):
    opts = {
        "id": "master",
        "test": False,
        "cachedir": str(tmp_path / "cache"),
        "sock_dir": str(tmp_path / "sock"),
        "conf_file": str(tmp_path / "master"),
    }
    return {
        runner: {
            "__opts__": opts,
            "__context__": {},
            "__salt__": {"rolloutlock.holder": MagicMock(return_value=None)},
        },
    }


# --------------------------------------------------------------------------- master side


def test_master_renders_the_module_controls_in_order():
    assert runner._controls() == list(compliance.CONTROLS)


def test_controls_come_from_the_synced_module_without_a_master_minion(tmp_path):
    # The master's synced modules (extension_modules/modules), loaded alone: no
    # MasterMinion (its grains cost about a second of every orch.compliance).
    (tmp_path / "extmods" / "modules").mkdir(parents=True)
    (tmp_path / "extmods" / "modules" / "compliance.py").symlink_to(
        REPO_ROOT / "_modules" / "compliance.py")
    opts = {**runner.__opts__, "extension_modules": str(tmp_path / "extmods")}
    with patch.dict(runner.__opts__, opts), patch.dict(runner.__context__, clear=True), \
            patch.object(runner, "_execution_modules", side_effect=AssertionError("mminion")), \
            patch.object(runner.salt.minion, "MasterMinion", side_effect=AssertionError("mminion")):
        assert runner._controls() == list(compliance.CONTROLS)


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
    with patch.object(runner, "_fire", side_effect=events.append):
        yield events


@pytest.fixture
def run_report(client, fired, tmp_path):
    def _run(**kwargs):
        with patch.object(runner, "_local_client", return_value=client):
            kwargs.setdefault("tgt", HOSTS)
            kwargs.setdefault("tgt_type", "list")
            return runner.report(**kwargs)

    return _run


def report_dir(tmp_path):
    return tmp_path / "cache" / "compliance"


def test_report_all_passed(run_report, client, fired, tmp_path):
    ret = run_report(pillar={"release": {"id": RELEASE}}, timeout=7)
    assert ret["result"] is True
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
    runner.__salt__["rolloutlock.holder"].return_value = holder
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
    runner.__salt__["rolloutlock.holder"].return_value = {"kind": "rollback", "pid": 5}
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
    # rolloutlock records name their hosts in a list; "detail" is the older form.
    if isinstance(detail, list):
        assert runner._locked_hosts({"kind": "upgrade", "hosts": detail}, HOSTS) == expected
    assert runner._locked_hosts({"kind": "upgrade", "detail": detail}, HOSTS) == expected
    assert runner._locked_hosts(None, HOSTS) == set()


def test_test_mode_checks_but_writes_and_fires_nothing(run_report, client, fired, tmp_path):
    client.returns["ecsc-1"]["ret"] = minion_report("ecsc-1", failed=("backup",))
    with patch.dict(runner.__opts__, {"test": True}):
        ret = run_report()
    assert client.calls  # still checked
    assert ret["result"] is False
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


def test_event_failure_fails_the_run(client, tmp_path):
    with patch.object(runner, "_local_client", return_value=client), \
            patch.object(runner, "_fire", side_effect=OSError("no bus")):
        with pytest.raises(CommandExecutionError, match="NOT fired: no bus"):
            runner.report(tgt=HOSTS, tgt_type="list")


def test_unwritable_report_dir_fails_the_run(run_report, tmp_path, fired):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(CommandExecutionError, match="cannot write the compliance report"):
        run_report(report_dir=str(blocker))
    assert fired == []


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_bad_timeout(run_report, client, timeout):
    with pytest.raises(SaltInvocationError, match="timeout"):
        run_report(timeout=timeout)
    assert client.calls == []


def test_exit_code_follows_drift(run_report, client):
    """salt-run exits with the returned retcode; a salt.runner step fails on __context__'s."""
    assert run_report()["retcode"] == 0
    assert runner.__context__["retcode"] == 0
    client.returns["ecsc-1"]["ret"] = minion_report("ecsc-1", failed=("health",))
    assert run_report()["retcode"] == 1
    assert runner.__context__["retcode"] == 1
    client.returns["ecsc-1"]["ret"] = minion_report("ecsc-1")
    assert run_report()["retcode"] == 0  # reset every run: the scheduler reuses its context
    assert runner.__context__["retcode"] == 0


def test_default_targets_are_the_inventory_of_the_master_pillar(client, fired, execution_modules):
    """What the master's schedule runs: no target, the hosts the master's pillar plans."""
    merged = {"inventory": {"services": {}}, "release": {"id": RELEASE}, "other": 1}
    execution_modules["inventory.plan"].return_value = [
        {"service": "ecsc", "hosts": ["ecsc-1", "ecsc-2"]}, {"service": "ecmc", "hosts": ["ecmc-1"]},
    ]
    with patch.object(runner, "_local_client", return_value=client), \
            patch.object(runner, "_master_pillar", return_value=merged) as master_pillar:
        ret = runner.report(services=["ecsc", "ecmc"], pillar={"release": {"id": RELEASE}})
    master_pillar.assert_called_once_with({"release": {"id": RELEASE}})
    execution_modules["inventory.plan"].assert_called_once_with(
        services=["ecsc", "ecmc"], hosts=None, archive=False, pillar=merged
    )
    tgt, fun, kwargs = client.calls[0]
    assert (tgt, fun) == (HOSTS, "compliance.check")
    assert kwargs["kwarg"] == {"pillar": {"inventory": {"services": {}}, "release": {"id": RELEASE}}}
    assert ret["result"] is True and fired[0]["hosts"] == 3


def test_glob_target_is_expanded(run_report, client):
    ckminions = MagicMock()
    ckminions.return_value.check_minions.return_value = {"minions": ["ecsc-2", "ecsc-1"]}
    with patch.object(runner.salt.utils.minions, "CkMinions", ckminions):
        run_report(tgt="ecsc-*", tgt_type="glob")
    ckminions.return_value.check_minions.assert_called_once_with("ecsc-*", "glob")
    assert client.calls[0][0] == ["ecsc-1", "ecsc-2"]


def test_table():
    reports = [
        minion_report("ecsc-1"),
        minion_report("schedule-res-2", failed=("jvm-single",)),
        runner._failed_host("ecmc-1", "ecmc", "did not return within 15s"),
        runner._skipped_report("ecmc-2", "ecmc", {"kind": "upgrade", "pid": 1}),
    ]
    reports[1]["controls"][0]["found"] = "2 JVMs:\n pids 11, 12"
    summary = runner.summarize(reports, generated="2017-02-21T00:00:00+00:00")
    assert (summary["hosts"], summary["passed"], summary["failed"], summary["skipped"]) == (4, 1, 2, 1)
    text = runner.render(summary, reports)
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


def test_the_master_schedule_runs_this_runner_directly():
    import yaml

    from tests.conftest import REPO_ROOT

    schedule = yaml.safe_load((REPO_ROOT / "etc" / "salt" / "master").read_text())["schedule"]
    job = schedule["compliance"]
    assert job["function"] == "compliance.report"
    assert callable(getattr(runner, job["function"].split(".", 1)[1]))
    assert job["maxrunning"] == 1
