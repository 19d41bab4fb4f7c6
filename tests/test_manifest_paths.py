"""Every file the manifest names stays inside the project, checked by `validate` (so every command).

model.entrypoint's file, model.requirements (a file name, or list entries), and every local
file or directory a requirements file names (-r, -c, -e, ./pkg, file: URLs, --find-links):
absolute, `..`, links that leave the project, /proc, /dev, FIFOs, directories and names too long
for the file system are each a located error with the fix, exit 2; files inside pass.
Also: the manifest is found in parent directories, like git.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import run_cli
from tests.test_hostile_manifest import assert_refused
from tests.test_manifest_errors import GOOD, MODEL


def _project(root: Path) -> Path:
    """A project with a model, requirement files, a package directory and links in and out."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(MODEL)
    (root / "sub").mkdir()
    (root / "sub" / "model.py").write_text(MODEL)
    (root / "requirements.txt").write_text("numpy\n")
    (root / "sub" / "base.txt").write_text("# base\nrequests\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "setup.py").write_text("")
    (root / "wheel-1.0-py3-none-any.whl").write_text("")
    (root / "link_in.py").symlink_to("model.py")
    (root / "link_out.py").symlink_to("/etc/passwd")
    (root / "environ.txt").symlink_to("/proc/self/environ")
    (root / "etc").symlink_to("/etc")
    (root / "dangling.txt").symlink_to("nowhere.txt")
    (root / "loop.txt").symlink_to("loop.txt")
    os.mkfifo(root / "fifo.txt")
    return root


def _manifest(entrypoint: str = "model.py:Model", requirements: str | None = None) -> str:
    text = GOOD.replace("model.py:Model", entrypoint)
    if requirements is not None:
        text = text.replace("  entrypoint:", f"  requirements: {requirements}\n  entrypoint:", 1)
    return text


def _validate(capsys, root: Path, text: str, *extra: str):
    (root / "mlserve.yaml").write_text(text)
    return run_cli(capsys, "validate", "-f", str(root / "mlserve.yaml"), *extra)


LONG = "a" * 5000

# (case, file name, fragments of the error; None = accepted)
FILES = [
    ("plain file", "model.py", None),
    ("file in a subdirectory", "sub/model.py", None),
    ("link inside the project", "link_in.py", None),
    ("dot segment", "./model.py", None),
    ("absolute", "/etc/passwd", ["is an absolute path"]),
    ("absolute /proc", "/proc/self/environ", ["is an absolute path"]),
    ("absolute /dev", "/dev/zero", ["is an absolute path"]),
    ("home", "~/x.py", ["is an absolute path"]),
    ("parent", "../model.py", ["goes up out of the project"]),
    ("deep parent", "../../../etc/passwd", ["goes up out of the project"]),
    ("parent in the middle", "sub/../../x", ["goes up out of the project"]),
    ("dot then parent", "./../model.py", ["goes up out of the project"]),
    ("link to /etc/passwd", "link_out.py", ["leads outside the project (to /etc/passwd)"]),
    ("link to /proc", "environ.txt", ["leads outside the project"]),
    ("through a directory link", "etc/passwd", ["leads outside the project"]),
    ("dangling link", "dangling.txt", ["does not exist"]),
    ("link loop", "loop.txt", ["loop of symbolic links"]),
    ("FIFO", "fifo.txt", ["is a FIFO"]),
    ("directory", "sub", ["is a directory"]),
    ("missing", "nope.txt", ["does not exist"]),
    ("5,000-character name", LONG + ".py", ["longer than the file system allows", "(5,003 characters)"]),
    ("256-byte component", "b" * 256, ["longer than the file system allows"]),
    ("path over 4096 bytes", "/".join(["c" * 200] * 21), ["longer than the file system allows"]),
    ("file under a file", "model.py/x", ["does not exist"]),
    ("NUL in the name", "a\x00", ["contains a NUL character"]),
]


@pytest.mark.parametrize("case, name, fragments", FILES, ids=[f[0] for f in FILES])
def test_requirements_file(tmp_path, capsys, case, name, fragments):
    root = _project(tmp_path / "p")
    result = _validate(capsys, root, _manifest(requirements=json.dumps(name)))
    if fragments is None:
        assert result.code == 0, result.err
        return
    assert_refused(result, fragments=("mlserve.yaml:3:17", "model.requirements", *fragments))


ENTRIES = [
    ("plain file", "model.py", None),
    ("file in a subdirectory", "sub/model.py", None),
    ("link inside the project", "link_in.py", None),
    ("dot segment", "./model.py", None),
    ("absolute", "/etc/x.py", ["is an absolute path"]),
    ("absolute /proc", "/proc/self/x.py", ["is an absolute path"]),
    ("home", "~/x.py", ["is an absolute path"]),
    ("parent", "../model.py", ["goes up out of the project"]),
    ("parent in the middle", "sub/../../model.py", ["goes up out of the project"]),
    ("link out", "link_out.py", ["leads outside the project (to /etc/passwd)"]),
    ("link to /proc", "environ.py", ["leads outside the project"]),
    ("through a directory link", "out_dir/model.py", ["leads outside the project"]),
    ("dangling link", "dangling.py", ["does not exist"]),
    ("link loop", "loop.py", ["loop of symbolic links"]),
    ("FIFO", "fifo.py", ["is a FIFO"]),
    ("directory", "pkgdir.py", ["is a directory"]),
    ("missing", "nope.py", ["does not exist"]),
    ("NUL in the name", "a\x00.py", ["contains a NUL character"]),
    ("5,000-character name", LONG + ".py", ["longer than the file system allows",
                                            "(5,003 characters)"]),
    ("256-byte component", "b" * 253 + ".py", ["longer than the file system allows"]),
    ("ESC in the name", "\x1b[2J.py", ["'\\x1b[2J.py' does not exist"]),
]


@pytest.mark.parametrize("case, name, fragments", ENTRIES, ids=[f[0] for f in ENTRIES])
def test_entrypoint_file(tmp_path, capsys, case, name, fragments):
    root = _project(tmp_path / "p")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "model.py").write_text(MODEL)
    (root / "out_dir").symlink_to(tmp_path / "outside")
    (root / "environ.py").symlink_to("/proc/self/environ")
    (root / "dangling.py").symlink_to("nowhere.py")
    (root / "loop.py").symlink_to("loop.py")
    os.mkfifo(root / "fifo.py")
    (root / "pkgdir.py").mkdir()
    result = _validate(capsys, root, _manifest(entrypoint=json.dumps(name + ":Model")), "--json")
    if fragments is None:
        assert result.code == 0, result.err
        return
    assert_refused(result, json_mode=True, fragments=("mlserve.yaml:3:15", "model.entrypoint",
                                                      *fragments))


