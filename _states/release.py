"""
Release archives of a program directory (states over the ``release`` module).

A host that already runs the release (deployed record matches and the tree is intact)
reports no changes, which is what lets the upgrade skip stop/start on a second run.

.. code-block:: yaml

    stage ecsc 20170220 while the service runs:
      release.staged:
        - name: /home/ecsc
        - source: salt://releases/20170220/ecsc.tar
        - sha256: 3a7b...e1
        - release: "20170220"
        - keep: [conf/host.properties]

    put ecsc 20170220 in place (service stopped):
      release.deployed:
        - name: /home/ecsc
        - release: "20170220"
        - source: salt://releases/20170220/ecsc.tar   # used only when nothing is staged
        - sha256: 3a7b...e1
        - keep: [conf/host.properties]
"""

import logging
import os
import shlex

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "release"


def __virtual__():
    if "release.stage" in __salt__:
        return __virtualname__
    return (False, "release state: the release execution module is not available")


def _minion_id():
    return __utils__["rollout_ids.minion_id"]()


def _norm_release(release):
    if isinstance(release, int) and not isinstance(release, bool):
        return str(release)
    return release


def _fetch(source):
    """
    Local path of ``source`` (a local path or any URL cp.cache_file understands).
    """
    return __salt__["release.fetch"](source)


def _on_release(name, release, sha256):
    """
    (the release the deployed record of ``name`` names or None, True when ``name`` already
    runs ``release`` intact). The tree is re-hashed only when its record names ``release``
    (of that archive): a record of another release says no at once, and the swap that
    follows runs while the service is down.
    """
    record = __salt__["release.read_record"](name) or {}
    if record.get("release") != release or (
            sha256 is not None and (record.get("archive_sha256") or "") != str(sha256).lower()):
        return record.get("release"), False
    current = __salt__["release.status"](name)
    same = (
        current["release"] == release
        and current["intact"] is True
        and (sha256 is None or (current["archive_sha256"] or "") == str(sha256).lower())
    )
    return current["release"], same


def _usable_staging(name, release, sha256):
    info = __salt__["release.staging_status"](name)
    usable = (
        info["present"]
        and info["release"] == release
        and info["intact"] is True
        and (sha256 is None or info["archive_sha256"] == str(sha256).lower())
    )
    return info, usable


