"""``mlserve.yaml``: the pydantic v2 model of the manifest, and loading it with located errors.

Contract: ``load_project(file)`` finds the manifest (``-f``, or the nearest mlserve.yaml in this
directory or one above, like git), reads it safely (``yamlpos``: size, alias and nesting
limits) and returns a ``Project`` (the validated ``Manifest`` plus where it came from), or raises
``ManifestError`` whose problems each read ``file:line:col: field.path: what is wrong. Fix:
how``, user text escaped (``strict.shown``). Every file the manifest names (the entrypoint's,
the requirements file and the local files its lines name) must be a regular file that resolves
inside the project (``reqsets.project_file``). ``Project.target(name)`` also refuses a target
whose provider lacks a feature the manifest asks for (``providers.check``: several replicas,
scale to zero, an accelerator), so every command that acts on a target (plan, deploy, migrate,
build...) refuses it with exit 2 before reading a secret; another target of the same manifest
that can do it is not affected. Nothing here imports the model code: the entrypoint is checked by parsing it (``ast``), so
validation is safe and fast.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import InvalidInput, ManifestError, NotFound
from .providers.check import feature_problems
from .reqsets import FileProblem, project_file, read_small_file, requirement_problems
from .strict import (ENV_NAME_RE, NAME_RE, PYTHON_RE, SECRET_RE, Strict, clean, given,
                     problem_text, shown)
from .journal import S3_URL_RE
from .targets import Target, TargetBase
from .yamlpos import Located, display_name, find_manifest, invalid, read_located

_MEMORY_RE = re.compile(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?")          # used with fullmatch
#: the journal: s3://bucket/prefix, or a directory (no control characters, no ':')
STATE_RE = "^(" + S3_URL_RE[1:-1] + r"|[^\x00-\x1f\x7f:]+)$"
_ENTRY_RE = re.compile(r"(?P<file>[^:]+\.py):(?P<cls>[A-Za-z_][A-Za-z0-9_]*)")  # fullmatch


def _requirements(value: Any) -> Any:
    """A file name or a list of pip specifiers; one clear error instead of pydantic's two."""
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        for i, item in enumerate(value):
            if any(c in item for c in "\r\n\0"):     # one item must stay one pip argument
                raise PydanticCustomError("requirements", "item {i} ({item}) contains a line "
                                          "break; put each requirement in its own list item",
                                          {"i": i, "item": shown(item)})
        return value
    raise PydanticCustomError("requirements", "must be a file name (requirements.txt) or a list of "
                              "pip specifiers, got {got}", {"got": given(value)})


def _env_value(value: Any) -> Any:
    """Environment values are strings; YAML numbers and booleans are written as YAML spells them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


InputType = Literal["string", "integer", "number", "boolean", "array", "object"]


class InputSpec(Strict):
    """One named field of the payload, for providers with typed inputs (Cog) and for docs."""

    type: InputType = Field(description="JSON type of the field.", examples=["string", "number"])
    description: str | None = Field(None, description="Shown in the provider's UI and API docs.",
                                    examples=["Text to classify"])
    default: Any = Field(None, description="Value used when the field is absent; without one the "
                         "field is required.", examples=[0.5])
    items: Literal["string", "integer", "number", "boolean"] | None = Field(
        None, description="Element type, for arrays.", examples=["number"])
    choices: list[str | int | float] | None = Field(None, description="Allowed values.",
                                                    examples=[["small", "large"]])
    ge: float | None = Field(None, description="Minimum (numbers).", examples=[0])
    le: float | None = Field(None, description="Maximum (numbers).", examples=[1])

    @model_validator(mode="after")
    def _consistent(self) -> "InputSpec":
        if self.items is not None and self.type != "array":
            raise PydanticCustomError("inputs", "items is only for type: array", {})
        if (self.ge is not None or self.le is not None) and self.type not in ("integer", "number"):
            raise PydanticCustomError("inputs", "ge/le are only for integer and number inputs", {})
        for key in ("ge", "le"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                raise PydanticCustomError("input_bounds", f"{key}: {value} is not a finite number")
        if self.ge is not None and self.le is not None and self.ge > self.le:
            raise PydanticCustomError("input_bounds", f"ge ({self.ge:g}) is above le "
                                      f"({self.le:g}): no value fits")
        for choice in self.choices or []:
            if not _value_fits(self.type, None, choice):
                raise PydanticCustomError("input_choice",
                                          f"choices: {shown(choice)} is not {_a(self.type)}")
        if self.default is not None:
            self._check_default(self.default)
        return self

    def _check_default(self, default: Any) -> None:
        if not _value_fits(self.type, self.items, default):
            shape = (f"an array of {self.items}" if self.type == "array" and self.items
                     else _a(self.type))
            raise PydanticCustomError("input_default", f"default: {shown(default)} is not {shape}")
        if self.choices is not None and default not in self.choices:
            raise PydanticCustomError("input_default",
                                      f"default: {shown(default)} is not one of the choices")
        if not _finite(default):
            raise PydanticCustomError("input_default", f"default: {shown(default)} holds a number "
                                      "JSON cannot carry (inf or nan)")
        numbers = default if isinstance(default, list) else [default]
        if any((self.ge is not None and v < self.ge) or (self.le is not None and v > self.le)
               for v in numbers if isinstance(v, (int, float))):
            raise PydanticCustomError("input_default", f"default: {shown(default)} is outside ge/le")


def _value_fits(kind: str, items: str | None, value: Any) -> bool:
    """``value`` has the JSON type ``kind`` (arrays: of ``items`` when given)."""
    if isinstance(value, bool):
        return kind == "boolean"
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, (int, float))
    if kind == "array":
        return isinstance(value, list) and (items is None or all(_value_fits(items, None, v)
                                                                 for v in value))
    if kind == "object":
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return False


def _finite(value: Any) -> bool:
    """No inf or nan anywhere in ``value`` (JSON has no such numbers)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _a(kind: str) -> str:
    return {"integer": "an integer", "array": "an array", "object": "an object"}.get(kind, f"a {kind}")


