"""The journal: what was deployed where, as embedded SQLite (nothing to start).

Tables: ``deployments`` (one row per target: provider, current release, URL, status),
``releases`` (every release attempt: id, bundle hash, manifest snapshot, URL, time, outcome,
adapter data such as pids and ports) and ``events``. Writes are transactions (WAL mode), so a
crash leaves the journal as it was. ``lock(target)`` is an exclusive OS file lock held for the
whole deploy: a second concurrent deploy of the same target is refused, and a crashed holder
releases it automatically. Credentials and secret values are never written here; adapters store
only names.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import Busy, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
  target TEXT PRIMARY KEY, provider TEXT NOT NULL, name TEXT NOT NULL,
  release_id TEXT, url TEXT, status TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, release_id TEXT NOT NULL,
  provider TEXT NOT NULL, bundle_hash TEXT NOT NULL, manifest TEXT NOT NULL, url TEXT,
  created_at REAL NOT NULL, outcome TEXT NOT NULL, reason TEXT, extra TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS releases_target ON releases(target, seq);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, at REAL NOT NULL,
  kind TEXT NOT NULL, message TEXT NOT NULL);
"""

# Release outcomes
PENDING, SERVING, FAILED, SUPERSEDED, DELETED = "pending", "serving", "failed", "superseded", "deleted"


@dataclass
class Release:
    seq: int
    target: str
    release_id: str
    provider: str
    bundle_hash: str
    manifest: dict
    url: str | None
    created_at: float
    outcome: str
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Deployment:
    target: str
    provider: str
    name: str
    release_id: str | None
    url: str | None
    status: str
    updated_at: float


def default_state_dir(manifest_dir: Path) -> Path:
    env = os.environ.get("MLSERVE_STATE")
    return Path(env).expanduser().absolute() if env else manifest_dir / ".mlserve"


class State:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.dir / "state.db", timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, target: str, action: str = "deploy") -> Iterator[None]:
        lock_dir = self.dir / "locks"
        lock_dir.mkdir(exist_ok=True)
        fd = os.open(lock_dir / f"{target}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise Busy(f"target {target!r} is busy: {holder}",
                           fix="wait for it to finish, then run the command again") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{action} by pid {os.getpid()}".encode(), 0)
            yield
        finally:
            os.close(fd)

    # -- releases --------------------------------------------------------------------------
    def add_release(self, target: str, release_id: str, provider: str, bundle_hash: str,
                    manifest: dict, url: str | None, extra: dict | None = None) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO releases (target, release_id, provider, bundle_hash, manifest, url,"
                " created_at, outcome, extra) VALUES (?,?,?,?,?,?,?,?,?)",
                (target, release_id, provider, bundle_hash, json.dumps(manifest, sort_keys=True),
                 url, time.time(), PENDING, json.dumps(extra or {}, sort_keys=True)))
            return int(cur.lastrowid)

    def finish_release(self, seq: int, outcome: str, *, reason: str | None = None,
                       extra: dict | None = None, url: str | None = None) -> None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM releases WHERE seq=?", (seq,)).fetchone()
            merged = {**json.loads(row["extra"]), **(extra or {})}
            db.execute("UPDATE releases SET outcome=?, reason=?, extra=?, url=COALESCE(?, url)"
                       " WHERE seq=?", (outcome, reason, json.dumps(merged, sort_keys=True), url, seq))
            if outcome == SERVING:
                db.execute("UPDATE releases SET outcome=? WHERE target=? AND outcome=? AND seq<>?",
                           (SUPERSEDED, row["target"], SERVING, seq))
                db.execute(
                    "INSERT INTO deployments (target, provider, name, release_id, url, status,"
                    " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(target) DO UPDATE SET"
                    " provider=excluded.provider, name=excluded.name, release_id=excluded.release_id,"
                    " url=excluded.url, status=excluded.status, updated_at=excluded.updated_at",
                    (row["target"], row["provider"], json.loads(row["manifest"]).get("name", ""),
                     row["release_id"], url or row["url"], "READY", time.time()))

    def update_extra(self, seq: int, extra: dict) -> None:
        with self._tx() as db:
            row = db.execute("SELECT extra FROM releases WHERE seq=?", (seq,)).fetchone()
            merged = {**json.loads(row["extra"]), **extra}
            db.execute("UPDATE releases SET extra=? WHERE seq=?", (json.dumps(merged, sort_keys=True), seq))

    def releases(self, target: str) -> list[Release]:
        rows = self._db.execute("SELECT * FROM releases WHERE target=? ORDER BY seq", (target,))
        return [self._release(r) for r in rows]

    def current(self, target: str) -> Release | None:
        row = self._db.execute("SELECT * FROM releases WHERE target=? AND outcome=? ORDER BY seq "
                               "DESC LIMIT 1", (target, SERVING)).fetchone()
        return self._release(row) if row else None

    def find_release(self, target: str, release_id: str) -> Release:
        row = self._db.execute(
            "SELECT * FROM releases WHERE target=? AND release_id LIKE ? AND outcome IN (?,?)"
            " ORDER BY seq DESC LIMIT 1", (target, release_id + "%", SERVING, SUPERSEDED)).fetchone()
        if not row:
            raise NotFound(f"no successful release {release_id!r} of target {target!r}",
                           fix=f"see `mlserve status {target}` for its releases")
        return self._release(row)

    def previous(self, target: str) -> Release | None:
        """The newest superseded release whose id differs from the current one."""
        cur = self.current(target)
        for rel in reversed(self.releases(target)):
            if rel.outcome == SUPERSEDED and (cur is None or rel.release_id != cur.release_id):
                return rel
        return None

    @staticmethod
    def _release(row: sqlite3.Row) -> Release:
        return Release(seq=row["seq"], target=row["target"], release_id=row["release_id"],
                       provider=row["provider"], bundle_hash=row["bundle_hash"],
                       manifest=json.loads(row["manifest"]), url=row["url"],
                       created_at=row["created_at"], outcome=row["outcome"], reason=row["reason"],
                       extra=json.loads(row["extra"]))

    # -- deployments -----------------------------------------------------------------------
    def deployment(self, target: str) -> Deployment | None:
        row = self._db.execute("SELECT * FROM deployments WHERE target=?", (target,)).fetchone()
        return Deployment(**dict(row)) if row else None

    def deployments(self) -> list[Deployment]:
        return [Deployment(**dict(r)) for r in
                self._db.execute("SELECT * FROM deployments ORDER BY target")]

    def mark_deleted(self, target: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE deployments SET status='DELETED', url=NULL, updated_at=? WHERE target=?",
                       (time.time(), target))
            db.execute("UPDATE releases SET outcome=? WHERE target=? AND outcome IN (?,?)",
                       (DELETED, target, SERVING, SUPERSEDED))

    # -- events ----------------------------------------------------------------------------
    def event(self, target: str, kind: str, message: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events (target, at, kind, message) VALUES (?,?,?,?)",
                       (target, time.time(), kind, message))

    def events(self, target: str, limit: int = 50) -> list[dict]:
        rows = self._db.execute("SELECT * FROM events WHERE target=? ORDER BY seq DESC LIMIT ?",
                                (target, limit))
        return [dict(r) for r in rows][::-1]
