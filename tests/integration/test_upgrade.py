"""orch.upgrade and orch.rollback on the lab, end to end, as an operator runs them.

The tests of this module run in file order and share the lab's state: validation and dry runs
on v1, the full upgrade, its re-run, the rollback to v1, then a broken release on one pair.
"""

import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from lab import build, events
from tests.conftest import load_repo_module
from tests.integration.conftest import REPO_ROOT, VENV_BIN, http_get, run_cli, tree_state

pytestmark = pytest.mark.lab

V2 = "20170220"


def orchestrate(sls, pillar=None, test=False, timeout=900):
    args = ["salt-run", "--out=json", "state.orchestrate", sls]
    if pillar is not None:
        args.append("pillar=" + json.dumps(pillar))
    if test:
        args.append("test=True")
    return run_cli(*args, timeout=timeout)


def assert_quiet(stderr):
    """No Salt warning or traceback on stderr (issue 10: quiet output)."""
    noisy = [line for line in stderr.splitlines()
             if re.search(r"Traceback|MasterEvent|unclosed |WARNING|Warning:", line)]
    assert not noisy, stderr[-3000:]


def section(stdout, title):
    """The indented lines under a title of the rollout outputter's text."""
    lines = stdout.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")),
               len(lines))
    return [line.strip() for line in lines[start:end]]


def steps_of(proc):
    """{orchestration step id: its return} from `salt-run --out=json` output."""
    data = json.loads(proc.stdout)
    data = data.get("data", data)
    found = {}
    for minion_ret in data.values():
        if isinstance(minion_ret, dict):
            for key, ret in minion_ret.items():
                found[key.split("_|-")[1]] = ret
    return found


def run_report(lab, kind, since):
    """The one run report of ``kind`` written after ``since`` (time.time()): its JSON, and
    checks that its Markdown and SVG (a real one: XML whose root is an svg element) exist."""
    directory = lab.MASTER_DIR / "var" / "cache" / "salt" / "master" / "rollout" / "reports"
    found = [json.loads(p.read_text()) for p in directory.glob(f"*-{kind}-*.json")
             if p.stat().st_mtime >= since]
    assert len(found) == 1, [r["paths"] for r in found]
    report = found[0]
    assert report["kind"] == kind and report["operator"]
    assert open(report["paths"]["md"]).read().startswith(f"# orch.{kind} ")
    # The timeline is drawn by a detached child: it appears a moment after the run.
    svg = report["paths"]["svg"]
    deadline = time.monotonic() + 120
    while not os.path.exists(svg) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    return report


def host_states(step, host):
    """The per-state returns a salt.state step got back from one minion (a step whose run
    changed nothing reports none)."""
    return step["changes"].get("ret", {}).get(host, {})


def snapshot(lab, hosts):
    """pids, health release, and the program dir's tree for every host."""
    snap = {}
    for host_id, host in hosts.items():
        status, body = http_get(lab.health_url(host))
        install_dir = lab.in_root(host, host["conf"]["install_dir"])
        snap[host_id] = {
            "pids": lab.service_pids(host),
            "release": json.loads(body)["release"] if status == 200 else None,
            "tree": tree_state(install_dir),
            # Everything beside the program dir but the logs: backups, staging, records.
            "home": sorted(p.name for p in install_dir.parent.iterdir()),
        }
    return snap


def balance(address):
    status, body = http_get(f"http://{address}:8080/ecmc/customers")
    assert status == 200, body
    customers = json.loads(body, parse_float=str)["customers"]
    return next(c["balance"] for c in customers if c["id"] == 1)


@pytest.fixture(scope="module")
def v1_lab(lab, hosts):
    """The lab reset to release v1 (deployed by hand), and its snapshot."""
    lab.reset(None)
    return snapshot(lab, hosts)


