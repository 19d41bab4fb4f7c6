"""Opening the journal file safely: what ``mlserve.state`` stands on.

``open_journal(directory, read_only)`` returns a SQLite connection to ``directory/state.db`` (or
``None`` for a reader when there is no journal yet: nothing is created), after checking that
the directory is a directory, the file a regular file, the database intact (``quick_check``)
and its schema one this mlserve reads (``PRAGMA user_version``; version 0 is a journal from
before versions, version 1 one from before releases kept their file lists; both are read as they
are and upgraded by the next writer, never by a reader). Anything else is a ``JournalError`` (exit 1: the
command's input is fine) naming the file and the fix, usually to move it aside. ``guard`` turns
SQLite and OS failures during later queries into the same error. Text columns decode with
replacement characters, so a damaged row fails its own checks (``json_dict``, ``check_types``)
and is skipped by the caller instead of failing the whole journal.

Rollback-journal mode, not WAL: a read-only reader of a WAL database leaves ``-wal`` and
``-shm`` files behind, and read paths must create nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any, Iterator

from .errors import MlserveError

#: 2: ``releases.files`` ({path: [sha256, executable, size]}) and ``releases.requirements``
#: (the requirement lines), JSON, NULL when unknown (rows written by schema 0 and 1).
SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
  target TEXT PRIMARY KEY, provider TEXT NOT NULL, name TEXT NOT NULL,
  release_id TEXT, url TEXT, status TEXT NOT NULL, updated_at REAL NOT NULL,
  deleted_seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS releases (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, release_id TEXT NOT NULL,
  provider TEXT NOT NULL, bundle_hash TEXT NOT NULL, manifest TEXT NOT NULL, url TEXT,
  created_at REAL NOT NULL, outcome TEXT NOT NULL, reason TEXT, extra TEXT NOT NULL DEFAULT '{}',
  files TEXT, requirements TEXT);
CREATE INDEX IF NOT EXISTS releases_target ON releases(target, seq);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, at REAL NOT NULL,
  kind TEXT NOT NULL, message TEXT NOT NULL);
"""
#: Columns every version has (version 0 lacks deployments.deleted_seq, versions 0 and 1
#: releases.files and releases.requirements: ``ADDED`` below).
COLUMNS = {
    "deployments": {"target", "provider", "name", "release_id", "url", "status", "updated_at"},
    "releases": {"seq", "target", "release_id", "provider", "bundle_hash", "manifest", "url",
                 "created_at", "outcome", "reason", "extra"},
    "events": {"seq", "target", "at", "kind", "message"},
}


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


def aside_fix(path: Path) -> str:
    return (f"move it aside: mv {path} {path}.broken — mlserve then starts a new journal; what "
            "is deployed keeps running, and `mlserve status` asks the provider what is live")


def open_journal(directory: Path, read_only: bool) -> sqlite3.Connection | None:
    """A checked connection to ``directory/state.db``; ``None`` for a reader without a journal."""
    path = directory / "state.db"
    if not _usable_dir(directory, read_only) or not _usable_file(path, read_only):
        return None
    db = None
    with guard(path, "cannot be read", lambda: db and db.close()):
        db = _connect(path, read_only)
        if _check_schema(db, path, read_only):
            return db
        db.close()                              # an empty file, opened for reading
        return None


#: Columns later versions added, and their declarations (a writer adds what is missing).
ADDED = {("deployments", "deleted_seq"): "INTEGER NOT NULL DEFAULT 0",
         ("releases", "files"): "TEXT", ("releases", "requirements"): "TEXT"}


def has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return column in {c[1] for c in db.execute(f"PRAGMA table_info({table})")}


def has_deleted_seq(db: sqlite3.Connection) -> bool:
    return has_column(db, "deployments", "deleted_seq")


@contextlib.contextmanager
def guard(path: Path, doing: str, cleanup=None) -> Iterator[None]:
    """SQLite and OS failures become one JournalError naming the file and the fix."""
    try:
        yield
    except (sqlite3.Error, OSError, UnicodeDecodeError) as exc:
        # (SQLite's message about a damaged schema can itself be undecodable bytes)
        if cleanup:
            cleanup()
        reason = ("damaged text in its schema" if isinstance(exc, UnicodeDecodeError)
                  else getattr(exc, "strerror", None) or str(exc))
        denied = isinstance(exc, PermissionError) or "readonly" in reason \
            or "unable to open" in reason
        fix = (f"make {path.parent} and {path} writable by this user, or pass --state DIR"
               if denied else aside_fix(path))
        raise JournalError(f"the journal {path} {doing}: {reason}", fix=fix) from None


def _usable_dir(directory: Path, read_only: bool) -> bool:
    """False for a reader whose directory does not exist; raises when it is not a directory."""
    if directory.exists() and not directory.is_dir():
        raise JournalError(f"the state directory {directory} is not a directory",
                           fix=f"move it aside (mv {directory} {directory}.broken), or pass "
                               "--state DIR")
    if read_only:
        return directory.is_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JournalError(f"cannot create the state directory {directory}: {exc.strerror}",
                           fix="create it writable, or pass --state DIR") from None
    return True


