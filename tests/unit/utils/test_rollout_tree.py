"""Unit tests for _utils/rollout_tree.py: the one tree walk/hash/copy/compare."""

import pytest

from tests.conftest import load_repo_module

tree = load_repo_module("utils", "rollout_tree")


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
    diff = tree.compare(_manifest(), _manifest())
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
    diff = tree.compare(_manifest(), actual)
    assert diff["ok"] is False
    assert diff["modified"] == ["a.jar", "cur", "empty"]
    assert diff["missing"] == ["bin", "bin/run.sh"]
    assert diff["added"] == ["fifo", "new.txt"]


def test_compare_type_change_is_modified_not_missing():
    actual = _manifest()
    del actual["symlinks"]["cur"]
    actual["files"]["cur"] = {"sha256": "aa", "size": 2, "mode": "0644"}
    diff = tree.compare(_manifest(), actual)
    assert diff["modified"] == ["cur"] and not diff["missing"] and not diff["added"]


def test_compare_against_nothing_lists_everything_missing():
    diff = tree.compare(_manifest(), {})
    assert diff["missing"] == [".", "a.jar", "bin", "bin/run.sh", "cur", "empty"]


# ------------------------------------------------------------------ work split


@pytest.mark.parametrize(
    "weights,parts",
    [([1] * 10, 2), ([100, 1, 1, 1, 1], 2), ([5], 3), ([1, 1], 4), ([0, 0, 0], 2), ([], 2)],
)
def test_chunks_are_contiguous_and_cover_every_job_once(weights, parts):
    runs = tree._chunks(weights, parts)
    assert [i for run in runs for i in run] == list(range(len(weights)))
    assert len(runs) <= max(1, parts)
    assert all(run for run in runs)


def test_chunks_balance_weight():
    runs = tree._chunks([1] * 10, 2)
    assert [len(run) for run in runs] == [5, 5]
