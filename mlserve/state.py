"""The journal: what was deployed where, as embedded SQLite (nothing to start).

Tables: ``deployments`` (one row per target: provider, current release, URL, status, and the
last release sequence number a ``delete`` removed), ``releases`` (every release attempt: id,
bundle hash, manifest snapshot, URL, time, outcome, adapter data such as pids and ports, and
since schema 2 the shipped files ``{path: [sha256, executable, size]}`` and requirement lines,
``None`` on rows written before: ``mlserve plan`` then says the files are unknown) and
``events`` (deletions, no-op deploys, failures). ``PRAGMA user_version`` is the schema version:
a journal written by a newer mlserve, or a database that is not a journal, is refused with a
message, never half-read.

History is honest: an outcome is written once when an attempt ends (``serving`` later becomes
``superseded`` when another release takes over), and a ``delete`` is recorded as an event plus
``deployments.deleted_seq``; rows before it keep their outcomes but are no longer current, nor
offered to rollback (their files are gone).

Writers (``State(dir)``) create the directory and schema; readers (``State.for_reading``) open
the file read-only and, when it does not exist, behave as an empty journal without creating
anything (read paths have no side effects; opening and checking the file is
``mlserve.journal_file``). Writes are transactions, so a crash leaves the journal as it was.
Every SQLite or OS failure becomes a ``JournalError`` (exit 1) naming the file and how to move
it aside; a row that cannot be decoded is skipped with a warning (``State.warnings``).
``lock(target)`` is an exclusive OS file lock held for the whole deploy (waiting up to
``--lock-timeout`` for another holder); a crashed holder releases it automatically. Secret values
are never written here.

Every write is an operation (``mlserve.journal.ops``) applied in one transaction; the shared S3
journal (``mlserve.journal.s3.S3State``, a subclass) appends the same operations to its log and
replays them into this schema, so both read alike. Which journal a command uses:
``mlserve.journal.locate``.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import Busy, NotFound
from .journal import ops
from .reqsets import FileProblem, requirement_lines
from .journal_file import (JournalError, check_extra, check_types, decode_files,
                           decode_requirements, guard, has_deleted_seq, json_dict, open_journal)

__all__ = ["State", "Release", "Deployment", "ReleaseOutcome", "DeploymentStatus", "JournalError",
           "PENDING", "SERVING", "FAILED", "SUPERSEDED", "DELETED",
           "file_list", "requirements_of"]


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
    #: {path: (sha256, executable, size)} shipped; None when the row predates schema 2
    files: dict[str, tuple[str, bool, int]] | None = None
    requirements: list[str] | None = None      # requirement lines; None when not recorded


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


def file_list(bundle: Any) -> dict[str, tuple[str, bool, int]]:
    """What the journal keeps of a ``mlserve.bundle.Bundle``'s files (``add_release(files=)``)."""
    return {f.path: (f.digest, f.executable, f.size) for f in bundle.files}


def requirements_of(root: Path, requirements: Any) -> list[str] | None:
    """The requirement lines a release installs (``add_release(requirements=)``), -r includes
    read in; None when they cannot be read (``validate`` says why)."""
    try:
        return requirement_lines(root, requirements)
    except (FileProblem, OSError):
        return None


def _flock(fd: int, target: str) -> None:
    """Take the OS lock, waiting up to ``--lock-timeout`` (``mlserve.journal.lock_timeout``)."""
    from .journal import lock_timeout
    deadline = time.monotonic() + lock_timeout()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise Busy(f"target {target!r} is busy: {holder}",
                           fix="wait for it to finish, or run with --lock-timeout SECONDS to "
                               "wait for it") from None
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))


