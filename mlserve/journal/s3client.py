"""The S3 client of the shared journal: created lazily, once per process, with botocore alone
(boto3's resource layer is never loaded), and S3 errors translated into ``mlserve.errors``.

Endpoints and credentials come from the usual AWS variables: ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (MinIO, R2, a local emulator), ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``
or ``AWS_PROFILE``, ``AWS_REGION`` (default us-east-1). No botocore type leaves this module:
callers catch ``Conflict`` (a conditional write lost its race) and ``Absent`` (no such key).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from ..errors import MissingCredentials, MissingDependency, missing_extra
from ..journal_file import JournalError

_client: Any = None
_client_key: tuple | None = None

#: What the journal needs on its bucket and prefix (named by the AccessDenied fix).
PERMISSIONS = "s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject"


class Conflict(Exception):
    """A conditional write (If-None-Match / If-Match) did not apply: someone else wrote first."""


class Absent(Exception):
    """The key does not exist."""


def client() -> Any:
    """One botocore S3 client per process (per endpoint and region)."""
    global _client, _client_key
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    key = (region, endpoint)
    if _client is None or _client_key != key:
        try:
            import botocore.config
            import botocore.session
        except ImportError:
            raise missing_extra("aws", "boto3") from None
        session = botocore.session.get_session()
        _client = session.create_client(
            "s3", region_name=region, endpoint_url=endpoint,
            config=botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"},
                                          connect_timeout=10, read_timeout=30,
                                          s3={"addressing_style": "path"} if endpoint else None))
        _client_key = key
    return _client


@contextlib.contextmanager
def translated(url: str, doing: str) -> Iterator[None]:
    """botocore errors during ``doing`` become ``Conflict``/``Absent`` or an ``MlserveError``
    naming the journal ``url`` and the fix."""
    import botocore.exceptions as bx
    try:
        yield
    except (bx.NoCredentialsError, bx.PartialCredentialsError) as exc:
        raise MissingCredentials(
            f"the shared journal {url} needs AWS credentials: {exc}",
            fix="export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... (or AWS_PROFILE=...); "
                "for MinIO or R2 also AWS_ENDPOINT_URL_S3=https://...") from None
    except bx.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
            raise Conflict(code) from None
        if code in ("NoSuchKey", "404", "NotFound"):
            raise Absent(code) from None
        bucket = url[len("s3://"):].split("/", 1)[0]
        if code == "NoSuchBucket":
            raise MissingDependency(
                f"the shared journal {url}: bucket {bucket!r} does not exist",
                fix=f"create it (aws s3 mb s3://{bucket}), or correct the bucket in --state, "
                    "MLSERVE_STATE or the manifest's state:") from None
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403",
                    "AllAccessDisabled", "ExpiredToken") or status == 403:
            raise MissingCredentials(
                f"the shared journal {url} {doing}: access denied ({code})",
                fix=f"use credentials allowed {PERMISSIONS} on s3://{bucket} (check "
                    "AWS_ACCESS_KEY_ID/AWS_PROFILE and the bucket policy)") from None
        raise JournalError(f"the shared journal {url} {doing}: {code or status} "
                           f"{error.get('Message', '')}".rstrip(),
                           fix="run the command again; if it persists, check the store's "
                               "status") from None
    except bx.BotoCoreError as exc:      # endpoint unreachable, timeouts, bad endpoint URL
        raise JournalError(f"the shared journal {url} {doing}: {exc}",
                           fix="check the network and AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL, then "
                               "run the command again") from None
