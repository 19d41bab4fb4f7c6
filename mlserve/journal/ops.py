"""Journal writes as operations: plain JSON objects, applied to the journal's SQLite schema.

Every write of ``mlserve.state.State`` is one operation (``{"op": NAME, "at": TIME, ...}``)
applied by ``apply(db, op)`` in one transaction. The SQLite journal applies it to its file; the
shared S3 journal (``mlserve.journal.s3``) appends it to its log as an immutable object and every
reader replays the log in order into an in-memory database of the same schema. Applying depends
only on the operation and the rows before it (times travel inside the operation), so every
replay of one log gives the same rows, release sequence numbers included.

``check(op)`` refuses an operation whose fields have the wrong types (a log object written by
something else) with ``ValueError``; the caller names the object.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

__all__ = ["op", "add_release", "finish_release", "apply", "check", "OPS"]

_STR, _OSTR, _INT, _NUM, _DICT, _ODICT = (str,), (str, type(None)), (int,), (int, float), \
    (dict,), (dict, type(None))
_OLIST = (list, type(None))

#: operation -> {field: accepted types}; every operation also has ``at`` (a number).
OPS: dict[str, dict[str, tuple[type, ...]]] = {
    "add_release": {"target": _STR, "release_id": _STR, "provider": _STR, "bundle_hash": _STR,
                    "manifest": _DICT, "url": _OSTR, "extra": _DICT, "files": _ODICT,
                    "requirements": _OLIST},
    "finish_release": {"seq": _INT, "outcome": _STR, "reason": _OSTR, "extra": _DICT, "url": _OSTR},
    "discard_release": {"seq": _INT},
    "update_extra": {"seq": _INT, "extra": _DICT},
    "mark_deleted": {"target": _STR, "provider": _STR, "name": _STR},
    "event": {"target": _STR, "kind": _STR, "message": _STR},
    "import": {"tables": _DICT},
}


def op(operation: str, /, **fields: Any) -> dict:
    return {"op": operation, "at": time.time(), **fields}


def add_release(target, release_id, provider, bundle_hash, manifest, url, extra, files,
                requirements) -> dict:
    return op("add_release", target=target, release_id=release_id, provider=provider,
              bundle_hash=bundle_hash, manifest=manifest, url=url, extra=extra or {},
              files=None if files is None else {p: list(v) for p, v in files.items()},
              requirements=None if requirements is None else list(requirements))


def finish_release(seq, outcome, reason, extra, url) -> dict:
    return op("finish_release", seq=seq, outcome=outcome, reason=reason, extra=extra or {}, url=url)


def check(operation: Any) -> dict:
    """``operation`` if it is a well-formed operation, else ValueError saying what is wrong."""
    if not isinstance(operation, dict):
        raise ValueError(f"a JSON {type(operation).__name__}, not an operation object")
    name = operation.get("op")
    fields = OPS.get(name) if isinstance(name, str) else None
    if fields is None:
        raise ValueError(f"unknown operation {name!r:.40}")
    for key, kinds in {**fields, "at": _NUM}.items():
        value = operation.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise ValueError(f"operation {name}: field {key!r} holds {type(value).__name__} "
                             f"{value!r:.40}")
    return operation


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def apply(db: sqlite3.Connection, o: dict) -> Any:
    """Apply one checked operation inside the caller's transaction; returns the new release's
    sequence number for ``add_release``."""
    return _APPLY[o["op"]](db, o)


def _add_release(db, o) -> int:
    from ..state import PENDING
    cur = db.execute(
        "INSERT INTO releases (target, release_id, provider, bundle_hash, manifest, url,"
        " created_at, outcome, extra, files, requirements) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (o["target"], o["release_id"], o["provider"], o["bundle_hash"], _dumps(o["manifest"]),
         o["url"], o["at"], PENDING.value, _dumps(o["extra"]),
         None if o["files"] is None else _dumps(o["files"]),
         None if o["requirements"] is None else json.dumps(o["requirements"])))
    return int(cur.lastrowid)


def _finish_release(db, o) -> None:
    from ..journal_file import json_dict
    from ..state import SERVING, SUPERSEDED, DeploymentStatus, ReleaseOutcome
    outcome, seq, url = ReleaseOutcome(o["outcome"]).value, o["seq"], o["url"]
    row = db.execute("SELECT * FROM releases WHERE seq=?", (seq,)).fetchone()
    if row is None:                 # a replayed log whose release row was discarded
        return
    merged = {**json_dict(row["extra"]), **o["extra"]}
    db.execute("UPDATE releases SET outcome=?, reason=?, extra=?, url=COALESCE(?, url)"
               " WHERE seq=?", (outcome, o["reason"], _dumps(merged), url, seq))
    if outcome == SERVING:
        name = json_dict(row["manifest"]).get("name")
        db.execute("UPDATE releases SET outcome=? WHERE target=? AND outcome=? AND seq<>?",
                   (SUPERSEDED.value, row["target"], SERVING.value, seq))
        db.execute(
            "INSERT INTO deployments (target, provider, name, release_id, url, status,"
            " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(target) DO UPDATE SET"
            " provider=excluded.provider, name=excluded.name, release_id=excluded.release_id,"
            " url=excluded.url, status=excluded.status, updated_at=excluded.updated_at",
            (row["target"], row["provider"], name if isinstance(name, str) else "",
             row["release_id"], url or row["url"], DeploymentStatus.READY.value, o["at"]))


def _discard_release(db, o) -> None:
    from ..state import PENDING
    db.execute("DELETE FROM releases WHERE seq=? AND outcome=?", (o["seq"], PENDING.value))


def _update_extra(db, o) -> None:
    from ..journal_file import json_dict
    row = db.execute("SELECT extra FROM releases WHERE seq=?", (o["seq"],)).fetchone()
    merged = {**json_dict(row["extra"] if row else "{}"), **o["extra"]}
    db.execute("UPDATE releases SET extra=? WHERE seq=?", (_dumps(merged), o["seq"]))


def _mark_deleted(db, o) -> None:
    from ..state import DeploymentStatus
    last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM releases WHERE target=?",
                      (o["target"],)).fetchone()[0]
    db.execute(
        "INSERT INTO deployments (target, provider, name, release_id, url, status,"
        " updated_at, deleted_seq) VALUES (?,?,?,NULL,NULL,?,?,?) ON CONFLICT(target) DO"
        " UPDATE SET status=excluded.status, url=NULL, updated_at=excluded.updated_at,"
        " deleted_seq=excluded.deleted_seq",
        (o["target"], o["provider"], o["name"], DeploymentStatus.DELETED.value, o["at"], last))


def _event(db, o) -> None:
    db.execute("INSERT INTO events (target, at, kind, message) VALUES (?,?,?,?)",
               (o["target"], o["at"], o["kind"], o["message"]))


def _import(db, o) -> None:
    """Replace every row with an exported journal's (``mlserve.journal.transfer``)."""
    from .transfer import load_tables
    load_tables(db, o["tables"])


_APPLY = {"add_release": _add_release, "finish_release": _finish_release,
          "discard_release": _discard_release, "update_extra": _update_extra,
          "mark_deleted": _mark_deleted, "event": _event, "import": _import}
