"""Unit tests of the master-side state rollout.runner (_states/rollout.py): the orchestration's
own steps run a repo runner in place, with salt.runner's return (changes.return, a raising
runner fails the step with its message, test=True runs nothing), master side only."""

from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module

rollout = load_repo_module("states", "rollout")


@pytest.fixture
def configure_loader_modules():
    return {rollout: {"__opts__": {"__role": "master", "test": False}, "__utils__": {}}}


def _loader(funcs):
    return patch.object(rollout.salt.loader, "runner", MagicMock(return_value=funcs))


def test_runs_the_runner_in_place_with_salt_runners_return():
    acquire = MagicMock(return_value={"owner": "abc", "stale": None})
    with _loader({"rolloutlock.acquire": acquire}) as loader:
        ret = rollout.runner("rolloutlock.acquire", kind="upgrade", owner="abc",
                             __id__="rollout-lock", __pub_user="root")
    assert ret == {"name": "rolloutlock.acquire", "result": True,
                   "changes": {"return": {"owner": "abc", "stale": None}},
                   "comment": "Runner function 'rolloutlock.acquire' executed."}
    acquire.assert_called_once_with(kind="upgrade", owner="abc")  # no Salt internals
    # The repo's runners only (a runner may call another), never Salt's whole runner set.
    assert loader.call_args.kwargs["whitelist"] == ["rollout", "rolloutlock", "rolloutreport",
                                                    "compliance"]


def test_a_raising_runner_fails_the_step_with_its_message():
    answering = MagicMock(side_effect=CommandExecutionError(
        "schedule-res-2: the minion did not answer within 10s; no host was touched"))
    with _loader({"rollout.answering": answering}):
        ret = rollout.runner("rollout.answering", hosts=["schedule-res-2"])
    assert ret["result"] is False
    assert ret["comment"] == "Runner function 'rollout.answering' failed."
    assert ret["changes"]["return"].startswith("Exception occurred in runner rollout.answering: ")
    assert "schedule-res-2: the minion did not answer" in ret["changes"]["return"]


def test_a_runner_not_synced_fails_and_says_how_to_sync():
    with _loader({}):
        ret = rollout.runner("rolloutreport.write", kind="upgrade")
    assert ret["result"] is False and "salt-run saltutil.sync_all" in ret["changes"]["return"]


def test_test_mode_runs_nothing():
    write = MagicMock()
    with _loader({"rolloutreport.write": write}), patch.dict(rollout.__opts__, {"test": True}):
        ret = rollout.runner("rolloutreport.write", kind="upgrade")
    assert ret["result"] is None and ret["changes"] == {}
    write.assert_not_called()


def test_master_side_only():
    assert rollout.__virtual__() == "rollout"
    with patch.dict(rollout.__opts__, {"__role": "minion"}):
        assert rollout.__virtual__()[0] is False


@pytest.mark.parametrize("drift", [False, True])
def test_a_runner_setting_a_non_zero_retcode_fails_the_step(drift):
    # compliance.report on drift: its return is the report, its verdict __context__["retcode"]
    # (what saltutil.runner reads for salt.runner), so orch.compliance exits non-zero.
    report = {"result": not drift, "summary": {}, "comment": "table", "retcode": int(drift)}

    def loader(opts, utils=None, context=None, whitelist=None):  # pylint: disable=unused-argument
        def run(**_):
            context["retcode"] = int(drift)
            return report
        return {"compliance.report": run}

    with patch.object(rollout.salt.loader, "runner", loader):
        ret = rollout.runner("compliance.report", tgt=["ecsc-1"], tgt_type="list")
    assert ret["changes"] == {"return": report}
    assert ret["result"] is (not drift)
    assert ret["comment"] == ("Runner function 'compliance.report' "
                              f"{'failed' if drift else 'executed'}.")


# ------------------------------------------------------------------ rollout.turn (waves)


