"""What the fault suite (test_faults.py) checks after every fault: nothing lost.

"Nothing lost" (issue 9), after the fault and at most one re-run of the same command:

- every touched host is on a known release: its deployed record matches its tree
  (``salt <host> release.status``), or, without a record (deployed by hand, like the lab's
  v1), its tree is exactly one of the lab's release archives;
- its service is ready: exactly one JVM, the health URL answers 200 with that release, and the
  application log's last started line names it;
- every backup verifies (``backup.verify``), and no ``<dir>_<tag>`` directory exists that is
  not a listed backup (a half-made copy a later run could take for a good one);
- no tree exists that no backup holds: the tree the host ran before the fault is the live
  tree or a verified backup, and so is any tree left beside it (``.previous``, a restore's
  set-aside tree);
- the partner of a failed host was never stopped (same JVM pids).
"""

import concurrent.futures
import hashlib
import json
import os
import re
import tarfile

from lab import labctl
from tests.integration.conftest import http_get, run_cli

MANIFEST = ".backup-manifest.json"
STARTED_RE = re.compile(r"\b[Ss]tarted\b.*\brelease=(\S+)")


def file_map(path):
    """{relpath: sha256 or link:target} of every file and symlink below ``path``."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            full = os.path.join(root, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                found[rel] = "link:" + os.readlink(full)
                continue
            digest = hashlib.sha256()
            with open(full, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            found[rel] = digest.hexdigest()
    return found


def _archive_map(release, service):
    """{relpath: sha256} of a lab release archive (relative to its top-level dir)."""
    found = {}
    with tarfile.open(labctl.ARTIFACTS / release / f"{service}.tar") as tar:
        for member in tar.getmembers():
            if member.isfile():
                rel = member.name.split("/", 1)[1]
                found[rel] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return found


def _by_hand_release(tree, service):
    """The lab release whose archive is exactly ``tree`` (host-local conf/ aside), or None."""
    own = {k: v for k, v in tree.items() if not k.startswith("conf/")}
    for release_dir in sorted(labctl.ARTIFACTS.iterdir()):
        if (release_dir / f"{service}.tar").is_file():
            try:
                if _archive_map(release_dir.name, service) == own:
                    return release_dir.name
            except (OSError, tarfile.TarError):
                continue
    return None


def install_dir(host):
    return labctl.in_root(host, host["conf"]["install_dir"])


def snapshot(hosts):
    """{host id: {"pids", "release" (health), "tree" (file map)}} of lab hosts."""
    snap = {}
    for host in hosts:
        status, body = http_get(labctl.health_url(host))
        snap[host["id"]] = {
            "pids": sorted(labctl.service_pids(host)),
            "release": json.loads(body)["release"] if status == 200 else None,
            "tree": file_map(install_dir(host)),
        }
    return snap


def salt_call(host_id, funs, args, timeout=120):
    """``salt <host> f1,f2 a1,a2`` (one call for several functions), parsed; raises when the
    host did not answer."""
    # Several functions: one argument each, comma-joined; one function: its own arguments.
    args = [",".join(args)] if len(funs) > 1 else list(args)
    proc = run_cli("salt", "--out=json", "--static", "-t", "30", host_id, ",".join(funs),
                   *args, timeout=timeout)
    try:
        ret = json.loads(proc.stdout)[host_id]
    except (ValueError, KeyError):
        raise AssertionError(f"{host_id} did not answer {funs}: {proc.stdout[-500:]}"
                             f"{proc.stderr[-500:]}") from None
    return ret if len(funs) > 1 else {funs[0]: ret}


def _last_started(host):
    """The release named by the last started line of the host's application log."""
    try:
        lines = labctl.app_log(host).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = STARTED_RE.search(line)
        if match:
            return match.group(1)
    return None


