"""Read the manifest's YAML safely, keeping where every key and value stands (file:line:column).

Contract: ``find_manifest(file)`` is the manifest to read (``-f``, or like git the nearest
mlserve.yaml here or above, if the user owns it); ``read_located(path)`` /
``load_located(text, file)`` return ``Located`` data or raise
``ManifestError`` (exit 2) located at the offending line, for every input: nothing here lets a
YAML or OS exception through. Limits (documented in README.md):

- the manifest is a regular file (not a FIFO, device or directory) of at most ``MAX_BYTES``
  (1 MiB), UTF-8 (a leading BOM is ignored); it is opened non-blocking and read up to the cap;
- collections nest at most ``MAX_DEPTH`` (100) levels;
- aliases may add at most ``MAX_ALIAS_NODES`` (10,000) values beyond those written: an alias
  bomb ("billion laughs", or merge keys of merge keys) is measured in one pass linear in the
  file and refused before anything is expanded; a recursive alias (``&a [*a]``) is refused;
- plain YAML only: strings, numbers, booleans, null, lists and mappings (YAML 1.1 merge keys
  ``<<: *defaults`` included; explicit keys win over merged ones). Any other tag (``!!python/..``,
  ``!!binary``, ``!!set``, ``!custom``) is refused; timestamps stay the strings written;
- keys are the strings written (``on:`` is the key "on", ``1:`` the key "1"); a list or a
  mapping as a key (``? [a, b]``) is refused; a key appears once per mapping;
- one error lists at most ``MAX_PROBLEMS`` (50) problems (and counts them all).

PyYAML's composer gives each node a start mark; one walk indexes them by field path (a tuple of
keys and list indexes) while building the data, so no second parse is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .errors import InvalidInput, ManifestError
from .reqsets import FileProblem, read_small_file
from .strict import clean, shown

MANIFEST_NAME = "mlserve.yaml"
MAX_BYTES = 1024 * 1024
MAX_DEPTH = 100
MAX_ALIAS_NODES = 10_000
MAX_PROBLEMS = 50          # problems listed in one error (all are counted)

Path_ = tuple  # a field path: ("targets", "local", "port") or ("smoke", 0, "input")

_TAG = "tag:yaml.org,2002:"
_KEY_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp", "merge")}
_MERGE = f"{_TAG}merge"
_AS_WRITTEN = {f"{_TAG}str", f"{_TAG}timestamp"}      # YAML 1.1 dates stay the text written
_CONSTRUCT = {f"{_TAG}{t}": getattr(SafeConstructor, f"construct_yaml_{t}")
              for t in ("int", "float", "bool", "null")}


@dataclass
class Located:
    """Parsed YAML data plus the (line, column) of each path, 1-based."""

    data: Any
    file: str
    key_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    value_marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_, *, key: bool = False) -> str:
        """``file:line:col`` of the deepest known prefix of ``path``."""
        marks = self.key_marks if key else self.value_marks
        p = tuple(path)
        while p:
            if p in marks:
                line, col = marks[p]
                return f"{self.file}:{line}:{col}"
            if not key and p in self.key_marks:
                line, col = self.key_marks[p]
                return f"{self.file}:{line}:{col}"
            p = p[:-1]
        return f"{self.file}:1:1"


def invalid(file: str, problems: list[str], fix: str | None = None) -> ManifestError:
    """The error for a manifest with ``problems``: all counted, the first ``MAX_PROBLEMS`` listed."""
    count = len(problems)
    shown_problems = problems[:MAX_PROBLEMS]
    if count > MAX_PROBLEMS:
        shown_problems.append(f"... and {count - MAX_PROBLEMS:,} more")
    return ManifestError(f"{file} is invalid ({count:,} problem{'s' if count != 1 else ''})",
                         problems=shown_problems, fix=fix)


def _loader_class():
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _fail(file: str, mark: tuple[int, int] | None, what: str, fix: str) -> ManifestError:
    where = f"{file}:{mark[0]}:{mark[1]}" if mark else file
    return ManifestError(clean(what), where=clean(where), fix=fix)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def load_located(text: str, file: str) -> Located:
    """Parse ``text`` (named ``file`` in messages) into located data, or raise ManifestError."""
    text = text.removeprefix("\ufeff")
    file = clean(file)                  # it is only ever shown
    node = _compose(text, file)
    located = Located(data=None, file=file)
    if node is None:
        return located
    _check_graph(node, file)
    builder = _Builder(located)
    located.data = builder.build(node, ())
    if builder.problems:
        problems = list(dict.fromkeys(builder.problems))   # a merged anchor repeats its own
        raise invalid(file, problems, fix="write plain YAML: each key once per mapping, no tags")
    return located


def _compose(text: str, file: str) -> yaml.Node | None:
    loader = _loader_class()(text)
    try:
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        offset = exc.position
        if not isinstance(loader, yaml.SafeLoader):      # libyaml counts UTF-8 bytes
            offset = len(text.encode()[:offset].decode(errors="ignore"))
        raise _fail(file, _position(text, offset), f"not valid YAML: character "
                    f"{exc.character:#06x} is not allowed in YAML text",
                    "remove it; write control characters as escapes in a double-quoted "
                    "string (\"\\e\")") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(filter(None, [exc.context, exc.problem])) or "unreadable"
        if "nesting depth" in problem or "too deep" in problem:
            problem = f"nested too deeply (the limit is {MAX_DEPTH} levels)"
        raise _fail(file, (mark.line + 1, mark.column + 1) if mark else None,
                    f"not valid YAML: {problem}",
                    "check the indentation and quoting around that line") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise _fail(file, None, f"not valid YAML: {type(exc).__name__}",
                    f"check the file (nesting is limited to {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def _check_graph(root: yaml.Node, file: str) -> None:
    """Refuse deep nesting, recursive aliases and alias bombs.

    One post-order walk measures every collection once (its size with aliases expanded, and its
    height), so a bomb is measured, never expanded: the cost is linear in the file.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    written = 1                       # nodes as written: the root and every child occurrence
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if not isinstance(node, yaml.CollectionNode):
            continue
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair]
        if done:
            on_path.discard(key)
            nested = [id(c) for c in children if isinstance(c, yaml.CollectionNode)]
            size[key] = 1 + len(children) - len(nested) + sum(size[c] for c in nested)
            height[key] = 1 + max((height[c] for c in nested), default=0)
            if height[key] > MAX_DEPTH:
                raise _fail(file, _mark(node), f"nested more than {MAX_DEPTH} levels deep",
                            "flatten the structure")
            if size[key] > written + MAX_ALIAS_NODES:
                raise _bomb(file, node)
            continue
        if key in size:
            continue
        if key in on_path:
            raise _fail(file, _mark(node), "an alias refers to a collection that contains it "
                        "(a recursive alias)", "copy the values instead of the recursive alias")
        on_path.add(key)
        written += len(children)
        stack.append((node, True))
        stack.extend((child, False) for child in children if isinstance(child, yaml.CollectionNode))


