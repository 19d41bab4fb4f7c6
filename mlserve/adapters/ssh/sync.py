"""What a release puts on a host, as content-addressed objects.

Three kinds of files travel, all named by their sha256 and sent only when the host lacks them:

- the bundle (the user's files), assembled on the host into ``releases/<id>/app``;
- the runtime library: ``mlserve.runtime`` plus the pure-Python distributions it needs
  (uvicorn and its requirements, as installed beside mlserve here), assembled into
  ``lib/<key>`` and put on the runtime's ``sys.path``. Nothing is installed with pip on the
  host, so hosts without internet access, without pip, and with an old uvicorn of their own
  all work; ``httptools``/``uvloop`` are compiled and stay behind (the runtime falls back to h11
  and asyncio);
- the helper: one zip archive (``mlserve.adapters.ssh.host`` and the stdlib-only mlserve
  modules it reuses) that Python runs directly on the host.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import marshal
import re
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ...bundle import Bundle, BundleFile, file_digest
from ...errors import MissingDependency

PACKAGE_ROOT = Path(__file__).resolve().parents[3]      # the directory holding mlserve/
RUNTIME_ROOT_DIST = "uvicorn"
HELPER_MODULES = ["mlserve/__init__.py", "mlserve/checks.py", "mlserve/reqsets.py",
                  "mlserve/adapters/procs.py", "mlserve/adapters/supervisor.py"]
# The package's own __init__ imports the adapter registry (and through it typing and
# dataclasses): on the host the package is only a namespace for procs.
HELPER_STUBS = {"mlserve/adapters/__init__.py": b'"""mlserve.adapters as the SSH host helper '
                                                 b'ships it: procs only."""\n'}
HELPER_MAIN = b"import sys\nfrom mlserve_host.main import main\nsys.exit(main(sys.argv))\n"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    source: Path | None = None        # one of mlserve's own files
    data: bytes | None = None
    file: BundleFile | None = None    # a user's file: opened checked (no link, same inode)

    def open(self):
        if self.file is not None:
            return self.file.open()
        return io.BytesIO(self.data) if self.data is not None else open(self.source, "rb")


@dataclass
class Plan:
    """Everything one release needs on a host, by content."""

    app: list[list] = field(default_factory=list)         # [path, digest, executable]
    lib_key: str = ""
    lib_files: list[list] = field(default_factory=list)   # [path, digest]
    helper: Blob | None = None
    blobs: dict[str, Blob] = field(default_factory=dict)
    min_python: tuple[int, int] = (3, 10)

    def digests(self) -> list[str]:
        return list(self.blobs)


def plan_for(bundle: Bundle | None) -> Plan:
    """The plan for ``bundle`` (None: a release already on the host, e.g. a rollback)."""
    lib, min_python = runtime_library()
    helper = helper_archive()
    plan = Plan(lib_key=library_key(lib), lib_files=[[p, b.digest] for p, b in lib],
                helper=helper, min_python=min_python)
    plan.blobs[helper.digest] = helper
    for _, blob in lib:
        plan.blobs.setdefault(blob.digest, blob)
    for f in bundle.files if bundle else []:
        plan.app.append([f.path, f.digest, f.executable])
        plan.blobs.setdefault(f.digest, Blob(f.digest, f.size, file=f))
    return plan


def library_key(files: list[tuple[str, Blob]]) -> str:
    h = hashlib.sha256()
    for path, blob in files:
        h.update(f"{path}\0{blob.digest}\n".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def runtime_library() -> tuple[list[tuple[str, Blob]], tuple[int, int]]:
    """``[(path in lib, blob)]`` for the runtime and its dependencies, and the oldest Python
    they all support."""
    files: dict[str, Path] = {}
    for path in sorted((PACKAGE_ROOT / "mlserve" / "runtime").rglob("*.py")):
        files[path.relative_to(PACKAGE_ROOT).as_posix()] = path
    files["mlserve/__init__.py"] = PACKAGE_ROOT / "mlserve" / "__init__.py"
    min_python = (3, 8)
    for dist in _closure(RUNTIME_ROOT_DIST):
        min_python = max(min_python, _min_python(dist.metadata.get("Requires-Python") or ""))
        for item in dist.files or []:
            rel = item.as_posix()
            if rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc"):
                continue
            if rel.endswith((".so", ".pyd")):
                raise MissingDependency(
                    f"{dist.metadata['Name']} (needed by the runtime on SSH hosts) is compiled "
                    "code and cannot be shipped to hosts",
                    fix=f"reinstall it from its pure-Python wheel: pip install --force-reinstall "
                        f"--no-binary :all: {dist.metadata['Name']}")
            files[rel] = Path(item.locate())
    out = [(rel, Blob(file_digest(src), src.stat().st_size, source=src))
           for rel, src in sorted(files.items())]
    return out, min_python


def _closure(root: str) -> list[metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            seen[key] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise MissingDependency(f"{name} (needed by the runtime on SSH hosts) is not "
                                    "installed beside mlserve",
                                    fix=f"pip install {name}") from None
        for requirement in seen[key].requires or []:
            spec, _, marker = requirement.partition(";")
            if "extra" in marker:
                continue
            dep = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0)
            try:
                metadata.distribution(dep)
            except metadata.PackageNotFoundError:
                if marker.strip():            # only for other platforms or Pythons
                    continue
            todo.append(dep)
    return [seen[k] for k in sorted(seen)]


def _min_python(spec: str) -> tuple[int, int]:
    m = re.search(r">=\s*(\d+)\.(\d+)", spec)
    return (int(m.group(1)), int(m.group(2))) if m else (3, 8)


def _bytecode(name: str, source: bytes) -> bytes:
    """A checked hash-based .pyc: zipimport cannot cache compiled modules, and compiling the
    helper costs ~0.1 s of CPU per SSH exec. A host whose Python has another magic number, or
    a source that does not match, falls back to the .py beside it."""
    code = compile(source, name, "exec", dont_inherit=True)
    flags = (0b11).to_bytes(4, "little")
    return importlib.util.MAGIC_NUMBER + flags + importlib.util.source_hash(source) + \
        marshal.dumps(code)


@functools.lru_cache(maxsize=1)
def helper_archive() -> Blob:
    """The zip the host runs (byte-for-byte reproducible for one Python version, so its digest
    is stable)."""
    entries = {"__main__.py": HELPER_MAIN, **HELPER_STUBS}
    for rel in HELPER_MODULES:
        entries[rel] = (PACKAGE_ROOT / rel).read_bytes()
    host_dir = Path(__file__).with_name("host")
    for path in sorted(host_dir.glob("*.py")):
        entries[f"mlserve_host/{path.name}"] = path.read_bytes()
    for name, source in list(entries.items()):
        entries[name[:-3] + ".pyc"] = _bytecode(name, source)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, _FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, entries[name])
    data = buf.getvalue()
    return Blob(hashlib.sha256(data).hexdigest(), len(data), data=data)