def staged(name, source, sha256, release, keep=None):
    """
    Ensure ``release`` is staged next to the program directory ``name`` (in
    ``<parent>/.<name>.staging``), verified, without touching ``name``. Nothing to do (no
    changes) when ``name`` already runs ``release`` intact. Otherwise the archive is staged
    afresh, also over an earlier staging of the same release, and the state reports changes:
    steps of the upgrade that ``onchanges`` this state (backup, stop, swap) must run whenever
    the host is not yet on the release, e.g. after an aborted first run.

    name
        Absolute path of the program directory, e.g. ``/home/ecsc``.

    source
        The release archive: a local path or a ``salt://`` URL.

    sha256
        Expected sha256 of the archive.

    release
        Release id (quote it in YAML).

    keep
        Globs of host-local files to carry over at swap time (see ``release.swap``).
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    release = _norm_release(release)
    try:
        _, same = _on_release(name, release, sha256)
        if same:
            ret["result"] = True
            ret["comment"] = f"{name} is already on {release}"
            return ret
        cached = _fetch(source)
        if __opts__["test"]:
            info = __salt__["release.staging_status"](name)
            summary = __salt__["release.verify"](cached, sha256, target=name)
            ret["result"] = None
            ret["comment"] = (
                f"would verify and stage {source} ({summary['members']} members) into "
                f"{info['staging']}"
            )
            # Reported so that the steps which run onchanges of this one show in the plan.
            ret["changes"] = {"staged": {"release": release, "staging": info["staging"],
                                         "members": summary["members"]}}
            return ret
        res = __salt__["release.stage"](cached, name, sha256, release, keep=keep)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    ret["result"] = True
    ret["changes"] = {
        "staged": {"release": res["release"], "staging": res["staging"], "files": res["files"]}
    }
    ret["comment"] = f"staged {source} ({release}, {res['files']} files) into {res['staging']}"
    return ret


def _hold_live_tree(name, backup):
    """
    Before a swap replaces the live tree: a verified backup of tag ``backup`` must hold it
    byte for byte (``backup.create`` reuses one that does or makes ``<name>_<backup>.<n>``).
    Returns (backup.create's result or None when there is no live tree, comment text).
    """
    if backup is None or not os.path.isdir(name):
        return None, ""
    backup = _norm_release(backup)
    held = __salt__["backup.create"](
        name, backup, meta={"record": __salt__["release.read_record"](name)},
        test=bool(__opts__["test"]),
    )
    rollback = os.path.normpath(name) + f"_{backup}"
    verb = "would be held" if __opts__["test"] and held["created"] else "is held"
    return held, (f"; the replaced tree {verb} by {held['path']}; a rollback (tag {backup}) "
                  f"restores {rollback}")


def deployed(name, release, source=None, sha256=None, keep=None, backup=None):
    """
    Ensure the program directory ``name`` runs ``release``: nothing to do when it already
    does and is intact; else swap in the staging of that release when there is one, else
    (``source`` given) stage and swap. Files of the old tree the archive does not carry are
    dropped, except host-local files matching ``keep`` (see the ``release`` module).

    name
        Absolute path of the program directory.

    release
        Release id (quote it in YAML).

    source
        The release archive (local path or ``salt://`` URL), used when nothing is staged.

    sha256
        Expected sha256 of the archive (required with ``source``).

    keep
        Globs of host-local files to carry over, relative to ``name``.

    backup
        Backup tag (the upgrade passes the release id): right before the swap, the live
        tree must be byte-identical to a verified backup of that tag, reused or made now as
        ``<name>_<backup>.<n>`` (never a tree held nowhere is dropped). The comment says
        which backup holds the replaced tree and which one a rollback restores.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    release = _norm_release(release)
    held_text = ""
    try:
        old, same = _on_release(name, release, sha256)
        if same:
            ret["result"] = True
            ret["comment"] = f"{name} is already on {release}"
            return ret
        old_text = f"now on {old}" if old else "no recorded release"
        info, usable = _usable_staging(name, release, sha256)
        if usable:
            _, held_text = _hold_live_tree(name, backup)
            if __opts__["test"]:
                ret["result"] = None
                ret["comment"] = (
                    f"would swap {info['staging']} ({release}, {info['files']} files) into "
                    f"{name} ({old_text}){held_text}"
                )
                ret["changes"] = {"deployed": {"old": old, "new": release}}
                return ret
            res = __salt__["release.swap"](name, release, sha256=sha256, keep=keep)
        elif source is None:
            ret["comment"] = (
                f"release on minion {_minion_id()}: {name} is not on {release}, nothing of "
                f"{release} is staged in {info['staging']} and no source was given"
            )
            return ret
        else:
            if sha256 is None:
                ret["comment"] = f"release on minion {_minion_id()}: sha256 is required with source {source}"
                return ret
            cached = _fetch(source)
            if __opts__["test"]:
                summary = __salt__["release.verify"](cached, sha256, target=name)
                _, held_text = _hold_live_tree(name, backup)
                ret["result"] = None
                ret["comment"] = (
                    f"would verify and stage {source} ({summary['members']} members) into "
                    f"{info['staging']}, then swap it into {name} ({old_text}){held_text}"
                )
                ret["changes"] = {"deployed": {"old": old, "new": release}}
                return ret
            # Stage first (verify, extract; the live tree untouched), then hold the live tree
            # in a backup, then swap.
            staged_res = __salt__["release.stage"](cached, name, sha256, release, keep=keep)
            _, held_text = _hold_live_tree(name, backup)
            res = __salt__["release.swap"](name, staged_res["release"], sha256=sha256, keep=keep)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    ret["result"] = True
    ret["changes"] = {"deployed": {"old": old, "new": release, "files": res["files"]}}
    kept = f", kept {', '.join(res['kept'])}" if res["kept"] else ""
    ret["comment"] = (
        f"{name} is now on {release} (was {old or 'unrecorded'}; {res['files']} files{kept})"
        f"{held_text}"
    )
    return ret


def _held_by_backup(name, tree):
    """
    The verified backup of ``name`` that holds every file of ``tree`` byte for byte (a tree
    whose removal was cut short holds fewer files), or None. Read-only.
    """
    listing = __utils__["rollout_tree.scan"](tree)
    for item in __salt__["backup.list"](name):
        manifest = __salt__["backup.manifest"](name, item["tag"])
        diff = __utils__["rollout_tree.compare"](manifest, listing, ignore=listing["other"])
        if not (diff["modified"] or diff["added"]) and __salt__["backup.verify"](
                name, item["tag"])["ok"]:
            return item["path"]
    return None


_SWAP_LEFT = {
    "between-renames": "the swap was cut between its renames: {previous} holds the last live "
                       "tree",
    "before-record": "the swap was cut before writing its record: {previous} holds the tree "
                     "from before",
    "after-record": "the swap was done but {previous} was still being removed",
    "unknown": "{previous} is left from an earlier swap",
}


def _resume_point(name, release, service, identity):
    """
    (step an interrupted run left this host at or None, [what was found], interrupted()).
    Steps are the upgrade's: staged, backed-up, stopped, swapped.
    """
    left = __salt__["release.interrupted"](name)
    running = None
    if service:
        running = __salt__["javaservice.status"](service, **(identity or {}))["running"]
    if not left["leftovers"] and running is not False:
        return None, [], left  # the usual case, found without hashing any tree
    _, on_release = _on_release(name, release, None)
    held = [b["path"] for b in __salt__["backup.list"](name) if b.get("family") == release]
    found = []
    if left["swap"]:
        previous = next(p for p in left["leftovers"] if p.endswith(".previous"))
        found.append(_SWAP_LEFT[left["swap"]].format(previous=previous))
    elif left["staged"]:
        found.append(f"{left['staged']} staged")
    if left["leftovers"]:
        found.append("left beside it: " + ", ".join(os.path.basename(p) for p in left["leftovers"]))
    found.extend(f"backup {os.path.basename(path)}" for path in held)
    if on_release:
        found.append(f"{name} on {release}")
    if running is False:
        found.append(f"{service} not running")
    if left["swap"] or (on_release and (left["leftovers"] or running is False)):
        step = "swapped"
    elif running is False and (left["leftovers"] or held):
        step = "stopped"
    elif left["leftovers"] and held:
        step = "backed-up"
    elif left["leftovers"]:
        step = "staged"
    else:
        step = None
    return step, found, left


def resumed(name, release, service=None, identity=None):
    """
    The first step of a host's upgrade: find what an interrupted run (minion or master
    killed, ``salt-run`` killed, a step cut short) left on this host, say where it was left
    (staged, backed-up, stopped, swapped) and clear the way to finish it: a swap cut short is
    put back or completed (:py:func:`release.clean <_modules.release.clean>`: the last whole
    live tree is never dropped), the staging and temp files go, and a ``.previous`` tree is
    removed only when a verified backup holds every file of it (else it is kept and named).
    The steps after this one then finish the host (or roll it back); with changes here, the
    fixed-issue checks and retention run even when the swap itself was already done.

    No changes when nothing was interrupted. Under ``test=True`` it says what it would do.

    name
        The program directory (this host's ``install_dir``).

    release
        The release being rolled out (quote it in YAML).

    service, identity
        The service's name and its ``javaservice`` identity (``app_dir``,
        ``catalina_base``, ...): whether it runs tells a stopped host from a staged one.

    .. code-block:: yaml

        resumed:
          release.resumed:
            - name: /home/schedule
            - release: "20170220"
            - service: schedule
            - identity: {app_dir: /home/schedule}
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    release = _norm_release(release)
    try:
        step, found, left = _resume_point(name, release, service, identity)
        if step is None:
            ret["result"] = True
            ret["comment"] = f"{name}: nothing left by an interrupted run"
            return ret
        head = (f"resuming {_minion_id()}: an interrupted run left it at '{step}' "
                f"({'; '.join(found)}); finishing it")
        previous = [p for p in left["leftovers"] if p.endswith(".previous")]
        keep_text = ""
        drop = True
        if left["swap"] in ("after-record", "unknown"):
            holder = _held_by_backup(name, previous[0])
            drop = holder is not None
            keep_text = (f"; {previous[0]} is held by {holder}" if drop else
                         f"; kept {previous[0]}: no verified backup holds all of it (look at "
                         f"it, then release.clean)")
        ret["changes"] = {"resumed": {"step": step, "found": found}}
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = (f"would be {head}; would clear {', '.join(left['leftovers'])}"
                              if left["leftovers"] else f"would be {head}") + keep_text
            return ret
        res = __salt__["release.clean"](name, drop_previous=drop)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    ret["result"] = True
    done = []
    if res["restored"]:
        done.append(f"put {res['restored']} back as {name}")
    if res["removed"]:
        done.append(f"removed {', '.join(os.path.basename(p) for p in res['removed'])}")
    ret["changes"]["resumed"].update(removed=res["removed"], restored=res["restored"],
                                     kept=res["kept"])
    ret["comment"] = head + (f": {'; '.join(done)}" if done else "") + keep_text
    return ret


def verified(name, source, sha256, margin=1.1):
    """
    Pre-flight, read-only (it also runs under ``test=True``): the archive for the program
    directory ``name`` can be fetched and verifies (sha256, members confined to one top-level
    dir named like ``name``), and the filesystem of ``name`` has room for the backup and the
    staging copy (``margin`` times their size). The archive stays in the minion's file cache,
    where the upgrade takes it from.

    .. code-block:: yaml

        preflight-artifact:
          release.verified:
            - name: /home/ecsc
            - source: salt://releases/20170220/ecsc.tar
            - sha256: 3a7b...e1
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        checked = __salt__["release.preflight"](name, source, sha256, margin=margin)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    ret["result"] = True
    ret["comment"] = checked["comment"]
    return ret


def _held_text(res, verb="is held"):
    if not res.get("held_by"):
        return ""
    return f"; the tree it replaced {verb} by {res['held_by']}"


def restored(name, tag):
    """
    Put the program directory ``name`` back to its dated backup ``<name>_<tag>``,
    byte-identical to the backup's manifest, together with the deployed record it had when
    the backup was made (none for a release deployed by hand). No changes when ``name``
    already equals the backup. Under ``test=True`` it reports what would be replaced.

    .. code-block:: yaml

        rollback-restored:
          release.restored:
            - name: /home/ecsc
            - tag: "20170220"
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    tag = _norm_release(tag)
    try:
        if __opts__["test"]:
            res = __salt__["backup.restore"](name, tag, test=True)
            if res.get("changed"):
                ret["result"] = None
                ret["changes"] = {"restored": {"from": res["from"], "files": res["files"]}}
                ret["comment"] = (
                    f"would restore {name} from {res['from']}: {res.get('diff')}"
                    + _held_text(res, "would be held")
                )
            else:
                ret["result"] = True
                ret["comment"] = f"{name} already equals {res['from']}"
            return ret
        # The live tree's record goes with the backup that holds it (if one is made).
        before = __salt__["release.read_record"](name)
        res = __salt__["backup.restore"](name, tag, meta={"record": before})
        record = (res.get("meta") or {}).get("record")
        current = __salt__["release.read_record"](name)
        if record != current:
            __salt__["release.write_record"](name, record)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    ret["result"] = True
    release = (record or {}).get("release") or "a release deployed by hand"
    if res.get("changed") or record != current:
        ret["changes"] = {"restored": {"from": res["from"], "files": res["files"],
                                       "release": release, "replaced_tree_in": res.get("held_by")}}
        ret["comment"] = f"{name} restored from {res['from']} ({release})" + _held_text(res)
    else:
        ret["comment"] = f"{name} already equals {res['from']} ({release})"
    return ret



def _down_text(host, name, tag):
    """
    The first line of a rollback whose restore worked but whose start did not: the host is
    down, what is in place, and the one command that starts it (the same start command and
    cwd from inventory.host that the upgrade used).
    """
    record = __salt__["release.read_record"](name) or {}
    release = record.get("release") or "a release deployed by hand"
    command = f"cd {shlex.quote(host['start_cwd'])} && {shlex.join(host['start'])}"
    return (
        f"HOST {host['id']} IS DOWN: the rollback restored {name} ({release}, from backup "
        f"{os.path.normpath(name)}_{tag}) but {host['service']} did not start and become "
        f"ready. Start it with: {command}"
    )


def rolled_back(name, tag):
    """
    This host back to its dated backup, as one step: stop the service (only when the program
    dir ``name`` has to change), restore ``<name>_<tag>`` with its deployed record
    (:py:func:`restored`), start it again and wait until it is ready. A host that already
    equals the backup and runs healthy reports no changes and is not restarted. How to stop,
    start and judge the service ready comes from this host's inventory entry
    (``inventory.host``); the restored tree may be any release, even one deployed by hand.

    name
        The program directory (this host's ``install_dir``).

    tag
        The backup tag (the release id whose upgrade made the backup).

    .. code-block:: yaml

        rolled-back:
          release.rolled_back:
            - name: /home/ecsc
            - tag: "20170220"
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    tag = _norm_release(tag)
    try:
        host = __salt__["inventory.host"](archive=False, ready_release=r"\S+")
        if os.path.normpath(host["install_dir"]) != os.path.normpath(name):
            raise CommandExecutionError(
                f"release on minion {_minion_id()}: {name} is not this host's program dir "
                f"({host['install_dir']})"
            )
        must_change = __salt__["backup.restore"](name, tag, test=True).get("changed")
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    identity = host["identity"]
    steps = []
    if must_change:
        steps.append(("stopped", __states__["javaservice.dead"], dict(
            name=host["service"], signal=host["stop"]["signal"],
            timeout=host["stop"]["timeout"], **identity)))
    steps.append(("restored", restored, dict(name=name, tag=tag)))
    steps.append(("ready", __states__["javaservice.running"], dict(
        name=host["service"], start=host["start"], cwd=host["start_cwd"],
        logs=sorted(host["logs"].values()), output=host["output"], ready=host["ready"],
        fatal=host["fatal"], url=host["health_url"], timeout=host["ready_timeout"],
        settle=host["settle"], **identity)))
    comments = []
    for step, func, kwargs in steps:
        res = func(**kwargs)
        comments.append(f"{step}: {res['comment']}")
        if res["changes"]:
            ret["changes"][step] = res["changes"]
        if res["result"] is False:
            if step == "ready":
                comments.insert(0, _down_text(host, name, tag))
            ret["comment"] = "\n".join(comments)
            return ret
    ret["result"] = None if __opts__["test"] and ret["changes"] else True
    ret["comment"] = "\n".join(comments)
    return ret
