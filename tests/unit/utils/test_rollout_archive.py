"""
Unit tests of _utils/rollout_archive.py: the member checks of a release archive.
"""

import tarfile

import pytest
from salt.exceptions import CommandExecutionError

from tests.conftest import load_repo_module

archive = load_repo_module("utils", "rollout_archive")

MINION = "unit-minion"
PREFIX = f"release on minion {MINION}: "
ARCHIVE = "/srv/upload/svc.tar"


def member(name, type_=tarfile.REGTYPE, mode=0o644, linkname="", size=5):
    info = tarfile.TarInfo(name)
    info.type = type_
    info.mode = mode
    info.linkname = linkname
    info.size = size if type_ == tarfile.REGTYPE else 0
    return info


def good_members():
    return [
        member("svc", tarfile.DIRTYPE, 0o755),
        member("svc/WEB-INF", tarfile.DIRTYPE, 0o755),
        member("svc/WEB-INF/lib", tarfile.DIRTYPE, 0o755),
        member("svc/WEB-INF/lib/svc.jar", size=100),
        member("svc/WEB-INF/lib/svc.jar.bak", tarfile.LNKTYPE, linkname="svc/WEB-INF/lib/svc.jar"),
        member("svc/current.jar", tarfile.SYMTYPE, 0o777, linkname="WEB-INF/lib/svc.jar"),
        member("svc/WEB-INF/up", tarfile.SYMTYPE, 0o777, linkname="../current.jar"),
        member("svc/startup.sh", mode=0o755, size=20),
    ]


def run_check(members, top=None, dests=()):
    checker = archive.MemberCheck(ARCHIVE, top, prefix=PREFIX, dests=dests)
    for m in members:
        checker.check(m)
    return checker.finish()


def rejected(members, top=None, dests=()):
    with pytest.raises(CommandExecutionError) as exc:
        run_check(members, top, dests)
    message = str(exc.value)
    assert MINION in message and ARCHIVE in message
    return message


# --------------------------------------------------------------------------- member checks


def test_good_members_pass():
    assert run_check(good_members(), top="svc") == ("svc", 8, 120)
    assert run_check(good_members())[0] == "svc"


def test_check_returns_path_below_top():
    checker = archive.MemberCheck(ARCHIVE)
    assert checker.check(member("./svc/", tarfile.DIRTYPE)) == ""
    assert checker.check(member("./svc/a/b.txt")) == "a/b.txt"
    assert checker.check(member("./", tarfile.DIRTYPE)) is None


@pytest.mark.parametrize(
    "bad, offender, why",
    [
        (member("svc/../../etc/x"), "svc/../../etc/x", "'..'"),
        (member("svc/a/../b"), "svc/a/../b", "'..'"),
        (member("/etc/x"), "/etc/x", "absolute path"),
        (member("svc/l", tarfile.SYMTYPE, linkname="../../etc"), "svc/l", "data filter"),
        (member("svc/l", tarfile.SYMTYPE, linkname="/etc/passwd"), "svc/l", "data filter"),
        (member("svc/l", tarfile.SYMTYPE, linkname="../x"), "svc/l", "leaves the top-level dir"),
        (member("svc/l", tarfile.SYMTYPE, linkname="../svc/startup.sh"), "svc/l", "leaves"),
        (member("svc/h", tarfile.LNKTYPE, linkname="../etc/passwd"), "svc/h", "data filter"),
        (member("svc/h", tarfile.LNKTYPE, linkname="svc/missing"), "svc/h", "hard link"),
        (member("svc/h", tarfile.LNKTYPE, linkname="svc/current.jar"), "svc/h", "hard link"),
        (member("svc/d", tarfile.CHRTYPE), "svc/d", "special file"),
        (member("svc/d", tarfile.BLKTYPE), "svc/d", "special file"),
        (member("svc/p", tarfile.FIFOTYPE), "svc/p", "special file"),
        (member("svc/suid", mode=0o4755), "svc/suid", "setuid/setgid/sticky"),
        (member("svc/sgid", tarfile.DIRTYPE, mode=0o2755), "svc/sgid", "setuid/setgid/sticky"),
        (member("svc/tmp", tarfile.DIRTYPE, mode=0o1777), "svc/tmp", "setuid/setgid/sticky"),
        (member("other/x"), "other/x", "outside the top-level dir 'svc'"),
        (member("README"), "README", "outside"),
        (member("svc/startup.sh"), "svc/startup.sh", "appears twice"),
        (member("svc/current.jar/x"), "svc/current.jar/x", "lies below"),
        (member("svc/startup.sh/x"), "svc/startup.sh/x", "lies below"),
    ],
)
def test_bad_member_is_named(bad, offender, why):
    message = rejected(good_members() + [bad])
    assert f"member {offender!r}" in message
    assert why in message


