"""Hostile project trees: nothing outside the project ships, modes never widen, no crash.

Every case builds a real project holding one hostile entry (a link out of the project, a loop, a
FIFO, a socket, a device, an unreadable file, an odd name, a narrow mode...) at the top or deep
in a subdirectory, ignored by ``.mlserveignore`` or not, then drives the real entry points:
``mlserve build --format F`` for every format (the CLI in-process) and the local target's release
copy (``collect`` + ``Bundle.copy_to``, what ``LocalProvider.deploy`` runs). Each either fails
with exit 2 and a first line naming the offending path (no traceback, no "internal error"), or
succeeds; either way no byte of the files outside the project (a 0600 "shadow" file made for the
test, the real /etc/shadow, this process's /proc/self/environ) appears in any output file, the
cloud-init tarball's members included, and no shipped file's mode is wider than its source's.
A generated (hypothesis) test mixes several entries in one tree. The subprocess and deploy tests
at the end check /proc/self/environ with a secret in the environment, and ``mlserve deploy``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlserve.bundle import collect, shown
from mlserve.errors import InvalidInput
from mlserve.packaging import FORMATS
from tests.helpers import MLSERVE, run_cli, run_process
from tests.test_package_support import make_project

ROOT = os.geteuid() == 0
OUTSIDE_SECRET = b"OUTSIDE-SECRET-c0ffee-5e1f-never-ships"
ENV_SECRET_NAME, ENV_SECRET = "MLSERVE_TEST_SECRET", "env-secret-9b1d-never-ships"
USER_PREFIX = {"docker": "app/", "cog": "app/", "truss": "model/app/", "cloud-init": "app/",
               "copy": ""}


@dataclass
class World:
    root: Path          # the project
    outside: Path       # a directory beside it, with a 0600 secret file and a subdirectory


def _world(base: Path) -> World:
    outside = base / "outside"
    (outside / "dir").mkdir(parents=True)
    for path in (outside / "shadow", outside / "dir" / "secret.txt"):
        path.write_bytes(OUTSIDE_SECRET + b"\n")
        path.chmod(0o600)
    root = base / "proj"
    make_project(root)
    return World(root, outside)


# --- the hostile entries -----------------------------------------------------------------------
# maker(world, path) creates the entry at ``path`` (named ``hostile...``) and returns the paths,
# relative to ``path.parent``, that must ship when it is allowed (besides model.py and the manifest).

def _link(target) -> Callable:
    def make(w: World, p: Path) -> list[str]:
        p.symlink_to(target(w, p) if callable(target) else target)
        return []
    return make


def _chain_outside(w: World, p: Path) -> list[str]:
    hop = p.with_name(p.name + ".hop")
    hop.symlink_to(w.outside / "shadow")
    p.symlink_to(hop.name)
    return []


def _pair_loop(w: World, p: Path) -> list[str]:
    other = p.with_name(p.name + ".b")
    p.symlink_to(other.name)
    other.symlink_to(p.name)
    return []


def _into_git(target: str) -> Callable:
    """A link to ``target`` inside the project's own .git/ (built-in ignore), whose config
    holds a credential."""
    def make(w: World, p: Path) -> list[str]:
        (w.root / ".git").mkdir(exist_ok=True)
        (w.root / ".git" / "config").write_bytes(b"[remote]\n url = https://u:" +
                                                 OUTSIDE_SECRET + b"@example.com/r\n")
        p.symlink_to(os.path.relpath(w.root / target, p.parent))
        return []
    return make


def _fifo(w: World, p: Path) -> list[str]:
    os.mkfifo(p)
    return []


def _socket(w: World, p: Path) -> list[str]:
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(p.parent)                    # a relative name: tmp paths can exceed sun_path
    try:
        sock.bind(p.name)
    finally:
        os.chdir(cwd)
        sock.close()
    return []


def _device(w: World, p: Path) -> list[str]:
    os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3))    # /dev/null's numbers
    return []


def _file(mode: int, name_suffix: str = "") -> Callable:
    def make(w: World, p: Path) -> list[str]:
        target = p.with_name(p.name + name_suffix)
        target.write_bytes(b"inside " + target.name.encode("utf-8", "surrogateescape") + b"\n")
        target.chmod(mode)
        return [target.name]
    return make


def _inside_file_link(w: World, p: Path) -> list[str]:
    real = p.with_name(p.name + ".real")
    real.write_text("real content\n")
    real.chmod(0o640)
    p.symlink_to(real.name)
    return [p.name, real.name]


def _inside_dir_link(w: World, p: Path) -> list[str]:
    real = p.with_name(p.name + ".d")
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "f.txt").write_text("in a linked directory\n")
    (real / "sub" / "f.txt").chmod(0o600)
    p.symlink_to(real.name)
    return [f"{p.name}/sub/f.txt", f"{real.name}/sub/f.txt"]


def _out_and_back(w: World, p: Path) -> list[str]:
    back = w.outside / f"back-{abs(hash(str(p)))}"
    back.symlink_to(w.root / "model.py")
    p.symlink_to(back)
    return [p.name]


def _unreadable_dir(w: World, p: Path) -> list[str]:
    p.mkdir()
    (p / "f.txt").write_text("behind a 0000 directory\n")
    p.chmod(0)
    return [f"{p.name}/f.txt"] if ROOT else []


def _empty_dir(w: World, p: Path) -> list[str]:
    p.mkdir()
    return []


def _named_link(name: str, target: Callable) -> Callable:
    """A link with an odd name (Rich markup in it) to ``target(world)``."""
    def make(w: World, p: Path) -> list[str]:
        p.with_name(p.name + name).symlink_to(target(w))
        return []
    return make


def _named(name: str) -> Callable:
    """A file whose own name is odd (the entry's path gets ``name`` appended)."""
    return _file(0o644, name)


#: kind -> (maker, refused?, leaves the project (an ignored one warns), message fragment)
KINDS: dict[str, tuple[Callable, bool, bool, str]] = {
    "link-abs-outside": (_link(lambda w, p: w.outside / "shadow"), True, True, "leaves the project"),
    "link-rel-outside": (_link(lambda w, p: os.path.relpath(w.outside / "shadow", p.parent)),
                         True, True, "leaves the project"),
    "link-chain-outside": (_chain_outside, True, True, "leaves the project"),
    "link-outside-dir": (_link(lambda w, p: w.outside / "dir"), True, True, "leaves the project"),
    "link-etc-shadow": (_link("/etc/shadow"), True, True, "leaves the project"),
    "link-proc-environ": (_link("/proc/self/environ"), True, True, "leaves the project"),
    "link-proc-fd": (_link("/proc/self/fd/0"), True, True, "leaves the project"),
    "link-dev-zero": (_link("/dev/zero"), True, True, "leaves the project"),
    "link-root": (_link("/"), True, True, "leaves the project"),
    "link-into-git-config": (_into_git(".git/config"), True, False, "ignore rules leave out"),
    "link-into-git-dir": (_into_git(".git"), True, False, "ignore rules leave out"),
    "dangling": (_link(lambda w, p: w.root / "missing"), True, False, "dangling"),
    "dangling-outside": (_link("/nonexistent/x"), True, True, "leaves the project"),
    "link-outside-markup-name": (_named_link("[red] [bold]", lambda w: w.outside / "shadow"),
                                 True, True, "leaves the project"),
    "self-loop": (_link(lambda w, p: p.name), True, False, "loop"),
    "pair-loop": (_pair_loop, True, False, "loop"),
    "dir-loop": (_link("."), True, False, "loop"),
    "project-loop": (_link(lambda w, p: w.root), True, False, "loop"),
    "fifo": (_fifo, True, False, "FIFO"),
    "socket": (_socket, True, False, "socket"),
    "device": (_device, True, False, "device"),
    "name-newline": (_named("\nx"), True, False, "control character"),
    "name-escape": (_named("\x1b[31mred"), True, False, "control character"),
    "name-del": (_named("\x7f"), True, False, "control character"),
    "name-c1": (_named("\x9b"), True, False, "control character"),
    "name-line-separator": (_named("\u2028"), True, False, "line break"),
    "name-not-utf8": (_named(os.fsdecode(b"\xff\xfe")), True, False, "not valid UTF-8"),
    "name-markup": (_named("[bold] [red]x"), False, False, ""),
    "name-unicode": (_named(" héllo ✓ 🚀 $x `y` 'q' \"d\" #h"), False, False, ""),
    "mode-0600": (_file(0o600), False, False, ""),
    "mode-0640": (_file(0o640), False, False, ""),
    "mode-0700": (_file(0o700), False, False, ""),
    "mode-0755": (_file(0o755), False, False, ""),
    "mode-0444": (_file(0o444), False, False, ""),
    "mode-0500": (_file(0o500), False, False, ""),
    "mode-0000": (_file(0o000), not ROOT, False, "cannot be read"),
    "mode-0200": (_file(0o200), not ROOT, False, "cannot be read"),
    "unreadable-dir": (_unreadable_dir, not ROOT, False, "cannot be read"),
    "empty-dir": (_empty_dir, False, False, ""),
    "link-inside-file": (_inside_file_link, False, False, ""),
    "link-inside-dir": (_inside_dir_link, False, False, ""),
    "link-out-and-back": (_out_and_back, False, False, ""),
}
ROOT_ONLY = {"device": "mknod of a device needs CAP_MKNOD (root)"}


def _place(w: World, kind: str, nested: bool) -> tuple[str, list[str]]:
    """Create ``kind`` at the top or two directories down; its path and the paths that ship."""
    parent = w.root / "sub" / "deeper" if nested else w.root
    parent.mkdir(parents=True, exist_ok=True)
    prefix = "sub/deeper/" if nested else ""
    shipped = KINDS[kind][0](w, parent / "hostile")
    return prefix + "hostile", [prefix + s for s in shipped]


# --- what an output may hold -------------------------------------------------------------------

def _forbidden() -> list[bytes]:
    """Bytes that must never appear in an output: the outside secret, the environment secret,
    and (read as root) the real /etc/shadow and this process's own environment block."""
    found = [OUTSIDE_SECRET, ENV_SECRET.encode()]
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")
    found.append(b"\0".join(environ[:2]) + b"\0")
    with contextlib.suppress(OSError):
        shadow = Path("/etc/shadow").read_bytes()
        if len(shadow) > 16:
            found.append(shadow[:64])
    return found


def _members(path: Path, data: bytes) -> dict[str, tuple[bytes, int]]:
    """Every file an output holds, tarballs opened (user-data's embedded one too): name ->
    (bytes, mode)."""
    files = {path.name: (data, stat.S_IMODE(path.lstat().st_mode))}
    tarball = None
    if path.name == "bundle.tar.gz":
        tarball = data
    elif path.name == "user-data":
        doc = yaml.safe_load(data)
        tarball = next((base64.b64decode(f["content"]) for f in doc["write_files"]
                        if f.get("encoding") == "b64"), None)
    if tarball is not None:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
            for m in tar.getmembers():
                files[f"tar:{m.name}"] = (tar.extractfile(m).read(), m.mode)
    return files


def _check_output(out: Path, fmt: str, project: Path, shipped: list[str]) -> None:
    forbidden = _forbidden()
    seen: dict[str, tuple[bytes, int]] = {}
    for path in sorted(out.rglob("*")):
        assert not path.is_symlink(), f"{path} is a link in the output"
        if path.is_file():
            for name, (data, mode) in _members(path, path.read_bytes()).items():
                assert not [b for b in forbidden if b in data], f"{fmt}: {path} ({name}) leaks"
                rel = path.relative_to(out).as_posix()
                seen[name[4:] if name.startswith("tar:") else rel] = (data, mode)
    prefix = USER_PREFIX[fmt]
    for rel in ["model.py", "mlserve.yaml", *shipped]:
        key = prefix + rel
        assert key in seen, f"{fmt}: {rel} did not ship"
        data, mode = seen[key]
        source = project / rel
        assert data == source.read_bytes()
        source_mode = stat.S_IMODE(source.stat().st_mode)
        assert mode & ~source_mode == 0, f"{fmt}: {rel} {mode:o} is wider than {source_mode:o}"
    for key, (data, mode) in seen.items():       # nothing of the user's ships wider than 0755
        assert mode & ~0o755 == 0, f"{fmt}: {key} has mode {mode:o}"


def _assert_refused(code: int, err: str, bad: list[str], fragment: str) -> None:
    assert code == 2, err
    first = err.lstrip("\n").splitlines()[0]
    assert any(shown(b) in first for b in bad), first
    assert fragment in err, err
    assert "Traceback" not in err and "internal error" not in err.lower(), err


@pytest.fixture(autouse=True)
def _no_hang(tmp_path):
    """A FIFO opened for reading would block forever: fail instead. Afterwards, 0000
    directories get their modes back so that the tree can be removed."""
    def expired(*_):
        raise TimeoutError("a build hung (a FIFO was opened?)")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    _restore_modes(tmp_path)


def _copy(project: Path, dest: Path) -> tuple[int, str]:
    """The local target's release copy: exit-code style result."""
    try:
        bundle = collect(project)
        bundle.copy_to(dest)
    except InvalidInput as e:
        return 2, e.render()
    return 0, "\n".join(bundle.warnings)


#: Where a link resolves from matters for links and loops: four variants each (top, deep, and
#: both ignored); the other kinds at the top and, ignored, deep down.
DEPTH_MATTERS = {k for k in KINDS if k.startswith(("link-", "dangling")) or "loop" in k}
CASES = [(kind, nested, ignored) for kind in KINDS for nested in (False, True)
         for ignored in (False, True) if kind in DEPTH_MATTERS or nested == ignored]


@pytest.mark.parametrize("kind,nested,ignored", CASES,
                         ids=[f"{k}-{'deep' if n else 'top'}{'-ignored' if i else ''}"
                              for k, n, i in CASES])
def test_hostile_entry(tmp_path, capsys, monkeypatch, kind, nested, ignored):
    if kind in ROOT_ONLY and not ROOT:
        pytest.skip(ROOT_ONLY[kind])
    monkeypatch.setenv(ENV_SECRET_NAME, ENV_SECRET)
    w = _world(tmp_path)
    rel, shipped = _place(w, kind, nested)
    _, refused, leaves, fragment = KINDS[kind]
    if ignored:
        (w.root / ".mlserveignore").write_text("# hostile entries stay out\nhostile*\n")
        shipped, refused = [".mlserveignore"], False
    manifest = w.root / "mlserve.yaml"
    bad = [rel, rel + ".hop", rel + ".b", rel + "[red] [bold]"]
    # One format per case, in turn: the walk is the same for every format, and each kind's
    # variants between them build every format.
    fmt = FORMATS[CASES.index((kind, nested, ignored)) % len(FORMATS)]
    out = tmp_path / f"out-{fmt}"
    done = run_cli(capsys, "build", "-f", str(manifest), "--format", fmt, "-o", str(out))
    if refused:
        _assert_refused(done.code, done.err, bad, fragment)
        assert not out.exists()
    else:
        assert done.code == 0, done.err
        warned = any(f"{shown(b)}: left out a symlink" in done.err for b in bad)
        assert warned == (ignored and leaves), done.err
        _check_output(out, fmt, w.root, shipped)
    code, text = _copy(w.root, tmp_path / "release")
    if refused:
        _assert_refused(code, text, bad, fragment)
    else:
        assert code == 0, text
        warned = any(f"{shown(b)}: left out a symlink" in text for b in bad)
        assert warned == (ignored and leaves), text
        _check_output(tmp_path / "release", "copy", w.root, shipped)


# --- generated: several hostile entries in one tree ---------------------------------------------

GENERATED_KINDS = sorted(k for k in KINDS if k not in ROOT_ONLY or ROOT)


@settings(max_examples=40)
@given(entries=st.lists(st.tuples(st.sampled_from(GENERATED_KINDS), st.booleans(), st.booleans()),
                        min_size=1, max_size=5),
       fmt=st.sampled_from([*FORMATS, "copy"]))
def test_generated_trees(tmp_path_factory, entries, fmt):
    """Up to five entries (kind, nested, ignored) in one tree: the build is refused iff one
    entry that is not ignored is refusable, and the message names one of those."""
    base = tmp_path_factory.mktemp("gen")
    w = _world(base)
    ignore_lines, shipped, bad, fragments = [], [], [], []
    for i, (kind, nested, ignored) in enumerate(entries):
        parent = w.root / ("sub/deeper" if nested else "") / f"e{i}"
        parent.mkdir(parents=True)
        rel = parent.relative_to(w.root).as_posix()
        made = KINDS[kind][0](w, parent / "hostile")
        if ignored:
            ignore_lines.append(f"/{rel}/")
        elif KINDS[kind][1]:
            bad += [f"{rel}/hostile{s}" for s in ("", ".hop", ".b", "[red] [bold]")]
            fragments.append(KINDS[kind][3])
        else:
            shipped += [f"{rel}/{s}" for s in made]
    if ignore_lines:
        (w.root / ".mlserveignore").write_text("\n".join(ignore_lines) + "\n")
        shipped.append(".mlserveignore")
    out = base / "out"
    if fmt == "copy":
        code, err = _copy(w.root, out)
    else:
        with _captured() as cap:
            done = run_cli(cap, "build", "-f", str(w.root / "mlserve.yaml"), "--format", fmt,
                           "-o", str(out))
        code, err = done.code, done.err
    if bad:
        assert code == 2, err
        assert any(f in err for f in fragments), err
        first = err.lstrip("\n").splitlines()[0]
        assert any(shown(b) in first for b in bad), first
        assert "Traceback" not in err
    else:
        assert code == 0, err
        _check_output(out, fmt, w.root, shipped)
    _restore_modes(base)


class _Capture:
    """What ``run_cli`` needs of pytest's capsys, for use inside a hypothesis test."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self) -> SimpleNamespace:
        return SimpleNamespace(out=self.out.getvalue(), err=self.err.getvalue())


@contextlib.contextmanager
def _captured():
    cap = _Capture()
    with contextlib.redirect_stdout(cap.out), contextlib.redirect_stderr(cap.err):
        yield cap


def _restore_modes(base: Path) -> None:
    """Let pytest remove a tree with 0000 directories once done."""
    for dirpath, dirnames, _ in os.walk(base):
        for d in dirnames:
            p = Path(dirpath) / d
            if not p.is_symlink():
                p.chmod(0o755)


# --- .mlserveignore itself is hostile ------------------------------------------------------------

@settings(max_examples=60)
@given(data=st.one_of(st.binary(max_size=300),
                      st.lists(st.sampled_from(["*.bin", "!keep.bin", "\\", "a\\", "!", "[z-a]",
                                                "[", "**", "/", "#c", " ", "\0", "\udcff",
                                                "data/", "\\#x", "***", "é/**"]),
                               max_size=8).map(lambda ls: "\n".join(ls).encode("utf-8",
                                                                            "surrogateescape"))))
def test_any_ignore_file_is_read_or_refused_with_its_line(tmp_path_factory, data):
    """Any bytes in .mlserveignore: the patterns apply, or exit 2 naming .mlserveignore:LINE."""
    root = tmp_path_factory.mktemp("ign")
    make_project(root)
    (root / ".mlserveignore").write_bytes(data)
    try:
        bundle = collect(root)
    except InvalidInput as e:
        assert e.where.startswith(".mlserveignore:"), e.render()
        line = int(e.where.split(":")[1])
        assert 1 <= line <= len(data.splitlines())
        return
    shipped = {f.path for f in bundle.files}
    assert shipped <= {"model.py", "mlserve.yaml", ".mlserveignore"}


def _ignore_file_kinds(w: World) -> dict[str, Callable[[Path], None]]:
    return {
        "link-outside": lambda p: p.symlink_to(w.outside / "shadow"),
        "link-proc-environ": lambda p: p.symlink_to("/proc/self/environ"),
        "dangling": lambda p: p.symlink_to("missing"),
        "loop": lambda p: p.symlink_to(p.name),
        "fifo": lambda p: os.mkfifo(p),
        "directory": lambda p: p.mkdir(),
        "huge": lambda p: p.write_bytes(b"#" * (1 << 20) + b"\n*.bin\n"),
    }


@pytest.mark.parametrize("kind", ["link-outside", "link-proc-environ", "dangling", "loop", "fifo",
                                  "directory", "huge"])
def test_an_ignore_file_that_is_not_a_small_file_inside_is_refused(tmp_path, capsys, kind):
    w = _world(tmp_path)
    _ignore_file_kinds(w)[kind](w.root / ".mlserveignore")
    done = run_cli(capsys, "build", "-f", str(w.root / "mlserve.yaml"), "--format", "cog",
                   "-o", str(tmp_path / "o"))
    assert done.code == 2, done.err
    assert done.err.startswith("error: .mlserveignore:"), done.err
    assert OUTSIDE_SECRET.decode() not in done.err and "Traceback" not in done.err


def test_an_ignore_file_linked_inside_the_project_applies(tmp_path):
    w = _world(tmp_path)
    (w.root / "conf").mkdir()
    (w.root / "conf" / "ignore").write_text("*.bin\n")
    (w.root / ".mlserveignore").symlink_to("conf/ignore")
    (w.root / "w.bin").write_bytes(b"x")
    shipped = {f.path for f in collect(w.root).files}
    assert "w.bin" not in shipped and ".mlserveignore" in shipped


# --- a file swapped or changed after collect() ---------------------------------------------------

def _swap_for_outside_link(w: World, path: Path) -> None:
    path.unlink()
    path.symlink_to(w.outside / "shadow")


def _swap_for_other_file(w: World, path: Path) -> None:
    other = path.with_name("other")
    other.write_bytes(OUTSIDE_SECRET)
    os.replace(other, path)


def _swap_parent_for_link(w: World, path: Path) -> None:
    os.rename(path.parent, path.parent.with_name("moved"))
    path.parent.symlink_to(w.outside)
    (w.outside / path.name).write_bytes(OUTSIDE_SECRET)


def _change_content(w: World, path: Path) -> None:
    path.write_bytes(OUTSIDE_SECRET + b"-same-inode")


def _shorten(w: World, path: Path) -> None:
    os.truncate(path, 3)


SWAPS = {"outside-link": _swap_for_outside_link, "other-file": _swap_for_other_file,
         "parent-dir-link": _swap_parent_for_link, "content": _change_content,
         "shorter": _shorten}


def _ship_after(bundle, how: str, dest: Path, tmp_path: Path) -> None:
    """Ship ``bundle`` the way ``how`` does: the local release copy, a build context, the
    cloud-init tarball, or the stream the SSH target sends."""
    from mlserve.adapters.ssh.sync import plan_for
    from mlserve.packaging.context import BuildContext
    if how == "copy":
        bundle.copy_to(dest)
    elif how == "context":
        ctx = BuildContext()
        for f in bundle.files:
            ctx.copy("app/" + f.path, f)
        ctx.write(dest)
    elif how == "ssh":
        plan = plan_for(bundle)
        f = bundle.get("sub/data.txt")
        with plan.blobs[f.digest].open() as fh:
            data = fh.read()
        assert OUTSIDE_SECRET not in data, "the SSH stream would carry outside bytes"
        raise AssertionError("the SSH stream read a replaced file")


# The SSH stream is checked for the inode only; content changed in place is caught by the host,
# which checks the digest of what it receives before using it.
SWAP_CASES = [(swap, how) for swap in sorted(SWAPS) for how in ("copy", "context", "ssh")
              if how != "ssh" or swap not in ("content", "shorter")]


@pytest.mark.parametrize("swap,how", SWAP_CASES)
def test_a_file_changed_after_collect_never_ships_other_bytes(tmp_path, swap, how):
    w = _world(tmp_path)
    target = w.root / "sub" / "data.txt"
    target.parent.mkdir()
    target.write_bytes(b"the bytes collect() saw\n")
    bundle = collect(w.root)
    SWAPS[swap](w, target)
    dest = tmp_path / "dest"
    with pytest.raises(InvalidInput, match="changed while mlserve was reading it") as caught:
        _ship_after(bundle, how, dest, tmp_path)
    assert caught.value.where == "sub/data.txt"
    assert how != "copy" or not dest.exists(), "a half-written release was left behind"
    for path in dest.rglob("*") if dest.exists() else []:
        if path.is_file():
            assert OUTSIDE_SECRET not in path.read_bytes()


def test_the_cloud_init_tarball_refuses_a_file_changed_after_collect(tmp_path, capsys):
    """The tarball streams each member through the checked reader: a changed file stops the
    build (the walk in ``collect`` and the copy in the tarball are separate reads)."""
    from mlserve.manifest import load_project
    from mlserve.packaging import BuildContext
    from mlserve.packaging.cloudinit import bundle_tarball
    from mlserve.packaging.context import Spec
    w = _world(tmp_path)
    (w.root / "data.txt").write_bytes(b"first\n")
    project = load_project(w.root / "mlserve.yaml")
    name, target = project.target(None)
    spec = Spec(project, name, target, collect(w.root))
    (w.root / "data.txt").write_bytes(b"other\n")
    ctx = BuildContext()
    with pytest.raises(InvalidInput, match="changed while mlserve was reading it"):
        bundle_tarball(spec, ctx.scratch("b.tar.gz"))


# --- modes and release ids ---------------------------------------------------------------------

@pytest.mark.parametrize("mode,same_id_as_0644", [(0o644, True), (0o664, True), (0o666, True),
                                                   (0o600, False), (0o640, False), (0o444, False)])
def test_release_id_follows_the_mode_that_ships(tmp_path, mode, same_id_as_0644):
    """Modes wider than 0644 ship as 0644 (umask 002 and 022 give one id); a narrower mode ships
    as it is, so it is part of the release."""
    def release(m: int) -> str:
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        (root / "model.py").write_text("x = 1\n")
        (root / "model.py").chmod(m)
        return collect(root).content_hash
    assert (release(mode) == release(0o644)) == same_id_as_0644


# --- /proc/self/environ with a secret in the environment, and a real local deploy --------------

def test_a_link_to_proc_self_environ_never_ships_the_environment(tmp_path):
    """In a child process whose environment holds a secret (what users run): refused while the
    link is there; left out with a warning once .mlserveignore names it."""
    w = _world(tmp_path)
    (w.root / "environ").symlink_to("/proc/self/environ")
    manifest, env = str(w.root / "mlserve.yaml"), {ENV_SECRET_NAME: ENV_SECRET}
    out = tmp_path / "out"
    done = run_process("build", "-f", manifest, "--format", "docker", "-o", str(out), env=env)
    _assert_refused(done.code, done.err, ["environ"], "leaves the project")
    assert ENV_SECRET not in done.out + done.err and not out.exists()
    (w.root / ".mlserveignore").write_text("/environ\n")
    done = run_process("build", "-f", manifest, "--format", "cloud-init", "-o", str(out), env=env)
    assert done.code == 0, done.err
    assert "environ: left out a symlink to /proc/self/environ" in done.err
    _check_output(out, "cloud-init", w.root, [".mlserveignore"])


@pytest.mark.slow
def test_local_deploy_ships_only_the_project_with_its_modes(tmp_path):
    from tests.infra.net import free_port
    w = _world(tmp_path)
    manifest = w.root / "mlserve.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc["targets"] = {"local": {"provider": "local", "port": free_port()}}
    manifest.write_text(yaml.safe_dump(doc))
    args = ["-f", str(manifest), "--state", str(tmp_path / "state")]
    (w.root / "leak").symlink_to(w.outside / "shadow")
    done = run_process("deploy", *args)
    _assert_refused(done.code, done.err, ["leak"], "leaves the project")
    assert not (tmp_path / "state" / "local" / "local" / "releases").exists()

    (w.root / ".mlserveignore").write_text("/leak\n")
    (w.root / "private.txt").write_text("mine\n")
    (w.root / "private.txt").chmod(0o600)
    (w.root / "tool.sh").write_text("#!/bin/sh\n")
    (w.root / "tool.sh").chmod(0o700)
    done = run_process("deploy", *args, env={ENV_SECRET_NAME: ENV_SECRET})
    try:
        assert done.code == 0, done.err
        assert "leak: left out a symlink" in done.err
        apps = list((tmp_path / "state" / "local" / "local" / "releases").glob("*/app"))
        assert len(apps) == 1
        _check_output(apps[0], "copy", w.root, ["private.txt", "tool.sh", ".mlserveignore"])
        assert stat.S_IMODE((apps[0] / "private.txt").stat().st_mode) == 0o600
        assert stat.S_IMODE((apps[0] / "tool.sh").stat().st_mode) == 0o700
    finally:
        run_process("delete", *args, "--yes")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o700, 0o755, 0o400])
def test_a_file_others_cannot_read_is_named_where_a_service_user_runs_it(tmp_path, capsys, fmt,
                                                                         mode):
    """Docker images and VMs run the model as a service user that does not own the files:
    mlserve keeps the narrow mode and says so; Cog and Truss run as root."""
    w = _world(tmp_path)
    (w.root / "weights.bin").write_bytes(b"w")
    (w.root / "weights.bin").chmod(mode)
    done = run_cli(capsys, "build", "-f", str(w.root / "mlserve.yaml"), "--format", fmt,
                   "-o", str(tmp_path / "o"))
    assert done.code == 0, done.err
    warned = f"cannot read weights.bin ({mode:04o})" in done.err
    assert warned == (fmt in ("docker", "cloud-init") and not mode & 0o004), done.err
    _check_output(tmp_path / "o", fmt, w.root, ["weights.bin"])


def _without_root_reads() -> list[str]:
    """A prefix that runs a command as this user but unable to bypass file modes: as root,
    without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (a 0000 file is then unreadable to root
    as well); as another user, nothing."""
    if not ROOT:
        return []
    from tests.infra.policy import require_tool
    setpriv = require_tool("setpriv", "setpriv", "util-linux")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


UNREADABLE = {"f0000.bin": ("file", 0o000), "f0200.bin": ("file", 0o200),
              "d0000": ("dir", 0o000), "d0600": ("dir", 0o600), "d0300": ("dir", 0o300)}


def test_what_cannot_be_read_is_named_all_at_once(tmp_path):
    """Unreadable files and directories, for real (root's bypass dropped): one exit 2 that names
    each of them; ignored, they are never opened and the build succeeds."""
    w = _world(tmp_path)
    for name, (kind, mode) in UNREADABLE.items():
        path = w.root / "locked" / name
        path.parent.mkdir(exist_ok=True)
        if kind == "dir":
            path.mkdir()
            (path / "inner.txt").write_text("x\n")
        else:
            path.write_text("x\n")
        path.chmod(mode)
    tmp_path.chmod(0o755)
    args = [*_without_root_reads(), *MLSERVE, "build", "-f", str(w.root / "mlserve.yaml"),
            "--format", "cog", "-o", str(tmp_path / "o")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    named = [line for line in done.stderr.splitlines() if "Permission denied" in line]
    for name, (kind, mode) in UNREADABLE.items():
        where = f"locked/{name}" + ("/inner.txt" if kind == "dir" and mode & 0o400 else "")
        assert any(where in line for line in named), (where, done.stderr)
    (w.root / ".mlserveignore").write_text("/locked/\n")
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("provider", ["local", "ssh"])
def test_deploy_refuses_before_anything_is_started_or_sent(tmp_path, capsys, provider):
    """`mlserve deploy` collects the bundle before it starts a process (local) or connects to a
    host (ssh; 203.0.113.7 is TEST-NET and never answers)."""
    w = _world(tmp_path)
    manifest = w.root / "mlserve.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc["targets"] = {"t": {"provider": "local", "port": 8480} if provider == "local" else
                      {"provider": "ssh", "hosts": ["mlserve@203.0.113.7"]}}
    manifest.write_text(yaml.safe_dump(doc))
    (w.root / "keys").symlink_to(w.outside / "dir")
    done = run_cli(capsys, "deploy", "t", "-f", str(manifest), "--state", str(tmp_path / "s"))
    _assert_refused(done.code, done.err, ["keys"], "leaves the project")
    assert not list((tmp_path / "s").rglob("releases"))


@pytest.mark.parametrize("name", ["out [1]", "st*", "#x", "!y", "a?b", "back\\slash"])
def test_state_and_output_directories_with_glob_characters_stay_out(tmp_path, capsys, name):
    """The build output (``-o`` inside the project) and the state directory are left out of the
    bundle by an escaped pattern: a ``[`` or ``*`` in their names neither misses them nor
    catches other files."""
    w = _world(tmp_path)
    (w.root / "st1").mkdir()
    (w.root / "st1" / "keep.txt").write_text("ships\n")
    state = w.root / name / "state"
    out = w.root / name / "build"
    done = run_cli(capsys, "build", "-f", str(w.root / "mlserve.yaml"), "--format", "cog",
                   "-o", str(out))
    assert done.code == 0, done.err
    again = run_cli(capsys, "build", "-f", str(w.root / "mlserve.yaml"), "--format", "cog",
                    "-o", str(out))
    assert again.code == 0, again.err
    assert not (out / "app" / name).exists(), "the build output shipped inside itself"
    assert (out / "app" / "st1" / "keep.txt").exists()
    from mlserve.bundle import state_ignores
    state.mkdir(parents=True)
    (state / "state.db").write_bytes(b"journal")
    shipped = {f.path for f in collect(w.root, extra_ignores=state_ignores(w.root, state)).files}
    assert not any(p.startswith(f"{name}/state/") for p in shipped)
    assert f"{name}/build/.mlserve-build" in shipped    # only the state directory is left out


@settings(max_examples=60)
@given(raw=st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")))
def test_any_file_name_ships_exactly_or_is_refused_by_name(tmp_path_factory, raw):
    """Any bytes as a file name: a UTF-8 name without control characters or line breaks ships
    under that exact name (local copy and the cloud-init tarball); any other is exit 2 naming it,
    escaped."""
    import unicodedata

    import pathspec

    from mlserve.bundle import BUILTIN_IGNORES
    from mlserve.packaging import build
    base = tmp_path_factory.mktemp("name")
    w = _world(base)
    name = os.fsdecode(raw)
    (w.root / name).write_bytes(b"named\n")
    if pathspec.GitIgnoreSpec.from_lines(BUILTIN_IGNORES).match_file(name):
        return                                 # left out by the built-in rules, never looked at
    try:
        text = raw.decode("utf-8")
        ok = not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in text)
    except UnicodeDecodeError:
        ok = False
    code, err = _copy(w.root, base / "release")
    if not ok:
        _assert_refused(code, err, [name], "name")
        return
    assert code == 0, err
    assert (base / "release" / name).read_bytes() == b"named\n"
    build(w.root / "mlserve.yaml", None, "cloud-init", base / "ci")
    _check_output(base / "ci", "cloud-init", w.root, [name])
