"""orch.upgrade's render lists the accepted minion keys with salt.key, closing what it opens:
the WheelClient it used before left a MasterMinion (and its transport) unclosed, which Salt
reported as an `unclosed ...` warning and, at salt-run's exit, a returner import traceback."""

import gc
import types
import warnings

import salt.config

from tests.conftest import REPO_ROOT


def test_known_minions_reads_the_accepted_keys_and_leaves_nothing_open(tmp_path):
    (tmp_path / "master").write_text(f"root_dir: {tmp_path}\n")
    opts = salt.config.master_config(str(tmp_path / "master"))
    accepted = tmp_path / "etc" / "salt" / "pki" / "master" / "minions"
    accepted.mkdir(parents=True)
    for host in ("ecsc-1", "ecsc-2"):
        (accepted / host).write_text("-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n")
    module = types.ModuleType("orch_upgrade")
    text = (REPO_ROOT / "salt" / "orch" / "upgrade.sls").read_text().split("\n", 1)[1]
    exec(compile(text, "upgrade.sls", "exec"), module.__dict__)  # pylint: disable=exec-used
    module.__opts__ = opts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert module._known_minions() == {"ecsc-1", "ecsc-2"}
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