def _usable_file(path: Path, read_only: bool) -> bool:
    """False for a reader whose journal does not exist; raises for anything but a file (a FIFO
    would hang SQLite)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise JournalError(f"the journal {path} is a link to {os.readlink(path)}, which does "
                               "not exist", fix=f"remove the link (rm {path}) or restore its "
                                                "target") from None
        return not read_only
    except OSError as exc:
        raise JournalError(f"the journal {path} cannot be read: {exc.strerror}",
                           fix=aside_fix(path)) from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise JournalError(f"the journal {path} is {kind}", fix=aside_fix(path))
    return True


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    def rw() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=30, isolation_level=None)
    db = rw() if not read_only else sqlite3.connect(path.absolute().as_uri() + "?mode=ro",
                                                    uri=True, timeout=30, isolation_level=None)
    try:
        db.execute("PRAGMA user_version").fetchone()
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc):
            raise
        # a writer was killed mid-transaction: only a writable connection can roll its
        # journal back to the last committed state (SQLite's own recovery)
        db.close()
        db = rw()
    if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":   # journals before schema 1
        db.close()
        db = rw()
        db.execute("PRAGMA journal_mode=DELETE")
    db.row_factory, db.text_factory = sqlite3.Row, _text
    return db


def _check_schema(db: sqlite3.Connection, path: Path, read_only: bool) -> bool:
    """True when ``db`` is a journal this mlserve reads (a writer creates or upgrades it);
    False for an empty database opened for reading."""
    if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        raise sqlite3.DatabaseError("database disk image is malformed")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"the journal {path} was written by a newer mlserve (schema {version}; this one "
            f"reads up to {SCHEMA_VERSION})",
            fix="upgrade mlserve (pip install -U mlserve), or use another --state directory")
    tables = {r[0]: {c[1] for c in db.execute(f"PRAGMA table_info({r[0]!r})")}
              for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables or version:
        problems = [f"table {t!r} is missing" if t not in tables else
                    f"table {t!r} lacks column(s) {', '.join(sorted(cols - tables[t]))}"
                    for t, cols in COLUMNS.items() if not cols <= tables.get(t, set())]
        if problems:
            raise JournalError(f"{path} is not an mlserve journal, or is damaged: "
                               + "; ".join(problems), fix=aside_fix(path))
    elif read_only:                      # a new (or zero-length) file
        return False
    if not read_only and version < SCHEMA_VERSION:
        # new, or an older version: add what is missing, in one transaction (a writer killed
        # half-way leaves the old version, still readable, to be upgraded again)
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)
            for (table, column), declaration in ADDED.items():
                if not has_column(db, table, column):
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return True


def _text(data: bytes) -> str:
    """Text columns as str even when damaged bytes are not UTF-8."""
    return data.decode("utf-8", "replace")


def json_dict(text: Any, strict: bool = False) -> dict:
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


#: Types of the adapter data (``releases.extra``) that adapters read back; a row whose extra
#: holds another type is unreadable (a damaged journal must not reach an adapter as a crash).
EXTRA_TYPES: dict[str, type | tuple[type, ...]] = {
    "pid": int, "pid_start": (str, int), "runtime_pid": int, "port": int, "check_port": int,
    "dir": str, "log": str, "hosts": list, "transfer": dict, "deployment": str}


def check_extra(extra: dict) -> None:
    for key, kind in EXTRA_TYPES.items():
        value = extra.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise TypeError(f"adapter data {key!r} holds {type(value).__name__} {value!r:.40}")


def check_types(obj: Any, **kinds: tuple[str, ...]) -> None:
    """Columns of the wrong type (SQLite stores anything anywhere) make the row unreadable."""
    accepted = {"int": (int,), "str": (str,), "optional_str": (str, type(None)),
                "number": (int, float)}
    for kind, names in kinds.items():
        for name in names:
            value = getattr(obj, name)
            if not isinstance(value, accepted[kind]) or isinstance(value, bool):
                raise TypeError(f"column {name} holds {type(value).__name__} {value!r:.40}")


def decode_files(text: Any) -> dict[str, tuple[str, bool, int]] | None:
    """``releases.files``: None when NULL; ValueError/TypeError for anything but
    {path: [sha256 hex, executable, size]}."""
    if text is None:
        return None
    files = json_dict(text, strict=True)
    checked = {}
    for path, entry in files.items():
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], bool) and isinstance(entry[2], int)
                and not isinstance(entry[2], bool)):
            raise TypeError(f"file {path!r:.60} holds {entry!r:.60}, not [digest, executable, size]")
        checked[path] = (entry[0], entry[1], entry[2])
    return checked


def decode_requirements(text: Any) -> list[str] | None:
    """``releases.requirements``: None when NULL, else a JSON list of strings."""
    if text is None:
        return None
    try:
        lines = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise TypeError("requirements is not a list of lines")
    return lines