class ModelSpec(Strict):
    entrypoint: str = Field(description="`file.py:Class` relative to the manifest. The class has "
                            "`load()` and `predict(payload)`, optionally `predict_batch(list)`.",
                            examples=["model.py:Model"])
    python: str = Field("3.11", pattern=PYTHON_RE, description="Python version the model "
                        "runs on.", examples=["3.11"])
    requirements: Annotated[str | list[str], BeforeValidator(_requirements)] = Field(
        default_factory=list, description="A requirements file relative to the manifest, or a "
        "list of pip specifiers.", examples=["requirements.txt", ["scikit-learn>=1.3"]])
    system_packages: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]*$")]] = Field(
        default_factory=list, description="Debian packages the model needs (for images and VMs).",
        examples=[["libgomp1"]])
    inputs: dict[Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$")], InputSpec] | None = Field(
        None, description="Optional description of the payload's fields (when it is an object): "
        "providers with typed inputs (Cog) get one typed parameter per field.",
        examples=[{"x": {"type": "array", "items": "number", "description": "Numbers to double"}}])

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_form(cls, value: str) -> str:
        if not _ENTRY_RE.fullmatch(value):
            raise PydanticCustomError("entrypoint", "{value} is not `file.py:ClassName`",
                                      {"value": shown(value)})
        return value

    @property
    def entry_file(self) -> str:
        return self.entrypoint.split(":", 1)[0]

    @property
    def entry_class(self) -> str:
        return self.entrypoint.split(":", 1)[1]


class GPU(Strict):
    type: str = Field(description="Accelerator type.", examples=["A10G", "T4", "H100"])
    count: int = Field(1, ge=1, le=16, description="How many.", examples=[1])


class Resources(Strict):
    cpu: float = Field(1, gt=0, le=512, description="CPU cores.", examples=[1, 0.5])
    memory: str = Field("1Gi", description="Memory, Kubernetes style.", examples=["1Gi", "512Mi"])
    gpu: GPU | None = Field(None, description="Accelerators, when the model needs them.",
                            examples=[{"type": "A10G", "count": 1}])

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY_RE.fullmatch(value):
            raise PydanticCustomError("memory", "{value} is not a size like 512Mi or 2Gi",
                                      {"value": shown(value)})
        return value


class Scaling(Strict):
    min_replicas: int = Field(1, ge=0, le=1000, description="Replicas kept running (0 = scale to "
                              "zero where the provider can).", examples=[1])
    max_replicas: int = Field(1, ge=1, le=1000, description="Upper bound on replicas.", examples=[2])
    concurrency: int = Field(4, ge=1, le=1024, description="Predictions in flight per replica.",
                             examples=[8])
    max_batch_size: int = Field(32, ge=1, le=4096, description="Most requests one `predict_batch` "
                                "call gets (models without `predict_batch` ignore it). Under load "
                                "the runtime fills batches up to this size.", examples=[64])
    max_batch_wait_ms: int = Field(10, ge=0, le=1000, description="Longest a partial batch is held "
                                   "for requests that are due (clients just answered), in "
                                   "milliseconds, counted from when the model is free to run it (0: "
                                   "never wait). A request nobody else is due to join runs at once.",
                                   examples=[10])

    @model_validator(mode="after")
    def _bounds(self) -> "Scaling":
        if self.min_replicas > self.max_replicas:
            raise PydanticCustomError("scaling", "min_replicas ({a}) is greater than max_replicas "
                                      "({b})", {"a": self.min_replicas, "b": self.max_replicas})
        return self


