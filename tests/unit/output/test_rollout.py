"""_output/rollout.py on orchestrate returns captured from the lab (`salt-run --out=json
state.orchestrate orch.upgrade`, in data/): a v1 -> v2 upgrade of the eight hosts
(upgrade.json), the same run again with nothing to do (noop.json), its test=True plan
(plan.json), and a release whose ecmc build never becomes ready (failed.json: ecmc-1 fails its
ready gate and is rolled back, ecmc-2 is never touched, the other pairs go on). Then, with the
run report step (rolloutreport.write) in the orchestration: the upgrade (upgrade-report.json)
and a run on hosts already on the release, which get no state job (noop-idle.json)."""

import copy
import json
import pathlib

import pytest
import salt.config
import salt.loader
import salt.output
import yaml

from tests.conftest import REPO_ROOT, load_repo_module

DATA = pathlib.Path(__file__).parent / "data"
# Pairs in the order their first host ran, each pair's hosts in turn (the runbook's order),
# though the parallel steps ran host 1 of every pair, then every host 2.
HOSTS = ["ecsc-1", "ecsc-2", "ecmc-1", "ecmc-2", "schedule-1", "schedule-2",
         "schedule-res-1", "schedule-res-2"]


def opts():
    """Master opts as salt-run has them with the repo's Saltfile: output rollout."""
    result = copy.deepcopy(salt.config.DEFAULT_MASTER_OPTS)
    result.update({"color": False, "output": "rollout",
                   "outputter_dirs": [str(REPO_ROOT / "_output")]})
    return result


@pytest.fixture
def rollout():
    module = load_repo_module("output", "rollout")
    module.__opts__ = opts()
    return module


def capture(name):
    return json.loads((DATA / f"{name}.json").read_text())


def section(text, title):
    """The lines under a section title, up to the next unindented line."""
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")),
               len(lines))
    return lines[start:end]


def test_upgrade_prints_steps_then_one_line_per_host(rollout):
    text = rollout.output(capture("upgrade"))
    steps = section(text, "Steps")
    assert [line.split()[1] for line in steps] == [
        "rollout-lock", "minions-answer", "sync-modules", "preflight"]
    assert all(line.split()[0] == "ok" for line in steps)
    hosts = section(text, "Hosts")
    assert [line.split()[0] for line in hosts] == HOSTS
    for line in hosts:
        assert "unrecorded -> 20170220  ok  down " in line, line
    assert text.splitlines()[-1] == "Result: ok"
    assert "_|-" not in text
    assert len(text.splitlines()) <= 16  # Salt's highstate output of this run: ~1000 lines


def test_downtime_is_stop_to_ready(rollout):
    line = next(line for line in section(rollout.output(capture("upgrade")), "Hosts")
                if line.split()[0] == "ecmc-1")
    # stopped started 00:50:33.41, ready started 00:50:33.89 and was ready 6.534 s later.
    states = capture("upgrade")["data"]["vm_master"][
        "salt_|-upgrade-ecmc-1_|-upgrade-ecmc-1_|-state"]["changes"]["ret"]["ecmc-1"]
    by_id = {key.split("_|-")[1]: value for key, value in states.items()}
    assert by_id["ready"]["changes"]["started"]["seconds"] == 6.534
    assert line.endswith("down 7.1s")


def test_nothing_to_do_says_no_change(rollout):
    hosts = section(rollout.output(capture("noop")), "Hosts")
    assert [line.split()[0] for line in hosts] == HOSTS
    assert all(line.split()[1:] == ["no", "change"] for line in hosts), hosts


def test_failure_names_host_step_comment_and_log_tail(rollout):
    text = rollout.output(capture("failed"))
    hosts = {line.split()[0]: line for line in section(text, "Hosts")}
    assert list(hosts) == HOSTS
    assert "20170220 -> 20170220  rolled back" in hosts["ecmc-1"]
    assert hosts["ecmc-1"].endswith("at ready")
    assert "not run (upgrade-ecmc-1 failed)" in hosts["ecmc-2"]
    for host in ("ecsc-1", "ecsc-2", "schedule-1", "schedule-2", "schedule-res-1",
                 "schedule-res-2"):
        assert "20170220 -> 20170229  ok" in hosts[host], host
    failures = section(text, "Failures")
    assert failures[0] == "  ecmc-1 at ready:"
    assert "fatal pattern" in failures[1] and "startup failed" in failures[1]
    # The last line of the service's own log, from the ready gate's comment.
    assert any("ERROR ecmc failed to start release=20170229" in line for line in failures)
    assert any(line.startswith("  ecmc-1 rolled back: restored: ecmc restored from")
               for line in failures)
    assert text.splitlines()[-1] == "Result: FAILED: ecmc-1 rolled back at ready (exit 1)"
    assert len(failures) < 30


