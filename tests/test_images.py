"""Images: `mlserve build --image --push` against the real engine and registries (tests/infra),
images built FROM the local base image; registry credentials (docker config, a registry with
htpasswd auth, Amazon ECR tokens from moto's server); the engine unreachable."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from hypothesis import assume, given, strategies as st

from mlserve.artifacts import registry as registries
from tests.helpers import EXAMPLES, MLSERVE, run_cli, run_process
from tests.infra.net import free_port
from tests.infra.procs import new_workdir, start_process, stop_process
from tests.infra.containers import registry_ready

SECRET = "s3cr3t-Pa55-Never-Shown"


def _project(tmp: Path, repository: str, base: str) -> Path:
    root = tmp / "hello"
    shutil.copytree(EXAMPLES / "hello", root)
    text = (root / "mlserve.yaml").read_text()
    text = text.replace("targets:\n", "targets:\n  img: {provider: docker, image: "
                        f"{json.dumps(repository)}, base_image: {json.dumps(base)}}}\n")
    (root / "mlserve.yaml").write_text(text)
    return root


def _env(dockerd, config_dir: Path, **more) -> dict:
    config_dir.mkdir(parents=True, exist_ok=True)
    return {**dockerd.env(), "DOCKER_CONFIG": str(config_dir), **more}


def _storage_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _build(root: Path, env: dict, *flags: str) -> dict:
    done = run_process("build", "img", "-f", str(root), "--image", *flags, "--json", env=env,
                       timeout=300)
    assert done.code == 0, done.err
    return json.loads(done.out)


def test_build_push_repush_and_a_one_line_change(tmp_path, dockerd, base_image, registry):
    repository = f"{registry.address}/mlsv-images/hello"
    root = _project(tmp_path, repository, base_image.ref)
    env = _env(dockerd, tmp_path / "docker-config")

    first = _build(root, env, "--push")
    image, push = first["image"], first["push"]
    assert image["ref"] == f"{repository}:{image['release']}" and image["release"].startswith("r-")
    # Layers another test already pushed to this registry are mounted, not sent: count them all.
    assert push["layers_pushed"] >= 1 and push["layers_pushed"] + push["layers_existing"] >= 5
    assert push["digest"].startswith("sha256:")
    with urllib.request.urlopen(urllib.request.Request(
            f"{registry.url}/v2/mlsv-images/hello/manifests/{image['release']}",
            headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})) as reply:
        assert reply.headers["Docker-Content-Digest"] == push["digest"]

    before = _storage_bytes(registry.root)
    again = _build(root, env, "--push")
    assert again["image"]["id"] == image["id"]
    assert again["push"]["layers_pushed"] == 0 and again["push"]["bytes_pushed"] == 0
    assert again["push"]["layers_existing"] == push["layers_pushed"] + push["layers_existing"]
    assert _storage_bytes(registry.root) - before < 4096     # tag links only, no blob

    model = root / "model.py"
    model.write_text(model.read_text() + "\nCHANGED = 1\n")
    before = _storage_bytes(registry.root)
    changed = _build(root, env, "--push")
    assert changed["image"]["release"] != image["release"]
    assert changed["push"]["layers_pushed"] == 1, changed["push"]["layers"]
    grown = _storage_bytes(registry.root) - before
    assert changed["push"]["bytes_pushed"] <= 64 * 1024 and grown <= 64 * 1024, grown


def test_build_without_push_tags_the_release_and_says_so(tmp_path, dockerd, base_image, capsys):
    root = _project(tmp_path, "mlsv-images/local-only", base_image.ref)
    env = _env(dockerd, tmp_path / "docker-config")
    done = run_process("build", "img", "-f", str(root), "--image", "--no-push", env=env,
                       timeout=300)
    assert done.code == 0, done.err
    assert "built mlsv-images/local-only:r-" in done.out
    assert "Step 1/" in done.err            # one line per Dockerfile step in a log
    tags = [t for i in dockerd.client().images.list("mlsv-images/local-only") for t in i.tags]
    assert any(t.startswith("mlsv-images/local-only:r-") for t in tags)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory):
    """A second docker-registry that demands htpasswd credentials (user mlsv, SECRET; user AWS
    with the password moto's ECR hands out)."""
    import bcrypt
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed")
    workdir = new_workdir("authreg")
    lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4)).decode()}"
             for user, pw in (("mlsv", SECRET), ("AWS", _MOTO_ECR_PASSWORD))]
    (workdir / "htpasswd").write_text("\n".join(lines) + "\n")
    address = f"127.0.0.1:{free_port()}"
    (workdir / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        f"http:\n  addr: {address}\n"
        f"auth:\n  htpasswd:\n    realm: mlsv\n    path: {workdir / 'htpasswd'}\n")

    def ready() -> bool:
        try:
            return registry_ready(f"http://{address}")
        except urllib.error.HTTPError as exc:
            return exc.code == 401
    proc = start_process([binary, "serve", str(workdir / "config.yml")],
                         workdir / "registry.log", ready, "docker-registry (htpasswd)")
    yield address
    stop_process(proc, timeout=1)       # it drains for 15 s on SIGTERM; its data is thrown away
    shutil.rmtree(workdir, ignore_errors=True)