class _Client:
    """A LocalClient that records what the step asks: the job ``jid`` was published (or
    not), some hosts returned already, turn.give answers ``given``, then ``returns`` (a
    list: what each gathering sees in turn; a host missing there is one Salt gave up on),
    and saltutil.find_job answers ``running`` (a host missing there does not answer)."""

    def __init__(self, published, cached=None, given=None, returns=None, running=None):
        self.published, self.cached = published, cached or {}
        self.given = given or {}
        self.returns = returns if isinstance(returns, list) else [returns or {}]
        self.running = running or {}
        self.calls = []
        self.event = MagicMock()

    def returns_for_job(self, jid):
        return {"minions": ["ecsc-1", "ecsc-2"]} if self.published else {}

    def get_cache_returns(self, jid):
        return self.cached

    def cmd(self, tgt, fun, arg=(), tgt_type="glob", **_):
        self.calls.append(("cmd", list(tgt), fun, list(arg)))
        if fun == "saltutil.find_job":
            return {host: self.running[host] for host in tgt if host in self.running}
        return {host: self.given.get(host, False) for host in tgt}

    def get_iter_returns(self, jid, minions, **_):
        self.calls.append(("gather", sorted(minions)))
        seen = self.returns.pop(0) if len(self.returns) > 1 else self.returns[0]
        for host in sorted(minions):
            if host in seen:
                yield {host: seen[host]}

    def destroy(self):
        pass


def _state_ret(ok):
    return {"ret": {"release_|-swapped_|-/home/ecsc_|-deployed": {
        "result": ok, "changes": {"release": "20170220"} if ok else {}, "comment": "",
        "__run_num__": 0}}, "out": "highstate"}


def _turn(client, publish, **kwargs):
    import salt.config

    from tests.conftest import repo_utils

    opts = dict(salt.config.DEFAULT_MASTER_OPTS, __role="master", test=False, conf_file="x")
    runners = {"rollout.publish": publish}
    with patch.object(rollout.salt.client, "get_local_client", return_value=client), \
            patch.object(rollout.salt.loader, "runner", MagicMock(return_value=runners)), \
            patch.dict(rollout.__dict__, {"__opts__": opts,
                                          "__utils__": rollout.salt.loader.utils(opts)}):
        return rollout.turn("upgrade-ecsc-2", "ecsc-2", "2026113008000000000a", "run1",
                            sls="release.upgrade", pillar={"rollout_run": "run1"}, **kwargs)


def test_a_wave_published_ahead_gets_its_turn_then_publishes_the_next_and_gathers():
    client = _Client(True, given={"ecsc-2": "go"}, returns={"ecsc-2": _state_ret(True)})
    publish = MagicMock(side_effect=lambda *a, **k: client.calls.append(("publish", a, k)))
    ret = _turn(client, publish, then={"jid": "2026113008000000000b", "tgt": ["ecsc-3"]})
    assert ret["result"] is True and "ecsc-2" in ret["changes"]["ret"]
    # The turn, then the returns; the next wave's job (waiting for its own turn) is
    # published meanwhile.
    calls = {c[0]: c for c in client.calls}
    assert sorted(calls) == ["cmd", "gather", "publish"]
    assert [c[0] for c in client.calls if c[0] != "publish"] == ["cmd", "gather"]
    assert calls["cmd"] == ("cmd", ["ecsc-2"], "turn.give", ["run1"])
    assert calls["publish"][1] == (["ecsc-3"], "2026113008000000000b")
    assert calls["publish"][2] == {"pillar": {"rollout_run": "run1"}, "sls": "release.upgrade",
                                   "run": "run1", "timeout": 1800}


def test_a_first_wave_publishes_its_own_job_and_a_failed_host_fails_the_step():
    client = _Client(False, returns={"ecsc-2": _state_ret(False)})
    publish = MagicMock(side_effect=lambda *a, **k: client.calls.append(("publish", a, k)))
    ret = _turn(client, publish)
    # Published to start at once (no turn to wait for), no turn.give.
    assert client.calls[0] == ("publish", (["ecsc-2"], "2026113008000000000a"), {
        "pillar": {"rollout_run": "run1"}, "sls": "release.upgrade"})
    assert [c[0] for c in client.calls] == ["publish", "gather"]
    assert ret["result"] is False and ret["comment"].startswith("Run failed on minions: ecsc-2")