class State:
    """The journal of one state directory (see the module docstring)."""

    def __init__(self, directory: Path | str, *, read_only: bool = False) -> None:
        self.dir = Path(directory)
        self.path = self.dir / "state.db"
        self.read_only = read_only
        self.warnings: list[str] = []
        self._db = open_journal(self.dir, read_only)
        with guard(self.path, "cannot be read", self.close):
            self._has_deleted_seq = self._db is None or has_deleted_seq(self._db)

    @classmethod
    def for_reading(cls, directory: Path | str) -> "State":
        """Read-only: nothing is created; an absent journal reads as empty."""
        return cls(directory, read_only=True)

    @classmethod
    def empty(cls, directory: Path | str) -> "State":
        """An empty, read-only journal for ``directory`` (used when the real one is unreadable)."""
        self = cls.__new__(cls)
        self.dir, self.read_only, self.warnings = Path(directory), True, []
        self.path, self._db, self._has_deleted_seq = self.dir / "state.db", None, True
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            raise JournalError(f"the journal {self.path} is open for reading only",
                               fix="this is a bug in mlserve: report it")
        with guard(self.path, "cannot be written", self.close):
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
        with guard(self.path, "cannot be read", self.close):
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
            denied = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            raise JournalError(f"cannot open the lock file {lock_path}: {exc.strerror}",
                               fix=f"make {self.dir} writable by this user, or pass --state DIR"
                               if denied else f"move {bad} aside (mv {bad} {bad}.broken); it is "
                                              "recreated on the next deploy") from None
        try:
            _flock(fd, target)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{action} by pid {os.getpid()}".encode(), 0)
            yield
        finally:
            os.close(fd)

    # -- writes: each one an operation (``ops``), applied in one transaction -----------------
    def _write(self, op: dict) -> Any:
        """Apply one write operation (``mlserve.journal.ops``); a shared journal also appends it
        to its log first (``mlserve.journal.s3``)."""
        with self._tx() as db:
            return ops.apply(db, op)

    # -- releases --------------------------------------------------------------------------
    def add_release(self, target: str, release_id: str, provider: str, bundle_hash: str,
                    manifest: dict, url: str | None, extra: dict | None = None, *,
                    files: dict | None = None, requirements: list[str] | None = None) -> int:
        """A pending attempt; ``files`` ({path: (sha256, executable, size)}: ``file_list(bundle)``)
        and ``requirements`` (lines) let ``plan`` show what
        the next deploy changes (None: not known, as for a rollback of an old row)."""
        return int(self._write(ops.add_release(
            target, release_id, provider, bundle_hash, manifest, url, extra, files, requirements)))

    def finish_release(self, seq: int, outcome: str, *, reason: str | None = None,
                       extra: dict | None = None, url: str | None = None) -> None:
        self._write(ops.finish_release(seq, ReleaseOutcome(outcome).value, reason, extra, url))

    def discard_release(self, seq: int) -> None:
        """Forget an attempt that changed nothing (a no-op deploy leaves no release row)."""
        self._write(ops.op("discard_release", seq=seq))

    def update_extra(self, seq: int, extra: dict) -> None:
        self._write(ops.op("update_extra", seq=seq, extra=extra))

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
                          manifest=json_dict(row["manifest"], strict=True), url=row["url"],
                          created_at=row["created_at"], outcome=ReleaseOutcome(row["outcome"]),
                          reason=row["reason"], extra=json_dict(row["extra"], strict=True))
            check_extra(rel.extra)
            check_types(rel, int=("seq",), str=("target", "release_id", "provider", "bundle_hash"),
                         optional_str=("url", "reason"), number=("created_at",))
        except (ValueError, TypeError) as exc:
            self._warn(f"release row {row['seq']!r} of the journal {self.path} is unreadable "
                       f"({exc}); it was skipped")
            return None
        columns = row.keys()            # a schema 0/1 journal read as it is has neither
        try:                            # damaged lists only lose what plan can compare
            rel.files = decode_files(row["files"]) if "files" in columns else None
            rel.requirements = decode_requirements(row["requirements"]) \
                if "requirements" in columns else None
        except (ValueError, TypeError) as exc:
            self._warn(f"the file list of release row {row['seq']!r} of the journal {self.path} "
                       f"is unreadable ({exc}); its files are shown as unknown")
            rel.files = rel.requirements = None
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
                check_types(dep, int=("deleted_seq",), str=("target", "provider", "name", "status"),
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
        self._write(ops.op("mark_deleted", target=target, provider=provider, name=name))

    # -- events ----------------------------------------------------------------------------
    def event(self, target: str, kind: str, message: str) -> None:
        self._write(ops.op("event", target=target, kind=kind, message=message))

    def events(self, target: str, limit: int = 50) -> list[dict]:
        rows = self._query("SELECT * FROM events WHERE target=? ORDER BY seq DESC LIMIT ?",
                           (target, limit))
        events = []
        for row in reversed(rows):
            event = {k: row[k] for k in ("seq", "target", "at", "kind", "message")}
            if isinstance(event["at"], (int, float)) and isinstance(event["kind"], str) \
                    and isinstance(event["message"], str):
                events.append(event)
            else:
                self._warn(f"event row {event['seq']!r} of the journal {self.path} is unreadable "
                           "(a column of the wrong type); it was skipped")
        return events