def host_problems(host, before, bad_backups=()):
    """Problems of one touched host (empty: nothing lost there)."""
    problems = []
    hid, target = host["id"], install_dir(host)
    ret = salt_call(hid, ["release.status", "backup.list", "release.leftovers"],
                    [str(target)] * 3)
    deployed, backups, leftovers = (ret["release.status"], ret["backup.list"],
                                    ret["release.leftovers"])
    for name, value in ret.items():
        if isinstance(value, str):  # an error the minion returned instead of data
            return [f"{hid}: {name}: {value[:300]}"]
    live = file_map(target) if target.is_dir() else None
    # A known release.
    if live is None:
        problems.append(f"{hid}: no program dir {target}")
        release = None
    elif deployed.get("release"):
        release = deployed["release"]
        if not deployed.get("intact"):
            problems.append(f"{hid}: tree differs from its record of {release}: modified "
                            f"{deployed.get('modified')}, added {deployed.get('added')}, "
                            f"removed {deployed.get('removed')}")
    else:
        release = _by_hand_release(live, host["service"])
        if release is None:
            problems.append(f"{hid}: no deployed record and the tree is no known release")
    # Ready: one JVM, health 200 with that release, the log's last start names it.
    pids = labctl.service_pids(host)
    status, body = http_get(labctl.health_url(host))
    health = json.loads(body).get("release") if status == 200 else None
    if len(pids) != 1:
        problems.append(f"{hid}: {len(pids)} JVMs running ({pids})")
    if health != release:
        problems.append(f"{hid}: health answers {status} release {health}, tree is {release}")
    if _last_started(host) != release:
        problems.append(f"{hid}: app log's last started line names {_last_started(host)}, "
                        f"tree is {release}")
    # Every backup verifies; no unlisted <dir>_<tag> directory.
    held = [live] if live is not None else []
    listed = set()
    for item in backups:
        listed.add(item["path"])
        # Quoted: the salt CLI would read a tag like 20170305.1 as a number.
        verdict = salt_call(hid, ["backup.verify"],
                            [str(target), json.dumps(item["tag"])])["backup.verify"]
        if isinstance(verdict, dict) and verdict.get("ok"):
            held.append({k: v for k, v in file_map(item["path"]).items() if k != MANIFEST})
        elif item["tag"] not in bad_backups:
            problems.append(f"{hid}: backup {item['path']} does not verify: {verdict}")
    prefix = target.name + "_"
    for entry in target.parent.iterdir():
        if entry.name.startswith(prefix) and str(entry) not in listed:
            problems.append(f"{hid}: {entry} looks like a backup but is none (no manifest)")
    # No tree that no backup holds: the tree before the fault, and any tree left beside.
    # (A tree that is exactly a release archive is held by that archive.)
    if (before is not None and before["tree"] not in held
            and _by_hand_release(before["tree"], host["service"]) is None):
        problems.append(f"{hid}: the tree it ran before the fault is neither live, nor in a "
                        f"verified backup, nor a release archive")
    # A leftover may be cut short (e.g. a .previous whose removal was interrupted): it loses
    # nothing when each of its files is in a held tree.
    for path in leftovers:
        if os.path.isdir(path) and not path.endswith(".staging"):
            left = file_map(path).items()
            if not any(left <= tree.items() for tree in held):
                problems.append(f"{hid}: leftover tree {path} is held by no backup")
    return problems


def nothing_lost(hosts, before, touched, partners=(), bad_backups=None):
    """Problems found (empty list: nothing lost). ``hosts``: {id: lab host}; ``before``: a
    :func:`snapshot` taken before the fault; ``touched``: ids of the hosts the run targeted;
    ``partners``: ids of hosts that must not have been stopped (same pids as before);
    ``bad_backups``: {id: [tags]} of backups the test itself corrupted."""
    bad_backups = bad_backups or {}
    problems = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(host_problems, hosts[h], before.get(h), bad_backups.get(h, ()))
                   for h in touched]
        for future in futures:
            try:
                problems += future.result()
            except AssertionError as exc:
                problems.append(str(exc))
    return problems + stopped_partners(hosts, before, partners)


def stopped_partners(hosts, before, partners):
    """Problems: partners whose JVM pids changed since ``before`` (check it right after the
    failed run, before a re-run that may upgrade them)."""
    problems = []
    for hid in partners:
        now = sorted(labctl.service_pids(hosts[hid]))
        if now != before[hid]["pids"]:
            problems.append(f"{hid}: partner was stopped (pids {before[hid]['pids']} -> {now})")
    return problems