# (case, requirement lines of requirements.txt, fragments; None = accepted)
LINES = [
    ("names and versions", ["numpy>=1.0", "requests[socks]==2.0 ; python_version > '3'"], None),
    ("include inside", ["-r sub/base.txt"], None),
    ("include spelled long", ["--requirement=sub/base.txt"], None),
    ("local package inside", ["./pkg", "-e ./pkg", "-e pkg/", "-e .[dev]", "./pkg[a,b]"], None),
    ("hashes and markers", ["numpy==1.0 --hash=sha256:abc --hash sha256:def",
                            "x; sys_platform == 'linux'"], None),
    ("local wheel inside", ["./wheel-1.0-py3-none-any.whl"], None),
    ("remote URLs", ["pkg @ https://example.com/p.whl", "git+https://example.com/r.git",
                     "-r https://example.com/r.txt", "--index-url https://example.com/simple"],
     None),
    ("comment mentioning a path", ["numpy  # see /etc/passwd"], None),
    ("include cycle", ["-r requirements.txt"], None),
    ("include absolute", ["-r /etc/shadow"], ["requirements.txt line 1", "'--requirement /etc/shadow' is an absolute path"]),
    ("include attached", ["-r/etc/shadow"], ["is an absolute path"]),
    ("include long form", ["--requirement=/etc/passwd"], ["is an absolute path"]),
    ("include long form with space", ["--requirement /proc/self/environ"], ["is an absolute path"]),
    ("constraint absolute", ["-c /etc/passwd"], ["'--constraint /etc/passwd' is an absolute path"]),
    ("include parent", ["-r ../../etc/passwd"], ["goes up out of the project"]),
    ("include link out", ["-r link_out.py"], ["leads outside the project"]),
    ("include /proc link", ["-r environ.txt"], ["leads outside the project"]),
    ("include FIFO", ["-r fifo.txt"], ["is a FIFO"]),
    ("include missing", ["-r nope.txt"], ["does not exist"]),
    ("include file URL", ["-r file:///etc/passwd"], ["is an absolute path"]),
    ("include env var", ["-r ${HOME}/.netrc"], ["uses an environment variable"]),
    ("editable absolute", ["-e /opt/pkg"], ["'--editable /opt/pkg' is an absolute path"]),
    ("editable parent", ["-e ../pkg"], ["goes up out of the project"]),
    ("editable link out", ["--editable=etc"], ["leads outside the project"]),
    ("local path parent", ["../pkg"], ["goes up out of the project"]),
    ("local path missing", ["./nothing"], ["does not exist"]),
    ("file URL", ["file:///etc/passwd"], ["is an absolute path"]),
    ("named file URL", ["x @ file:///etc/passwd"], ["is an absolute path"]),
    ("file URL on localhost", ["file://localhost/etc/passwd"], ["is an absolute path"]),
    ("find-links absolute", ["--find-links /tmp", "-f /var/cache"], ["is an absolute path"]),
    ("index file URL", ["--index-url file:///srv/index"], ["is an absolute path"]),
    ("extra index file URL", ["--extra-index-url=file:///srv/index"], ["is an absolute path"]),
    ("absolute wheel", ["/tmp/x-1.0-py3-none-any.whl"], ["is an absolute path"]),
    ("hostile path", ["-r \x1b[2J\u202e.txt"], ["\\x1b[2J\\u202e.txt"]),
    ("long path", ["-r " + LONG], ["longer than the file system allows"]),
]