def test_a_host_that_does_not_take_its_turn_fails_at_once_and_is_not_waited_for():
    client = _Client(True, given={"ecsc-2": "abort"})
    ret = _turn(client, MagicMock())
    assert ("gather", ["ecsc-2"]) not in client.calls
    assert ret["result"] is False
    assert "ecsc-2 did not take its turn in run run1: turn.give answered 'abort'" in (
        ret["comment"])


def test_a_host_whose_job_returned_before_its_turn_is_not_given_one():
    # E.g. its render failed: the return is in the job cache; no turn, no wait.
    client = _Client(True, cached={"ecsc-2": _state_ret(False)})
    ret = _turn(client, MagicMock())
    assert client.calls == [] and ret["result"] is False


def test_a_first_wave_publishes_the_next_wave_only_once_its_hosts_began():
    # Not while its own job compiles and renders: two waves' jobs at once slow both.
    client = _Client(False, returns={"ecsc-2": _state_ret(True)})
    # As the master's bus carries a minion's event.send: the state's data under "data".
    begin = {"tag": "rollout/upgrade/ecsc-2/begin",
             "data": {"id": "ecsc-2", "cmd": "_minion_event", "_stamp": "2026-11-30T11:10:09",
                      "data": {"host": "ecsc-2", "run": "run1", "step": "begin"}}}
    client.event.get_event.side_effect = lambda **_: (
        client.calls.append(("begin", "ecsc-2")) or begin
        if ("begin", "ecsc-2") not in client.calls else pytest.fail("begin was not recognised"))
    publish = MagicMock(side_effect=lambda *a, **k: client.calls.append(("publish", a, k)))
    ret = _turn(client, publish, then={"jid": "2026113008000000000b", "tgt": ["ecsc-3"]})
    assert ret["result"] is True
    assert [(c[0], c[1]) for c in client.calls[:3]] == [
        ("publish", (["ecsc-2"], "2026113008000000000a")), ("begin", "ecsc-2"),
        ("publish", (["ecsc-3"], "2026113008000000000b"))]
    assert client.calls[3][0] == "gather"


def test_a_host_salt_gave_up_on_that_still_runs_its_job_is_waited_for():
    # 32 hosts at load 35: Salt's liveness ping (find_job) got no answer within
    # gather_job_timeout while ecsc-1/2 were mid-upgrade; the run ended, calling them gone.
    jid = "2026113008000000000a"
    client = _Client(False, returns=[{}, {"ecsc-2": _state_ret(True)}],
                     running={"ecsc-2": {"jid": jid, "fun": "state.sls"}})
    ret = _turn(client, MagicMock())
    assert ret["result"] is True and "ecsc-2" in ret["changes"]["ret"]
    assert [c for c in client.calls if c[0] != "publish"] == [
        ("gather", ["ecsc-2"]), ("cmd", ["ecsc-2"], "saltutil.find_job", [jid]),
        ("gather", ["ecsc-2"])]


@pytest.mark.parametrize("answer", [None, "Minion did not return. [No response]", False, {}])
def test_a_host_that_does_not_answer_when_asked_again_did_not_return(answer):
    # A dead minion: Salt gave up, and asked once more it stays silent (LocalClient.cmd
    # gives it a string or False; a live one without the job answers {}).
    client = _Client(False, returns=[{}], running={} if answer is None else {"ecsc-2": answer})
    ret = _turn(client, MagicMock())
    assert ret["result"] is False
    assert "ecsc-2" in ret["comment"] and "did not return" in ret["comment"]
    assert [c[0] for c in client.calls if c[0] != "publish"] == ["gather", "cmd"]


def test_a_return_that_reached_the_job_cache_meanwhile_counts_without_asking():
    client = _Client(False, returns=[{}], cached={"ecsc-2": _state_ret(True)})
    ret = _turn(client, MagicMock())
    assert ret["result"] is True
    assert [c[0] for c in client.calls if c[0] != "publish"] == ["gather"]