def test_repeated_directory_entry_is_fine():
    assert run_check(good_members() + [member("svc/WEB-INF", tarfile.DIRTYPE)])[1] == 9


def test_top_must_be_a_directory():
    message = rejected([member("svc")])
    assert "'svc' is a top-level entry that is not a directory" in message


def test_expected_top():
    message = rejected(good_members(), top="ecsc")
    assert "member 'svc' is outside the expected top-level dir 'ecsc'" in message


def test_first_bad_member_is_the_one_named():
    message = rejected(
        good_members()
        + [member("svc/pipe", tarfile.FIFOTYPE), member("/etc/shadow"), member("svc/../x")]
    )
    assert "'svc/pipe'" in message
    assert "/etc/shadow" not in message and "svc/../x" not in message


def test_symlink_chain_through_later_link():
    members = good_members() + [
        member("svc/a", tarfile.SYMTYPE, linkname="l/../startup.sh"),
        member("svc/l", tarfile.SYMTYPE, linkname="."),
    ]
    message = rejected(members)
    assert "member 'svc/a'" in message and "through other symlinks" in message


def test_symlink_loop():
    members = good_members() + [
        member("svc/a", tarfile.SYMTYPE, linkname="b/x"),
        member("svc/b", tarfile.SYMTYPE, linkname="a/x"),
    ]
    assert "symlink loop" in rejected(members)


def test_empty_archive():
    with pytest.raises(CommandExecutionError, match="has no members"):
        run_check([])


def test_resolve():
    links = {"svc/l": ".", "svc/lib": "WEB-INF/lib", "svc/abs": "/etc"}
    assert archive.resolve(["svc", "x"], links) == ["svc", "x"]
    assert archive.resolve(["svc", "lib", "a.jar"], links) == ["svc", "WEB-INF", "lib", "a.jar"]
    assert archive.resolve(["svc", "lib", ".."], links) == ["svc", "WEB-INF"]
    assert archive.resolve(["svc", "l", ".."], links) is None
    assert archive.resolve(["svc", "..", "svc"], links) is None
    assert archive.resolve(["svc", "abs"], links) is None
    with pytest.raises(ValueError):
        archive.resolve(["svc", "a"], {"svc/a": "a"})


def test_extract_filter_rewrites_and_confines(tmp_path):
    staging = tmp_path / ".svc.staging"
    staging.mkdir()
    filt = archive.extract_filter(ARCHIVE, "svc", prefix=PREFIX)
    assert filt(member("svc", tarfile.DIRTYPE), str(staging)) is None
    out = filt(member("svc/a/b.jar", mode=0o664), str(staging))
    assert out.name == "a/b.jar" and out.mode == 0o644 and out.uid is None
    out = filt(member("svc/c", tarfile.LNKTYPE, linkname="svc/a/b.jar"), str(staging))
    assert out.linkname == "a/b.jar"
    # Second line of defence, against the real staging dir on disk.
    (staging / "up").symlink_to("..")
    with pytest.raises(tarfile.FilterError):
        filt(member("svc/up/x"), str(staging))
    with pytest.raises(tarfile.FilterError):
        filt(member("svc/l", tarfile.SYMTYPE, linkname="../svc"), str(staging))
    with pytest.raises(CommandExecutionError, match="outside 'svc'"):
        filt(member("other/x"), str(staging))
    with pytest.raises(CommandExecutionError, match="setuid"):
        filt(member("svc/x", mode=0o4755), str(staging))


# --------------------------------------------------------------------------- issue 8.4


def test_file_or_link_over_an_implicit_directory_is_refused():
    for late in (member("svc/d"), member("svc/d", tarfile.SYMTYPE, linkname="x")):
        message = rejected([member("svc", tarfile.DIRTYPE), member("svc/d/f"), late])
        assert "member 'svc/d' conflicts with the directory 'svc/d'" in message
        assert "'svc/d/f' created implicitly" in message
    # An explicit directory entry after the implicit one is fine.
    run_check([member("svc", tarfile.DIRTYPE), member("svc/d/f"), member("svc/d", tarfile.DIRTYPE)])


def test_path_length_counts_the_destination(tmp_path):
    deep = "svc/" + "/".join(["d" * 200] * 19) + "/f"  # ~3.8 KB: fits below "/"
    run_check([member("svc", tarfile.DIRTYPE), member(deep)])
    dest = tmp_path / ("p" * 200) / ("q" * 200) / "svc"
    message = rejected([member("svc", tarfile.DIRTYPE), member(deep)], dests=[str(dest)])
    assert f"member {deep!r} is nested too deep" in message


def test_name_longer_than_name_max_is_refused():
    message = rejected([member("svc", tarfile.DIRTYPE), member("svc/" + "n" * 256)])
    assert "path component of 256 bytes; the filesystem allows 255" in message