@pytest.mark.parametrize("case, lines, fragments", LINES, ids=[c[0] for c in LINES])
def test_files_a_requirements_file_names(tmp_path, capsys, case, lines, fragments):
    root = _project(tmp_path / "p")
    (root / "requirements.txt").write_text("".join(line + "\n" for line in lines))
    result = _validate(capsys, root, _manifest(requirements="requirements.txt"))
    if fragments is None:
        assert result.code == 0, result.err
        return
    assert_refused(result, fragments=("model.requirements", *fragments))


@pytest.mark.parametrize("case, lines, fragments", LINES, ids=[c[0] for c in LINES])
def test_files_a_requirements_list_names(tmp_path, capsys, case, lines, fragments):
    root = _project(tmp_path / "p")
    result = _validate(capsys, root, _manifest(requirements=json.dumps(lines)))
    if fragments is None:
        assert result.code == 0, result.err
        return
    fragments = [f for f in fragments if "line 1" not in f]
    assert_refused(result, fragments=("model.requirements: item", *fragments))


def test_nested_include_that_leaves_is_named_with_its_file_and_line(tmp_path, capsys):
    root = _project(tmp_path / "p")
    (root / "requirements.txt").write_text("numpy\n-r sub/base.txt\n")
    (root / "sub" / "base.txt").write_text("requests\n-r ../sub/more.txt\n")
    (root / "sub" / "more.txt").write_text("# last\n\n-e ../../outside\n")
    result = _validate(capsys, root, _manifest(requirements="requirements.txt"))
    assert_refused(result, fragments=("sub/more.txt line 3", "goes up out of the project"))


def test_huge_requirements_file_is_refused(tmp_path, capsys):
    root = _project(tmp_path / "p")
    (root / "requirements.txt").write_text("numpy\n" * 300_000)
    result = _validate(capsys, root, _manifest(requirements="requirements.txt"))
    assert_refused(result, fragments=("larger than 1024 KiB",))


# --- generated paths: accepted only when the file really is a regular file inside ------------------

SEGMENTS = ["..", ".", "model.py", "sub", "base.txt", "link_in.py", "link_out.py", "environ.txt",
            "etc", "passwd", "fifo.txt", "loop.txt", "dangling.txt", "pkg", "", "~", "/",
            "requirements.txt", "x" * 300, "\x1b", "\u202e"]


def _inside_and_regular(root: Path, name: str) -> bool:
    """The independent oracle: a relative name without '..' whose real file is inside."""
    if not name or name.startswith(("/", "~")) or ".." in name.split("/") or "\0" in name:
        return False
    try:
        real = Path(os.path.realpath(root / name, strict=True))
        return real.is_file() and real.is_relative_to(os.path.realpath(root))
    except OSError:
        return False


