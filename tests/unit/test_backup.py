"""Unit tests for _modules/backup.py and _states/backup.py (logic, with the loader mocked)."""

import hashlib
import importlib.util
import json
import os
import shutil
from unittest.mock import MagicMock, patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import REPO_ROOT

MINION_ID = "unit-minion"


def _load(kind):
    spec = importlib.util.spec_from_file_location(
        f"backup_{kind}_under_test", REPO_ROOT / f"_{kind}" / "backup.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backup = _load("modules")
backup_state = _load("states")


@pytest.fixture
def configure_loader_modules():
    opts = {"id": MINION_ID, "test": False}
    return {
        backup: {"__opts__": opts},
        backup_state: {"__opts__": opts, "__salt__": {}},
    }


def _tree(root):
    """Small program dir: nested files, an executable, a symlink, an empty dir."""
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "app.jar").write_bytes(b"jar" * 1000)
    (root / "bin").mkdir()
    (root / "bin" / "startup.sh").write_text("#!/bin/sh\nexec java -jar ../lib/app.jar\n")
    os.chmod(root / "bin" / "startup.sh", 0o750)
    (root / "conf.properties").write_text("balance.scale=3\n")
    os.symlink("lib/app.jar", root / "current.jar")
    (root / "logs").mkdir()
    return root


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------ tag and argument checks


@pytest.mark.parametrize("tag", ["20170220", "v1", "2017.02.20-rc1", "A", "0", "r1.2-3", "pre_v2"])
def test_valid_tags(tag):
    assert backup._check_tag(tag) == tag


@pytest.mark.parametrize(
    "tag", ["", "-x", ".hidden", "_x", "a/b", "../x", "a b", "x\n", "ünï", None, 1.5]
)
def test_invalid_tags_raise_invocation_error(tag):
    with pytest.raises(SaltInvocationError) as exc:
        backup._check_tag(tag, "/home/ecsc")
    assert MINION_ID in str(exc.value)
    assert "/home/ecsc" in str(exc.value)


def test_integer_tag_from_cli_yaml_is_accepted():
    assert backup._check_tag(20170220) == "20170220"


def test_create_rejects_bad_tag_before_touching_anything(tmp_path):
    src = _tree(tmp_path / "ecsc")
    before = _listing(tmp_path)
    with pytest.raises(SaltInvocationError, match="invalid tag"):
        backup.create(str(src), "../evil")
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("path", ["home/ecsc", "", "/", None])
def test_bad_paths_raise_invocation_error(path):
    with pytest.raises(SaltInvocationError):
        backup.create(path, "20170220")


def test_path_is_normalised():
    assert backup._split("/home/ecsc/") == ("/home/ecsc", "/home", "ecsc")


def test_meta_must_be_a_json_dict(tmp_path):
    src = _tree(tmp_path / "ecsc")
    with pytest.raises(SaltInvocationError, match="meta"):
        backup.create(str(src), "t1", meta=["v1"])
    with pytest.raises(SaltInvocationError, match="JSON"):
        backup.create(str(src), "t1", meta={"x": object()})
    assert not (tmp_path / "ecsc_t1").exists()


def test_missing_source_is_an_execution_error(tmp_path):
    with pytest.raises(CommandExecutionError) as exc:
        backup.create(str(tmp_path / "nope"), "t1")
    assert MINION_ID in str(exc.value) and "nope" in str(exc.value) and "t1" in str(exc.value)


# ------------------------------------------------------------------ manifest building


def test_manifest_records_every_entry_with_hashes_modes_symlinks_dirs(tmp_path):
    src = _tree(tmp_path / "ecsc")
    res = backup.create(str(src), "20170220", meta={"release": "v1"})
    assert res["created"] is True
    assert res["path"] == str(tmp_path / "ecsc_20170220")
    data = json.loads((tmp_path / "ecsc_20170220" / backup.MANIFEST_NAME).read_text())
    assert data["format"] == 1
    assert data["source"] == str(src)
    assert data["tag"] == "20170220"
    assert data["host"] == MINION_ID
    assert data["meta"] == {"release": "v1"}
    assert data["created"]
    jar = (src / "lib" / "app.jar").read_bytes()
    assert data["files"]["lib/app.jar"] == {
        "sha256": hashlib.sha256(jar).hexdigest(),
        "size": len(jar),
        "mode": f"{os.stat(src / 'lib' / 'app.jar').st_mode & 0o7777:04o}",
    }
    assert data["files"]["bin/startup.sh"]["mode"] == "0750"
    assert set(data["files"]) == {"lib/app.jar", "bin/startup.sh", "conf.properties"}
    assert data["symlinks"] == {"current.jar": "lib/app.jar"}
    assert set(data["dirs"]) == {".", "lib", "bin", "logs"}
    assert res["files"] == 3
    assert res["bytes"] == sum(entry["size"] for entry in data["files"].values())
    # The symlink is a symlink in the backup, not a copy of its target.
    assert os.readlink(tmp_path / "ecsc_20170220" / "current.jar") == "lib/app.jar"


