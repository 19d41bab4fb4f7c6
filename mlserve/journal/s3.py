"""The shared journal on S3: an append-only log of immutable, numbered objects, replayed into an
in-memory database with the SQLite journal's schema, so ``S3State`` reads exactly like
``mlserve.state.State`` (same queries, same checks of damaged rows).

Keys under ``s3://bucket/prefix/``:

- ``journal/log/<20-digit number>.json``: one write operation each (``mlserve.journal.ops``),
  created with ``If-None-Match: *``. A writer that loses the race for a number (412, or 409 when
  the store saw two at once) reads what won and tries the next number: **no write is ever lost or
  overwritten**, and every reader replays the same operations in the same order.
- ``journal/checkpoint.db``: a cache, the replayed database up to log number ``log-index`` (user
  metadata), written every ``CHECKPOINT_EVERY`` operations. A damaged one is ignored (warning) and
  the log replayed from the start; the log stays the truth.
- ``locks/<target>.json``: the lock of one target. Taken with ``If-None-Match: *``; holds the
  holder (host, pid, CI job URL, action) and its lease. The holder renews it (``If-Match`` its
  ETag) every third of the lease; a lock not renewed for a whole lease (its holder died) is taken
  over with ``If-Match`` of the ETag read, so two waiters cannot both take it. Released by
  overwriting it, ``If-Match`` its ETag, with ``{"released": true}``, which the next taker
  overwrites the same way (no conditional DELETE: not every S3-compatible store has one). Expiry
  is judged on the store's clock (the lock's Last-Modified against the Last-Modified of
  ``locks/.clock``, written once by a waiter to measure the offset), not this machine's.

A log object that is not a well-formed operation (written by something else, damaged) is skipped
with a warning, as the SQLite journal skips an unreadable row.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from typing import Any, Iterator

from ..errors import Busy, InvalidInput
from ..state import State
from ..journal_file import SCHEMA, SCHEMA_VERSION, JournalError, _text
from . import lock_lease, lock_timeout, ops, parse_s3
from . import s3client as s3
from .s3client import Absent, Conflict, translated

__all__ = ["S3State", "CHECKPOINT_EVERY", "MAX_OBJECT"]

CHECKPOINT_EVERY = 10
MAX_OBJECT = 64 * 1024 * 1024        # a log object larger than this is not one mlserve wrote
_DIGITS = 20


def job_url(environ: dict | None = None) -> str | None:
    """The CI job running this process, when the CI system says (GitHub Actions, GitLab CI)."""
    env = os.environ if environ is None else environ
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return env.get("CI_JOB_URL") or None


def holder_text(holder: Any) -> str:
    if not isinstance(holder, dict):
        return "another process (its lock object is unreadable)"
    parts = [f"{holder.get('action', '?')} by pid {holder.get('pid', '?')} on "
             f"{holder.get('host', '?')}"]
    if holder.get("job"):
        parts.append(f"({holder['job']})")
    return " ".join(str(p)[:300] for p in parts)


class S3State(State):
    """``mlserve.state.State`` over an S3 prefix (see the module docstring)."""

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        self.url = url
        self.bucket, prefix = parse_s3(url)
        self.prefix = f"{prefix}/" if prefix else ""
        self.dir = None
        self.path = url                     # named in messages, as the SQLite file's path is
        self.read_only = read_only
        self.warnings: list[str] = []
        self._has_deleted_seq = True
        self._index = 0                     # the last log number applied
        self._db = self._fresh()
        self._store = s3.store(self.bucket, url)
        self._load_checkpoint()
        self._sync()

    @classmethod
    def for_reading(cls, url: str) -> "S3State":
        return cls(url, read_only=True)

    # -- the in-memory replica -------------------------------------------------------------
    @staticmethod
    def _fresh(data: bytes | None = None) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        db.row_factory, db.text_factory = sqlite3.Row, _text
        if data is None:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        else:
            db.deserialize(data)
        return db

    def _key(self, name: str) -> str:
        return f"{self.prefix}journal/{name}"

    def _log_key(self, index: int) -> str:
        return self._key(f"log/{index:0{_DIGITS}d}.json")

    def _load_checkpoint(self) -> None:
        try:
            with translated(self.url, "cannot be read"):
                got = s3.get(self._store, self._key("checkpoint.db"), MAX_OBJECT)
            index = int(got.metadata.get("log-index", "x"))
            data = got.body
        except Absent:
            return
        except ValueError:
            self._warn(f"the checkpoint of the shared journal {self.url} has no log index; the "
                       "log is replayed from the start")
            return
        try:
            db = self._fresh(data)
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok" or \
                    db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                raise sqlite3.DatabaseError("not a journal of this schema")
            from ..journal_file import COLUMNS
            for table, columns in COLUMNS.items():
                have = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
                if not columns <= have:
                    raise sqlite3.DatabaseError(f"table {table} is missing columns")
        except sqlite3.Error as exc:
            self._warn(f"the checkpoint of the shared journal {self.url} is unreadable ({exc}); "
                       "the log is replayed from the start")
            return
        self._db.close()
        self._db, self._index = db, max(index, 0)

    def _save_checkpoint(self) -> None:
        """Best effort: a checkpoint only saves readers time."""
        try:
            with translated(self.url, "cannot be written"):
                s3.put(self._store, self._key("checkpoint.db"), self._db.serialize(),
                       metadata={"Content-Type": "application/vnd.sqlite3",
                                 "log-index": str(self._index)})
        except (Conflict, Absent, JournalError) as exc:
            self._warn(f"the checkpoint of the shared journal {self.url} was not saved ({exc})")

    def _sync(self) -> None:
        """Apply every log object after the last one applied, in order (fetched in parallel)."""
        keys = self._new_keys()
        if len(keys) > 1:
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(min(len(keys), 8)) as pool:
                bodies = list(pool.map(self._fetch, keys))
        else:
            bodies = [self._fetch(k) for k in keys]
        for key, body in zip(keys, bodies):
            self._apply_object(key, body)
            self._index = int(key[-len(".json") - _DIGITS:-len(".json")])

    def _new_keys(self) -> list[str]:
        keys = []
        start = self._log_key(self._index) if self._index else self._key("log/")
        with translated(self.url, "cannot be read"):
            found = s3.keys_after(self._store, self._key("log/"), start)
        for key in found:
            name = key[len(self._key("log/")):]
            if len(name) == _DIGITS + 5 and name.endswith(".json") and name[:_DIGITS].isdigit():
                keys.append(key)
            else:
                self._warn(f"the shared journal {self.url} holds an object that is not mlserve's "
                           f"(log/{name[:80]!r}); it was ignored")
        return keys

    def _fetch(self, key: str) -> bytes | None:
        """A log object's body; None when it was deleted since it was listed."""
        try:
            with translated(self.url, "cannot be read"):
                return s3.get(self._store, key, MAX_OBJECT).body
        except Absent:
            return None

    def _apply_object(self, key: str, body: bytes | None) -> None:
        where = f"s3://{self.bucket}/{key}"
        if body is None:
            return
        try:
            if len(body) > MAX_OBJECT:
                raise ValueError(f"more than {MAX_OBJECT} bytes, larger than any journal write")
            operation = ops.check(json.loads(body.decode("utf-8")))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ops.apply(self._db, operation)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except (ValueError, TypeError, KeyError, sqlite3.Error, InvalidInput) as exc:
            self._warn(f"the shared journal's log object {where} is not a journal write "
                       f"({str(exc)[:200]}); it was skipped (remove it if something else wrote "
                       f"it: aws s3 rm {where})")

    # -- writes: append to the log, then apply --------------------------------------------
    def _write(self, operation: dict) -> Any:
        if self.read_only:
            raise JournalError(f"the journal {self.url} is open for reading only",
                               fix="this is a bug in mlserve: report it")
        body = json.dumps({**operation, "by": {"host": socket.gethostname(),
                                               "pid": os.getpid()}}, sort_keys=True).encode()
        for attempt in range(1000):
            if attempt:
                self._sync()                   # read what won the race, then the next number
            index = self._index + 1
            try:
                with translated(self.url, "cannot be written"):
                    s3.put(self._store, self._log_key(index), body, create=True)
            except Conflict:
                continue                       # another writer took that number
            with self._tx() as db:
                result = ops.apply(db, operation)
            self._index = index
            if index % CHECKPOINT_EVERY == 0:
                self._save_checkpoint()
            return result
        raise JournalError(f"the shared journal {self.url} could not be written: 1000 other "
                           "writes won the race for the next log number",
                           fix="run the command again")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, target: str, action: str = "deploy") -> Iterator[None]:
        lease = lock_lease()
        lock = _Lease(self, f"{self.prefix}locks/{target}.json", lease)
        lock.acquire(target, action, lock_timeout())
        try:
            yield
        finally:
            lock.release()
            if lock.lost:
                self._warn(f"the lock of target {target!r} in {self.url} was taken over while "
                           f"held (not renewed within its {lease:g} s lease): check the target")


