"""The one provider registry (``mlserve.providers``) and everything derived from it.

Each derivation has a test that fails when it disagrees with the registry: the catalogue
(`mlserve providers`, --json), the manifest's JSON Schema and Target union, `mlserve build`'s
default format and --format choices, the adapters, the yaml prose files. Then what users see of
the features: a target whose provider lacks what the manifest asks is refused by validate TARGET,
plan, build and deploy (exit 2, the field's file:line:col and the provider's reason, before any
secret is read), generated over providers x scaling x GPU; the manifest's ``version``; and
``ProviderInfo.state`` over any value.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from mlserve.errors import ManifestError, NotFound
from mlserve.manifest import load_project
from mlserve.providers import PROSE_KEYS, REGISTRY, TABLE_KEYS, catalogue, formats, info, names
from mlserve.providers.base import ProviderInfo, load_object
from mlserve.vocab import ArtifactKind, DeployState, Feature
from tests.helpers import REPO, run_cli

#: The spec: which provider refuses which manifest request (the registry's reasons say why).
REFUSES = {"local": {"max_replicas", "min_replicas", "gpu"}, "ssh": {"min_replicas"},
           "docker": {"max_replicas", "min_replicas"}, "sagemaker": set(), "replicate": set(),
           "baseten": set(), "vm": set(), "vertex": {"min_replicas"}, "azureml": {"min_replicas"}}
OPTIONS = {"local": {}, "ssh": {"hosts": ["u@h.example"]}, "docker": {"image": "r.example/x"},
           "sagemaker": {"role": "arn:aws:iam::123456789012:role/x",
                         "repository": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x"},
           "replicate": {"model": "acme/x"}, "baseten": {}, "vm": {},
           "vertex": {"repository": "us-central1-docker.pkg.dev/p/r/x"},
           "azureml": {"resource_group": "rg", "workspace": "wsp", "registry": "acr.example"}}
FEATURE_OF = {"max_replicas": Feature.REPLICAS, "min_replicas": Feature.SCALE_TO_ZERO,
              "gpu": Feature.GPU}
MODEL = "class Model:\n    def predict(self, payload):\n        return payload\n"
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3), max_leaves=6)


# --- the registry itself ---------------------------------------------------------------------

def test_every_provider_module_is_registered_under_its_own_name():
    modules = {p.stem for p in (REPO / "mlserve" / "providers").glob("*.py")} - {
        "__init__", "base", "check"}
    assert set(names()) == modules
    for name, provider in REGISTRY.items():
        assert provider.name == name and load_object(f"mlserve.providers.{name}:INFO") is provider
        assert isinstance(provider.artifact, ArtifactKind) and provider.title and provider.layer


def test_every_provider_declares_every_feature_and_a_reason_for_each_gap():
    for provider in REGISTRY.values():
        assert set(provider.features) == set(Feature)
        for feature, reason in provider.features.items():
            assert reason is None or (isinstance(reason, str) and len(reason) > 10)
            assert provider.supports(feature) is (reason is None)
        assert provider.price is None          # no price is knowable offline today


def test_a_provider_info_that_leaves_a_gap_silent_is_refused():
    features = dict(REGISTRY["local"].features)
    with pytest.raises(ValueError, match="does not declare gpu"):
        ProviderInfo(**{**_fields("local"), "features": {k: v for k, v in features.items()
                                                          if k != Feature.GPU}})
    with pytest.raises(ValueError, match="gives no reason for gpu"):
        ProviderInfo(**{**_fields("local"), "features": {**features, Feature.GPU: " "}})
    with pytest.raises(ValueError, match="an adapter exactly when it deploys"):
        ProviderInfo(**{**_fields("replicate"), "adapter": "x:Y"})
    with pytest.raises(TypeError):
        REGISTRY["local"].features[Feature.GPU] = None       # frozen, its mappings too


def _fields(name: str) -> dict:
    p = REGISTRY[name]
    return {k: getattr(p, k) for k in ("name", "title", "layer", "options", "artifact",
                                       "default_format", "features", "state_map", "adapter")}


def test_options_models_are_the_manifest_target_union_and_the_schema_enum():
    from mlserve.targets import Target, TargetBase
    union = Target.__origin__.__args__
    assert [m.__name__ for m in union] == [p.options.split(":")[1] for p in REGISTRY.values()]
    for name, provider in REGISTRY.items():
        model = provider.options_model
        assert issubclass(model, TargetBase)
        assert model.model_validate({"provider": name, **OPTIONS[name]}).provider == name
    schema = json.loads((REPO / "mlserve" / "mlserve.schema.json").read_text())
    (targets,) = schema["properties"]["targets"]["patternProperties"].values()
    assert list(targets["discriminator"]["mapping"]) == sorted(names())


def test_adapters_are_the_ones_the_registry_names():
    from mlserve.adapters import get
    from mlserve.errors import InvalidInput
    deploying = {n: p.adapter for n, p in REGISTRY.items() if p.deploys}
    assert set(deploying) == {"local", "ssh", "docker", "sagemaker", "vertex", "azureml"}
    for name, path in deploying.items():
        assert type(get(name)) is load_object(path), path
    for name in set(REGISTRY) - set(deploying):
        with pytest.raises(InvalidInput) as exc:
            get(name)
        assert REGISTRY[name].reason(Feature.DEPLOY) in exc.value.message


def test_build_formats_default_and_choices_derive_from_the_registry(capsys):
    from mlserve.packaging import DEFAULT_FORMAT, RENDERERS
    assert set(formats()) == set(RENDERERS)
    assert DEFAULT_FORMAT == {n: p.default_format for n, p in REGISTRY.items()}
    refused = run_cli(capsys, "build", "--format", "nope")
    assert refused.code == 2
    listed = re.search(r"is not one of: ([a-z, -]+)", " ".join(refused.err.split())).group(1)
    assert set(listed.split(", ")) == set(RENDERERS)


def test_catalogue_is_the_registry_plus_the_yaml_prose(capsys):
    result = run_cli(capsys, "providers", "--json")
    entries = json.loads(result.out)["providers"]
    assert [e["name"] for e in entries] == list(names())
    for entry in entries:
        provider = REGISTRY[entry["name"]]
        assert entry["deploy"] is provider.deploys
        assert entry["features"] == {f.value: r for f, r in provider.features.items()}
        assert entry["unsupported"] == provider.unsupported()
        assert entry["default_format"] == provider.default_format and entry["packaging"]
    table = run_cli(capsys, "providers")
    for name, provider in REGISTRY.items():
        assert re.search(rf"│ {name} +│.*│ {'deploy' if provider.deploys else 'build'} +│",
                         table.out), name


def test_yaml_files_hold_prose_and_tables_only():
    """Features, states and formats are code's: a yaml that says something about them fails.
    Besides prose, a yaml may hold a data table its provider's module reads (TABLE_KEYS)."""
    files = {p.stem: p for p in (REPO / "providers").glob("*.yaml")}
    assert set(files) == set(names())
    words = {f.value for f in Feature} | {"capabilities", "unsupported", "features", "deploy",
                                          "states", "format", "title", "layer", "adapter"}
    for name, path in files.items():
        data = yaml.safe_load(path.read_text())
        assert set(data) <= set(PROSE_KEYS) | set(TABLE_KEYS) and data["name"] == name, path
        assert not set(data) & words, path