#: moto's ECR token is base64("AWS:" + this) for the default account (moto/ecr/models.py).
_MOTO_ECR_PASSWORD = "123456789012-auth-token"


def _docker_config(path: Path, registry: str, user: str, password: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (path / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))


@pytest.fixture(scope="module")
def small_image(dockerd):
    """A tiny image (FROM scratch, one file) for the credential tests: quick to push."""
    client = dockerd.client()
    tag = "mlsv-images/small:1"
    workdir = new_workdir("small-image")
    (workdir / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    (workdir / "x").write_text("x\n")
    client.images.build(path=str(workdir), tag=tag, network_mode="host")
    shutil.rmtree(workdir, ignore_errors=True)
    return tag


def _retag(dockerd, small_image: str, repository: str) -> str:
    dockerd.client().images.get(small_image).tag(repository, "r-000000000001")
    return f"{repository}:r-000000000001"


@pytest.mark.parametrize("config", ["none", "wrong", "right"])
def test_a_registry_that_wants_credentials(tmp_path, monkeypatch, dockerd, small_image,
                                           auth_registry, config):
    from mlserve.artifacts.image import push_image
    from mlserve.errors import MissingCredentials
    ref = _retag(dockerd, small_image, f"{auth_registry}/mlsv-images/small")
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    if config != "none":
        _docker_config(config_dir, auth_registry, "mlsv", SECRET if config == "right" else
                       "wrong-" + SECRET)
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    if config == "right":
        assert push_image(ref, docker_host=dockerd.host).layers_pushed >= 1
        return
    with pytest.raises(MissingCredentials) as caught:
        push_image(ref, docker_host=dockerd.host)
    text = caught.value.render()
    assert caught.value.exit_code == 3 and f"docker login {auth_registry}" in text
    assert ("none are configured" if config == "none" else "refused the credentials") in text
    assert SECRET not in text


def test_ecr_token_from_moto_is_what_the_push_sends(tmp_path, monkeypatch, dockerd, small_image,
                                                    auth_registry):
    from moto.server import ThreadedMotoServer
    from mlserve.artifacts.image import push_image
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
        credentials = registries.credentials_for(ecr)
    finally:
        server.stop()
    assert (credentials.username, credentials.password) == ("AWS", _MOTO_ECR_PASSWORD)
    assert credentials.source == "Amazon ECR" and _MOTO_ECR_PASSWORD not in repr(credentials)
    # moto serves the ECR API, not a registry: the token goes to the local htpasswd registry.
    ref = _retag(dockerd, small_image, f"{auth_registry}/mlsv-images/ecr")
    pushed = push_image(ref, docker_host=dockerd.host, credentials=credentials)
    assert pushed.digest.startswith("sha256:")      # accepted: without them it is refused (above)


def test_ecr_without_aws_credentials_is_exit_3_before_any_build(tmp_path):
    root = _project(tmp_path, "123456789012.dkr.ecr.us-east-1.amazonaws.com/hello", "python:3.11")
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), HOME=str(tmp_path),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
               DOCKER_HOST="unix:///nonexistent/docker.sock")
    done = subprocess.run([*MLSERVE, "build", "img", "-f", str(root), "--image", "--push"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "no AWS credentials" in done.stderr and "AWS_ACCESS_KEY_ID" in done.stderr
    assert "Traceback" not in done.stderr and "Docker engine" not in done.stderr


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:{port}"])
def test_the_engine_unreachable_is_exit_1_with_the_fix(tmp_path, capsys, monkeypatch, host):
    root = _project(tmp_path, "mlsv-images/unreachable", "python:3.11")
    monkeypatch.setenv("DOCKER_HOST", host.format(port=free_port()))
    done = run_cli(capsys, "build", "img", "-f", str(root), "--image", "--no-push")
    assert done.code == 1, done.err
    assert "cannot reach the Docker engine at" in done.err and "DOCKER_HOST" in done.err
    assert "Traceback" not in done.err


def test_image_of_a_target_that_builds_none_is_exit_2(tmp_path, capsys):
    root = _project(tmp_path, "mlsv-images/x", "python:3.11")
    done = run_cli(capsys, "build", "local", "-f", str(root), "--image")
    assert done.code == 2 and "builds no image" in done.err and "provider: docker" in done.err


# Generated: repositories as users write them; the docker SDK's own parser is the oracle.
_component = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*", fullmatch=True)
_host = st.one_of(st.just("localhost"), st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z0-9-]{1,8}){1,3}",
                                                      fullmatch=True),
                  st.builds(lambda h, p: f"{h}:{p}", st.from_regex(r"[a-z0-9.-]{1,12}",
                                                                    fullmatch=True),
                            st.integers(1, 65535)))


