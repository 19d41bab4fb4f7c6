"""Read YAML keeping where every key and value stands, so errors can name file:line:column.

PyYAML's composer gives each node a start mark; we walk the node tree once and index the marks
by field path (a tuple of keys and list indexes). Duplicate keys, which PyYAML would silently
collapse to the last one, are reported as errors here: in a deployment manifest a silently dropped
key is a silently wrong deploy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError

Path_ = tuple  # a field path: ("targets", "local", "port") or ("smoke", 0, "input")


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


def _loader_class():
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_located(text: str, file: str) -> Located:
    """Parse ``text``; raise ManifestError (with position) on YAML syntax errors or duplicate keys."""
    try:
        node = yaml.compose(text, Loader=_loader_class())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = getattr(exc, "problem", None) or str(exc)
        raise ManifestError(f"not valid YAML: {problem}", where=where,
                            fix="check the indentation and quoting around that line") from None
    located = Located(data=None, file=file)
    if node is None:
        return located
    problems: list[str] = []
    _index(node, (), located, problems)
    if problems:
        raise ManifestError(f"{file} is invalid", problems=problems,
                            fix="each key may appear once per mapping")
    located.data = yaml.load(text, Loader=_loader_class())  # noqa: S506 - safe loader
    return located


def _index(node: yaml.Node, path: Path_, located: Located, problems: list[str]) -> None:
    located.value_marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                problems.append(f"{located.file}:{line}:{key_node.start_mark.column + 1}: {dotted}: "
                                f"duplicate key (first at line {seen[key]}). Fix: keep one of them.")
                continue
            seen[key] = line
            located.key_marks[(*path, key)] = (line, key_node.start_mark.column + 1)
            _index(value_node, (*path, key), located, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), located, problems)


def read_located(path: Path) -> Located:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}", fix="run `mlserve init` to create one, "
                            "or pass the right file with -f") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}", fix="check the file's permissions "
                            "and that it is UTF-8 text") from None
    return load_located(text, str(path))