def test_importing_the_registry_loads_no_pydantic_yaml_or_sdk():
    code = ("import sys, mlserve.providers; p = mlserve.providers.info('ssh'); "
            "p.state('ready'); mlserve.providers.formats(); "
            "print(' '.join(sorted(m for m in sys.modules)))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, cwd=REPO).stdout.split())
    heavy = {"pydantic", "yaml", "paramiko", "docker", "boto3", "rich", "mlserve.targets"}
    assert not heavy & loaded


# --- info() and state() over any input -------------------------------------------------------

@given(ANY_VALUE)
def test_state_of_any_value_is_a_deploy_state_and_never_raises(value):
    for provider in REGISTRY.values():
        state = provider.state(value)
        assert isinstance(state, DeployState)
        known = isinstance(value, str) and value in provider.state_map
        assert state == (provider.state_map[value] if known else DeployState.UNKNOWN)


@given(st.sampled_from(list(REGISTRY.values())), st.data())
def test_known_state_names_map_and_their_near_misses_are_unknown(provider, data):
    if not provider.state_map:
        return
    name = data.draw(st.sampled_from(sorted(provider.state_map)))
    assert provider.state(name) == provider.state_map[name] != DeployState.UNKNOWN
    for near in (name.swapcase(), f" {name}", f"{name}\n", name + "x"):
        if near not in provider.state_map:
            assert provider.state(near) is DeployState.UNKNOWN


@given(ANY_VALUE)
def test_info_of_anything_unregistered_is_not_found(value):
    if isinstance(value, str) and value in REGISTRY:
        assert info(value) is REGISTRY[value]
        return
    with pytest.raises(NotFound) as exc:
        info(value)
    assert exc.value.exit_code == 2 and "use one of: local, ssh" in exc.value.fix


# --- features a target's provider lacks ------------------------------------------------------

def _manifest(root, provider: str, *, min_r: int | None, max_r: int | None, gpu: str | None,
              secrets: bool = False, other: str | None = None) -> dict[str, str]:
    """Write a block-style manifest; return where each requested field's value is (line:col)."""
    lines = ["name: m", "model: {entrypoint: model.py:Model}"]
    where = {}
    if gpu is not None:
        lines += ["resources:", f"  gpu: {{type: {gpu}}}"]
        where["gpu"] = f"{len(lines)}:8"
    if min_r is not None or max_r is not None:
        lines.append("scaling:")
        for key, value in (("min_replicas", min_r), ("max_replicas", max_r)):
            if value is not None:
                lines.append(f"  {key}: {value}")
                where[key] = f"{len(lines)}:17"
    if secrets:
        lines.append("secrets: [MLSV_REGISTRY_UNSET]")
    targets = {"t": {"provider": provider, **OPTIONS[provider]}}
    if other:
        targets["o"] = {"provider": other, **OPTIONS[other]}
    lines += ["targets:"] + [f"  {k}: {json.dumps(v)}" for k, v in targets.items()]
    (root / "model.py").write_text(MODEL)
    (root / "mlserve.yaml").write_text("\n".join(lines) + "\n")
    return where


def _asked(min_r, max_r, gpu) -> set[str]:
    return ({"max_replicas"} if (max_r or 1) > 1 else set()) | (
        {"min_replicas"} if min_r == 0 else set()) | ({"gpu"} if gpu else set())


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(provider=st.sampled_from(sorted(REFUSES)), min_r=st.none() | st.integers(0, 3),
       extra=st.integers(0, 3), gpu=st.none() | st.sampled_from(["T4", "A10G"]))
def test_validate_target_refuses_exactly_what_the_provider_lacks(tmp_path, capsys, provider,
                                                                  min_r, extra, gpu):
    written = extra > 0 or (min_r or 0) > 1          # max_replicas absent is 1
    max_r = max(min_r or 1, 1) + max(extra - 1, 0) if written else None
    where = _manifest(tmp_path, provider, min_r=min_r, max_r=max_r, gpu=gpu)
    refused = _asked(min_r, max_r, gpu) & REFUSES[provider]
    result = run_cli(capsys, "validate", "t", "-f", str(tmp_path), "--json")
    if not refused:
        assert result.code == 0, result.err
        assert json.loads(result.out)["warnings"] == []
        return
    assert result.code == 2
    problems = json.loads(result.out)["problems"]
    assert len(problems) == len(refused)
    for field in refused:
        reason = REGISTRY[provider].reason(FEATURE_OF[field])
        line = next(p for p in problems if f".{field}: " in p or f"resources.{field}:" in p)
        assert line.startswith(f"{tmp_path / 'mlserve.yaml'}:{where[field]}: ")
        assert f"target 't' (provider {provider})" in line and reason in line and "Fix: " in line


@pytest.mark.parametrize("command", [["validate", "t"], ["plan", "t"], ["build", "t"],
                                     ["deploy", "t"]])
@pytest.mark.parametrize("provider, field", [("local", "max_replicas"), ("local", "gpu"),
                                             ("local", "min_replicas"), ("ssh", "min_replicas")])
def test_every_command_on_the_target_refuses_it_before_secrets_and_writes_nothing(
        tmp_path, capsys, monkeypatch, command, provider, field):
    monkeypatch.delenv("MLSV_REGISTRY_UNSET", raising=False)
    values = {"max_replicas": dict(min_r=None, max_r=2, gpu=None),
              "gpu": dict(min_r=None, max_r=None, gpu="T4"),
              "min_replicas": dict(min_r=0, max_r=None, gpu=None)}[field]
    where = _manifest(tmp_path, provider, secrets=True, **values)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli(capsys, *command, "-f", str(tmp_path))
    assert result.code == 2, result.err
    text = " ".join(result.err.split())
    assert f"mlserve.yaml:{where[field]}: " in text
    assert " ".join(REGISTRY[provider].reason(FEATURE_OF[field]).split()) in text
    assert "MLSV_REGISTRY_UNSET" not in text                 # refused before secrets are read
    assert sorted(p.name for p in tmp_path.iterdir()) == before   # no .mlserve, no build


def test_another_target_of_the_same_manifest_is_not_affected(tmp_path, capsys):
    """A GPU model with a local development target and a cloud target: only local is refused;
    validate without a target warns about it."""
    _manifest(tmp_path, "replicate", min_r=0, max_r=4, gpu="A10G", other="local")
    assert run_cli(capsys, "validate", "t", "-f", str(tmp_path)).code == 0
    assert run_cli(capsys, "build", "t", "-f", str(tmp_path), "-o",
                   str(tmp_path.parent / f"{tmp_path.name}-out")).code == 0
    assert run_cli(capsys, "validate", "o", "-f", str(tmp_path)).code == 2
    whole = run_cli(capsys, "validate", "-f", str(tmp_path), "--json")
    assert whole.code == 0
    warnings = json.loads(whole.out)["warnings"]
    assert len(warnings) == 3 and all("target 'o' (provider local)" in w for w in warnings)
    assert whole.err.count("warning:") == 3


def test_deploy_on_a_build_only_provider_gives_the_registry_reason(tmp_path, capsys):
    _manifest(tmp_path, "replicate", min_r=None, max_r=None, gpu=None)
    result = run_cli(capsys, "deploy", "t", "-f", str(tmp_path))
    assert result.code == 2
    assert " ".join(REGISTRY["replicate"].reason(Feature.DEPLOY).split()) in " ".join(
        result.err.split())


# --- the manifest's version ------------------------------------------------------------------

@settings(max_examples=60)
@given(st.none() | st.booleans() | st.integers(-5, 10**20) | st.floats()
       | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)
       | st.lists(st.integers(0, 2), max_size=2))
