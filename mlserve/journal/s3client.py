"""The S3 client of the shared journal: ``obstore`` (Python bindings of Apache Arrow's Rust
``object_store``), one store per bucket and process, and its errors translated into
``mlserve.errors``.

Why not botocore, which the sagemaker adapter uses: a command is one process, and importing
botocore and building its S3 client (loading S3's service model) costs ~0.21 s before the first
request, twice the journal's whole budget per command (``benchmarks/journal``). obstore imports
and builds its store in ~0.02 s and sends the same REST requests, with ``If-None-Match`` and
``If-Match`` on PUT.

Endpoint: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL`` (MinIO, R2, a local emulator; path-style
addressing). Region: ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else us-east-1. Credentials:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``) when set, which is
what CI runners export; otherwise botocore's own chain (``AWS_PROFILE`` and the config files,
SSO, web identity, container and instance roles), so a laptop works as with the AWS CLI and pays
botocore's import only then. No obstore type leaves this module: callers get ``Obj`` and catch
``Conflict`` (a conditional write lost its race) and ``Absent`` (no such key).
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import datetime, timedelta
from typing import Any, Iterator, NamedTuple

from ..errors import MissingCredentials, MissingDependency, missing_extra
from ..journal_file import JournalError

_stores: dict[tuple, Any] = {}

#: What the journal needs on its bucket and prefix (named by the AccessDenied fix).
PERMISSIONS = "s3:ListBucket, s3:GetObject and s3:PutObject"

_NO_CREDENTIALS_FIX = ("export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... (or AWS_PROFILE=...); "
                       "for MinIO or R2 also AWS_ENDPOINT_URL_S3=https://...")


class Conflict(Exception):
    """A conditional write (If-None-Match / If-Match) did not apply: someone else wrote first."""


class Absent(Exception):
    """The key does not exist."""


class Obj(NamedTuple):
    """An object read: its body, ETag, Last-Modified (the store's clock) and user metadata."""
    body: bytes
    etag: str | None
    modified: datetime
    metadata: dict[str, str]


def _credentials(url: str) -> dict:
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        found = {"access_key_id": env["AWS_ACCESS_KEY_ID"],
                 "secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
        if env.get("AWS_SESSION_TOKEN"):
            found["session_token"] = env["AWS_SESSION_TOKEN"]
        return found
    try:
        import botocore.session
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise missing_extra("aws", "boto3") from None
    session = botocore.session.get_session()
    try:
        found = session.get_credentials()
    except Exception as exc:  # noqa: BLE001 - a broken profile, an SSO token expired...
        raise MissingCredentials(f"the shared journal {url} needs AWS credentials: {exc}",
                                 fix=_NO_CREDENTIALS_FIX) from None
    if found is None:
        raise MissingCredentials(f"the shared journal {url} needs AWS credentials: none were "
                                 "found", fix=_NO_CREDENTIALS_FIX)
    return {"credential_provider": Boto3CredentialProvider(session)}


def store(bucket: str, url: str) -> Any:
    """The obstore S3 store of ``bucket`` (one per process, endpoint, region and credentials)."""
    env = os.environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    key = (bucket, region, endpoint, *(env.get(name) for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")))
    if key not in _stores:
        try:
            from obstore.store import S3Store
        except ImportError:
            raise missing_extra("aws", "obstore") from None
        options = {"connect_timeout": "10s", "timeout": "30s",
                   "allow_http": bool(endpoint and endpoint.startswith("http://"))}
        extra = {"endpoint": endpoint, "virtual_hosted_style_request": False} if endpoint else {}
        try:
            _stores[key] = S3Store(bucket, region=region, client_options=options,
                                   retry_config={"max_retries": 3,
                                                 "retry_timeout": timedelta(seconds=30)},
                                   **extra, **_credentials(url))
        except (ValueError, TypeError) as exc:
            raise JournalError(f"the shared journal {url}: {exc}",
                               fix="check AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL and AWS_REGION"
                               ) from None
    return _stores[key]


# -- the calls the journal makes ---------------------------------------------------------------
def get(store_: Any, key: str, limit: int) -> Obj:
    """The object at ``key`` (at most ``limit`` + 1 bytes of its body); Absent when none."""
    import obstore
    got = obstore.get(store_, key)
    meta = got.meta
    if meta["size"] > limit:      # never held whole: only as much as tells it is too large
        body = bytes(obstore.get_range(store_, key, start=0, end=limit + 1))
    else:
        body = bytes(got.bytes())
    return Obj(body, meta.get("e_tag"), meta["last_modified"], dict(got.attributes or {}))


def put(store_: Any, key: str, body: bytes, *, create: bool = False, etag: str | None = None,
        metadata: dict[str, str] | None = None) -> str | None:
    """Write ``key``; ``create``: only if absent (If-None-Match: *); ``etag``: only if it is still
    that version (If-Match). ``metadata``: user metadata (``Content-Type`` too, else JSON's).
    The new ETag."""
    import obstore
    mode = "create" if create else ({"e_tag": etag} if etag is not None else None)
    attributes = {"Content-Type": "application/json", **(metadata or {})}
    return obstore.put(store_, key, body, mode=mode, attributes=attributes,
                       use_multipart=False).get("e_tag")


def keys_after(store_: Any, prefix: str, after: str) -> list[str]:
    """Every key under ``prefix`` that sorts after ``after``, in order."""
    import obstore
    found = [meta["path"] for batch in obstore.list(store_, prefix=prefix, offset=after)
             for meta in batch]
    return sorted(found)


def server_now(store_: Any, key: str) -> datetime:
    """The store's clock now: the Last-Modified of a tiny object written at ``key``."""
    import obstore
    obstore.put(store_, key, b"", use_multipart=False)
    return obstore.head(store_, key)["last_modified"]


@contextlib.contextmanager
def translated(url: str, doing: str) -> Iterator[None]:
    """obstore errors during ``doing`` become ``Conflict``/``Absent`` or an ``MlserveError``
    naming the journal ``url`` and the fix."""
    import obstore.exceptions as ox
    try:
        yield
    except (ox.AlreadyExistsError, ox.PreconditionError) as exc:
        raise Conflict(str(exc)[:200]) from None
    except (ox.NotFoundError, FileNotFoundError) as exc:    # obstore raises the builtin
        if "NoSuchBucket" in str(exc):
            raise _no_bucket(url) from None
        raise Absent(str(exc)[:200]) from None
    except (ox.PermissionDeniedError, ox.UnauthenticatedError, PermissionError) as exc:
        raise _denied(url, doing, exc) from None
    except ox.BaseError as exc:
        text = str(exc)
        if "NoSuchBucket" in text:
            raise _no_bucket(url) from None
        if "PermanentRedirect" in text or "AuthorizationHeaderMalformed" in text:
            raise JournalError(f"the shared journal {url} {doing}: the bucket is in another "
                               "region than the one asked", fix="set AWS_REGION to the bucket's "
                               "region (aws s3api get-bucket-location --bucket BUCKET)") from None
        if any(code in text for code in ("AccessDenied", "InvalidAccessKeyId", "ExpiredToken",
                                          "SignatureDoesNotMatch", "AllAccessDisabled",
                                          "403 Forbidden")):
            raise _denied(url, doing, exc) from None
        raise JournalError(f"the shared journal {url} {doing}: {_reason(text)}",
                           fix="check the network and AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL, then "
                               "run the command again") from None


def _first_line(text: str) -> str:
    """obstore's message without its debug dump (which repeats it with Rust types)."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), text)
    return line[:300]


def _reason(text: str) -> str:
    """What went wrong, said plainly: a refused or unreachable endpoint, a timeout, else
    obstore's first line."""
    first = _first_line(text)
    target = re.search(r"(https?://[^/\s]+)", first)
    where = target.group(1) if target else "the store"
    if "ConnectionRefused" in text or "Connection refused" in text or "tcp connect error" in text:
        return f"Could not connect to {where} (connection refused)"
    if "kind: Connect" in text or "dns error" in text:
        return f"Could not connect to {where}"
    if "TimedOut" in text or "timed out" in text.lower():
        return f"{where} did not answer in time"
    return first


def _no_bucket(url: str) -> MissingDependency:
    bucket = url[len("s3://"):].split("/", 1)[0]
    return MissingDependency(
        f"the shared journal {url}: bucket {bucket!r} does not exist",
        fix=f"create it (aws s3 mb s3://{bucket}), or correct the bucket in --state, "
            "MLSERVE_STATE or the manifest's state:")


def _denied(url: str, doing: str, exc: BaseException) -> MissingCredentials:
    bucket = url[len("s3://"):].split("/", 1)[0]
    return MissingCredentials(
        f"the shared journal {url} {doing}: access denied ({_first_line(str(exc))[:160]})",
        fix=f"use credentials allowed {PERMISSIONS} on s3://{bucket} (check "
            "AWS_ACCESS_KEY_ID/AWS_PROFILE and the bucket policy)")
