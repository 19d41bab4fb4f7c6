"""The files a release ships, content-addressed.

A ``Bundle`` is a list of files (relative path, bytes digest, mode) with a release id derived from
their content only: the same files give the same id, byte for byte, on any machine. It is what
adapters upload, copy or build into an image. Which files ship: the manifest's directory minus the
state directory, the built-in ignores below, and the patterns of ``.mlserveignore`` (gitignore
syntax).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

IGNORE_FILE = ".mlserveignore"
#: Always left out: VCS data, caches, virtualenvs and mlserve's own state.
BUILTIN_IGNORES = [".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".venv/", "venv/",
                   ".mlserve/", ".pytest_cache/", ".mypy_cache/", ".DS_Store"]


@dataclass(frozen=True)
class BundleFile:
    path: str          # POSIX path relative to the bundle root
    source: Path       # where the bytes are now
    digest: str        # sha256 hex of the content
    size: int
    executable: bool


@dataclass
class Bundle:
    root: Path
    files: list[BundleFile] = field(default_factory=list)

    @property
    def release_id(self) -> str:
        """``r-`` + 12 hex digits of the hash of (path, mode, content digest) of every file."""
        return "r-" + self.content_hash[:12]

    @property
    def content_hash(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            h.update(f"{f.path}\0{int(f.executable)}\0{f.digest}\n".encode())
        return h.hexdigest()

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def get(self, path: str) -> BundleFile | None:
        return next((f for f in self.files if f.path == path), None)

    def copy_to(self, dest: Path) -> None:
        """Write the bundle's files under ``dest`` (which must not exist yet)."""
        dest.mkdir(parents=True)
        for f in self.files:
            target = dest / f.path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f.source, target)
            if f.executable:
                target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ignore_spec(root: Path, extra: list[str] | None = None) -> pathspec.GitIgnoreSpec:
    lines = list(BUILTIN_IGNORES) + list(extra or [])
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        lines += ignore_file.read_text(encoding="utf-8").splitlines()
    return pathspec.GitIgnoreSpec.from_lines(lines)


def collect(root: Path, *, extra_ignores: list[str] | None = None) -> Bundle:
    """The files under ``root`` that ship, in a stable order. Symlinks are followed within root."""
    root = root.resolve()
    spec = ignore_spec(root, extra_ignores)
    files: list[BundleFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not spec.match_file(prefix + d + "/"))
        for name in sorted(filenames):
            rel = prefix + name
            if spec.match_file(rel):
                continue
            src = Path(dirpath) / name
            st = src.stat()
            if not stat.S_ISREG(st.st_mode):
                continue
            files.append(BundleFile(rel, src, file_digest(src), st.st_size,
                                    bool(st.st_mode & stat.S_IXUSR)))
    files.sort(key=lambda f: f.path)
    return Bundle(root=root, files=files)


def state_ignores(root: Path, state_dir: Path) -> list[str]:
    """Leave the state directory out of the bundle even when it lives elsewhere in the tree."""
    try:
        rel = state_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return []
    return [f"/{rel.as_posix()}/"]
