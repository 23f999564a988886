"""lab/build.py: release archives shaped like the runbook's, reproducible, v1 != v2."""

import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from lab import build
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("javac") is None or not build.SERVLET_API_JAR.is_file(),
    reason="needs javac (JDK 17) and Debian's libtomcat10-java",
)

RELEASE = "20170220"
EXPECTED_MEMBERS = {
    "ecsc": {
        "ecsc": "d755",
        "ecsc/WEB-INF": "d755",
        "ecsc/WEB-INF/web.xml": "f644",
        "ecsc/WEB-INF/lib": "d755",
        "ecsc/WEB-INF/lib/ecsc.jar": "f644",
    },
    "ecmc": {
        "ecmc": "d755",
        "ecmc/WEB-INF": "d755",
        "ecmc/WEB-INF/web.xml": "f644",
        "ecmc/WEB-INF/lib": "d755",
        "ecmc/WEB-INF/lib/ecmc.jar": "f644",
    },
    "schedule": {
        "schedule": "d755",
        "schedule/startup.sh": "f755",
        "schedule/lib": "d755",
        "schedule/lib/schedule.jar": "f644",
    },
    "schedule-res": {
        "schedule-res": "d755",
        "schedule-res/startup.sh": "f755",
        "schedule-res/lib": "d755",
        "schedule-res/lib/schedule-res.jar": "f644",
    },
}
JAR_OF = {
    "ecsc": "ecsc/WEB-INF/lib/ecsc.jar",
    "ecmc": "ecmc/WEB-INF/lib/ecmc.jar",
    "schedule": "schedule/lib/schedule.jar",
    "schedule-res": "schedule-res/lib/schedule-res.jar",
}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("lab-build-cache")


@pytest.fixture(scope="module")
def builds(tmp_path_factory, cache_root):
    """v1 and v2 of all four services (one javac call each)."""
    out = tmp_path_factory.mktemp("lab-build-out")
    return {
        variant: build.build_release(RELEASE, variant, out / variant, build_root=cache_root)
        for variant in ("v1", "v2")
    }


def _member(tar_path, name):
    with tarfile.open(tar_path) as tar:
        return tar.extractfile(name).read()


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_archives_have_exactly_the_runbook_layout(builds, variant):
    assert set(builds[variant]) == set(build.SERVICES)
    for service, (tar_path, _) in builds[variant].items():
        assert tar_path.name == f"{service}.tar"
        assert tar_path.parent.name == RELEASE
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
        found = {
            m.name: ("d" if m.isdir() else "f" if m.isfile() else "?") + format(m.mode, "o")
            for m in members
        }
        assert found == EXPECTED_MEMBERS[service]
        assert {m.name.split("/")[0] for m in members} == {service}
        assert not any(m.name.endswith("host.properties") or "/conf" in m.name for m in members)
        assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root") for m in members)
        assert {m.mtime for m in members} == {build.release_mtime(RELEASE)}
        names = [m.name for m in members]
        assert names == sorted(names, key=lambda n: n.split("/"))  # parents before children


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_sha256_files_match(builds, variant):
    for service, (tar_path, digest) in builds[variant].items():
        assert hashlib.sha256(tar_path.read_bytes()).hexdigest() == digest
        sha_file = tar_path.with_name(f"{service}.tar.sha256")
        assert sha_file.read_text() == f"{digest}  {service}.tar\n"


def test_release_mtime_is_the_release_date():
    assert build.release_mtime("20170220") == 1487548800  # 2017-02-20T00:00:00Z
    assert build.release_mtime("hotfix") == build.FALLBACK_MTIME


def test_build_is_reproducible(builds, tmp_path):
    # A fresh compile (new cache root) and a cached one both give byte-identical archives.
    fresh = build.build_release(RELEASE, "v2", tmp_path / "out1", build_root=tmp_path / "cache")
    cached = build.build_release(RELEASE, "v2", tmp_path / "out2", build_root=tmp_path / "cache")
    for service, (_, digest) in builds["v2"].items():
        assert fresh[service][1] == digest
        assert cached[service][1] == digest


def test_compile_is_cached(builds, cache_root):
    classes = cache_root / f"v1-{RELEASE}" / "classes"
    marker = classes / "lab" / "common" / "BuildInfo.class"
    inode = marker.stat().st_ino
    assert build.compile_classes(RELEASE, "v1", cache_root) == classes
    assert marker.stat().st_ino == inode  # not recompiled