@pytest.mark.parametrize(
    "pillar, message",
    [
        ({"services": ["nope"]}, "pillar services: unknown service 'nope'"),
        ({"hosts": ["ecmc-9"]}, "pillar hosts: unknown host 'ecmc-9'"),
        ({"release": {"sha256": {"ecmc": None}}}, "pillar release:sha256:ecmc: missing"),
        ({"inventory": {"services": {"ecsc": {"stop": {"signal": "BOOM"}}}}},
         "pillar inventory:services:ecsc:stop:signal: unknown signal 'BOOM'"),
        ({"inventory": {"services": {"schedule": {"stop": {"timeout": 0}}}}},
         "pillar inventory:services:schedule:stop:timeout: must be a positive number"),
        ({"inventory": {"services": {"ecmc": {"hosts": {"ecsc-1": {"address": "127.0.3.17"}}}}}},
         ":hosts:ecsc-1: duplicate host: also listed at inventory:services:"),
        ({"inventory": {"services": {"ecmc": {"hosts": {"ecmc-3": {"address": "127.0.3.99"}}}}}},
         "pillar inventory:services:ecmc:hosts:ecmc-3: no accepted minion with that id"),
    ],
    ids=["unknown-service", "unknown-host", "missing-sha256", "unknown-signal",
         "zero-timeout", "duplicate-host", "host-not-a-minion"],
)
def test_bad_pillar_fails_before_anything_is_touched(lab, hosts, v1_lab, pillar, message):
    proc = orchestrate("orch.upgrade", pillar)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["pids"] == v1_lab[host_id]["pids"], host_id
        assert after[host_id]["tree"] == v1_lab[host_id]["tree"], host_id
        assert after[host_id]["home"] == v1_lab[host_id]["home"], host_id