class SmokeCase(Strict):
    input: Any = Field(description="Sent as `{\"input\": ...}` to the new release.",
                       examples=[{"x": [1, 2, 3]}])
    expect: Any = Field(None, description="The exact output expected; omit to only require success.",
                        examples=[{"y": [2, 4, 6]}])


EnvName = Annotated[str, Field(pattern=ENV_NAME_RE)]


MANIFEST_VERSION = 1


def _version(value: Any) -> Any:
    """Only the version this mlserve reads (a bool is not a number here, whatever YAML says)."""
    if type(value) is int and value == MANIFEST_VERSION:
        return value
    raise PydanticCustomError("manifest_version", "this mlserve reads manifest version {v} only",
                              {"v": MANIFEST_VERSION})


class Manifest(Strict):
    """mlserve.yaml: one model, described once, deployable to every target it names."""

    version: Annotated[Literal[1], BeforeValidator(_version)] = Field(
        MANIFEST_VERSION, description="Manifest format version: 1, the only one so far (absent "
        "means 1). A later format gets a new number, which this mlserve refuses rather than "
        "misreads.", examples=[1])
    name: str = Field(pattern=NAME_RE, description="DNS-safe name, 1-40 characters.",
                      examples=["hello"])
    model: ModelSpec = Field(description="The model code.")
    resources: Resources = Field(default_factory=Resources, description="What one replica needs.")
    scaling: Scaling = Field(default_factory=Scaling, description="Replicas and concurrency.")
    env: dict[EnvName, Annotated[str, BeforeValidator(_env_value)]] = Field(
        default_factory=dict, description="Environment of the model (not secret).",
        examples=[{"GREETING": "hi"}])
    secrets: list[Annotated[str, Field(pattern=SECRET_RE)]] = Field(
        default_factory=list, description="Names of secrets; values come from the environment (or "
        "the provider's secret store) at deploy time and are never written anywhere.",
        examples=[["API_TOKEN"]])
    smoke: list[SmokeCase] = Field(default_factory=list, description="Run against every new "
                                   "release before it takes traffic; a mismatch fails the deploy.")
    targets: dict[Annotated[str, Field(pattern=NAME_RE)], Target] = Field(
        min_length=1, description="Where this model can be deployed, by name.",
        examples=[{"local": {"provider": "local", "port": 8080}}])
    state: str | None = Field(
        None, pattern=STATE_RE, max_length=1024,
        description="Where the journal lives: a directory (relative to the manifest), or "
        "`s3://bucket/prefix` for a journal shared by CI runners and laptops (any S3-compatible "
        "store; AWS credentials and endpoint from the usual AWS_* variables). `--state` and "
        "MLSERVE_STATE override it. Default: `.mlserve` beside the manifest.",
        examples=["s3://my-team-mlserve/hello", ".mlserve"])

    @model_validator(mode="after")
    def _secrets_apart(self) -> "Manifest":
        dupes = sorted({s for s in self.secrets if self.secrets.count(s) > 1})
        if dupes:
            raise PydanticCustomError("secrets", "secret '{name}' is listed twice", {"name": dupes[0]})
        clash = sorted(set(self.secrets) & set(self.env))
        if clash:
            raise PydanticCustomError("secrets", "'{name}' is both in env and in secrets; a secret's "
                                      "value must not be written in the manifest", {"name": clash[0]})
        return self