@given(host=st.one_of(st.none(), _host), path=st.lists(_component, min_size=1, max_size=4))
def test_registry_of_agrees_with_the_docker_sdk(host, path):
    import docker.auth
    import docker.errors
    repository = "/".join(([host] if host else []) + path)
    try:
        expected = docker.auth.resolve_repository_name(repository)[0]
    except docker.errors.InvalidRepository:     # the engine refuses it at build time anyway
        expected = repository.partition("/")[0]
    assert registries.registry_of(repository) == expected


@given(account=st.from_regex(r"[0-9]{12}", fullmatch=True),
       region=st.from_regex(r"[a-z]{2}-[a-z]{4,9}-[0-9]", fullmatch=True),
       fips=st.booleans(), suffix=st.sampled_from(["", ".cn"]), junk=st.text(min_size=1,
                                                                             max_size=8))
def test_only_ecr_hosts_are_ecr(account, region, fips, suffix, junk):
    host = f"{account}.dkr.ecr{'-fips' if fips else ''}.{region}.amazonaws.com{suffix}"
    assert registries.ECR_HOST.fullmatch(host)
    for other in (host + junk if not junk.isspace() else host + "x", junk + "." + host,
                  host.replace("amazonaws", "amazonawz"), f"{account}x.dkr.ecr.{region}.amazonaws.com",
                  host.replace(account[0], "\u0661")):     # ARABIC-INDIC DIGIT ONE
        assert not registries.ECR_HOST.fullmatch(other)


@given(password=st.text(alphabet=st.characters(codec="utf-8"), min_size=8, max_size=40),
       said=st.text(max_size=40))
def test_a_password_never_reaches_a_message(password, said):
    # A password that is a piece of the message's own words (CI drew "docker c", inside
    # source='docker config') would be found without having leaked: such draws prove nothing.
    stand_in = registries.Credentials("user", "\0" * len(password), "r.example.com", "docker config")
    assume(password not in repr(stand_in) + registries.refused("r.example.com", stand_in, said).render())
    credentials = registries.Credentials("user", password, "r.example.com", "docker config")
    assert password not in repr(credentials)
    error = registries.refused("r.example.com", credentials, said + password + said)
    assert password not in error.render().replace(said, "")


@pytest.mark.parametrize("content", [
    "not json", "{}", '{"auths": {"r.example.com": {"auth": "!!!not-base64"}}}',
    '{"auths": {"r.example.com": {}}}', '{"auths": []}', '{"credHelpers": {"r.example.com": 7}}',
    '{"auths": {"r.example.com": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
])
def test_a_hostile_docker_config_is_none_or_an_exit_3(tmp_path, monkeypatch, content):
    from mlserve.errors import MlserveError
    (tmp_path / "config.json").write_text(content)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    try:
        found = registries.credentials_for("r.example.com")
    except MlserveError as exc:
        assert exc.exit_code == 3
    else:
        assert found is None or found.registry == "r.example.com"


def test_a_credential_helper_is_asked(tmp_path, monkeypatch):
    helper = tmp_path / "bin" / "docker-credential-mlsvtest"
    helper.parent.mkdir()
    helper.write_text('#!/bin/sh\nread server\n'
                      f'echo "{{\\"ServerURL\\": \\"$server\\", \\"Username\\": \\"u\\", '
                      f'\\"Secret\\": \\"{SECRET}\\"}}"\n')
    helper.chmod(0o755)
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {"r.example.com":
                                                                      "mlsvtest"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.setenv("PATH", f"{helper.parent}:{os.environ['PATH']}")
    found = registries.credentials_for("r.example.com")
    assert (found.username, found.password) == ("u", SECRET)
    assert found.source == "credential helper docker-credential-mlsvtest"
    helper.unlink()
    with pytest.raises(Exception) as caught:
        registries.credentials_for("r.example.com")
    assert getattr(caught.value, "exit_code", None) == 3 and SECRET not in str(caught.value)
