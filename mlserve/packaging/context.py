"""The pieces every format renderer shares: the build spec it reads and the context it fills.

A renderer is a function ``render(spec, ctx)``: it reads the validated manifest, the target's
options and the user's files from ``Spec`` and adds files to ``BuildContext`` (in memory for
rendered text, by reference for copied files, in a scratch file for what is too large to hold in
memory). ``BuildContext.write`` then puts them on disk in sorted order with fixed modes, so the
same inputs always give the same bytes. The user's files are copied through
``BundleFile.copy_as`` (checked to be what ``collect`` saw, never a link followed out of the
project) with their shipped mode: 0644/0755 narrowed by the source's own permissions.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bundle import IGNORE_FILE, Bundle, BundleFile, shown
from ..errors import InvalidInput
from ..manifest import Manifest, Project
from ..targets import TargetBase

#: User files at least this large go into their own image layer (weights, not code).
LARGE_FILE_BYTES = 1 << 20
#: Written at the top of every build context; its presence lets a rebuild replace the directory.
MARKER = ".mlserve-build"


@dataclass(frozen=True)
class Entry:
    data: bytes | None = None
    source: Path | BundleFile | None = None   # a Path: one of mlserve's own files
    executable: bool = False
    move: bool = False                         # a scratch file: moved, not copied


@dataclass
class BuildContext:
    files: dict[str, Entry] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # Removed once written, or with the context (a build that fails before ``write``).
    _scratch: Path | None = field(default=None, repr=False)
    _remove_scratch: weakref.finalize | None = field(default=None, repr=False)

    def text(self, path: str, text: str, *, executable: bool = False) -> None:
        self._add(path, Entry(data=text.encode("utf-8"), executable=executable))

    def data(self, path: str, data: bytes, *, executable: bool = False) -> None:
        self._add(path, Entry(data=data, executable=executable))

    def copy(self, path: str, source: Path | BundleFile, *, executable: bool = False) -> None:
        """Copy ``source`` to ``path``: a user's file (``BundleFile``, its own executable bit and
        mode) or one of mlserve's own files (a ``Path``)."""
        self._add(path, Entry(source=source, executable=executable))

    def scratch(self, name: str) -> Path:
        """A new file path in a private scratch directory, for a file too large for memory;
        ``put`` it into the context once written."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="mlserve-build-"))
            self._remove_scratch = weakref.finalize(self, shutil.rmtree, self._scratch, True)
        return self._scratch / name

    def put(self, path: str, scratch: Path) -> None:
        """Move the scratch file ``scratch`` to ``path`` when the context is written."""
        self._add(path, Entry(source=scratch, move=True))

    def _add(self, path: str, entry: Entry) -> None:
        if path in self.files:
            raise InvalidInput(f"two files of the build context would be written to {path}",
                               fix="rename the model's file that collides with a generated one")
        self.files[path] = entry

    def write(self, dest: Path) -> None:
        """Write every file under ``dest`` (a new directory): 0644, or 0755 when executable;
        a user's file keeps its shipped mode (never wider than its source's)."""
        dest.mkdir(parents=True)
        for path in sorted(self.files):
            entry = self.files[path]
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(entry.source, BundleFile):
                entry.source.copy_as(target)
                continue
            if entry.data is not None:
                target.write_bytes(entry.data)
            elif entry.move:
                shutil.move(entry.source, target)
            else:
                shutil.copyfile(entry.source, target)
            target.chmod(0o755 if entry.executable else 0o644)
        if self._remove_scratch is not None:
            self._remove_scratch()


@dataclass(frozen=True)
class Spec:
    """What a renderer may read: the project, the chosen target and the user's files."""

    project: Project
    target_name: str
    target: TargetBase
    bundle: Bundle

    @property
    def manifest(self) -> Manifest:
        return self.project.manifest

    def option(self, provider: str, name: str, default: Any = None) -> Any:
        """A ``provider`` target's option, or ``default`` when the target is another provider's
        (``--format`` may render a format for a target of another provider)."""
        if self.target.provider != provider:
            return default
        return getattr(self.target, name)

    @property
    def python(self) -> str:
        return self.manifest.model.python

    def requirements(self) -> list[str]:
        """The model's pip requirement lines; a list entry may not smuggle in a second line."""
        from ..reqsets import requirement_lines

        spec = self.manifest.model.requirements
        lines = requirement_lines(self.project.root, spec)
        if not isinstance(spec, str):
            for i, line in enumerate(lines):
                if "".join(line.splitlines()) != line:   # pip splits with str.splitlines()
                    raise InvalidInput(f"model.requirements[{i}] contains a line break",
                                       where=f"{self.project.located.file}: model.requirements",
                                       fix="put each requirement in its own list item")
        return lines

    def requirements_text(self) -> str:
        lines = self.requirements()
        return "".join(line + "\n" for line in lines)

    def user_files(self, prefix: str, ctx: BuildContext) -> None:
        """Copy every file of the model's bundle, unchanged, under ``prefix``."""
        for f in self.bundle.files:
            ctx.copy(prefix + f.path, f)

    def warn_private_files(self, ctx: BuildContext, reader: str) -> None:
        """Warn that files others may not read (0600, 0640...) ship as they are, so ``reader``
        (the service user that is not their owner) cannot read them: mlserve never widens a
        mode, the user decides."""
        private = [f"{shown(f.path)} ({f.mode:04o})" for f in self.bundle.files
                   if not f.mode & stat.S_IROTH]
        if private:
            more = f" and {len(private) - 5} more" if len(private) > 5 else ""
            ctx.warnings.append(f"{reader} cannot read {', '.join(private[:5])}{more}: mlserve "
                                "keeps a file's mode, and these deny reading to others; chmod "
                                f"a+r what the model needs, and leave the rest out with "
                                f"{IGNORE_FILE}")


def clear_output(dest: Path) -> None:
    """Remove a previous build at ``dest``; refuse to touch a directory mlserve did not write."""
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir() or dest.is_symlink():
        raise InvalidInput(f"{dest} exists and is not a directory",
                           fix="choose another output directory with -o")
    if any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise InvalidInput(f"{dest} is not empty and was not written by `mlserve build`",
                           fix="choose an empty or new directory with -o")
    shutil.rmtree(dest)