class _Lease:
    """One target's lock object: acquire (waiting up to a timeout), renew, release."""

    def __init__(self, state: S3State, key: str, lease: float) -> None:
        self.state, self.key, self.lease = state, key, lease
        self.etag: str | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._body = b""
        self._offset: float | None = None     # the store's clock minus this machine's

    def _put(self, *, create: bool = False, etag: str | None = None,
             body: bytes | None = None) -> str | None:
        with translated(self.state.url, "cannot be written"):
            return s3.put(self.state._store, self.key, self._body if body is None else body,
                          create=create, etag=etag)

    def acquire(self, target: str, action: str, timeout: float) -> None:
        self._body = json.dumps({"action": action, "host": socket.gethostname(),
                                 "pid": os.getpid(), "job": job_url(), "lease": self.lease,
                                 "token": uuid.uuid4().hex}).encode()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.etag = self._put(create=True)
                break
            except Conflict:
                pass
            holder, etag, expired = self._read()
            if etag is not None and expired:
                try:
                    self.etag = self._put(etag=etag)      # released, or a dead holder's lease
                    break
                except (Conflict, Absent):
                    continue
            if etag is None:
                continue                                      # released meanwhile
            if time.monotonic() >= deadline:
                raise Busy(f"target {target!r} is busy: {holder_text(holder)}",
                           fix="wait for it to finish, or run with --lock-timeout SECONDS to "
                               "wait; a holder that died loses the lock after its lease "
                               f"({self.lease:g} s, MLSERVE_LOCK_LEASE)")
            time.sleep(min(0.25, max(deadline - time.monotonic(), 0.01)))
        self._thread = threading.Thread(target=self._renew, daemon=True, name="mlserve-lease")
        self._thread.start()

    def _read(self) -> tuple[Any, str | None, bool]:
        """(holder, ETag, expired) of the lock object; ETag None when there is none. A released
        lock counts as expired: whoever puts If-Match its ETag first takes it."""
        try:
            with translated(self.state.url, "cannot be read"):
                got = s3.get(self.state._store, self.key, 65536)
        except Absent:
            return None, None, False
        try:
            holder = json.loads(got.body)
            if holder.get("released") is True:
                return holder, got.etag, True
            lease = float(holder["lease"])
        except (ValueError, TypeError, KeyError, AttributeError):
            holder, lease = None, self.lease            # unreadable: the waiter's own lease
        return holder, got.etag, got.modified.timestamp() + lease < self._store_clock()

    def _store_clock(self) -> float:
        """Now on the store's clock (Last-Modified is the store's, this machine's may be off):
        this machine's time plus the offset measured once, by writing a tiny object."""
        if self._offset is None:
            with translated(self.state.url, "cannot be written"):
                now = s3.server_now(self.state._store, f"{self.state.prefix}locks/.clock")
            self._offset = now.timestamp() - time.time()
        return time.time() + self._offset

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            try:
                self.etag = self._put(etag=self.etag)
            except (Conflict, Absent):
                self.lost = True
                return
            except Exception:                       # a network blip: try again next period
                continue

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.lost or self.etag is None:
            return
        # Only if still ours (If-Match): a released marker, not a conditional DELETE, which
        # S3-compatible stores and obstore do not all offer; the next taker overwrites it.
        with contextlib.suppress(Conflict, Absent, JournalError):
            self._put(etag=self.etag, body=json.dumps({"released": True}).encode())