def test_manifest_version_is_1_or_absent(tmp_path_factory, value):
    root = tmp_path_factory.mktemp("v")
    (root / "model.py").write_text(MODEL)
    body = "name: m\nmodel: {entrypoint: model.py:Model}\ntargets: {t: {provider: local}}\n"
    (root / "mlserve.yaml").write_text(f"version: {json.dumps(value, ensure_ascii=False)}\n{body}")
    if type(value) is int and value == 1:
        assert load_project(root).manifest.version == 1
        return
    with pytest.raises(ManifestError) as exc:
        load_project(root)
    (problem,) = exc.value.problems
    assert problem.startswith(f"{root / 'mlserve.yaml'}:1:10: version: this mlserve reads "
                              "manifest version 1 only")
    assert "Fix: write `version: 1`" in problem


def test_absent_version_is_1_and_the_schema_documents_it(tmp_path):
    _manifest(tmp_path, "local", min_r=None, max_r=None, gpu=None)
    assert load_project(tmp_path).manifest.version == 1
    schema = json.loads((REPO / "mlserve" / "mlserve.schema.json").read_text())
    assert schema["properties"]["version"]["const"] == 1
    assert "version" not in schema["required"]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), min_size=1,
               max_size=200))
def test_a_hostile_gpu_type_is_shown_escaped_on_one_line(tmp_path, capsys, gpu_type):
    """What the user wrote reaches the refusal quoted, escaped and shortened, never raw."""
    _manifest(tmp_path, "local", min_r=None, max_r=None, gpu="GPU")
    text = (tmp_path / "mlserve.yaml").read_text().replace("{type: GPU}",
                                                           f"{{type: {json.dumps(gpu_type)}}}")
    (tmp_path / "mlserve.yaml").write_text(text)
    result = run_cli(capsys, "validate", "t", "-f", str(tmp_path), "--json")
    assert result.code == 2
    (problem,) = json.loads(result.out)["problems"]
    assert problem.isprintable() and ":4:8: resources.gpu: target 't' (provider local)" in problem
    assert len(problem) < 500
