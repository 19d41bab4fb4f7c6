"""The files a release ships, content-addressed, and nothing from outside the project.

A ``Bundle`` lists files (relative path, digest, mode) with a release id derived from their
content only: the same files give the same id on any machine. Adapters upload, copy or build it.

Which files ship: every regular file under the project root, minus the state directory, the
built-in ignores and ``.mlserveignore`` (gitignore syntax, matched against the path as it ships;
an ignored path is skipped before it is looked at: an ignored FIFO is never opened). A symlink
resolving inside the root ships its target's bytes under the link's path; a directory link is
followed (``model -> checkpoints/v3``), with loop detection and at most ``MAX_ENTRIES`` paths.
Everything else is one ``InvalidInput`` (exit 2) naming each path and the fix (remove it, or
leave it out with ``.mlserveignore``): a link leaving the project (absolute, ``..``, chained,
``/proc/self/...``, ``/dev/...``) or into what the rules leave out (``.git/config``, an ignored
``.env``), a dangling link, a loop, a FIFO, socket or device, what cannot be read, a name not
UTF-8 or holding a control character or line break (unsafe in a Dockerfile, tar header or
terminal). An ignored link that leaves the project is skipped with a warning (``warnings``).

Every copy is checked: ``collect()`` records each file's real path, (device, inode), size and
digest; ``BundleFile.open()`` opens the real path with ``O_NOFOLLOW | O_NONBLOCK`` and checks
it is still that regular file; ``BundleFile.reader()`` checks the bytes against the digest. A
file swapped for a link or changed after ``collect()`` is an error; other bytes never ship.

Modes: 0644, or 0755 when the owner may execute, narrowed by the source's permission bits (0600
ships 0600): never wider. The release id hashes (path, executable, digest), plus the mode of
files narrower than 0644/0755, so ordinary projects keep their ids.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pathspec

from .errors import InvalidInput

IGNORE_FILE = ".mlserveignore"
#: Always left out: VCS data, caches, virtualenvs and mlserve's own state.
BUILTIN_IGNORES = [".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".venv/", "venv/",
                   ".mlserve/", ".pytest_cache/", ".mypy_cache/", ".DS_Store"]
#: Largest ``.mlserveignore`` read; a bigger one is refused rather than parsed.
MAX_IGNORE_FILE_BYTES = 1 << 20
#: Most files and directories one walk visits (bounds a tree of links that multiply paths).
MAX_ENTRIES = 1_000_000
_CHUNK = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def shipped_mode(st_mode: int) -> int:
    """0644, or 0755 for a file its owner may execute, narrowed by the source's permissions."""
    return (0o755 if st_mode & stat.S_IXUSR else 0o644) & st_mode & 0o777


@dataclass(frozen=True)
class BundleFile:
    path: str          # POSIX path relative to the bundle root, as it ships
    source: Path       # the real path of the bytes (links resolved, inside the root)
    digest: str        # sha256 hex of the content
    size: int
    executable: bool
    mode: int = 0o644                          # permission bits it ships with (shipped_mode)
    identity: tuple[int, int] | None = None    # (st_dev, st_ino) seen by collect()

    def open(self) -> BinaryIO:
        """The source, opened without following a link and checked to be the regular file
        ``collect()`` saw (a seekable binary file)."""
        fd = _open_regular(str(self.source), self.path)
        st = os.fstat(fd)
        if self.identity is not None and (st.st_dev, st.st_ino) != self.identity:
            os.close(fd)
            raise _changed(self.path, "it was replaced by another file")
        return os.fdopen(fd, "rb")

    def reader(self) -> _CheckedReader:
        """A reader of exactly ``size`` bytes that fails unless they match ``digest``."""
        return _CheckedReader(self, self.open())

    def copy_as(self, target: Path) -> None:
        """Write the checked bytes to ``target`` (a new file) with the shipped mode."""
        with self.reader() as src:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, self.mode)
            os.fchmod(fd, self.mode)          # exactly the shipped mode, whatever the umask
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)


