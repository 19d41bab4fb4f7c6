"""The journal: what was deployed where, as embedded SQLite (nothing to start).

Tables: ``deployments`` (one row per target: provider, current release, URL, status, and the
last release sequence number a ``delete`` removed), ``releases`` (every release attempt: id,
bundle hash, manifest snapshot, URL, time, outcome, adapter data such as pids and ports) and
``events`` (deletions, no-op deploys, failures). ``PRAGMA user_version`` is the schema version:
a journal written by a newer mlserve, or a database that is not a journal, is refused with a
message, never half-read.

History is honest: an outcome is written once when an attempt ends (``serving`` later becomes
``superseded`` when another release takes over), and a ``delete`` is recorded as an event plus
``deployments.deleted_seq``; rows before it keep their outcomes but are no longer current, nor
offered to rollback (their files are gone).

Writers (``State(dir)``) create the directory and schema; readers (``State.for_reading``) open
the file read-only and, when it does not exist, behave as an empty journal without creating
anything (read paths have no side effects). Rollback-journal mode, not WAL: a read-only WAL
reader leaves ``-wal``/``-shm`` files behind. Writes are transactions, so a crash leaves the
journal as it was. Every SQLite or OS failure becomes a ``JournalError`` (exit 1) naming the
file and how to move it aside; a row that cannot be decoded is skipped with a warning
(``State.warnings``). ``lock(target)`` is an exclusive OS file lock held for the whole deploy;
a crashed holder releases it automatically. Secret values are never written here.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import Busy, MlserveError, NotFound

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
  target TEXT PRIMARY KEY, provider TEXT NOT NULL, name TEXT NOT NULL,
  release_id TEXT, url TEXT, status TEXT NOT NULL, updated_at REAL NOT NULL,
  deleted_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS releases (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, release_id TEXT NOT NULL,
  provider TEXT NOT NULL, bundle_hash TEXT NOT NULL, manifest TEXT NOT NULL, url TEXT,
  created_at REAL NOT NULL, outcome TEXT NOT NULL, reason TEXT, extra TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS releases_target ON releases(target, seq);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, at REAL NOT NULL,
  kind TEXT NOT NULL, message TEXT NOT NULL);
"""
#: Columns every version reads (version 0, before ``user_version`` was set, lacks deleted_seq).
COLUMNS = {
    "deployments": {"target", "provider", "name", "release_id", "url", "status", "updated_at"},
    "releases": {"seq", "target", "release_id", "provider", "bundle_hash", "manifest", "url",
                 "created_at", "outcome", "reason", "extra"},
    "events": {"seq", "target", "at", "kind", "message"},
}


class ReleaseOutcome(str, enum.Enum):
    """How a release attempt ended (``serving`` until another release takes over)."""

    PENDING = "pending"
    SERVING = "serving"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    DELETED = "deleted"          # written only by journals before schema 1 (delete rewrote rows)

    def __str__(self) -> str:
        return self.value


class DeploymentStatus(str, enum.Enum):
    """What the journal last recorded for a target (live truth comes from the provider)."""

    READY = "READY"
    DELETED = "DELETED"

    def __str__(self) -> str:
        return self.value


PENDING, SERVING, FAILED, SUPERSEDED, DELETED = (
    ReleaseOutcome.PENDING, ReleaseOutcome.SERVING, ReleaseOutcome.FAILED,
    ReleaseOutcome.SUPERSEDED, ReleaseOutcome.DELETED)


class JournalError(MlserveError):
    """The journal (or its directory or a lock file) cannot be used (exit 1: the input is fine).

    ``known`` holds what could still be learnt without it (the provider's live status), added by
    the service before the error reaches the user.
    """

    def __init__(self, message: str, **kw) -> None:
        super().__init__(message, **kw)
        self.known: dict[str, Any] | None = None

    def to_dict(self) -> dict:
        return {**super().to_dict(), "known": self.known}


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
    deleted_seq: int = 0


def default_state_dir(manifest_dir: Path) -> Path:
    env = os.environ.get("MLSERVE_STATE")
    return Path(env).expanduser().absolute() if env else manifest_dir / ".mlserve"


def _aside_fix(path: Path) -> str:
    return (f"move it aside: mv {path} {path}.broken — mlserve then starts a new journal; what "
            "is deployed keeps running, and `mlserve status` asks the provider what is live")


