"""The content-addressed store on an SSH host, and the directory layout mlserve owns there.

Runs on the host (stdlib only). Layout under ``base_dir``::

    .mlserve-base                       marker: mlserve created base_dir (removed with the last deployment)
    .lock                               flock: shared while writing releases, exclusive to collect garbage
    objects/<sha256>                    every file ever sent, read-only, named by its content
    objects/partial/<sha256>.<hostkey>  an upload in progress; the next run resumes at its size
    lib/<key>/                          the runtime and its pure-Python dependencies (hard links)
    venvs/<key>/                        one venv per (python version, requirement lines)
    deployments/<deployment>/<hostkey>/current -> releases/<release-id>
    deployments/<deployment>/<hostkey>/releases/<release-id>/
        app/ (hard links)  release.json  run.json  runtime.log

State is kept per ``hostkey`` (user@host_port as mlserve names the login) so hosts sharing a
home directory over NFS never share pidfiles; objects, libs and venvs are shared safely
(unique temporary names, then an atomic rename). An object's link count says whether a
release still uses it, which is how garbage is found.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path

from mlserve.adapters.procs import read_json, write_json  # noqa: F401 - the host's modules use them from here

CHUNK = 1 << 20
MARKER = ".mlserve-base"


class HostError(Exception):
    """A failure to report to the client as ``{"ok": false, "reason": ..., "log": ...}``."""

    def __init__(self, reason: str, log: str = "", fix: str = "") -> None:
        super().__init__(reason)
        self.reason, self.log, self.fix = reason, log, fix


class Store:
    def __init__(self, base: str) -> None:
        self.base = Path(os.path.expanduser(base)).absolute()
        self.objects = self.base / "objects"
        self.partial = self.objects / "partial"
        self.libs = self.base / "lib"
        self.venvs = self.base / "venvs"
        self.deployments = self.base / "deployments"

    def ensure(self) -> None:
        try:
            self.base.mkdir(mode=0o700, parents=True)
        except FileExistsError:             # also when another host sharing this disk made it
            pass
        else:
            (self.base / MARKER).write_text("created by mlserve; removed with its last deployment\n")
        for path in (self.objects, self.partial, self.libs, self.venvs, self.deployments):
            path.mkdir(mode=0o700, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, exclusive: bool, wait: float = 600.0):
        """Hold ``.lock``; raise HostError when another mlserve holds it for ``wait`` seconds."""
        self.ensure()
        fd = os.open(self.base / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        try:
            while True:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise HostError(f"{self.base} is busy (another mlserve is using it)") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    # -- objects ----------------------------------------------------------------------------
    def object(self, digest: str) -> Path:
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise HostError(f"bad object name {digest!r}")
        return self.objects / digest

    def missing(self, digests: list[str], hostkey: str) -> list[list]:
        """``[digest, bytes already here]`` for every digest not stored yet."""
        out = []
        for digest in dict.fromkeys(digests):
            if not self.object(digest).exists():
                part = self.partial / f"{digest}.{hostkey}"
                out.append([digest, part.stat().st_size if part.exists() else 0])
        return out

    def receive(self, entries: list[dict], stream, hostkey: str) -> int:
        """Read each object's remaining bytes from ``stream``, verify, store. Returns bytes read."""
        total = 0
        for entry in entries:
            digest, size, offset = entry["digest"], int(entry["size"]), int(entry["offset"])
            part = self.partial / f"{digest}.{hostkey}"
            fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.ftruncate(fd, offset)
                os.lseek(fd, offset, os.SEEK_SET)
                left = size - offset
                while left:
                    data = stream.read(min(CHUNK, left))
                    if not data:
                        raise HostError("the upload stopped early (connection lost?); run the "
                                        "deploy again to resume")
                    os.write(fd, data)
                    left -= len(data)
                    total += len(data)
            finally:
                os.close(fd)
            self._commit(part, digest)
        return total

    def _commit(self, part: Path, digest: str) -> None:
        if file_digest(part) != digest:
            part.unlink()
            raise HostError(f"object {digest[:12]} arrived corrupted (the local file changed "
                            "during the upload?); run the deploy again")
        part.chmod(0o444)
        os.replace(part, self.object(digest))

    # -- trees ------------------------------------------------------------------------------
    def assemble(self, dest: Path, files: list[list]) -> None:
        """Build ``dest`` from ``[path, digest, executable]`` entries, atomically."""
        if dest.exists():
            return
        tmp = dest.with_name(f".{dest.name}.tmp-{secrets.token_hex(4)}")
        try:
            for path, digest, *rest in files:
                target = tmp / _safe_relative(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = self.object(digest)
                if rest and rest[0]:            # executable: its own inode, so modes never clash
                    shutil.copyfile(source, target)
                    target.chmod(0o755)
                    continue
                try:
                    os.link(source, target)
                except OSError:                 # another filesystem, or too many links
                    shutil.copyfile(source, target)
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                tmp.rename(dest)
            except OSError:                     # built meanwhile by another deploy
                if not dest.exists():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- garbage ----------------------------------------------------------------------------
    def release_records(self) -> list[dict]:
        records = []
        for path in self.deployments.glob("*/*/releases/*/release.json"):
            with contextlib.suppress(OSError, ValueError):
                records.append(json.loads(path.read_text()))
        return records

    def collect_garbage(self, min_age: float) -> list[str]:
        """Remove libs and venvs no release uses, and objects nothing links to (older than
        ``min_age`` seconds, so an upload waiting for its rerun is kept). Caller holds the lock
        exclusively."""
        records = self.release_records()
        used = {("lib", r.get("lib")) for r in records} | {("venvs", r.get("venv")) for r in records}
        removed = []
        for kind, parent in (("lib", self.libs), ("venvs", self.venvs)):
            for path in parent.iterdir() if parent.is_dir() else ():
                if (kind, path.name) not in used and not path.name.endswith(".log"):
                    shutil.rmtree(path, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        (parent / f"{path.name}.log").unlink()
                    removed.append(f"{kind}/{path.name}")
        now = time.time()
        for path in self.objects.iterdir() if self.objects.is_dir() else ():
            with contextlib.suppress(OSError):
                st = path.stat()
                if path.is_file() and st.st_nlink == 1 and now - st.st_mtime >= min_age:
                    path.unlink()
                    removed.append(f"objects/{path.name[:12]}")
        return removed

    def remove_if_unused(self) -> bool:
        """With no deployment left, remove everything mlserve put in base_dir; True if done."""
        if self.deployments.is_dir() and any(self.deployments.iterdir()):
            return False
        for path in (self.objects, self.libs, self.venvs, self.deployments):
            shutil.rmtree(path, ignore_errors=True)
        (self.base / ".lock").unlink(missing_ok=True)
        if (self.base / MARKER).exists():
            (self.base / MARKER).unlink()
            with contextlib.suppress(OSError):
                self.base.rmdir()               # only when nothing else was put there
        return True


def _safe_relative(path: str) -> str:
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts:
        raise HostError(f"refusing the unsafe path {path!r}")
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
