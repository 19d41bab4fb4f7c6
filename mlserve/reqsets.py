"""Requirement sets, the project files they name, and reading such files safely.

Contract:
- ``project_file(root, name)`` returns the real path of a file named by the manifest, or raises
  ``FileProblem`` (a ``ValueError``: the reason, and ``fix``). A usable name is relative, has no
  ``..``, fits the file system's limits, exists, and RESOLVES (symbolic links followed) inside
  ``root``; it is a regular file (or, where allowed, a directory): never a FIFO, a device or a
  socket, so ``/proc/self/environ``, ``/dev/zero`` or a link to ``/etc/shadow`` never get read.
- ``read_small_file(path, limit)`` reads at most ``limit`` bytes of a regular file without ever
  blocking (``O_NONBLOCK``: a FIFO put in the file's place is refused, not waited on).
- ``requirement_lines`` gives a model's requirement lines; ``requirement_problems`` finds every
  local file a requirement set names (``-r``/``-c`` files, followed; ``-e`` paths, ``./pkg``,
  ``file:`` URLs, ``--find-links`` directories), each of which must pass ``project_file``.
- ``venv_key`` hashes the lines into a venv's name.

Stdlib only, and cheap to import: the SSH host helper ships this module and builds its venvs with
the same key as the local target.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shlex
import stat
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

REQUIREMENTS_LIMIT = 1024 * 1024      # bytes in one requirements file
MAX_INCLUDES = 32                     # requirement files reached through -r/-c, in all
NAME_MAX = 255                        # bytes in one path component (Linux, macOS)
PATH_MAX = 4096                       # bytes in a whole path (Linux)


class FileProblem(ValueError):
    """A file named by the project that must not or cannot be used: ``str`` says why."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def project_file(root: Path, name: str, *, directory_ok: bool = False) -> Path:
    """The real path of ``name`` (relative to ``root``); ``FileProblem`` unless it stays inside."""
    inside = "give a path relative to the project directory, inside it"
    if not name or not name.strip():
        raise FileProblem("is empty", inside)
    if "\0" in name:
        raise FileProblem("contains a NUL character", "correct the file name")
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "~")):
        raise FileProblem("is an absolute path", inside)
    if ".." in parts:
        raise FileProblem("goes up out of the project with '..'", inside)
    if (any(len(os.fsencode(p)) > NAME_MAX for p in parts)
            or len(os.fsencode(str(root / name))) >= PATH_MAX):
        raise FileProblem(f"is longer than the file system allows ({NAME_MAX} bytes a name, "
                          f"{PATH_MAX} a path)", "use a shorter name")
    real_root = os.path.realpath(root)
    try:
        real = os.path.realpath(root / name, strict=True)
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise FileProblem("does not exist (or is a link to nothing)",
                          "create it or correct the path") from None
    except OSError as exc:
        reason = {errno.ELOOP: "is a loop of symbolic links", errno.EACCES: "cannot be read "
                  "(permission denied)", errno.ENAMETOOLONG: "is longer than the file system "
                  "allows", errno.ENOTDIR: "does not exist (a part of it is not a directory)"}
        raise FileProblem(reason.get(exc.errno, f"cannot be used ({exc.strerror})"),
                          "correct the path or the file") from None
    if os.path.commonpath([real, real_root]) != real_root:
        shown = real if len(real) <= 80 else real[:80] + "…"
        raise FileProblem(f"leads outside the project (to {shown})",
                          "copy the file into the project instead of linking to it")
    if stat.S_ISREG(mode) or (directory_ok and stat.S_ISDIR(mode)):
        return Path(real)
    raise FileProblem(f"is {kind_of(mode)}, not a regular file", "name a regular file")


