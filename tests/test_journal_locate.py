"""Which journal a command uses, journal URLs, and lock waiting on the SQLite journal (no
servers: the S3 journal itself is tests/test_journal_s3.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from mlserve import journal
from mlserve.errors import Busy, InvalidInput
from mlserve.journal import Location, locate, parse_s3
from mlserve.state import State


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for name in ("MLSERVE_STATE", "MLSERVE_LOCK_TIMEOUT", "MLSERVE_LOCK_LEASE"):
        monkeypatch.delenv(name, raising=False)
    yield
    journal.set_lock_timeout(None)


@pytest.mark.parametrize("given_, env, manifest, expected", [
    (None, None, None, Location(Path("/p/.mlserve"))),
    (None, None, "s3://team-bucket/x", Location(Path("/p/.mlserve"), "s3://team-bucket/x")),
    (None, None, "journal", Location(Path("/p/journal"))),
    (None, "s3://env-bucket", "s3://team-bucket/x", Location(Path("/p/.mlserve"), "s3://env-bucket")),
    ("s3://cli-bucket/a/b/", "s3://env-bucket", "s3://team-bucket/x",
     Location(Path("/p/.mlserve"), "s3://cli-bucket/a/b/")),
    ("/abs/state", "s3://env-bucket", None, Location(Path("/abs/state"))),
])
def test_precedence_cli_env_manifest_default(monkeypatch, given_, env, manifest, expected):
    if env:
        monkeypatch.setenv("MLSERVE_STATE", env)
    assert locate(Path("/p"), manifest, given_) == expected


@pytest.mark.parametrize("url, bucket, prefix", [
    ("s3://team-bucket", "team-bucket", ""),
    ("s3://team-bucket/", "team-bucket", ""),
    ("s3://team.bucket-1/a/b/", "team.bucket-1", "a/b"),
])
def test_s3_urls(url, bucket, prefix):
    assert parse_s3(url) == (bucket, prefix)


@given(st.text(max_size=80))
def test_any_text_is_a_url_or_a_clear_refusal(text):
    try:
        bucket, prefix = parse_s3(text)
    except InvalidInput as exc:
        assert "s3://BUCKET/PREFIX" in exc.message and exc.fix
    else:
        assert text.startswith("s3://") and 3 <= len(bucket) <= 63 and not prefix.startswith("/")


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "1e9"])
def test_bad_lock_timeout_variable(monkeypatch, value):
    monkeypatch.setenv("MLSERVE_LOCK_TIMEOUT", value)
    with pytest.raises(InvalidInput, match="MLSERVE_LOCK_TIMEOUT"):
        journal.lock_timeout()


def test_sqlite_lock_waits_up_to_the_timeout(tmp_path):
    holder, waiter = State(tmp_path), State(tmp_path)
    try:
        with holder.lock("t"):
            journal.set_lock_timeout(0.3)
            started = time.monotonic()
            with pytest.raises(Busy, match=r"target 't' is busy: deploy by pid \d+"):
                with waiter.lock("t"):
                    pass
            assert time.monotonic() - started >= 0.3
        assert_waits_for_release(holder, waiter, "t")
    finally:
        holder.close()
        waiter.close()


def assert_waits_for_release(holder, waiter, target: str) -> None:
    """With --lock-timeout 20, ``waiter`` waits while ``holder`` holds ``target``, then takes it
    (shared with the S3 journal's test)."""
    journal.set_lock_timeout(20)
    took: list[float] = []

    def wait() -> None:
        begun = time.monotonic()
        with waiter.lock(target):
            took.append(time.monotonic() - begun)
    with holder.lock(target):
        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.5)
        assert not took                         # still held: it waits
    thread.join(20)
    assert took and 0.4 < took[0] < 20
