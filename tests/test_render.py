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
from mlserve.render import dockerfile_quote, environment, py_literal, shell_quote, yaml_block, yaml_quote
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
    with pytest.raises(TypeError):
        py_literal({"k": object()})


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