class State:
    """The journal of one state directory (see the module docstring)."""

    def __init__(self, directory: Path | str, *, read_only: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "state.db"
        self.read_only = read_only
        self.warnings: list[str] = []
        self._db: sqlite3.Connection | None = None
        self._has_deleted_seq = True
        self._open()

    @classmethod
    def for_reading(cls, directory: Path | str) -> "State":
        """Read-only: nothing is created; an absent journal reads as empty."""
        return cls(directory, read_only=True)

    @classmethod
    def empty(cls, directory: Path | str) -> "State":
        """An empty, read-only journal for ``directory`` (used when the real one is unreadable)."""
        self = cls.__new__(cls)
        self.dir, self.path, self.read_only, self.warnings = Path(directory), Path(directory) / "state.db", True, []
        self._db, self._has_deleted_seq = None, True
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> None:
        if not self._usable_dir():
            return
        if not self._usable_file():
            return
        with self._guard("cannot be read"):
            self._db = self._connect()
            self._check_schema()

    def _usable_dir(self) -> bool:
        """False for a reader whose directory does not exist; raises when it is not a directory."""
        if self.dir.exists() and not self.dir.is_dir():
            raise JournalError(f"the state directory {self.dir} is not a directory",
                               fix=f"move it aside (mv {self.dir} {self.dir}.broken), or pass "
                                   "--state DIR")
        if self.read_only:
            return self.dir.is_dir()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the state directory {self.dir}: {exc.strerror}",
                               fix="create it writable, or pass --state DIR") from None
        return True

    def _usable_file(self) -> bool:
        """False for a reader whose journal does not exist; raises for a non-file."""
        try:
            mode = os.stat(self.path).st_mode
        except FileNotFoundError:
            if self.path.is_symlink():
                raise JournalError(f"the journal {self.path} is a link to "
                                   f"{os.readlink(self.path)}, which does not exist",
                                   fix=f"remove the link (rm {self.path}) or restore its "
                                       "target") from None
            return not self.read_only
        except OSError as exc:
            raise JournalError(f"the journal {self.path} cannot be read: {exc.strerror}",
                               fix=_aside_fix(self.path)) from None
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise JournalError(f"the journal {self.path} is {kind}", fix=_aside_fix(self.path))
        return True

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            db = sqlite3.connect(self.path.absolute().as_uri() + "?mode=ro", uri=True, timeout=30,
                                 isolation_level=None)
            try:
                db.execute("PRAGMA user_version").fetchone()
            except sqlite3.OperationalError as exc:
                if "readonly" not in str(exc):
                    raise
                # a writer was killed mid-transaction: only a writable connection can roll its
                # journal back to the last committed state (SQLite's own recovery)
                db.close()
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        else:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.text_factory = _text
        if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":   # journals before schema 1
            db.close()
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory, db.text_factory = sqlite3.Row, _text
            db.execute("PRAGMA journal_mode=DELETE")
        return db

    def _check_schema(self) -> None:
        assert self._db is not None
        if self._db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise sqlite3.DatabaseError("database disk image is malformed")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} was written by a newer mlserve (schema {version}; this "
                f"one reads up to {SCHEMA_VERSION})",
                fix="upgrade mlserve (pip install -U mlserve), or use another --state directory")
        tables = {r[0]: {c[1] for c in self._db.execute(f"PRAGMA table_info({r[0]!r})")}
                  for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables and version == 0:          # a new (or zero-length) file
            if self.read_only:
                self.close()
            else:
                self._create()
            return
        problems = [f"table {t!r} is missing" if t not in tables else
                    f"table {t!r} lacks column(s) {', '.join(sorted(cols - tables[t]))}"
                    for t, cols in COLUMNS.items() if not cols <= tables.get(t, set())]
        if problems:
            raise JournalError(f"{self.path} is not an mlserve journal, or is damaged: "
                               + "; ".join(problems), fix=_aside_fix(self.path))
        self._has_deleted_seq = "deleted_seq" in tables["deployments"]
        if not self.read_only and version < SCHEMA_VERSION:
            self._create()                         # version 0 -> 1: add what is missing

    def _create(self) -> None:
        assert self._db is not None
        self._db.executescript(SCHEMA)
        if not self._has_deleted_seq or "deleted_seq" not in {
                c[1] for c in self._db.execute("PRAGMA table_info(deployments)")}:
            self._db.execute("ALTER TABLE deployments ADD COLUMN deleted_seq INTEGER NOT NULL "
                             "DEFAULT 0")
        self._has_deleted_seq = True
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """SQLite and OS failures become one JournalError naming the file and the fix."""
        try:
            yield
        except (sqlite3.Error, OSError, UnicodeDecodeError) as exc:
            # (SQLite's message about a damaged schema can itself be undecodable bytes)
            self.close()
            reason = ("damaged text in its schema" if isinstance(exc, UnicodeDecodeError)
                      else getattr(exc, "strerror", None) or str(exc))
            denied = isinstance(exc, PermissionError) or "readonly" in reason \
                or "unable to open" in reason
            fix = (f"make {self.dir} and {self.path} writable by this user, or pass --state DIR"
                   if denied else _aside_fix(self.path))
            raise JournalError(f"the journal {self.path} {doing}: {reason}", fix=fix) from None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            raise JournalError(f"the journal {self.path} is open for reading only",
                               fix="this is a bug in mlserve: report it")
        with self._guard("cannot be written"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        if self._db is None:
            return []
        with self._guard("cannot be read"):
            return self._db.execute(sql, params).fetchall()

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, target: str, action: str = "deploy") -> Iterator[None]:
        lock_path = self.dir / "locks" / f"{target}.lock"
        try:
            lock_path.parent.mkdir(exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            bad = lock_path if lock_path.parent.is_dir() else lock_path.parent
            raise JournalError(f"cannot open the lock file {lock_path}: {exc.strerror}",
                               fix=f"move {bad} aside (mv {bad} {bad}.broken); it is recreated "
                                   "on the next deploy") from None
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
                 url, time.time(), PENDING.value, json.dumps(extra or {}, sort_keys=True)))
            return int(cur.lastrowid)

    def finish_release(self, seq: int, outcome: str, *, reason: str | None = None,
                       extra: dict | None = None, url: str | None = None) -> None:
        outcome = ReleaseOutcome(outcome).value
        with self._tx() as db:
            row = db.execute("SELECT * FROM releases WHERE seq=?", (seq,)).fetchone()
            merged = {**_json_dict(row["extra"]), **(extra or {})}
            db.execute("UPDATE releases SET outcome=?, reason=?, extra=?, url=COALESCE(?, url)"
                       " WHERE seq=?", (outcome, reason, json.dumps(merged, sort_keys=True), url, seq))
            if outcome == SERVING:
                db.execute("UPDATE releases SET outcome=? WHERE target=? AND outcome=? AND seq<>?",
                           (SUPERSEDED.value, row["target"], SERVING.value, seq))
                db.execute(
                    "INSERT INTO deployments (target, provider, name, release_id, url, status,"
                    " updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(target) DO UPDATE SET"
                    " provider=excluded.provider, name=excluded.name, release_id=excluded.release_id,"
                    " url=excluded.url, status=excluded.status, updated_at=excluded.updated_at",
                    (row["target"], row["provider"], _json_dict(row["manifest"]).get("name", ""),
                     row["release_id"], url or row["url"], DeploymentStatus.READY.value, time.time()))

    def discard_release(self, seq: int) -> None:
        """Forget an attempt that changed nothing (a no-op deploy leaves no release row)."""
        with self._tx() as db:
            db.execute("DELETE FROM releases WHERE seq=? AND outcome=?", (seq, PENDING.value))

    def update_extra(self, seq: int, extra: dict) -> None:
        with self._tx() as db:
            row = db.execute("SELECT extra FROM releases WHERE seq=?", (seq,)).fetchone()
            merged = {**_json_dict(row["extra"] if row else "{}"), **extra}
            db.execute("UPDATE releases SET extra=? WHERE seq=?", (json.dumps(merged, sort_keys=True), seq))

    def releases(self, target: str, *, since_deletion: bool = False) -> list[Release]:
        """Every readable release row of ``target``, oldest first (unreadable rows are skipped
        with a warning); ``since_deletion``: only those after the last ``delete``."""
        after = self._deleted_seq(target) if since_deletion else 0
        rows = self._query("SELECT * FROM releases WHERE target=? AND seq>? ORDER BY seq",
                           (target, after))
        return [rel for rel in map(self._release, rows) if rel is not None]

    def current(self, target: str) -> Release | None:
        """The release serving since the last deletion, if any."""
        return next((r for r in reversed(self.releases(target, since_deletion=True))
                     if r.outcome == SERVING), None)

    def find_release(self, target: str, release_id: str) -> Release:
        """The newest release since the last deletion that once served, by id or id prefix."""
        for rel in reversed(self.releases(target, since_deletion=True)):
            if rel.outcome in (SERVING, SUPERSEDED) and rel.release_id.startswith(release_id):
                return rel
        raise NotFound(f"no successful release {release_id!r} of target {target!r}",
                       fix=f"see `mlserve status {target}` for its releases")

    def previous(self, target: str) -> Release | None:
        """The newest superseded release (since the last deletion) whose id differs from the
        current one."""
        cur = self.current(target)
        for rel in reversed(self.releases(target, since_deletion=True)):
            if rel.outcome == SUPERSEDED and (cur is None or rel.release_id != cur.release_id):
                return rel
        return None

    def _release(self, row: sqlite3.Row) -> Release | None:
        try:
            rel = Release(seq=row["seq"], target=row["target"], release_id=row["release_id"],
                          provider=row["provider"], bundle_hash=row["bundle_hash"],
                          manifest=_json_dict(row["manifest"], strict=True), url=row["url"],
                          created_at=row["created_at"], outcome=ReleaseOutcome(row["outcome"]),
                          reason=row["reason"], extra=_json_dict(row["extra"], strict=True))
            _check_types(rel, int=("seq",), str=("target", "release_id", "provider", "bundle_hash"),
                         optional_str=("url", "reason"), number=("created_at",))
        except (ValueError, TypeError) as exc:
            self._warn(f"release row {row['seq']!r} of the journal {self.path} is unreadable "
                       f"({exc}); it was skipped")
            return None
        return rel

    def _warn(self, message: str) -> None:
        if message not in self.warnings:        # rows are read more than once per command
            self.warnings.append(message)

    # -- deployments -----------------------------------------------------------------------
    def deployment(self, target: str) -> Deployment | None:
        return next((d for d in self.deployments() if d.target == target), None)

    def deployments(self) -> list[Deployment]:
        found = []
        for row in self._query("SELECT * FROM deployments ORDER BY target"):
            keys = row.keys()
            try:
                dep = Deployment(**{k: row[k] for k in keys if k in Deployment.__annotations__})
                _check_types(dep, int=("deleted_seq",), str=("target", "provider", "name", "status"),
                             optional_str=("release_id", "url"), number=("updated_at",))
            except (ValueError, TypeError) as exc:
                self._warn(f"deployment row {row['target']!r} of the journal {self.path} is "
                           f"unreadable ({exc}); it was skipped")
                continue
            found.append(dep)
        return found

    def _deleted_seq(self, target: str) -> int:
        if not self._has_deleted_seq:
            return 0
        rows = self._query("SELECT deleted_seq FROM deployments WHERE target=?", (target,))
        value = rows[0][0] if rows else 0
        return value if isinstance(value, int) else 0

    def mark_deleted(self, target: str, provider: str = "", name: str = "") -> None:
        """Record that ``target`` was deleted; earlier release rows keep their outcomes."""
        with self._tx() as db:
            last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM releases WHERE target=?",
                              (target,)).fetchone()[0]
            db.execute(
                "INSERT INTO deployments (target, provider, name, release_id, url, status,"
                " updated_at, deleted_seq) VALUES (?,?,?,NULL,NULL,?,?,?) ON CONFLICT(target) DO"
                " UPDATE SET status=excluded.status, url=NULL, updated_at=excluded.updated_at,"
                " deleted_seq=excluded.deleted_seq",
                (target, provider, name, DeploymentStatus.DELETED.value, time.time(), last))

    # -- events ----------------------------------------------------------------------------
    def event(self, target: str, kind: str, message: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO events (target, at, kind, message) VALUES (?,?,?,?)",
                       (target, time.time(), kind, message))

    def events(self, target: str, limit: int = 50) -> list[dict]:
        rows = self._query("SELECT * FROM events WHERE target=? ORDER BY seq DESC LIMIT ?",
                           (target, limit))
        return [dict(r) for r in rows][::-1]


def _text(data: bytes) -> str:
    """Text columns as str even when damaged bytes are not UTF-8 (the row then fails its own
    checks, or shows U+FFFD, instead of failing the whole journal)."""
    return data.decode("utf-8", "replace")


def _json_dict(text: Any, strict: bool = False) -> dict:
    """A JSON object column; with ``strict``, anything else raises ValueError."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        if strict:
            raise ValueError(f"invalid JSON: {exc}") from None
        return {}
    if not isinstance(value, dict):
        if strict:
            raise ValueError(f"a JSON {type(value).__name__} where an object belongs")
        return {}
    return value


def _check_types(obj: Any, **kinds: tuple[str, ...]) -> None:
    """Columns of the wrong type (SQLite stores anything anywhere) make the row unreadable."""
    accepted = {"int": (int,), "str": (str,), "optional_str": (str, type(None)),
                "number": (int, float)}
    for kind, names in kinds.items():
        for name in names:
            value = getattr(obj, name)
            if not isinstance(value, accepted[kind]) or isinstance(value, bool):
                raise TypeError(f"column {name} holds {type(value).__name__} {value!r:.40}")