def test_corrupt_artifact_stops_nothing_anywhere(lab, hosts, v1_lab, tmp_path):
    release = "20170230"
    good = build.build_release(release, "v2", lab.ARTIFACTS)
    tar = good["ecmc"][0]
    data = bytearray(tar.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damaged in transfer: the release manager's sum no longer fits
    tar.write_bytes(bytes(data))
    sums = {svc: sha for svc, (_, sha) in good.items()}
    try:
        proc = orchestrate("orch.upgrade", {"release": {"id": release, "sha256": sums}})
    finally:
        shutil.rmtree(lab.ARTIFACTS / release)
    assert proc.returncode != 0
    steps = steps_of(proc)
    assert steps["preflight"]["result"] is False
    assert "ecmc-1" in steps["preflight"]["comment"]
    why = " ".join(v["comment"] for v in host_states(steps["preflight"], "ecmc-1").values())
    assert "sha256" in why and "ecmc.tar" in why, why
    assert all(steps[f"upgrade-{h}"]["result"] is False for h in hosts)
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["pids"] == v1_lab[host_id]["pids"], host_id
        assert after[host_id]["tree"] == v1_lab[host_id]["tree"], host_id
        assert after[host_id]["home"] == v1_lab[host_id]["home"], host_id


def test_dry_run_prints_the_plan_and_changes_nothing(lab, hosts, v1_lab):
    proc = orchestrate("orch.upgrade", test=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = steps_of(proc)
    for host_id in hosts:
        plan = {k.split("_|-")[1]: v["comment"]
                for k, v in host_states(steps[f"upgrade-{host_id}"], host_id).items()}
        assert plan["staged"].startswith("would verify and stage"), plan
        assert plan["backed-up"].startswith("would back up"), plan
        assert "would stop" in plan["stopped"], plan
        assert plan["plan-start"].startswith("would start"), plan
    assert_quiet(proc.stderr)
    # The same return as the operator sees it (salt-run's default outputter, _output/rollout.py):
    # one block per host, a header and at most three lines (before the stop, while down, after).
    rollout = load_repo_module("output", "rollout")
    rollout.__opts__ = {"color": False}
    lines = rollout.output(json.loads(proc.stdout)).splitlines()
    headers = [line.split()[0] for line in lines[1:-1] if not line.startswith(" ")]
    assert sorted(headers) == sorted(hosts) and len(lines) <= 2 + 4 * len(hosts), lines
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["pids"] == v1_lab[host_id]["pids"], host_id
        assert after[host_id]["tree"] == v1_lab[host_id]["tree"], host_id  # hashes and mtimes
        assert after[host_id]["home"] == v1_lab[host_id]["home"], host_id


def test_full_upgrade_of_eight_hosts(lab, hosts, v1_lab):
    since = time.time()
    with events.Listener() as bus:
        runner = subprocess.Popen(
            # The operator's command as it is: the Saltfile's default outputter (rollout).
            [str(VENV_BIN / "salt-run"), "state.orchestrate", "orch.upgrade"],
            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"},
        )
        # One rollout at a time: a rollback started meanwhile is refused, touching nothing.
        deadline = time.monotonic() + 30
        while not bus.events and time.monotonic() < deadline:
            time.sleep(0.2)
        second = orchestrate("orch.rollback")
        stdout, stderr = runner.communicate(timeout=900)
    assert second.returncode != 0
    assert "another upgrade is running" in second.stdout + second.stderr
    assert runner.returncode == 0, stdout[-4000:] + stderr[-2000:]
    # Quiet, useful output: no Salt warning or traceback; one summary line per host.
    assert_quiet(stderr)
    summary = section(stdout, "Hosts")
    assert sorted(line.split()[0] for line in summary) == sorted(hosts), stdout
    assert all(f"-> {V2}  ok" in line for line in summary), stdout
    assert stdout.splitlines()[-1].startswith(("Result: ok", "Report: ")), stdout

    after = snapshot(lab, hosts)
    for host_id, host in hosts.items():
        assert after[host_id]["release"] == V2, host_id
        assert after[host_id]["pids"] and after[host_id]["pids"] != v1_lab[host_id]["pids"]
        # The backup holds the v1 tree byte for byte (content, modes, mtimes).
        backup = lab.in_root(host, host["conf"]["install_dir"] + "_" + V2)
        backup_tree = {k: v for k, v in tree_state(backup).items()
                       if k != ".backup-manifest.json"}
        assert backup_tree == v1_lab[host_id]["tree"], host_id
        # Every step of every host was on the bus, in order.
        assert bus.steps()[host_id] == ["staged", "backed-up", "stopped", "swapped", "ready",
                                        "verified"], host_id
    # The run report: each host's steps with their times, its downtime, its backup; no pair
    # ever down at once (issue 10).
    report = run_report(lab, "upgrade", since)
    assert report["result"] == "ok" and report["reason"] is None and report["both_down"] == []
    assert report["release"] == V2 and len(report["summary"]) == len(hosts)
    for host_id in hosts:
        row = report["hosts"][host_id]
        assert [s["step"] for s in row["steps"]] == bus.steps()[host_id], host_id
        assert all(s["start"] <= s["end"] for s in row["steps"]), row
        assert (row["result"], row["after"], row["backup_tag"]) == ("ok", V2, V2), row
        assert row["down_s"] > 0 and row["down"]["open"] is False, row
    # The two fixed issues, on the running services.
    assert balance("127.0.3.27") == "12.345" and balance("127.0.3.40") == "12.345"
    for host_id in ("schedule-1", "schedule-res-2"):
        log = lab.app_log(hosts[host_id]).read_text().splitlines()
        started = max(i for i, line in enumerate(log) if f"INFO Started" in line)
        money = [line for line in log[started:] if "log.money." in line]
        assert money and all(
            re.match(r"^\d{4}-\d\d-\d\dT\S+Z log\.money\.(success|failed) ", m) for m in money
        ), money


def test_second_run_changes_nothing_and_restarts_nothing(lab, hosts):
    before = snapshot(lab, hosts)
    proc = orchestrate("orch.upgrade")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert_quiet(proc.stderr)
    steps = steps_of(proc)
    for host_id in hosts:
        assert steps[f"upgrade-{host_id}"]["result"] is True
        assert steps[f"upgrade-{host_id}"]["changes"] == {}, host_id
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["pids"] == before[host_id]["pids"], host_id
        assert after[host_id]["tree"] == before[host_id]["tree"], host_id


def test_rollback_restores_v1_byte_identical(lab, hosts, v1_lab):
    since = time.time()
    proc = orchestrate("orch.rollback")
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = run_report(lab, "rollback", since)
    assert report["result"] == "ok" and report["both_down"] == []
    for host_id in hosts:
        row = report["hosts"][host_id]
        assert [s["step"] for s in row["steps"]] == ["restored"], row
        assert (row["result"], row["before"]) == ("ok", V2) and row["down_s"] > 0, row
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["release"] == lab.RELEASE_V1, host_id
        assert after[host_id]["tree"] == v1_lab[host_id]["tree"], host_id
    assert balance("127.0.3.27") == "12.35"
    # Run again: nothing to restore, nothing restarted.
    again = orchestrate("orch.rollback")
    assert again.returncode == 0
    assert snapshot(lab, hosts)["ecmc-1"]["pids"] == after["ecmc-1"]["pids"]


@pytest.fixture(scope="module")
def broken_release(lab):
    """Release 20170221: v2 for every service but ecmc, whose build starts and never
    becomes ready."""
    release = "20170221"
    built = build.build_release(release, "v2", lab.ARTIFACTS)
    built.update(build.build_release(release, "broken", lab.ARTIFACTS, services=["ecmc"]))
    yield release, {svc: sha for svc, (_, sha) in built.items()}
    shutil.rmtree(lab.ARTIFACTS / release, ignore_errors=True)


def test_broken_release_on_one_pair(lab, hosts, broken_release):
    release, sums = broken_release
    before = snapshot(lab, hosts)
    pillar = {
        "release": {"id": release, "sha256": sums},
        "inventory": {"services": {"ecmc": {"ready_timeout": 15}}},
    }
    proc = orchestrate("orch.upgrade", pillar)
    assert proc.returncode != 0
    steps = steps_of(proc)
    after = snapshot(lab, hosts)
    # ecmc-1 failed its ready gate, was rolled back to v1 and is ready again.
    failed = host_states(steps["upgrade-ecmc-1"], "ecmc-1")
    ready = next(v for k, v in failed.items() if k.startswith("javaservice_|-ready_"))
    assert ready["result"] is False
    assert "ecmc-1" in ready["comment"] and "last" in ready["comment"]  # host + log tail
    rolled = next(v for k, v in failed.items() if k.startswith("release_|-rolled-back_"))
    assert rolled["result"] is True and rolled["changes"]
    assert after["ecmc-1"]["release"] == lab.RELEASE_V1
    assert after["ecmc-1"]["tree"] == before["ecmc-1"]["tree"]
    # Its partner was never stopped.
    assert steps["upgrade-ecmc-2"]["result"] is False
    assert "requisite failed" in steps["upgrade-ecmc-2"]["comment"]
    assert after["ecmc-2"]["pids"] == before["ecmc-2"]["pids"]
    assert after["ecmc-2"]["tree"] == before["ecmc-2"]["tree"]
    # The other pairs went on.
    for host_id in ("ecsc-1", "ecsc-2", "schedule-1", "schedule-2", "schedule-res-1",
                    "schedule-res-2"):
        assert steps[f"upgrade-{host_id}"]["result"] is True, host_id
        assert after[host_id]["release"] == release, host_id


def test_rerun_after_partial_failure_finishes_the_rest(lab, hosts, broken_release):
    release, sums = broken_release
    fixed = build.build_release(release, "v2", lab.ARTIFACTS, services=["ecmc"])
    sums = {**sums, "ecmc": fixed["ecmc"][1]}
    before = snapshot(lab, hosts)
    proc = orchestrate("orch.upgrade", {"release": {"id": release, "sha256": sums}})
    assert proc.returncode == 0, proc.stdout[-3000:]
    after = snapshot(lab, hosts)
    for host_id in hosts:
        assert after[host_id]["release"] == release, host_id
        if not host_id.startswith("ecmc"):
            assert after[host_id]["pids"] == before[host_id]["pids"], host_id  # not restarted


def test_parallel_false_keeps_the_runbook_order(lab, hosts):
    """One host at a time, in the runbook's order: each host is verified before the next one
    is touched."""
    with events.Listener() as bus:
        proc = orchestrate("orch.upgrade", {"parallel": False})
    assert proc.returncode == 0, proc.stdout[-3000:]
    order = ["ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2", "schedule-1", "schedule-2",
             "schedule-res-1", "schedule-res-2"]
    timeline = [(tag.split("/")[2], tag.split("/")[3]) for _, tag, _ in bus.events
                if tag.startswith("rollout/upgrade/")]
    assert [host for host, step in timeline if step == "staged"] == order
    for before, after in zip(order, order[1:]):
        assert timeline.index((before, "verified")) < timeline.index((after, "staged"))
    assert all(snapshot(lab, hosts)[h]["release"] == V2 for h in hosts)


def test_failhard_stops_the_whole_run_at_the_first_failed_host(lab, hosts):
    """One host at a time with failhard: ecmc-1 fails, is rolled back, and nothing after it
    is touched; the hosts before it stay upgraded."""
    release = "20170222"
    built = build.build_release(release, "v2", lab.ARTIFACTS)
    built.update(build.build_release(release, "broken", lab.ARTIFACTS, services=["ecmc"]))
    before = snapshot(lab, hosts)
    pillar = {
        "parallel": False, "failhard": True,
        "release": {"id": release, "sha256": {svc: sha for svc, (_, sha) in built.items()}},
        "inventory": {"services": {"ecmc": {"ready_timeout": 15}}},
    }
    try:
        proc = orchestrate("orch.upgrade", pillar)
    finally:
        shutil.rmtree(lab.ARTIFACTS / release, ignore_errors=True)
    assert proc.returncode != 0
    after = snapshot(lab, hosts)
    assert after["ecsc-1"]["release"] == release and after["ecsc-2"]["release"] == release
    assert after["ecmc-1"]["release"] == before["ecmc-1"]["release"]  # rolled back, ready
    assert after["ecmc-1"]["tree"] == before["ecmc-1"]["tree"]
    for host_id in ("ecmc-2", "schedule-1", "schedule-2", "schedule-res-1", "schedule-res-2"):
        assert after[host_id]["pids"] == before[host_id]["pids"], host_id
        assert after[host_id]["tree"] == before[host_id]["tree"], host_id