def test_source_holding_a_manifest_is_refused(tmp_path):
    src = _tree(tmp_path / "ecsc")
    (src / backup.MANIFEST_NAME).write_text("{}")
    with pytest.raises(CommandExecutionError, match="refusing to back up a backup"):
        backup.create(str(src), "t1")
    assert not (tmp_path / "ecsc_t1").exists()


def test_underscore_tags_do_not_mix_up_sibling_dirs(tmp_path):
    # /home/foo_bar_1 is foo_bar's backup tagged 1, not foo's backup tagged bar_1.
    foo = _tree(tmp_path / "foo")
    foo_bar = _tree(tmp_path / "foo_bar")
    backup.create(str(foo_bar), "1")
    assert backup.list_(str(foo)) == []
    assert [b["tag"] for b in backup.list_(str(foo_bar))] == ["1"]
    with pytest.raises(CommandExecutionError, match="is a backup of"):
        backup.verify(str(foo), "bar_1")
    with pytest.raises(CommandExecutionError, match="is a backup of"):
        backup.create(str(foo), "bar_1")


# ------------------------------------------------------------------ comparison logic


def _manifest():
    return {
        "files": {
            "a.jar": {"sha256": "aa", "size": 2, "mode": "0644"},
            "bin/run.sh": {"sha256": "bb", "size": 3, "mode": "0755"},
        },
        "symlinks": {"cur": "a.jar"},
        "dirs": {".": "0755", "bin": "0755", "empty": "0700"},
    }


def test_compare_identical_is_ok():
    diff = backup._compare(_manifest(), _manifest())
    assert diff == {"ok": True, "modified": [], "missing": [], "added": []}


def test_compare_reports_content_mode_link_changes_missing_and_added():
    actual = _manifest()
    actual["files"]["a.jar"]["sha256"] = "zz"
    actual["files"]["bin/run.sh"]["mode"] = "0644"
    actual["symlinks"]["cur"] = "elsewhere"
    actual["dirs"]["empty"] = "0755"
    del actual["dirs"]["bin"]
    del actual["files"]["bin/run.sh"]
    actual["files"]["new.txt"] = {"sha256": "cc", "size": 1, "mode": "0644"}
    actual["other"] = ["fifo"]
    diff = backup._compare(_manifest(), actual)
    assert diff["ok"] is False
    assert diff["modified"] == ["a.jar", "cur", "empty"]
    assert diff["missing"] == ["bin", "bin/run.sh"]
    assert diff["added"] == ["fifo", "new.txt"]


def test_compare_type_change_is_modified_not_missing():
    actual = _manifest()
    del actual["symlinks"]["cur"]
    actual["files"]["cur"] = {"sha256": "aa", "size": 2, "mode": "0644"}
    diff = backup._compare(_manifest(), actual)
    assert diff["modified"] == ["cur"] and not diff["missing"] and not diff["added"]


def test_compare_against_nothing_lists_everything_missing():
    diff = backup._compare(_manifest(), {})
    assert diff["missing"] == [".", "a.jar", "bin", "bin/run.sh", "cur", "empty"]


# ------------------------------------------------------------------ prune selection


@pytest.mark.parametrize(
    "tags,keep,protect,deleted,kept",
    [
        (["d", "c", "b", "a"], 3, [], ["a"], ["d", "c", "b"]),
        (["d", "c", "b", "a"], 1, [], ["c", "b", "a"], ["d"]),
        (["d", "c", "b", "a"], 1, ["b"], ["c", "a"], ["d", "b"]),
        (["d", "c", "b", "a"], 2, ["a"], ["b"], ["d", "c", "a"]),
        (["d", "c"], 5, [], [], ["d", "c"]),
        ([], 3, ["x"], [], []),
        # Protecting the newest does not make room for an extra old one.
        (["d", "c", "b"], 1, ["d"], ["c", "b"], ["d"]),
    ],
)
def test_prune_selection(tags, keep, protect, deleted, kept):
    assert backup._select_prune(tags, keep, protect) == (deleted, kept)


def test_prune_never_deletes_newest():
    for keep in (1, 2, 3):
        delete, kept = backup._select_prune(["new", "mid", "old"], keep, [])
        assert "new" in kept and "new" not in delete


