"""The quoting filters of mlserve.render, each checked by the language's own reader: PyYAML,
bash, Python's ast. (Dockerfile quoting is read back by the real Docker engine in
tests/test_package_docker.py.)"""

from __future__ import annotations

import ast
import subprocess

import jinja2
import pytest
import yaml

from mlserve.errors import InvalidInput
from mlserve.render import (
    dockerfile_quote, environment, py_literal, py_verbatim, shell_quote, verbatim_str, yaml_block,
    yaml_quote,
)
from mlserve.resources import templates_dir
from tests.test_package_support import HOSTILE, NEWLINES

VALUES = {**HOSTILE, **NEWLINES, "CONTROL": "nul-less \x01\x1b[31m\x7f\x9f end",
          "ASTRAL": "\U0001f600\U00010000", "PRIVATE": "\ue000\uffff?"}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_yaml_quote_reads_back_exactly(name):
    value = VALUES[name]
    doc = yaml.safe_load(f"key: {yaml_quote(value)}\nafter: 1\n")
    assert doc == {"key": value, "after": 1}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_yaml_block_reads_back_exactly(name):
    text = VALUES[name] + "\n"
    doc = yaml.safe_load(f"outer:\n  key: {yaml_block(text, 4)}\n  after: 1\n")
    assert doc == {"outer": {"key": text, "after": 1}}


def test_yaml_block_is_a_literal_block_for_plain_scripts():
    script = "#!/bin/bash\nset -e\necho 'hi' \"$x\"  # comment\n\n  indented\n"
    rendered = yaml_block(script, 2)
    assert rendered.startswith("|\n")
    assert yaml.safe_load(f"k: {rendered}\n") == {"k": script}


@pytest.mark.parametrize("name", sorted(VALUES))
def test_shell_quote_is_one_word_with_the_exact_value(name, tmp_path):
    value = VALUES[name]
    script = f"set -eu\nv={shell_quote(value)}\nprintf %s \"$v\"\nprintf '\\0%s' {shell_quote(value)} x\n"
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True, cwd=tmp_path).stdout
    assert out.decode() == value + "\0" + value + "\0x"
    assert not list(tmp_path.iterdir()) and not __import__("os").path.exists("/tmp/mlserve-pwned")


@pytest.mark.parametrize("name", sorted(VALUES))
def test_py_literal_reads_back_exactly(name):
    value = {"k": VALUES[name], "list": [VALUES[name], 1, 2.5, None, True]}
    assert ast.literal_eval(py_literal(value)) == value


def test_py_literal_refuses_objects_without_a_literal():
    for value in ({"k": object()}, float("inf"), [float("nan")]):
        for quote in (py_literal, py_verbatim):
            with pytest.raises(TypeError):
                quote(value)


def _quotes_stripped(literal: str) -> str:
    """A string literal read the way Cog's static schema generator reads one (cog
    pkg/schema/python/literals.go, parseStringLiteral): its quotes cut off, nothing unescaped."""
    if literal.startswith(("'''", '"""')):
        return literal[3:-3]
    return literal[2:-1] if literal.startswith(("r'", 'r"')) else literal[1:-1]


VERBATIM = {**VALUES, "BOTH_QUOTES_MULTILINE": "it's \"x\"\nand `y` héllo ✓ 🚀",
            "ENDS_IN_QUOTE": "say \"hi\"\nnow 'x'", "WINDOWS": "C:\\models\\*.bin",
            "NEWLINES_ONLY": "\n\n", "TABS": "a\tb"}


@pytest.mark.parametrize("name", sorted(VERBATIM))
def test_py_verbatim_reads_back_exactly_and_without_escapes_where_it_can(name):
    value = VERBATIM[name]
    assert ast.literal_eval(py_verbatim(value)) == value
    assert ast.literal_eval(py_verbatim({value: [value, 1]})) == {value: [value, 1]}
    literal = verbatim_str(value)
    if literal is None:    # only escape sequences can write it: Python's own repr does
        assert py_verbatim(value) == repr(value)
    else:
        assert ast.literal_eval(literal) == value and _quotes_stripped(literal) == value


def test_verbatim_str_picks_the_plainest_form():
    assert verbatim_str("it's") == '"it\'s"'
    assert verbatim_str('say "hi"') == "'say \"hi\"'"
    assert verbatim_str("C:\\x") == "r'C:\\x'"
    assert verbatim_str("a\nb") == "'''a\nb'''"
    assert verbatim_str("a\r\nb") is None and verbatim_str("a\\\nb") is None


def test_dockerfile_quote_escapes_expansion_and_refuses_line_breaks():
    assert dockerfile_quote("it's a\"b\\c$HOME") == "'it'\\''s a\"b\\c$HOME'"
    for bad in ("a\nb", "a\rb"):
        with pytest.raises(InvalidInput, match="Dockerfile"):
            dockerfile_quote(bad)


def test_filters_refuse_structures_where_a_string_is_expected():
    for quote in (shell_quote, yaml_quote, dockerfile_quote):
        with pytest.raises(TypeError):
            quote(["a"])


def test_environment_is_strict_about_undefined_variables():
    env = environment(templates_dir() / "docker")
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    assert env.from_string("{{ v | shell }}").render(v="a b") == "'a b'"
