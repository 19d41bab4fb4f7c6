"""An S3-compatible store on loopback for the shared journal: moto's server in a subprocess.

Fixture (session-scoped): ``s3_store`` (moto serialized to one request at a time, so
conditional writes are atomic as on AWS S3/MinIO/R2: see ``tests.infra.moto_s3``). Each test
makes its own bucket with ``store.bucket()``. ``race_rounds`` races conditional puts against a
store: the serialized one in the tests, moto as it ships in ``benchmarks/journal/moto_race.py``. MinIO's server is not installable here (not on PyPI, npm or in
Debian 12; PyPI's ``minio`` is the client SDK).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from tests.infra.net import port_open
from tests.infra.policy import require_module
from tests.infra.procs import new_workdir, start_on_free_port, start_process, stop_process


@dataclass
class S3Store:
    endpoint: str            # http://127.0.0.1:PORT
    pid: int
    serialized: bool
    _client: object = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        """What points mlserve (botocore) at this store, with dummy credentials."""
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

    def client(self):
        if self._client is None:
            import boto3
            self._client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                                        aws_access_key_id="testing",
                                        aws_secret_access_key="testing")
        return self._client

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"mlsv-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                        Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextmanager
def running_moto(serialize: bool, env: dict[str, str] | None = None) -> Iterator[S3Store]:
    """moto's S3 on a free port; ``env`` adds to its environment (e.g. IAM enforcement)."""
    require_module("the S3 journal tests", "moto", "moto[server]")
    workdir = new_workdir("moto")
    proc = None
    try:
        def start(port: int):
            argv = [sys.executable, "-m", "tests.infra.moto_s3", str(port)]
            return start_process(argv + (["--serialize"] if serialize else []),
                                 workdir / "moto.log", lambda: port_open("127.0.0.1", port),
                                 "moto S3 server", env={**os.environ, **(env or {})})
        proc, port = start_on_free_port(start)
        yield S3Store(f"http://127.0.0.1:{port}", proc.pid, serialize)
    finally:
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_store() -> Iterator[S3Store]:
    """moto's S3, one request at a time (conditional writes atomic, as on a real store)."""
    with running_moto(serialize=True) as store:
        yield store


def race_rounds(store: S3Store, rounds: int, writers: int = 8,
                seconds: float = 90) -> tuple[int, int]:
    """Rounds where ``writers`` threads put one new key with ``If-None-Match: *`` at once:
    (rounds run, rounds where more than one put succeeded). Stops early at the first doubled
    round of an unserialized store, or after ``seconds``."""
    import boto3
    import botocore.config
    client = boto3.client("s3", endpoint_url=store.endpoint, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t",
                          config=botocore.config.Config(max_pool_connections=writers * 2))
    bucket = store.bucket()
    doubled, deadline = 0, time.monotonic() + seconds
    for number in range(rounds):
        wins, barrier = [], threading.Barrier(writers)

        def put(i: int) -> None:
            barrier.wait()
            try:
                client.put_object(Bucket=bucket, Key=f"k{number}", Body=b"%d" % i, IfNoneMatch="*")
                wins.append(i)
            except client.exceptions.ClientError:
                pass
        threads = [threading.Thread(target=put, args=(i,)) for i in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wins, "no conditional put succeeded"
        doubled += len(wins) > 1
        if (doubled and not store.serialized) or time.monotonic() > deadline:
            return number + 1, doubled
    return rounds, doubled