@dataclass(frozen=True)
class Project:
    """A validated manifest and where it lives."""

    manifest: Manifest
    path: Path
    located: Located

    @property
    def root(self) -> Path:
        return self.path.parent

    def feature_gaps(self, names: list[str] | None = None) -> list[str]:
        """What the manifest asks of targets ``names`` (default: all) that they cannot do."""
        return [clean(p) for p in feature_problems(self.manifest, self.located.where, names)]

    def extras(self, names: list[str], state: str | None = None) -> list[str]:
        """The pip extras commands on targets ``names`` need: their providers', and ``aws`` when
        the journal is on S3 (``state``: a --state value, else MLSERVE_STATE, else the
        manifest's ``state:``)."""
        from .journal import locate
        from .providers import extras
        needed = set(extras(self.manifest.targets[name].provider for name in names))
        if locate(self.root, self.manifest.state, state).url:    # the journal's S3 client
            needed.add("aws")
        return sorted(needed)

    def check_features(self, names: list[str] | None = None) -> None:
        if problems := self.feature_gaps(names):
            raise invalid(self.located.file, problems)

    def target(self, name: str | None) -> tuple[str, TargetBase]:
        """The named target, or the only one, or the one called ``local``; refused when its
        provider lacks a feature the manifest asks for (``check_features``)."""
        targets = self.manifest.targets
        if name is None:
            if len(targets) == 1:
                name = next(iter(targets))
            elif "local" in targets:
                name = "local"
            else:
                raise InvalidInput(f"{clean(str(self.path))} has several targets "
                                   f"({', '.join(targets)})",
                                   fix="name one: mlserve deploy TARGET")
        if name not in targets:
            raise NotFound(f"no target {shown(name)} in {clean(str(self.path))}",
                           fix=f"use one of: {', '.join(targets)}")
        self.check_features([name])
        return name, targets[name]


# --- loading -----------------------------------------------------------------------------------

ENTRY_FILE_LIMIT = 4 * 1024 * 1024    # bytes of the entrypoint's file that validate parses


def _semantic_checks(manifest: Manifest, root: Path, located: Located) -> list[str]:
    """What pydantic cannot know: every file the manifest names is a regular file inside the
    project (links followed), and the entrypoint class has the contract."""
    entry = manifest.model
    where = located.where(("model", "entrypoint"))
    problems = []
    try:
        file = project_file(root, entry.entry_file)
    except FileProblem as exc:
        problems.append(f"{where}: model.entrypoint: {shown(entry.entry_file)} {exc.reason}. "
                        f"Fix: {exc.fix}")
    else:
        problems.extend(_check_class(file, entry.entry_class, where))
    where = located.where(("model", "requirements"))
    for source, subject, reason, fix in requirement_problems(root, entry.requirements):
        at = f"{shown(source, 80)[1:-1]}: " if source else ""
        problems.append(f"{where}: model.requirements: {at}{shown(subject)} {reason}. Fix: {fix}")
    return [clean(p) for p in problems]


def _check_class(file: Path, cls_name: str, where: str) -> list[str]:
    try:
        tree = ast.parse(read_small_file(file, ENTRY_FILE_LIMIT).decode("utf-8"),
                         filename=str(file))
    except SyntaxError as exc:
        return [f"{file}:{exc.lineno}:{exc.offset}: model.entrypoint: {file.name} has a syntax "
                f"error: {exc.msg}. Fix: correct the Python code"]
    except FileProblem as exc:
        return [f"{where}: model.entrypoint: {file.name} {exc.reason}. Fix: {exc.fix}"]
    except (ValueError, RecursionError, MemoryError) as exc:   # NUL bytes, not UTF-8, too deep
        return [f"{where}: model.entrypoint: {file.name} cannot be parsed as Python "
                f"({type(exc).__name__}). Fix: correct the Python code"]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            methods = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if not methods & {"predict", "predict_batch"} and not node.bases:
                return [f"{where}: model.entrypoint: class {cls_name} in {file.name} has no "
                        "predict(payload) method. Fix: add `def predict(self, payload):`"]
            return []
    if any(isinstance(n, (ast.Import, ast.ImportFrom, ast.Assign)) and _binds(n, cls_name)
           for n in tree.body):
        return []
    return [f"{where}: model.entrypoint: {file.name} defines no class {cls_name}. Fix: correct the "
            "class name after the colon"]


def _binds(node: ast.stmt, name: str) -> bool:
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
    return any((a.asname or a.name.split(".")[-1]) == name for a in node.names)


def parse_manifest(located: Located, root: Path) -> Manifest:
    if located.data is None:
        raise ManifestError(f"{located.file} is empty", where=f"{located.file}:1:1",
                            fix="run `mlserve init` for a working example")
    if not isinstance(located.data, dict):
        raise ManifestError("the manifest must be a mapping of keys (name:, model:, targets:)",
                            where=f"{located.file}:1:1", fix="see `mlserve init` for the form")
    try:
        manifest = Manifest.model_validate(located.data)
    except ValidationError as exc:
        raise invalid(located.file, [problem_text(e, located) for e in exc.errors()]) from None
    problems = _semantic_checks(manifest, root, located)
    if problems:
        raise invalid(located.file, problems)
    return manifest


def load_project(file: str | Path | None = None) -> Project:
    path = find_manifest(file)
    located = read_located(path, display_name(path))
    return Project(manifest=parse_manifest(located, path.parent), path=path, located=located)


def json_schema() -> dict:
    schema = Manifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlserve.yaml"
    return schema