class _CheckedReader:
    """Reads a ``BundleFile``'s ``size`` bytes, then checks their digest."""

    def __init__(self, file: BundleFile, fh: BinaryIO) -> None:
        self.file, self.fh, self.left, self.hash = file, fh, file.size, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        want = self.left if size is None or size < 0 else min(size, self.left)
        data = self.fh.read(want) if want else b""
        if want and not data:
            raise _changed(self.file.path, "it became shorter")
        self.left -= len(data)
        self.hash.update(data)
        if want and not self.left and self.hash.hexdigest() != self.file.digest:
            raise _changed(self.file.path, "its content changed")
        return data

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> _CheckedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Bundle:
    root: Path
    files: list[BundleFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def content_hash(self) -> str:
        """SHA-256 of (path, mode, content digest) of every file. The model version's id is
        ``mlserve.release.release_id`` (these files and the behaviour-changing manifest fields)."""
        return self.files_hash().hexdigest()

    def files_hash(self, skip: str | None = None):
        """The running hash of every file's (path, executable bit or narrowed mode, digest)
        but ``skip``, for ``content_hash`` and ``release_id``."""
        h = hashlib.sha256()
        for f in self.files:
            if f.path == skip:
                continue
            narrowed = f.mode != (0o755 if f.executable else 0o644)
            mode = f"\0{f.mode:o}" if narrowed else ""
            h.update(f"{f.path}\0{int(f.executable)}\0{f.digest}{mode}\n".encode())
        return h

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def get(self, path: str) -> BundleFile | None:
        return next((f for f in self.files if f.path == path), None)

    def copy_to(self, dest: Path) -> None:
        """Write the bundle's files under ``dest`` (which must not exist yet), checked, with
        their shipped modes."""
        dest.mkdir(parents=True)
        try:
            for f in self.files:
                target = dest / f.path
                target.parent.mkdir(parents=True, exist_ok=True)
                f.copy_as(target)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)     # no half-written release left behind
            raise


def file_digest(path: Path) -> str:
    """sha256 of a file mlserve itself ships (its runtime); user files go through ``collect``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def shown(text: str) -> str:
    """``text`` safe to print: undecodable bytes as ``\\xNN``, control characters escaped."""
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in raw)


def ignore_pattern(rel: str, *, directory: bool = False) -> str:
    """The gitignore pattern that matches exactly the project-relative path ``rel`` (glob
    characters escaped), or the directory ``rel`` and everything in it."""
    escaped = "".join("\\" + c if c in "*?[]\\!# " else c for c in rel)
    return "/" + escaped + ("/" if directory else "")


def _anchored(rel: str) -> str:
    return shown(ignore_pattern(rel.rstrip("/"), directory=rel.endswith("/")))


def _leave_out(rel: str) -> str:
    return f"add the line {_anchored(rel)} to {IGNORE_FILE} to leave it out"


def _changed(rel: str, why: str) -> InvalidInput:
    return InvalidInput(f"the file changed while mlserve was reading it ({why})",
                        where=shown(rel), fix="run the command again once the file is stable")


def _open_regular(path: str, rel: str) -> int:
    """A read descriptor on the regular file at ``path``; never follows a final link and never
    blocks on a FIFO (fstat refuses it before any read)."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOENT, errno.ENOTDIR):
            raise _changed(rel, "it was removed or replaced by a link") from None
        raise InvalidInput(f"cannot be read ({e.strerror})", where=shown(rel),
                           fix=f"make it readable (chmod u+r), or {_leave_out(rel)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _changed(rel, "it is no longer a regular file")
    os.set_blocking(fd, True)
    return fd


def _read_ignore_file(root: str) -> list[str]:
    """The lines of ``.mlserveignore``: a regular file inside the project, at most
    ``MAX_IGNORE_FILE_BYTES``; any bytes decode (undecodable ones as surrogates, like the names
    they may match)."""
    path = os.path.join(root, IGNORE_FILE)
    if not os.path.lexists(path):
        return []
    try:
        real = os.path.realpath(path, strict=True)
    except OSError:
        raise InvalidInput("is a dangling symlink or a link loop", where=IGNORE_FILE,
                           fix=f"remove {IGNORE_FILE} or make it a file") from None
    if not _inside(real, root):
        raise InvalidInput("is a symlink that leaves the project directory", where=IGNORE_FILE,
                           fix=f"make {IGNORE_FILE} a file inside the project") from None
    if not stat.S_ISREG(os.stat(real).st_mode):
        raise InvalidInput("is not a regular file", where=IGNORE_FILE,
                           fix=f"make {IGNORE_FILE} a text file of gitignore patterns")
    fd = _open_regular(real, IGNORE_FILE)
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(MAX_IGNORE_FILE_BYTES + 1)
    if len(data) > MAX_IGNORE_FILE_BYTES:
        raise InvalidInput(f"is larger than {MAX_IGNORE_FILE_BYTES} bytes", where=IGNORE_FILE,
                           fix="keep only gitignore patterns in it")
    return data.decode("utf-8", "surrogateescape").splitlines()


class _Rules:
    """The ignore rules: built-in + extra (state and output directories) + ``.mlserveignore``."""

    def __init__(self, root: str, extra: list[str]) -> None:
        builtin = list(BUILTIN_IGNORES) + extra
        self.builtin = pathspec.GitIgnoreSpec.from_lines(builtin)
        lines = _read_ignore_file(root)
        try:
            self.all = pathspec.GitIgnoreSpec.from_lines(builtin + lines)
        except (ValueError, re.error):
            raise _bad_pattern(lines) from None

    def ignored(self, rel: str, as_dir: bool) -> bool:
        return self.all.match_file(rel) or (as_dir and self.all.match_file(rel + "/"))

    def by_user(self, rel: str, as_dir: bool) -> bool:
        return not (self.builtin.match_file(rel) or (as_dir and self.builtin.match_file(rel + "/")))


def _bad_pattern(lines: list[str]) -> InvalidInput:
    """The error for the first line of ``.mlserveignore`` that is not a gitignore pattern."""
    for number, line in enumerate(lines, 1):
        try:
            pathspec.GitIgnoreSpec.from_lines([line])
        except (ValueError, re.error):
            return InvalidInput(f"{shown(line)!r} is not a gitignore pattern",
                                where=f"{IGNORE_FILE}:{number}",
                                fix="escape the special character with a backslash, or remove "
                                    "the line")
    return InvalidInput("is not a list of gitignore patterns", where=IGNORE_FILE)


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip("/") + "/")