def test_plan_is_one_short_block_per_host(rollout):
    text = rollout.output(capture("plan"))
    lines = text.splitlines()
    assert lines[0] == "Plan (test=True: nothing was changed)"
    blocks = {}
    for line in lines[1:-1]:
        if not line.startswith(" "):
            blocks[line.split()[0]] = [line]
        else:
            blocks[list(blocks)[-1]].append(line)
    assert list(blocks) == HOSTS
    for host, block in blocks.items():
        assert block[0] == f"{host}  unrecorded -> 20170220", block
        assert 3 <= len(block) <= 4, block
        assert block[1].startswith("  before stop:  stage 20170220 (")
        assert "; back up to " in block[1]
        assert block[2].startswith("  down:         stop pid ")
        assert "; swap; start " in block[2] and block[2].endswith(", ready within 120s")
        assert all(len(line) <= rollout.WIDTH for line in block)
    assert blocks["ecmc-1"][3] == "  after:        verify bug-9427"
    assert "back up to ecmc_20170220 (2 files, 18.3 KiB)" in blocks["ecmc-1"][1]
    assert lines[-1] == "Result: plan ok (8 hosts; full detail: --out=highstate)"
    assert len(lines) <= 2 + 8 * 4  # one screen (Salt's highstate plan: ~1000 lines)


def test_report_runner_lines_win(rollout):
    """With the report step (rolloutreport.write's return in its changes), its summary,
    reason and paths are printed as they are."""
    data = capture("failed")
    summary = [f"{host}  20170220 -> 20170229  ok  down 1.0s" for host in HOSTS]
    paths = {"json": "/r/1.json", "md": "/r/1.md", "svg": "/r/1.svg"}
    data["data"]["vm_master"]["salt_|-rollout-report_|-rolloutreport.write_|-runner"] = {
        "name": "rolloutreport.write", "result": True, "__run_num__": 12, "duration": 80.0,
        "__id__": "rollout-report", "comment": "Runner function 'rolloutreport.write' executed.",
        "changes": {"return": {"summary": summary, "reason": "ecmc-1: failed after step "
                               "'swapped', rolled back (01:00:44)", "paths": paths}},
    }
    text = rollout.output(data)
    assert section(text, "Hosts") == [f"  {line}" for line in summary]
    assert text.splitlines()[-2] == ("Result: FAILED: ecmc-1: failed after step 'swapped', "
                                     "rolled back (01:00:44) (exit 1)")
    assert text.splitlines()[-1] == "Report: /r/1.{json,md,svg}"
    assert "rollout-report" in "\n".join(section(text, "Steps"))


def test_other_data_prints_as_salt_would(rollout):
    """A runner's plain return goes to nested, a state return to highstate, unchanged, even
    though the options name this outputter (no loop back into it)."""
    plain = {"args": [1], "kwargs": {"a": 2}}
    nested_opts = {**opts(), "output": "nested"}
    assert rollout.output(plain) == salt.output.out_format(plain, "nested", nested_opts)
    render_error = {"data": {"vm_master": ["Rendering SLS 'base:orch.upgrade' failed: boom"]},
                    "outputter": "highstate", "retcode": 1}
    text = rollout.output(render_error)
    assert "Rendering SLS 'base:orch.upgrade' failed: boom" in text
    assert text == salt.output.out_format(render_error, "highstate",
                                          {**opts(), "output": "highstate"})


def test_salt_run_loads_it_from_the_repo_with_the_saltfile():
    saltfile = yaml.safe_load((REPO_ROOT / "Saltfile").read_text())
    assert saltfile["salt-run"]["output"] == "rollout"
    master = yaml.safe_load((REPO_ROOT / "etc/salt/master").read_text())
    # Relative to the repo root, where salt-run runs (the Saltfile's config_dir is relative too).
    result = opts()
    result["outputter_dirs"] = [str(REPO_ROOT / d) for d in master["outputter_dirs"]]
    outputters = salt.loader.outputters(result)
    assert "rollout" in outputters
    text = outputters["rollout"](capture("upgrade"))
    assert text.splitlines()[-1] == "Result: ok"


def test_a_return_it_cannot_read_is_printed_in_full(rollout, monkeypatch):
    data = capture("noop")

    def broken(*args):
        raise KeyError("seconds")

    monkeypatch.setattr(rollout, "_render", broken)
    assert rollout.output(data) == salt.output.out_format(
        data, "highstate", {**opts(), "output": "highstate"})