def read_small_file(path: Path | str, limit: int) -> bytes:
    """The bytes of regular file ``path``; ``FileProblem`` if it is anything else or over ``limit``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileProblem("does not exist", "create it or correct the path") from None
    except OSError as exc:
        raise FileProblem(f"cannot be read ({exc.strerror})", "check the file and its "
                          "permissions") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileProblem(f"is {kind_of(mode)}, not a regular file", "name a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileProblem(f"cannot be read ({exc.strerror})", "check the file") from None
    finally:
        os.close(fd)
    if size > limit:
        raise FileProblem(f"is larger than {limit // 1024} KiB", "make it smaller")
    return b"".join(chunks)


def _read_requirements(path: Path) -> list[str]:
    data = read_small_file(path, REQUIREMENTS_LIMIT)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"is not UTF-8 text (byte {exc.start})", "save it as UTF-8") from None
    return [line.strip() for line in text.splitlines()]


def requirement_lines(root: Path, requirements) -> list[str]:
    """The requirement lines of ``requirements`` (a file under ``root``, or a list). A file's
    ``-r`` includes are replaced by their lines (recursively, each file once), so the lines, and
    the venv key made from them, change when an included file does."""
    if isinstance(requirements, str):
        return _flattened(root, requirements, set())
    return list(requirements or [])


def _flattened(root: Path, name: str, seen: set[str]) -> list[str]:
    real = str(project_file(root, name))
    if real in seen:
        return []
    seen.add(real)
    if len(seen) > MAX_INCLUDES:
        raise FileProblem(f"is one requirement file too many (more than {MAX_INCLUDES})",
                          "include fewer files with -r")
    here = os.path.dirname(os.path.relpath(real, os.path.realpath(root)))
    out: list[str] = []
    for line in _read_requirements(Path(real)):
        if not line or line.startswith("#"):
            continue
        refs = referenced_paths(line)
        if len(refs) == 1 and refs[0][0] == "--requirement" and "$" not in refs[0][1]:
            out.extend(_flattened(root, os.path.normpath(os.path.join(here, refs[0][1])), seen))
        else:
            out.append(line)
    return out


# --- local files a requirement set names ----------------------------------------------------

_INCLUDES = {"-r": "--requirement", "-c": "--constraint"}
_PATH_OPTIONS = {"-e": "--editable", "-f": "--find-links", "-i": "--index-url"}
_LONG_ONLY = ("--extra-index-url",)
_COMMENT = re.compile(r"(^|\s+)#.*\Z", re.S)
_NAMED_URL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*@\s*(?P<url>\S+)")
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):")
_EXTRAS = re.compile(r"\[[^\]]*\]\Z")
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz")


def _options(tokens: list[str]) -> list[tuple[str, str]]:
    """(option, value) for every option of a requirement line that takes a path or URL."""
    names = {**_INCLUDES, **_PATH_OPTIONS}
    longs = {*names.values(), *_LONG_ONLY}
    found = []
    for i, tok in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        head, eq, value = tok.partition("=")
        if head in longs and eq:
            found.append((head, value))
        elif tok in longs or tok in names:
            found.append((names.get(tok, tok), following))
        elif tok[:2] in names and len(tok) > 2:
            found.append((names[tok[:2]], tok[2:]))
    return found


def _local_path(value: str, *, any_path: bool) -> str | None:
    """The local path a value names, or None (a project name, a remote URL). An option's value
    (``any_path``) is a path unless it is a URL; a requirement only when it looks like one."""
    named = _NAMED_URL.fullmatch(value)
    if named:
        value = named.group("url")
    scheme = _SCHEME.match(value)
    if scheme and len(scheme.group("scheme")) > 1:        # a one-letter "scheme" is C:\...
        if scheme.group("scheme").lower() != "file":
            return None
        parts = urlsplit(value)
        return unquote(parts.path) if not parts.netloc or parts.netloc == "localhost" \
            else "//" + parts.netloc + parts.path
    value = _EXTRAS.sub("", value)                         # ./pkg[dev] is the directory ./pkg
    if any_path or value.startswith((".", "/", "~")) or "/" in value \
            or value.lower().endswith(_ARCHIVES):
        return value
    return None


def referenced_paths(line: str) -> list[tuple[str, str]]:
    """(how, path) for every local file or directory a requirement line names."""
    line = _COMMENT.sub("", line).strip()
    if not line:
        return []
    try:
        tokens = shlex.split(line)
    except ValueError:
        tokens = line.split()
    found = _options(tokens)
    if tokens and not tokens[0].startswith("-"):
        spec = line.split(" -", 1)[0].split("; ", 1)[0].strip()
        found.append(("requirement", spec))
    out = []
    for how, value in found:
        path = _local_path(value, any_path=how != "requirement")
        if path is not None:
            out.append((how, path))
    return out


Problem = tuple  # (source, subject, reason, fix): "reqs.txt line 3", "-r /etc/x", "is ...", "..."


def requirement_problems(root: Path, requirements) -> list[Problem]:
    """Every local file ``requirements`` names that is unusable, as (source, subject, reason, fix).

    ``source`` is "" for the manifest's own file name, ``item N`` for a list entry, else
    ``FILE line N``; ``subject`` is the option and the path as written (untrusted text: the caller
    escapes it for display). ``-r``/``-c`` files are read in turn, relative to the file that
    names them; other paths are relative to ``root``, where pip runs.
    """
    problems: list[Problem] = []
    files: list[tuple[str, str, str]] = []      # (source, how, path relative to root)
    lines: list[tuple[str, str, str]] = []      # (source, line, directory relative to root)
    if isinstance(requirements, str):
        files.append(("", "", requirements))
    else:
        lines = [(f"item {i}", line, ".") for i, line in enumerate(requirements or [])]
    seen: set[str] = set()
    real_root = os.path.realpath(root)
    while files or lines:
        if lines:
            source, text, here = lines.pop(0)
            _line_problems(root, source, text, here, files, problems)
            continue
        source, how, name = files.pop(0)
        try:
            real = project_file(root, name)
            if str(real) in seen:
                continue
            seen.add(str(real))
            if len(seen) > MAX_INCLUDES:
                raise FileProblem(f"is one requirement file too many (more than {MAX_INCLUDES})",
                                  "include fewer files with -r/-c")
            text_lines = _read_requirements(real)
        except FileProblem as exc:
            problems.append((source, f"{how} {name}".strip(), exc.reason, exc.fix))
            continue
        label = os.path.relpath(real, real_root)
        here = os.path.dirname(label) or "."
        lines.extend((f"{label} line {n}", text, here) for n, text in enumerate(text_lines, 1))
    return problems


def _line_problems(root: Path, source: str, text: str, here: str, files: list,
                   problems: list) -> None:
    for how, path in referenced_paths(text):
        if "$" in path:
            problems.append((source, f"{how} {path}", "uses an environment variable",
                             "write the path itself, relative to the project"))
        elif how in _INCLUDES.values():
            joined = path if path.startswith(("/", "~")) else os.path.normpath(
                os.path.join(here, path))
            files.append((source, how, joined))
        else:
            try:
                project_file(root, path, directory_ok=True)
            except FileProblem as exc:
                problems.append((source, f"{how} {path}", exc.reason, exc.fix))


def venv_key(lines: list[str]) -> str:
    """A venv's name: the hash of this interpreter's version and the requirement lines."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    return hashlib.sha256("\n".join([running, *lines]).encode()).hexdigest()[:12]