def test_v1_and_v2_jars_differ_and_carry_release_and_variant(builds):
    for service, jar_name in JAR_OF.items():
        jars = {v: _member(builds[v][service][0], jar_name) for v in ("v1", "v2")}
        assert jars["v1"] != jars["v2"]
        assert builds["v1"][service][1] != builds["v2"][service][1]
        for variant, data in jars.items():
            with zipfile.ZipFile(io.BytesIO(data)) as jar:
                manifest = jar.read("META-INF/MANIFEST.MF").decode()
                info = jar.read("lab/common/BuildInfo.class")
            assert f"Implementation-Version: {RELEASE}" in manifest
            assert f"X-Lab-Variant: {variant}" in manifest
            assert RELEASE.encode() in info and variant.encode() in info


def test_webapp_descriptors(builds):
    for variant in ("v1", "v2"):
        ecmc = _member(builds[variant]["ecmc"][0], "ecmc/WEB-INF/web.xml").decode()
        ecsc = _member(builds[variant]["ecsc"][0], "ecsc/WEB-INF/web.xml").decode()
        assert 'metadata-complete="true"' in ecmc and 'metadata-complete="true"' in ecsc
        assert "<url-pattern>/health</url-pattern>" in ecmc
        assert "<url-pattern>/customers</url-pattern>" in ecmc
        assert "<url-pattern>/customers</url-pattern>" not in ecsc
        assert "<param-value>ecsc</param-value>" in ecsc


def test_startup_script_execs_the_jvm(builds):
    script = _member(builds["v2"]["schedule-res"][0], "schedule-res/startup.sh").decode()
    assert script.startswith("#!/bin/sh\n")
    assert 'cd "$(dirname "$0")"' in script
    assert re.search(
        r'exec "\$\{JAVA_HOME:\+\$JAVA_HOME/bin/\}java" .*-Dservice\.name=schedule-res'
        r" .*-cp lib/schedule-res\.jar lab\.standalone\.Main conf/host\.properties",
        script.replace("\\\n", " "),
    )
    assert subprocess.run(["sh", "-n"], input=script, text=True, check=False).returncode == 0


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(build.BuildError, match="release id"):
        build.build_release("../x", "v1", tmp_path)
    with pytest.raises(build.BuildError, match="unknown variant"):
        build.build_release(RELEASE, "v3", tmp_path)
    with pytest.raises(build.BuildError, match="unknown service"):
        build.build_release(RELEASE, "v1", tmp_path, services=["ecsc", "nope"])


def test_cli_builds_selected_services(builds, cache_root, tmp_path):
    proc = subprocess.run(
        [sys.executable, "lab/build.py", "--release", RELEASE, "--variant", "v2",
         "--service", "ecmc", "--out", str(tmp_path), "--build-dir", str(cache_root)],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / RELEASE).iterdir()) == ["ecmc.tar", "ecmc.tar.sha256"]
    digest = builds["v2"]["ecmc"][1]
    assert proc.stdout == f"{digest}  {tmp_path / RELEASE / 'ecmc.tar'}\n"
    bad = subprocess.run(
        [sys.executable, "lab/build.py", "--release", "../x", "--variant", "v2", "--out",
         str(tmp_path)], cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 1 and "release id" in bad.stderr


def test_fault_variants_are_v2_plus_one_fault():
    faults = {"broken": "BROKEN_STARTUP", "ignore-term": "IGNORE_TERM",
              "crashloop": "CRASH_AFTER_READY", "fatal-healthy": "FATAL_AFTER_READY",
              "silent": "NO_STARTED_LINE"}
    for variant, flag in faults.items():
        flags = build.VARIANTS[variant]
        assert {k for k, v in flags.items() if v} == {flag}, variant
        assert set(flags) == set(build.VARIANTS["v2"])
    # Every flag reaches the generated BuildInfo class.
    source = build._BUILD_INFO.format(release=RELEASE, variant="crashloop", **{
        k: str(v).lower() for k, v in build.VARIANTS["crashloop"].items()})
    assert "CRASH_AFTER_READY = true;" in source and "IGNORE_TERM = false;" in source
