#!/usr/bin/env python3
"""
Benchmark: ``backup.create`` against ``cp -a`` on the same tree (not a test).

Builds a ~200 MB tree of 5,000 files (mixed sizes, a few subdirs, some symlinks and an empty
dir) in a temp dir on the filesystem of the repo (never on tmpfs), warms the page cache, then
times ``cp -a src dst`` and ``backup.create(src, tag)`` (loaded through Salt's loader from
the repo's ``_modules``), best of N runs each, interleaved (alternating which goes first),
each into its own destination with a ``sync`` before it; copies are removed only at the end.
Then ``backup.verify`` checks one backup. Prints both times and the ratio; exits 1 if the
ratio is above the target (1.3). A backup is on disk (syncfs) before it takes its name, so
``cp -a`` followed by ``sync -f`` is timed too: the copy with the same durability.

Both run with a warm page cache (the source is read once before every timed run); caches
are not dropped. The numbers are only meaningful on a quiet machine: on 2 cores, other load
(e.g. the rehearsal lab) takes the second core that backup.create uses for hashing, and ext4
makes file creation several times slower for a few minutes after many files were deleted
(kernel recently_deleted(): freshly freed inodes are skipped), which includes the clean-up
of a previous bench run. The load average is printed at start and end.

Usage (from the repo root):

    .venv/bin/python bench/backup_bench.py [--runs 3] [--files 5000] [--mb 200] [--dir DIR]
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_RATIO = 1.3


def _fs_type(path):
    """Filesystem type of the mount holding ``path`` (from /proc/self/mounts)."""
    path = os.path.realpath(path)
    best, fstype = "", "?"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                mnt = fields[1].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(
                    best
                ):
                    best, fstype = mnt, fields[2]
    except OSError:
        pass
    return fstype


def _pick_base(explicit):
    if explicit:
        return explicit
    repo_dev = os.stat(REPO_ROOT).st_dev
    tmp = tempfile.gettempdir()
    if os.stat(tmp).st_dev == repo_dev and _fs_type(tmp) not in ("tmpfs", "ramfs"):
        return tmp
    # /tmp is another filesystem (e.g. tmpfs): use the repo's parent filesystem instead.
    return os.path.dirname(REPO_ROOT)


def _sizes(nfiles, total, rng):
    """Mixed sizes: many small files, some medium, a few large jars; sums to ``total``."""
    n_large = max(1, nfiles // 250)  # ~20 "jars" of a few MB
    n_medium = max(1, nfiles // 25)  # ~200 of 64 KB..1 MB
    n_small = nfiles - n_large - n_medium  # the rest: 0..16 KB
    small = [rng.randint(0, 16 << 10) for _ in range(n_small)]
    medium = [rng.randint(64 << 10, 1 << 20) for _ in range(n_medium)]
    rest = total - sum(small) - sum(medium)
    if rest < n_large:
        raise SystemExit("total size too small for the file count")
    weights = [rng.uniform(0.5, 1.5) for _ in range(n_large)]
    large = [int(rest * w / sum(weights)) for w in weights]
    large[0] += rest - sum(large)
    sizes = small + medium + large
    rng.shuffle(sizes)
    return sizes


def build_tree(root, nfiles, total, seed=20170220):
    rng = random.Random(seed)
    subdirs = [
        "",
        "bin",
        "conf",
        "lib",
        "webapps/ROOT/WEB-INF/classes",
        "webapps/ROOT/WEB-INF/lib",
        "webapps/ROOT/static",
        "logs",
    ]
    for sub in subdirs:
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    os.makedirs(os.path.join(root, "work", "empty"), exist_ok=True)
    block = os.urandom(8 << 20)
    for index, size in enumerate(_sizes(nfiles, total, rng)):
        sub = subdirs[index % len(subdirs)]
        path = os.path.join(root, sub, f"f{index:05d}.bin")
        with open(path, "wb") as handle:
            left, offset = size, rng.randrange(len(block))
            while left:
                chunk = block[offset : offset + left] or block[: min(left, len(block))]
                handle.write(chunk)
                left -= len(chunk)
                offset = 0
        if index % 97 == 0:
            os.chmod(path, 0o755)
    for index in range(5):
        os.symlink(f"../lib/f{index:05d}.bin", os.path.join(root, "bin", f"link{index}"))


def tree_bytes(root):
    total = count = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
                count += 1
    return count, total


def warm(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            if not os.path.islink(full):
                with open(full, "rb") as handle:
                    while handle.read(1 << 20):
                        pass


def load_backup_module():
    import salt.config  # pylint: disable=import-outside-toplevel
    import salt.loader  # pylint: disable=import-outside-toplevel

    opts = salt.config.minion_config(None)
    opts.update(
        {
            "id": "bench-minion",
            "file_client": "local",
            "module_dirs": [REPO_ROOT],
            "cachedir": tempfile.mkdtemp(prefix="backup-bench-cache-"),
        }
    )
    # backup reaches the shared tree helpers (<repo>/_utils) through __utils__.
    utils = salt.loader.utils(opts)
    mods = salt.loader.minion_mods(opts, utils=utils, whitelist=["backup"])
    return mods, opts["cachedir"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--dir", help="where to build the tree (default: repo filesystem)")
    parser.add_argument("--keep", action="store_true", help="keep the temp tree")
    parser.add_argument("--json", help="write the runs and ratios here (for make bench)")
    parser.add_argument("--settle", type=float, default=6.0, help="pause before timing (s)")
    args = parser.parse_args()

    base = _pick_base(args.dir)
    work = tempfile.mkdtemp(prefix="backup-bench-", dir=base)
    mods, cachedir = load_backup_module()
    create = mods["backup.create"]
    verify = mods["backup.verify"]
    print(
        f"work dir {work} ({_fs_type(work)}), {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    try:
        src = os.path.join(work, "ecsc")
        started = time.perf_counter()
        build_tree(src, args.files, args.mb << 20)
        count, total = tree_bytes(src)
        print(
            f"tree: {count} files, {total / 1e6:.1f} MB "
            f"(built in {time.perf_counter() - started:.1f}s)"
        )
        # ext4 skips recently freed inodes when allocating new ones, which makes file
        # creation after a big delete several times slower (kernel: recently_deleted()).
        # So nothing is deleted between timed runs (every copy gets its own destination, all
        # removed at the end), and the timing starts after a sync and a pause.
        subprocess.run(["sync"], check=True)
        time.sleep(args.settle)

        cp_times, bk_times, durable_times = [], [], []
        for run in range(args.runs):
            order = ("cp", "backup", "cp+sync") if run % 2 == 0 else ("cp+sync", "backup", "cp")
            for what in order:
                subprocess.run(["sync"], check=True)
                warm(src)
                if what == "cp":
                    dst = os.path.join(work, f"ecsc_cp{run}")
                    started = time.perf_counter()
                    subprocess.run(["cp", "-a", src, dst], check=True)
                    cp_times.append(time.perf_counter() - started)
                elif what == "cp+sync":
                    # The same durability as a backup (on disk before it is relied on).
                    dst = os.path.join(work, f"ecsc_cpsync{run}")
                    started = time.perf_counter()
                    subprocess.run(["cp", "-a", src, dst], check=True)
                    subprocess.run(["sync", "-f", dst], check=True)
                    durable_times.append(time.perf_counter() - started)
                else:
                    tag = f"bench{run}"
                    started = time.perf_counter()
                    res = create(src, tag)
                    bk_times.append(time.perf_counter() - started)
                    assert res["created"], res
                    assert (res["files"], res["bytes"]) == (count, total), res
            print(
                f"run {run + 1}: cp -a {cp_times[-1]:.3f}s  "
                f"backup.create {bk_times[-1]:.3f}s  cp -a + sync {durable_times[-1]:.3f}s"
            )
        started = time.perf_counter()
        check = verify(src, "bench0")
        print(f"backup.verify of one backup: ok={check['ok']} in "
              f"{time.perf_counter() - started:.3f}s")
        assert check["ok"], check

        cp_best, bk_best = min(cp_times), min(bk_times)
        ratio = bk_best / cp_best
        # Each run's own ratio (the two copies of one run are back to back).
        ratios = [b / c for b, c in zip(bk_times, cp_times)]
        durable_best = min(durable_times)
        print(f"cp -a best of {args.runs}:         {cp_best:.3f}s")
        print(f"cp -a + sync best of {args.runs}:  {durable_best:.3f}s "
              f"(backup/durable copy {bk_best / durable_best:.2f})")
        print(f"backup.create best of {args.runs}: {bk_best:.3f}s")
        print(f"ratio backup/cp: {ratio:.2f} best of {args.runs}, per run median "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
              f"(target <= {TARGET_RATIO})")
        if args.json:
            with open(args.json, "w", encoding="utf-8") as handle:
                json.dump({"cp_s": cp_times, "backup_s": bk_times, "cp_sync_s": durable_times,
                       "ratios": ratios,
                           "best_ratio": ratio, "files": count, "bytes": total,
                           "load": os.getloadavg()[0]}, handle, indent=2)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
        return 0 if ratio <= TARGET_RATIO else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cachedir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
