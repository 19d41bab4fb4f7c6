"""The typed Cog runner rendered from ``model.inputs``, read back with Python's ast: one typed
parameter per field with the manifest's values exactly, the payload rebuilt from them, and what
Cog 0.23 cannot take refused (with the field's line) or left out (with a warning).

Cog itself reads the same runner in tests/test_package_cog.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mlserve.errors import InvalidInput
from tests.test_package_cog import typed_project
from tests.test_package_support import HOSTILE, NEWLINES, build_to
from tests.test_render import _quotes_stripped

TEXT = "it's \"quoted\" `backticks` $(x)\nline two: héllo ✓ 🚀 中文\n"


def _render(tmp_path: Path, inputs: dict):
    manifest = typed_project(tmp_path / "p", inputs)
    result = build_to(manifest, "cog", tmp_path / "o")
    source = (tmp_path / "o" / "predict.py").read_text(encoding="utf-8")
    return source, result.warnings


def _run(source: str) -> ast.AsyncFunctionDef:
    runner = next(n for n in ast.parse(source).body if getattr(n, "name", "") == "Runner")
    return next(n for n in runner.body if getattr(n, "name", "") == "run")


def _parameters(source: str) -> dict[str, tuple[str, dict, dict]]:
    """name -> (annotation, Input keywords as values, the keywords' source text)."""
    run = _run(source)
    out = {}
    for arg, default in zip(run.args.args[1:], run.args.defaults):
        assert isinstance(default, ast.Call) and default.func.id == "Input" and not default.args
        out[arg.arg] = (ast.unparse(arg.annotation),
                        {k.arg: ast.literal_eval(k.value) for k in default.keywords},
                        {k.arg: ast.get_source_segment(source, k.value) for k in default.keywords})
    return out


def test_description_and_default_with_hostile_text_read_back_exactly(tmp_path):
    source, warnings = _render(tmp_path, {
        "x": {"type": "array", "items": "number"},
        "text": {"type": "string", "description": TEXT, "default": TEXT},
        "pick": {"type": "string", "description": TEXT, "choices": [TEXT, "plain"], "default": TEXT},
    })
    params = _parameters(source)
    assert params["text"][1] == {"default": TEXT, "description": TEXT}
    assert params["pick"][1] == {"default": TEXT, "description": TEXT, "choices": [TEXT, "plain"]}
    # Written without escapes: `cog build`'s static reader, which only strips quotes, agrees.
    for name in ("text", "pick"):
        for key in ("default", "description"):
            assert _quotes_stripped(params[name][2][key]) == TEXT
    assert warnings == []


@pytest.mark.parametrize("name", sorted({**HOSTILE, **NEWLINES}))
def test_every_hostile_description_reads_back_exactly(tmp_path, name):
    value = {**HOSTILE, **NEWLINES}[name]
    source, warnings = _render(tmp_path, {"x": {"type": "array", "items": "number",
                                                "description": value}})
    assert _parameters(source)["x"][1] == {"description": value}
    assert all("model.inputs.x.description" in w for w in warnings)


def test_one_typed_parameter_per_field_and_the_payload_rebuilt_in_manifest_order(tmp_path):
    source, warnings = _render(tmp_path, {
        "flag": {"type": "boolean", "default": False},
        "x": {"type": "array", "items": "number", "description": "Numbers"},
        "n": {"type": "integer", "default": 0, "ge": -1, "le": 5},
        "size": {"type": "string", "choices": ["s", "m"]},
        "t": {"type": "number", "default": 1, "ge": 0.5},
        "any_list": {"type": "array", "default": [1, "a", None]},
        "opts": {"type": "object", "default": {"k": [1, 2]}},
        "lambda_": {"type": "string"},
    })
    assert {n: p[:2] for n, p in _parameters(source).items()} == {
        "flag": ("bool", {"default": False}),
        "x": ("list[float]", {"description": "Numbers"}),
        "n": ("int", {"default": 0, "ge": -1, "le": 5}),
        "size": ("str", {"choices": ["s", "m"]}),
        "t": ("float", {"default": 1, "ge": 0.5}),
        "any_list": ("list[Any]", {"default": [1, "a", None]}),
        "opts": ("dict", {"default": {"k": [1, 2]}}),
        "lambda_": ("str", {}),
    }
    payload = _run(source).body[0].value.value.args[0]
    assert [ast.literal_eval(k) for k in payload.keys] == ["flag", "x", "n", "size", "t",
                                                           "any_list", "opts", "lambda_"]
    fresh = [ast.unparse(v) for v in payload.values if isinstance(v, ast.Call)]
    assert fresh == ["Fresh(any_list)", "Fresh(opts)"]    # mutable defaults, copied per request
    assert warnings == [("model.inputs.any_list: an array without items: Cog's schema types its "
                         "elements as JSON objects (set items to string, integer, number or "
                         "boolean)")]


def test_without_inputs_the_runner_keeps_one_opaque_input(tmp_path):
    from tests.test_package_support import make_project

    build_to(make_project(tmp_path / "p"), "cog", tmp_path / "o")
    run = _run((tmp_path / "o" / "predict.py").read_text())
    assert [a.arg for a in run.args.args] == ["self", "input"]
    assert ast.unparse(run.args.args[1].annotation) == "Annotated[Any, Opaque]"


X = {"type": "array", "items": "number"}


@pytest.mark.parametrize("field,message", [
    ({"type": "string", "choices": ["a\r\nb", "c"]}, r"inputs\.f\.choices: .*only escape sequences"),
    ({"type": "string", "default": "C:\\dir\nnext"}, r"inputs\.f\.default: .*only escape sequences"),
    ({"type": "object", "default": {"k": "a\rb"}}, r"inputs\.f\.default: .*only escape sequences"),
])
def test_what_only_cog_would_refuse_fails_the_build_at_the_field(tmp_path, field, message):
    """(Defaults and choices that do not fit their field are manifest errors for every target:
    tests/test_manifest_errors.py.)"""
    with pytest.raises(InvalidInput, match=message) as caught:
        _render(tmp_path, {"x": X, "f": field})
    assert caught.value.where.startswith(str(tmp_path / "p" / "mlserve.yaml") + ":")
    assert caught.value.fix
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["class", "lambda", "self"])
def test_a_field_name_that_cannot_be_a_parameter_is_refused(tmp_path, name):
    with pytest.raises(InvalidInput, match=f"model.inputs.{name}: Cog names run"):
        _render(tmp_path, {"x": X, name: {"type": "string"}})


@pytest.mark.parametrize("field,kept,warning", [
    ({"type": "number", "choices": [0.5, 1]}, {}, "choices only for string and integer"),
    ({"type": "string", "choices": ["only"]}, {}, "at least two choices"),
    ({"type": "integer", "choices": [1, 2], "ge": 1}, {"choices": [1, 2]}, "choices or ge/le"),
])
def test_what_cog_cannot_express_is_left_out_with_a_warning(tmp_path, field, kept, warning):
    source, warnings = _render(tmp_path, {"x": X, "f": field})
    assert _parameters(source)["f"][1] == kept
    assert len(warnings) == 1 and warning in warnings[0] and warnings[0].startswith("model.inputs.f")