@pytest.fixture(scope="module")
def generated_project(tmp_path_factory):
    return _project(tmp_path_factory.mktemp("paths") / "p")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=150)
@given(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
def test_generated_requirement_paths(capsys, generated_project, segments):
    name = "/".join(segments)
    result = _validate(capsys, generated_project, _manifest(requirements=json.dumps(name)))
    if _inside_and_regular(generated_project, name):
        assert result.code == 0, (name, result.err)
    else:
        assert_refused(result, fragments=("model.requirements",))


# --- finding the manifest in parent directories ----------------------------------------------------

def test_manifest_found_in_a_parent_directory(tmp_path, capsys, monkeypatch):
    root = _project(tmp_path / "p")
    (root / "mlserve.yaml").write_text(_manifest())
    deep = root / "sub" / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    result = run_cli(capsys, "validate")
    assert result.code == 0, result.err
    assert "../../../mlserve.yaml" in result.err + result.out
    (root / "mlserve.yaml").write_text(_manifest().replace("name: hello", "name: Hello"))
    result = run_cli(capsys, "validate")
    assert_refused(result, fragments=("../../../mlserve.yaml:1:7",))


def test_the_nearest_manifest_wins_and_f_wins_over_both(tmp_path, capsys, monkeypatch):
    root = _project(tmp_path / "p")
    (root / "mlserve.yaml").write_text(_manifest())
    (root / "sub" / "mlserve.yaml").write_text(_manifest().replace("hello", "nearer"))
    other = _project(tmp_path / "q")
    (other / "mlserve.yaml").write_text(_manifest().replace("hello", "other"))
    (root / "sub" / "deeper").mkdir()
    monkeypatch.chdir(root / "sub" / "deeper")
    assert json.loads(run_cli(capsys, "validate", "--json").out)["name"] == "nearer"
    result = run_cli(capsys, "validate", "--json", "-f", str(other))
    assert json.loads(result.out)["name"] == "other"


def test_no_manifest_up_to_the_root(tmp_path, capsys, monkeypatch):
    if any(os.path.lexists(p / "mlserve.yaml") for p in tmp_path.parents):
        pytest.skip("a directory above the test's holds an mlserve.yaml")
    monkeypatch.chdir(tmp_path)
    result = run_cli(capsys, "validate", "--json")
    assert_refused(result, json_mode=True, fragments=("no mlserve.yaml in", "or any directory above it",
                                                      "mlserve init"))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a file to another user")
def test_a_strangers_manifest_above_is_not_used(tmp_path, capsys, monkeypatch):
    root = _project(tmp_path / "p")
    (root / "mlserve.yaml").write_text(_manifest())
    os.chown(root / "mlserve.yaml", 12345, 12345)
    monkeypatch.chdir(root / "sub")
    assert_refused(run_cli(capsys, "validate"), fragments=("belongs to another user", "-f"))
    monkeypatch.chdir(root)            # in the directory itself, it is the user's choice
    assert run_cli(capsys, "validate").code == 0


def test_the_venv_key_follows_what_an_included_requirements_file_says(tmp_path):
    """A venv is reused while its requirement lines are unchanged: a ``-r`` include's lines count,
    so editing only the included file gives a new venv (it once kept the stale one)."""
    from mlserve.reqsets import requirement_lines, venv_key
    (tmp_path / "reqs").mkdir()
    (tmp_path / "requirements.txt").write_text("-r reqs/base.txt  # shared pins\nsix\n")
    (tmp_path / "reqs" / "base.txt").write_text("--requirement more.txt\nattrs==23.1\n")
    (tmp_path / "reqs" / "more.txt").write_text("# nothing but a comment\n-r base.txt\nidna\n")
    first = requirement_lines(tmp_path, "requirements.txt")
    assert first == ["idna", "attrs==23.1", "six"]          # each file once, in pip's order
    (tmp_path / "reqs" / "base.txt").write_text("--requirement more.txt\nattrs==23.2\n")
    second = requirement_lines(tmp_path, "requirements.txt")
    assert second == ["idna", "attrs==23.2", "six"]
    assert venv_key(first) != venv_key(second)
    # A list in the manifest is taken as written.
    assert requirement_lines(tmp_path, ["-r requirements.txt"]) == ["-r requirements.txt"]
