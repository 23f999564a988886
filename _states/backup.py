"""
Dated, verified backups of a program directory (states over the ``backup`` module).

.. code-block:: yaml

    back up ecsc before the upgrade:
      backup.present:
        - name: /home/ecsc
        - tag: "20170220"
        - meta:
            release: v1

    put ecsc back as it was:
      backup.restored:
        - name: /home/ecsc
        - tag: "20170220"
"""

import logging

from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "backup"


def __virtual__():
    if "backup.create" in __salt__:
        return __virtualname__
    return (False, "backup state: the backup execution module is not available")


def present(name, tag, meta=None):
    """
    Ensure the backup ``<name>_<tag>`` of the program directory ``name`` exists and
    verifies. An existing verified backup is kept as it is (it is never overwritten or
    nested into); an existing backup that does not verify fails the state.

    name
        Absolute path of the program directory, e.g. ``/home/ecsc``.

    tag
        Backup tag, e.g. ``"20170220"`` (quote it in YAML).

    meta
        Optional dict stored in the backup's manifest (e.g. which release the tree is).
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    test = bool(__opts__.get("test"))
    try:
        res = __salt__["backup.create"](name, tag, meta=meta, test=test)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret

    if not res["created"]:
        ret["result"] = True
        ret["comment"] = (
            f"Backup {res['path']} exists and verifies "
            f"({res['files']} files, {res['bytes']} bytes)"
        )
        if meta is not None and res.get("meta") != meta:
            ret["comment"] += (
                f"; it keeps its recorded meta {res.get('meta')!r} (requested {meta!r})"
            )
        return ret

    summary = {"path": res["path"], "files": res["files"], "bytes": res["bytes"]}
    # Why a <name>_<tag>.<n> was needed: the live tree differs from the tag's backup(s).
    why = f"; {res['reason']}" if res.get("reason") else ""
    if test:
        ret["result"] = None
        ret["changes"] = {"backup": summary}
        ret["comment"] = (
            f"would back up {name} to {res['path']} "
            f"({res['files']} files, {res['bytes']} bytes){why}"
        )
        return ret

    ret["result"] = True
    ret["changes"] = {"backup": summary}
    ret["comment"] = (
        f"Backed up {name} to {res['path']} ({res['files']} files, {res['bytes']} bytes) "
        f"in {res['seconds']}s{why}"
    )
    if res.get("skipped"):
        ret["comment"] += f"; special files not copied: {', '.join(res['skipped'])}"
    return ret


def restored(name, tag):
    """
    Ensure the program directory ``name`` is identical to its backup ``<name>_<tag>``
    (content, modes, symlinks). A directory already identical is left alone; otherwise it
    is replaced by a verified copy of the backup (a backup that does not verify fails the
    state and leaves ``name`` untouched).

    name
        Absolute path of the program directory, e.g. ``/home/ecsc``.

    tag
        Backup tag, e.g. ``"20170220"``.
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    test = bool(__opts__.get("test"))
    try:
        res = __salt__["backup.restore"](name, tag, test=test)
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret

    if not res["changed"]:
        ret["result"] = True
        ret["comment"] = f"{name} already matches backup {res['from']}"
        return ret

    change = {"from": res["from"], "files": res["files"]}
    diff = res.get("diff") or {}
    counts = ", ".join(
        f"{len(diff.get(key) or [])} {key}" for key in ("modified", "missing", "added")
    )
    if test:
        ret["result"] = None
        ret["changes"] = {"restored": change}
        ret["comment"] = (
            f"would replace {name} with backup {res['from']} ({res['files']} files; "
            f"live tree differs: {counts})"
        )
        return ret

    ret["result"] = True
    ret["changes"] = {"restored": change}
    ret["comment"] = (
        f"Restored {name} from {res['from']} ({res['files']} files; replaced tree "
        f"differed: {counts}) in {res['seconds']}s"
    )
    if res.get("held_by"):
        ret["comment"] += f"; the replaced tree is held by {res['held_by']}"
    return ret


def pruned(name, keep=3, protect=None):
    """
    Keep at most ``keep`` dated backups of the program dir ``name``: the oldest go, never the
    newest and never a tag in ``protect`` (the upgrade protects the backup of the release it
    just deployed, which is what a rollback needs). No changes when nothing is beyond ``keep``.

    .. code-block:: yaml

        backups-pruned:
          backup.pruned:
            - name: /home/ecsc
            - keep: 3
            - protect: ["20170220"]
    """
    ret = {"name": name, "changes": {}, "result": False, "comment": ""}
    try:
        res = __salt__["backup.prune"](name, keep=keep, protect=protect,
                                       test=bool(__opts__["test"]))
    except (CommandExecutionError, SaltInvocationError) as exc:
        ret["comment"] = str(exc)
        return ret
    if not res["deleted"]:
        ret["result"] = True
        ret["comment"] = f"{len(res['kept'])} backup(s) of {name}, at most {keep} kept"
        return ret
    ret["changes"] = {"pruned": res["deleted"]}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"would delete backups {', '.join(res['deleted'])} of {name}"
    else:
        ret["result"] = True
        ret["comment"] = (f"deleted backups {', '.join(res['deleted'])} of {name}; kept "
                          f"{', '.join(res['kept'])}")
    return ret
