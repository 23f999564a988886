"""Functional tests of the upgrade's artifact pre-flight (``release.preflight``, the module
function the state ``release.verified`` and the render-time survey ``inventory.current``
share): the archive is fetched and verified and the disk has room, read-only."""

from collections import namedtuple
from unittest import mock

import pytest
from salt.exceptions import CommandExecutionError

from tests.functional import hostile_archives as ha

FILES = {"WEB-INF/web.xml": b"<web-app/>\n", "startup.sh": ("exec", b"#!/bin/sh\necho v2\n")}


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "home" / "svc"
    path.mkdir(parents=True)
    (path / "old.jar").write_bytes(b"x" * 4096)
    return path


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "svc.tar"
    return str(path), ha.build_release(path, "svc", FILES)


def test_preflight_verifies_the_archive_and_the_room(modules, states, target, archive):
    path, sha = archive
    checked = modules.release.preflight(str(target), path, sha)
    assert checked["sha256"] == sha and checked["members"] >= 2
    assert checked["need"] >= int((checked["bytes"] + 4096) * 1.1) and checked["free"] > 0
    ret = states.release.verified(name=str(target), source=path, sha256=sha)
    assert ret.result is True and ret.comment.split(";")[0] == checked["comment"].split(";")[0]
    assert "verified" in ret.comment and not ret.changes


def test_preflight_refuses_a_wrong_sum_and_a_missing_archive(modules, states, target, archive):
    path, _ = archive
    with pytest.raises(CommandExecutionError, match="sha256"):
        modules.release.preflight(str(target), path, "0" * 64)
    ret = states.release.verified(name=str(target), source=path + ".gone", sha256="0" * 64)
    assert ret.result is False and "could not fetch release archive" in ret.comment


def test_preflight_refuses_when_the_disk_has_no_room(modules, states, target, archive):
    path, sha = archive
    usage = namedtuple("usage", "total used free")(10**9, 10**9 - 100, 100)
    with mock.patch("shutil.disk_usage", return_value=usage):
        with pytest.raises(CommandExecutionError, match="has 100 bytes free"):
            modules.release.preflight(str(target), path, sha)
        ret = states.release.verified(name=str(target), source=path, sha256=sha)
    assert ret.result is False and "has 100 bytes free, the backup of" in ret.comment