@pytest.mark.parametrize("keep", [0, -1, "x", None])
def test_prune_keep_must_be_positive(tmp_path, keep):
    with pytest.raises(SaltInvocationError) as exc:
        backup.prune(str(tmp_path / "ecsc"), keep=keep)
    assert MINION_ID in str(exc.value)


def test_prune_uses_list_order_and_protect_string(tmp_path):
    listed = [{"tag": t} for t in ("d", "c", "b", "a")]
    with patch.object(backup, "list_", return_value=listed), patch.object(
        backup.os, "rename"
    ) as rename, patch.object(backup, "_rmtree") as rmtree:
        res = backup.prune(str(tmp_path / "ecsc"), keep=1, protect="b, a")
    assert res == {"deleted": ["c"], "kept": ["d", "b", "a"]}
    assert rename.call_args[0][0] == str(tmp_path / "ecsc_c")
    assert os.path.basename(rename.call_args[0][1]).startswith(".ecsc_c.tmp-")
    rmtree.assert_called_once()


# ------------------------------------------------------------------ free space


def test_free_space_refusal_writes_nothing(tmp_path):
    src = _tree(tmp_path / "ecsc")
    before = _listing(tmp_path)
    usage = shutil._ntuple_diskusage(total=10 << 30, used=10 << 30, free=1 << 20)
    with patch.object(backup.shutil, "disk_usage", return_value=usage) as disk_usage:
        with pytest.raises(CommandExecutionError) as exc:
            backup.create(str(src), "20170220")
    disk_usage.assert_called_once_with(str(tmp_path))
    message = str(exc.value)
    assert "not enough free space" in message and MINION_ID in message
    assert str(src) in message and "20170220" in message
    assert _listing(tmp_path) == before


def test_space_needed_covers_tree_plus_margin(tmp_path):
    src = _tree(tmp_path / "ecsc")
    tree = backup._walk(str(src))
    needed = backup._space_needed(tree)
    assert needed >= tree.nbytes + backup._FREE_MARGIN_BYTES


def test_enough_space_in_test_mode_writes_nothing(tmp_path):
    src = _tree(tmp_path / "ecsc")
    before = _listing(tmp_path)
    res = backup.create(str(src), "20170220", test=True)
    assert res["created"] is True and res["test"] is True and res["files"] == 3
    assert _listing(tmp_path) == before


# ------------------------------------------------------------------ states (module mocked)


def test_state_present_test_mode_reports_plan():
    create = MagicMock(
        return_value={"path": "/home/ecsc_1", "created": True, "files": 3, "bytes": 42}
    )
    with patch.dict(backup_state.__salt__, {"backup.create": create}), patch.dict(
        backup_state.__opts__, {"test": True}
    ):
        ret = backup_state.present("/home/ecsc", "1")
    create.assert_called_once_with("/home/ecsc", "1", meta=None, test=True)
    assert ret["result"] is None
    assert ret["comment"] == "would back up /home/ecsc to /home/ecsc_1 (3 files, 42 bytes)"


def test_state_present_existing_backup_is_no_change():
    create = MagicMock(
        return_value={"path": "/home/ecsc_1", "created": False, "files": 3, "bytes": 42}
    )
    with patch.dict(backup_state.__salt__, {"backup.create": create}):
        ret = backup_state.present("/home/ecsc", "1")
    assert ret["result"] is True and ret["changes"] == {}


def test_state_exception_is_result_false_with_message():
    create = MagicMock(side_effect=CommandExecutionError("backup on minion m: boom"))
    restore = MagicMock(side_effect=SaltInvocationError("bad tag"))
    with patch.dict(backup_state.__salt__, {"backup.create": create, "backup.restore": restore}):
        ret = backup_state.present("/home/ecsc", "1")
        assert ret["result"] is False and ret["comment"] == "backup on minion m: boom"
        ret = backup_state.restored("/home/ecsc", "1")
        assert ret["result"] is False and ret["comment"] == "bad tag"


# ------------------------------------------------------------------ work split


@pytest.mark.parametrize(
    "weights,parts",
    [([1] * 10, 2), ([100, 1, 1, 1, 1], 2), ([5], 3), ([1, 1], 4), ([0, 0, 0], 2), ([], 2)],
)
def test_chunks_are_contiguous_and_cover_every_job_once(weights, parts):
    runs = backup._chunks(weights, parts)
    assert [i for run in runs for i in run] == list(range(len(weights)))
    assert len(runs) <= max(1, parts)
    assert all(run for run in runs)


def test_chunks_balance_weight():
    runs = backup._chunks([1] * 10, 2)
    assert [len(run) for run in runs] == [5, 5]