@pytest.mark.parametrize("key,step_id", [
    # salt.runner of compliance.report (an orchestration of a runner)
    ("salt_|-compliance_|-compliance.report_|-runner", "compliance"),
    # orch.compliance: the master-side state rollout.runner runs the runner in place, with
    # no salt.* step; still read as an orchestration
    ("rollout_|-compliance-report_|-compliance.report_|-runner", "compliance-report"),
])
def test_a_runner_step_that_words_its_result_is_printed(rollout, key, step_id):
    """orch.compliance: its one step's return (compliance.report) carries the table as its
    comment; the table is printed under the step (synthetic return of that shape)."""
    table = "host    jvm-single  health\necsc-1  passed      passed\n1 failure: ecsc-2 health"
    data = {"data": {"vm_master": {key: {
        "name": "compliance.report", "result": False, "__run_num__": 0, "duration": 2100.0,
        "__id__": step_id, "comment": "Runner function 'compliance.report' failed.",
        "changes": {"return": {"result": False, "summary": {"failed": 1}, "comment": table,
                               "retcode": 1}}}}}, "outputter": "highstate", "retcode": 1}
    lines = rollout.output(data).splitlines()
    assert lines[1].split()[:2] == ["FAILED", step_id]
    assert lines[2:5] == [f"    {line}" for line in table.splitlines()]
    assert lines[-1].startswith("Result: FAILED")


def test_a_host_that_did_not_answer(rollout):
    """The shape Salt gives a salt.state step whose minion never returned (seen on the lab
    under load: `Run failed on minions: ecsc-2 / Minion ecsc-2 did not return a state
    result.`, changes {"ecsc-2": False})."""
    data = capture("upgrade")
    step = data["data"]["vm_master"]["salt_|-upgrade-ecsc-2_|-upgrade-ecsc-2_|-state"]
    step.update({"result": False, "changes": {"ecsc-2": False}, "comment":
                 "Run failed on minions: ecsc-2\nMinion ecsc-2 did not return a state result."})
    data["retcode"] = 1
    text = rollout.output(data)
    row = next(line for line in section(text, "Hosts") if line.split()[0] == "ecsc-2")
    assert row.split()[1:] == ["no", "answer"]
    assert section(text, "Failures") == [
        "  ecsc-2:", "      Run failed on minions: ecsc-2",
        "      Minion ecsc-2 did not return a state result."]
    assert text.splitlines()[-1] == "Result: FAILED: ecsc-2 no answer (exit 1)"


def test_a_resumed_host_is_printed_as_release_resumed_words_it(rollout):
    """Issue 9.4: the re-run after an interrupted run says which host it took up and where."""
    data = capture("upgrade")
    states = data["data"]["vm_master"]["salt_|-upgrade-schedule-1_|-upgrade-schedule-1_|-state"][
        "changes"]["ret"]["schedule-1"]
    said = ("resuming schedule-1: an interrupted run left it at 'stopped' (20170220 staged; "
            "schedule not running); finishing it: removed .schedule.staging")
    states["release_|-resumed_|-/home/schedule_|-resumed"] = {
        "__id__": "resumed", "__run_num__": -1, "result": True, "comment": said,
        "changes": {"resumed": {"step": "stopped"}}}
    assert section(rollout.output(data), "Resumed") == [f"  {said}"]
    assert "Resumed" not in rollout.output(capture("noop")).splitlines()


def test_with_the_report_step_its_lines_and_paths_are_printed(rollout):
    data = capture("upgrade-report")
    report = data["data"]["vm_master"][
        "salt_|-rollout-report_|-rolloutreport.write_|-runner"]["changes"]["return"]
    text = rollout.output(data)
    assert section(text, "Hosts") == [f"  {line}" for line in report["summary"]]
    assert [line.split()[0] for line in section(text, "Hosts")] == HOSTS
    stem = report["paths"]["json"][: -len(".json")]
    assert text.splitlines()[-2:] == ["Result: ok", f"Report: {stem}.{{json,md,svg}}"]
    assert len(text.splitlines()) == 16


def test_hosts_already_on_the_release(rollout):
    text = rollout.output(capture("noop-idle"))
    assert "every targeted host is already on 20170220" in section(text, "Steps")[1]
    assert all("20170220 -> 20170220  no change" in line for line in section(text, "Hosts"))


def test_a_plan_that_fails_names_host_state_and_comment(rollout):
    """test=True on a host whose check fails (its state's result False, as the pre-flight's
    checks return it): the host's block says so and Failures quotes the state's comment."""
    data = capture("plan")
    step = data["data"]["vm_master"]["salt_|-upgrade-ecsc-2_|-upgrade-ecsc-2_|-state"]
    state = next(v for k, v in step["changes"]["ret"]["ecsc-2"].items() if "_|-staged_|-" in k)
    state.update({"result": False, "comment": "ecsc-2: salt://releases/20170220/ecsc.tar: "
                  "sha256 mismatch"})
    step.update({"result": False, "comment": "Run failed on minions: ecsc-2"})
    data["retcode"] = 1
    text = rollout.output(data)
    assert "ecsc-2  cannot be planned: Run failed on minions: ecsc-2" in text.splitlines()
    assert section(text, "Failures") == [
        "  ecsc-2 at staged:", "      ecsc-2: salt://releases/20170220/ecsc.tar: sha256 mismatch"]
    assert text.splitlines()[-1].startswith("Result: FAILED")
