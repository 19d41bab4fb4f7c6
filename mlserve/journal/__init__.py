"""Where the journal lives, and opening it: the embedded SQLite file (the default) or a journal
shared through S3 (``s3://bucket/prefix``: AWS, MinIO, R2, any S3-compatible store).

``locate(project_root, manifest_state, given)`` picks the journal: ``--state`` (``given``; the
CLI fills it from ``MLSERVE_STATE`` too), else ``MLSERVE_STATE``, else the manifest's ``state:``,
else ``.mlserve`` beside the manifest. A ``Location`` always has a local directory (``local_dir``:
the SQLite journal's, and the adapters' working files such as local releases and logs); with an
``s3://`` journal, that directory is ``.mlserve`` beside the manifest (or the directory named).

``open_state(location, read_only)`` gives a ``mlserve.state.State``: the SQLite journal, or
``mlserve.journal.s3.S3State``, which has the same interface. Nothing here imports boto3.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInput

__all__ = ["Location", "locate", "open_state", "parse_s3", "S3_URL_RE", "lock_timeout",
           "set_lock_timeout", "lock_lease"]

#: s3://bucket[/prefix]: a bucket name as S3 names them (3-63 characters), a prefix of safe
#: key characters. The manifest's ``state:`` field uses the same pattern.
S3_URL_RE = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()=+-]+)*/?$"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class Location:
    local_dir: Path              # the SQLite journal's directory and the adapters' files
    url: str | None = None       # s3://bucket/prefix when the journal is shared

    @property
    def shared(self) -> bool:
        return self.url is not None

    def __str__(self) -> str:
        return self.url or str(self.local_dir)


def parse_s3(url: str) -> tuple[str, str]:
    """(bucket, prefix without slashes at the ends) of an ``s3://`` URL; InvalidInput otherwise."""
    if not re.match(S3_URL_RE, url):
        raise InvalidInput(
            f"the journal URL {url!r:.200} is not s3://BUCKET/PREFIX",
            fix="use s3://bucket/prefix: a bucket name of 3-63 lowercase letters, digits, dots "
                "and hyphens, then an optional key prefix (letters, digits and !_.*'()=+-/)")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def _choose(value: str, base: Path) -> Location | str:
    if value.startswith("s3://"):
        parse_s3(value)
        return value
    if _SCHEME.match(value):
        raise InvalidInput(f"the journal location {value!r:.200} names a store mlserve cannot use",
                           fix="use a directory, or s3://bucket/prefix (any S3-compatible "
                               "store: set AWS_ENDPOINT_URL_S3 for MinIO or R2)")
    return Location((base / Path(value).expanduser()).absolute())


def locate(project_root: Path, manifest_state: str | None, given: str | Path | None) -> Location:
    """The journal for a project: ``given`` (--state), ``MLSERVE_STATE``, the manifest's
    ``state:`` (relative to the manifest), else ``.mlserve`` beside the manifest."""
    default = Location(project_root / ".mlserve")
    for value, base in ((given, Path.cwd()), (os.environ.get("MLSERVE_STATE"), Path.cwd()),
                        (manifest_state, project_root)):
        if value:
            chosen = _choose(str(value), base)
            return Location(default.local_dir, chosen) if isinstance(chosen, str) else chosen
    return default


def open_state(location: Location, read_only: bool = False):
    """The journal at ``location`` (``State.for_reading`` semantics when ``read_only``)."""
    if location.url:
        from .s3 import S3State
        return S3State(location.url, read_only=read_only)
    from ..state import State
    return State(location.local_dir, read_only=read_only)


# -- lock waiting and leases ------------------------------------------------------------------
_lock_timeout: float | None = None


def set_lock_timeout(seconds: float | None) -> None:
    """``--lock-timeout``: how long a command waits for a target another process holds."""
    global _lock_timeout
    _lock_timeout = seconds


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        raise InvalidInput(f"{name}={raw!r:.40} is not a number of seconds between 0 and 86400",
                           fix=f"export {name}=30 (or unset it)")
    return value


def lock_timeout() -> float:
    """Seconds to wait for a busy target: --lock-timeout, MLSERVE_LOCK_TIMEOUT, else 0 (fail at
    once, naming the holder)."""
    return _lock_timeout if _lock_timeout is not None else _seconds("MLSERVE_LOCK_TIMEOUT", 0)


def lock_lease() -> float:
    """Seconds a shared lock stays valid without renewal (MLSERVE_LOCK_LEASE, default 60); the
    holder renews it every third of that, so only a dead holder's lock expires."""
    return max(_seconds("MLSERVE_LOCK_LEASE", 60), 1.0)