def _bomb(file: str, node: yaml.Node) -> ManifestError:
    return _fail(file, _mark(node), f"aliases expand to more than {MAX_ALIAS_NODES:,} extra "
                 "values (an alias bomb?)", "write the values out, or use fewer aliases of "
                 "large collections")


class _Builder:
    """Build plain data from a checked node graph, recording marks and collecting problems."""

    def __init__(self, located: Located) -> None:
        self.located = located
        self.problems: list[str] = []
        self.constructor = SafeConstructor()

    def problem(self, node: yaml.Node, path: Path_, what: str, fix: str) -> None:
        line, col = _mark(node)
        dotted = ".".join(str(p) for p in path) or "(top level)"
        self.problems.append(clean(f"{self.located.file}:{line}:{col}: {dotted}: {what}. "
                                   f"Fix: {fix}"))

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.located.value_marks[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        expected = f"{_TAG}seq" if isinstance(node, yaml.SequenceNode) else f"{_TAG}map"
        if node.tag != expected:
            return self._bad_tag(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        return self._mapping(node, path)

    def _bad_tag(self, node: yaml.Node, path: Path_) -> None:
        tag = node.tag.replace(_TAG, "!!")
        self.problem(node, path, f"the YAML tag {shown(tag)} is not supported (the manifest is "
                     "plain YAML: strings, numbers, booleans, null, lists and mappings)",
                     "remove the tag")
        return None

    def _scalar(self, node: yaml.ScalarNode, path: Path_) -> Any:
        if node.tag in _AS_WRITTEN:
            return node.value
        construct = _CONSTRUCT.get(node.tag)
        if construct is None:
            return self._bad_tag(node, path)
        try:
            return construct(self.constructor, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            self.problem(node, path, f"{shown(node.value)} is not a number mlserve can use "
                         "(too many digits)", "write a smaller number, or quote it as text")
            return None

    def _pairs(self, node: yaml.MappingNode, path: Path_) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """(key, key node, value node): the mapping's own keys, then merged keys it does not set."""
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merge: yaml.Node | None = None
        merged: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
                self.problem(key_node, path, f"a key is {kind} (a YAML complex key `? ...`)",
                             "use a plain name as the key")
                continue
            key = key_node.value
            if key_node.tag not in _KEY_TAGS:
                self._bad_tag(key_node, (*path, key))
                continue
            first = merge if key_node.tag == _MERGE else own.get(key, (None,))[0]
            if first is not None:
                self.problem(key_node, (*path, key), f"duplicate key (first at line "
                             f"{_mark(first)[0]})", "keep one of them")
            elif key_node.tag == _MERGE:
                merge = key_node
                merged = self._merge_sources(value_node, path)
            else:
                own[key] = (key_node, value_node)
        pairs = [(key, k, v) for key, (k, v) in own.items()]
        for source in merged:
            for key, k, v in self._pairs(source, path):
                if key not in own:
                    own[key] = (k, v)
                    pairs.append((key, k, v))
        return pairs

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict:
        out = {}
        for key, key_node, value_node in self._pairs(node, path):
            self.located.key_marks[(*path, key)] = _mark(key_node)
            out[key] = self.build(value_node, (*path, key))
        return out

    def _merge_sources(self, value: yaml.Node, path: Path_) -> list[yaml.Node]:
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        if all(isinstance(s, yaml.MappingNode) for s in sources):
            return sources
        self.problem(value, (*path, "<<"), "a merge key `<<:` takes a mapping or a list of "
                     "mappings (usually an alias: `<<: *defaults`)", "merge a mapping, or "
                     "rename the key")
        return []


def read_located(path: Path, shown_as: str | None = None) -> Located:
    """Read and parse the manifest at ``path`` (named ``shown_as`` in messages)."""
    name = shown_as or str(path)
    try:
        data = read_small_file(path, MAX_BYTES)
    except FileProblem as exc:
        if exc.reason == "does not exist":
            raise ManifestError(f"no manifest at {clean(name)}", fix="run `mlserve init` to "
                                "create one, or pass the right file with -f") from None
        raise ManifestError(f"the manifest {clean(name)} {exc.reason}", fix=(
            f"keep the manifest a regular file of at most {MAX_BYTES // 1024} KiB"
            if "larger" in exc.reason or "regular" in exc.reason else exc.fix)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _fail(name, (line, col), f"not UTF-8 text (byte {data[exc.start]:#04x})",
                    "save the file as UTF-8") from None
    return load_located(text, name)


def find_manifest(file: str | Path | None) -> Path:
    """The manifest to use: ``-f FILE``, a directory's mlserve.yaml, or (like git) the nearest
    mlserve.yaml in the current directory or one above it, up to the file system's root.

    One found above the current directory must belong to the user running mlserve: on a shared
    machine a stranger's /tmp/mlserve.yaml is not picked up (git refuses such directories too).
    """
    try:
        cwd = Path.cwd()
    except FileNotFoundError:
        raise InvalidInput("the current directory no longer exists",
                           fix="cd to the project, or pass the manifest with -f") from None
    if file:
        path = cwd / file
        try:
            is_dir = path.is_dir()
        except (OSError, ValueError):       # a name too long: reading it says so
            is_dir = False
        return path / MANIFEST_NAME if is_dir else path
    for directory in (cwd, *cwd.parents):
        path = directory / MANIFEST_NAME
        try:
            owner = path.lstat().st_uid
        except OSError:                     # absent, or a directory we may not look into
            continue
        if directory != cwd and owner != os.getuid():
            raise ManifestError(f"{clean(str(path))} belongs to another user (uid {owner}); "
                                "mlserve does not use it without being told",
                                fix=f"pass it with -f {clean(str(path))} if you trust it, or "
                                "run `mlserve init` here")
        return path
    raise ManifestError(f"no {MANIFEST_NAME} in {clean(str(cwd))} or any directory above it",
                        fix="run `mlserve init` to create one, or pass the right file with -f")


def display_name(path: Path) -> str:
    """``path`` as messages name it: relative when it is in or above the current directory."""
    cwd = Path.cwd()
    if path.parent == cwd or path.parent in cwd.parents or cwd in path.parents:
        return os.path.relpath(path, cwd)
    return str(path)
