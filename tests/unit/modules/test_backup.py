"""Unit tests for _modules/backup.py (logic, with the loader mocked)."""

import hashlib
import json
import os
import shutil
from unittest.mock import patch

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.conftest import load_repo_module, repo_utils

MINION_ID = "unit-minion"

backup = load_repo_module("modules", "backup")


@pytest.fixture
def configure_loader_modules():
    opts = {"id": MINION_ID, "test": False}
    return {backup: {"__opts__": opts, "__utils__": repo_utils(opts)}}


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
    ) as rename, patch.object(backup, "_remove_tree") as rmtree:
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
    tree = backup._tree("walk")(str(src))
    needed = backup._space_needed(tree)
    assert needed >= tree.nbytes + backup._FREE_MARGIN_BYTES


def test_enough_space_in_test_mode_writes_nothing(tmp_path):
    src = _tree(tmp_path / "ecsc")
    before = _listing(tmp_path)
    res = backup.create(str(src), "20170220", test=True)
    assert res["created"] is True and res["test"] is True and res["files"] == 3
    assert _listing(tmp_path) == before


def test_prune_selection_keeps_the_family_of_a_protected_tag():
    tags = ["v3", "v2.1", "v2", "v1.1", "v1"]
    assert backup._select_prune(tags, 1, ["v2"]) == (["v1.1", "v1"], ["v3", "v2.1", "v2"])