def _bad_name(name: str) -> str | None:
    """Why ``name`` cannot ship: undecodable bytes, or a character that ends a line or drives
    a terminal (C0/C1 controls, DEL, the Unicode line and paragraph separators)."""
    if any("\udc80" <= c <= "\udcff" for c in name):
        return "its name is not valid UTF-8"
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        return "its name holds a control character or a line break"
    return None


_KINDS = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


@dataclass
class _Walk:
    root: str
    rules: _Rules
    files: list[BundleFile] = field(default_factory=list)
    problems: list[InvalidInput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    digests: dict[tuple[int, int, int, int], str] = field(default_factory=dict)
    entries: int = 0

    def problem(self, rel: str, message: str, fix: str | None = None) -> None:
        self.problems.append(InvalidInput(message, where=shown(rel), fix=fix or
                                          f"remove it, or {_leave_out(rel)}"))

    def directory(self, real_dir: str, prefix: str, ancestors: frozenset) -> None:
        try:
            with os.scandir(real_dir) as it:
                names = sorted(entry.name for entry in it)
        except OSError as e:
            rel = prefix.rstrip("/") or "."
            self.problem(rel, f"the directory cannot be read ({e.strerror})",
                         f"make it readable (chmod u+rx), or {_leave_out(rel + '/')}")
            return
        for name in names:
            self.entry(os.path.join(real_dir, name), prefix + name, name, ancestors)

    def entry(self, path: str, rel: str, name: str, ancestors: frozenset) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise InvalidInput(f"the project holds more than {MAX_ENTRIES} files and directories "
                               "(counting each path through a directory link)",
                               fix=f"leave data out with {IGNORE_FILE}")
        try:
            st = os.lstat(path)
        except OSError as e:                  # removed since the directory was listed
            self.problem(rel, f"cannot be read ({e.strerror})")
            return
        link = stat.S_ISLNK(st.st_mode)
        if self.rules.ignored(rel, link or stat.S_ISDIR(st.st_mode)):
            self._warn_if_leaving(path, rel, link)
            return
        bad = _bad_name(name)
        if bad:
            self.problem(rel, bad, f"rename it, or {_leave_out(rel)}")
            return
        if link:
            resolved = self._resolve(path, rel)
            if resolved is None:
                return
            path, st = resolved
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                self.problem(rel, "is a symlink loop: it leads back to a directory holding it")
            else:
                self.directory(path, rel + "/", ancestors | {key})
        elif stat.S_ISREG(st.st_mode):
            self._regular(path, rel, st)
        else:
            kind = next(k for test, k in _KINDS if test(st.st_mode))
            self.problem(rel, f"is {kind}: only regular files and directories ship")

    def _resolve(self, path: str, rel: str) -> tuple[str, os.stat_result] | None:
        """The real path (and its lstat) of the link at ``path`` if it stays inside the root,
        else None (and a problem recorded)."""
        target = shown(os.readlink(path))
        if not _inside(os.path.realpath(path), self.root):    # existing or not: never read
            self.problem(rel, f"is a symlink to {target}, which leaves the project directory",
                         f"copy the file into the project instead of linking to it, or "
                         f"{_leave_out(rel)}")
            return None
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as e:
            what = "a symlink loop" if e.errno == errno.ELOOP else "a dangling symlink"
            self.problem(rel, f"is {what} (to {target})")
            return None
        try:
            st = os.lstat(real)
        except OSError as e:                  # removed since it was resolved
            self.problem(rel, f"cannot be read ({e.strerror})")
            return None
        inner = os.path.relpath(real, self.root)
        if inner != "." and self.rules.ignored(inner, stat.S_ISDIR(st.st_mode)):
            # .git/config, a .env the user left out, the state directory: a link must not
            # ship what the rules keep out
            self.problem(rel, f"is a symlink to {target}, which the ignore rules leave out",
                         f"copy the file in place of the link if it should ship, or "
                         f"{_leave_out(rel)}")
            return None
        return real, st

    def _warn_if_leaving(self, path: str, rel: str, link: bool) -> None:
        if link and self.rules.by_user(rel, True) and not _inside(os.path.realpath(path),
                                                                   self.root):
            self.warnings.append(f"{shown(rel)}: left out a symlink to "
                                 f"{shown(os.readlink(path))}, outside the project, as "
                                 f"{IGNORE_FILE} says")

    def _regular(self, path: str, rel: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            fd = _open_regular(path, rel)
        except InvalidInput as e:
            self.problems.append(e)
            return
        with os.fdopen(fd, "rb") as fh:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != key[:2]:
                self.problems.append(_changed(rel, "it was replaced by another file"))
                return
            digest = self.digests.get(key)
            if digest is None:
                h = hashlib.sha256()
                while chunk := fh.read(_CHUNK):
                    h.update(chunk)
                digest = self.digests[key] = h.hexdigest()
        self.files.append(BundleFile(rel, Path(path), digest, st.st_size,
                                     bool(st.st_mode & stat.S_IXUSR), shipped_mode(st.st_mode),
                                     key[:2]))


def collect(root: Path, *, extra_ignores: list[str] | None = None) -> Bundle:
    """The files under ``root`` that ship, in a stable order (see the module docstring); raises
    ``InvalidInput`` naming every path that cannot ship."""
    real_root = os.path.realpath(root)
    walk = _Walk(real_root, _Rules(real_root, list(extra_ignores or [])))
    st = os.stat(real_root)
    walk.directory(real_root, "", frozenset({(st.st_dev, st.st_ino)}))
    if walk.problems:
        first, rest = walk.problems[0], walk.problems[1:]
        details = None
        if rest:
            lines = [f"  - {p.where}: {p.message}" for p in rest[:20]]
            more = f"\n  ... and {len(rest) - 20} more" if len(rest) > 20 else ""
            details = "also:\n" + "\n".join(lines) + more
        raise InvalidInput(first.message, where=first.where, fix=first.fix, details=details)
    walk.files.sort(key=lambda f: f.path)
    return Bundle(root=Path(real_root), files=walk.files, warnings=walk.warnings)


def state_ignores(root: Path, state_dir: Path) -> list[str]:
    """Leave the state directory out of the bundle even when it lives elsewhere in the tree."""
    try:
        rel = state_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return []
    return [ignore_pattern(rel.as_posix(), directory=True)]
