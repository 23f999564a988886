"""Unit tests for _utils/rollout_logs.py: following a log from an offset, tails, offsets."""

import os

import pytest

from tests.conftest import load_repo_module

rollout_logs = load_repo_module("utils", "rollout_logs")


def test_log_reader_reads_only_after_offset_and_buffers_partial_lines(tmp_path):
    path = tmp_path / "catalina.out"
    path.write_text("INFO: Server startup in [123] milliseconds\n")
    reader = rollout_logs.follow(str(path), path.stat().st_size, path.stat().st_ino)
    assert reader.poll() == []
    with open(path, "a") as handle:
        handle.write("one\ntw")
    assert reader.poll() == ["one"]
    with open(path, "a") as handle:
        handle.write("o\r\n")
    assert reader.poll() == ["two"]


def test_log_reader_truncated_and_replaced(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("old line 1\nold line 2\n")
    reader = rollout_logs.follow(str(path), path.stat().st_size, path.stat().st_ino)
    path.write_text("new\n")  # truncated in place (same inode), shorter than the offset
    assert reader.poll() == ["new"]
    replacement = tmp_path / "app.log.new"
    replacement.write_text("fresh\n")
    os.replace(replacement, path)  # rotated/replaced: another inode
    assert reader.poll() == ["fresh"]
    assert reader.restarts == 2


def test_log_reader_waits_for_missing_file(tmp_path):
    path = tmp_path / "later.log"
    reader = rollout_logs.follow(str(path), 0)
    assert reader.poll() == []
    path.write_text("hello\n")
    assert reader.poll() == ["hello"]


def test_tail(tmp_path):
    path = tmp_path / "big.log"
    path.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert rollout_logs.tail(str(path), 3) == ["line 4997", "line 4998", "line 4999"]
    assert rollout_logs.tail(str(path), 2, block=7) == ["line 4998", "line 4999"]
    path.write_text("a\nb")
    assert rollout_logs.tail(str(path)) == ["a", "b"]
    assert rollout_logs.tail(str(path), 0) == []
    with pytest.raises(FileNotFoundError):
        rollout_logs.tail(str(tmp_path / "missing"))


def test_follow_from_end_and_offsets(tmp_path):
    path = tmp_path / "app.log"
    path.write_text("old\n")
    follower = rollout_logs.follow_from_end(str(path))
    with open(path, "a") as handle:
        handle.write("new\n")
    assert follower.poll() == ["new"]
    sizes, inodes = rollout_logs.offsets([str(path), str(tmp_path / "later.log")])
    assert sizes == {str(path): 8, str(tmp_path / "later.log"): 0}
    assert inodes == {str(path): path.stat().st_ino}


def test_tail_block_quotes_only_regular_files_in_the_log_dirs(tmp_path):
    # Issue 8.4: an error message never carries another file's content.
    logs, elsewhere = tmp_path / "logs", tmp_path / "etc"
    logs.mkdir()
    elsewhere.mkdir()
    secret = elsewhere / "shadow"
    secret.write_text("root:SECRET\n")
    app = logs / "app.log"
    app.write_text("started\n")
    assert rollout_logs.tail_block(str(app), [str(logs)]).endswith("---\nstarted")
    outside = rollout_logs.tail_block(str(secret), [str(logs)])
    assert "SECRET" not in outside and "outside the service's log directories" in outside
    link = logs / "catalina.out"
    link.symlink_to(secret)
    planted = rollout_logs.tail_block(str(link), [str(logs)])
    assert "SECRET" not in planted and "(not quoted: a symlink)" in planted
    os.mkfifo(logs / "fifo.log")  # would block a plain open()
    assert "not a regular file" in rollout_logs.tail_block(str(logs / "fifo.log"), [str(logs)])
    assert rollout_logs.tail_block(str(logs / "none.log"), [str(logs)]).endswith("(no such file)")
