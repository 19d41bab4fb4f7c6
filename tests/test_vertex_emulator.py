"""The Vertex AI emulator (tests/emulators/vertex), driven through the real
google-cloud-aiplatform SDK and raw HTTP: it runs a deployed model's image under Vertex's
container contract (AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE, health before ready,
predict proxied to the predict route), routes by the traffic split, and answers with Google's
error shapes. The image is examples/hello built by mlserve's image builder, once per module."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hypothesis import given, settings, strategies as st

from tests.test_sagemaker_emulator import _build


@pytest.fixture(scope="module")
def image(tmp_path_factory, dockerd, registry, base_image) -> str:
    # the SageMaker emulator tests' image: built once per session (the engine's cache)
    return _build(tmp_path_factory.mktemp("vx-images"), dockerd, registry, base_image, "hello")


@pytest.fixture
def api(vertex_env):
    from tests.test_vertex_deploy import Vertex
    return Vertex(vertex_env)


def _upload(api, model_id: str, image: str, **spec) -> str:
    op = api.models.upload_model(request={"parent": api.location, "model_id": model_id,
                                          "model": {"display_name": model_id, "container_spec":
                                                    {"image_uri": image, **spec}}})
    return op.result(timeout=60).model


def _endpoint(api, endpoint_id: str) -> str:
    op = api.endpoints.create_endpoint(parent=api.location, endpoint_id=endpoint_id,
                                       endpoint={"display_name": endpoint_id})
    return op.result(timeout=60).name


def _deploy(api, endpoint: str, model: str, split: dict | None = None):
    return api.endpoints.deploy_model(
        endpoint=endpoint, traffic_split=split or {"0": 100},
        deployed_model={"model": model, "dedicated_resources": {
            "machine_spec": {"machine_type": "n1-standard-2"}, "min_replica_count": 1,
            "max_replica_count": 1}})


def _raw(vertex_env, method: str, path: str, body: dict | None = None,
         token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(f"{vertex_env.emulator.url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"}
                                                 if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _container_env(vertex_env) -> dict:
    client = vertex_env.dockerd.client()
    (container,) = client.containers.list(filters={"label": vertex_env.emulator.label})
    return dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])


def test_the_image_runs_under_vertex_contract_and_the_split_routes(vertex_env, api, image):
    """Default routes and a custom port: Vertex's AIP_* variables reach the container, the
    runtime serves on them, and a 50/50 split sends predictions to both deployed models."""
    endpoint = _endpoint(api, "contract")
    plain = _upload(api, "plain", image)
    first = _deploy(api, endpoint, plain).result(timeout=120).deployed_model.id
    env = _container_env(vertex_env)
    assert env["AIP_HTTP_PORT"] == "8080" and env["AIP_DEPLOYED_MODEL_ID"] == first
    assert env["AIP_PREDICT_ROUTE"] == f"/v1/endpoints/contract/deployedModels/{first}:predict"
    assert env["AIP_HEALTH_ROUTE"] == f"/v1/endpoints/contract/deployedModels/{first}"
    assert api.predict("contract") == {"y": [2, 4]}      # (protobuf Values: 2.0 == 2)

    tripled = _upload(api, "tripled", image, ports=[{"container_port": 9000}],
                      env=[{"name": "FACTOR", "value": "3"}], health_route="/ping",
                      predict_route="/vertex/predict")
    second = _deploy(api, endpoint, tripled, {"0": 50, first: 50}).result(
        timeout=120).deployed_model.id
    split = dict(api.endpoint("contract").traffic_split)
    assert split == {first: 50, second: 50}
    seen = {tuple(api.predict("contract")["y"]) for _ in range(40)}
    assert seen == {(2, 4), (3, 6)}

    status, body = _raw(vertex_env, "POST", f"/v1/{endpoint}:undeployModel",
                        {"deployedModelId": first}, token=_token(api))
    assert status == 400 and body["error"]["status"] == "FAILED_PRECONDITION", body
    api.endpoints.undeploy_model(endpoint=endpoint, deployed_model_id=first,
                                 traffic_split={second: 100}).result(timeout=60)
    assert {api.predict("contract")["y"][0] for _ in range(5)} == {3}


def _token(api) -> str:
    import google.auth.transport.requests
    credentials = api.endpoints._transport._credentials
    credentials.refresh(google.auth.transport.requests.Request())
    return credentials.token


def test_a_model_that_never_becomes_ready_fails_the_deploy(vertex_env, api, image):
    vertex_env.faults(health_seconds=3)
    endpoint = _endpoint(api, "unready")
    loopback = _upload(api, "loopback", image, env=[{"name": "MLSERVE_HOST",
                                                       "value": "127.0.0.1"}])
    op = _deploy(api, endpoint, loopback)
    with pytest.raises(Exception) as caught:
        op.result(timeout=120)
    assert "never became ready" in str(caught.value) and "127.0.0.1 only" in str(caught.value)
    assert list(api.endpoint("unready").deployed_models) == []
    assert vertex_env.dockerd.client().containers.list(
        filters={"label": vertex_env.emulator.label}) == []


def test_errors_are_googles_shape(vertex_env, api, image):
    token = _token(api)
    status, body = _raw(vertex_env, "GET", f"/v1/{api.location}/endpoints")
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED", body
    assert set(body["error"]) == {"code", "message", "status"} and body["error"]["code"] == 401
    status, body = _raw(vertex_env, "GET", f"/v1/{api.location}/endpoints/nope", token=token)
    assert (status, body["error"]["status"]) == (404, "NOT_FOUND"), body
    endpoint = _endpoint(api, "shapes")
    model = _upload(api, "shapes", image)
    status, body = _raw(vertex_env, "POST", f"/v1/{endpoint}:deployModel", token=token, body={
        "deployedModel": {"model": model, "dedicatedResources": {
            "machineSpec": {"machineType": "n1-nope-3"}, "minReplicaCount": 1}}})
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), body
    assert body["error"]["message"] == 'Machine type "n1-nope-3" is not supported.'
    status, body = _raw(vertex_env, "POST", f"/v1/{endpoint}:deployModel", token=token, body={
        "deployedModel": {"model": model, "dedicatedResources": {
            "machineSpec": {"machineType": "n1-standard-2", "acceleratorType": "NVIDIA_L4",
                            "acceleratorCount": 1}, "minReplicaCount": 1}}})
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), body
    vertex_env.faults(quotas={"custom_model_serving_cpus": 1})
    status, body = _raw(vertex_env, "POST", f"/v1/{endpoint}:deployModel", token=token, body={
        "deployedModel": {"model": model, "dedicatedResources": {
            "machineSpec": {"machineType": "n1-standard-2"}, "minReplicaCount": 1}}})
    assert (status, body["error"]["status"]) == (429, "RESOURCE_EXHAUSTED"), body
    assert "custom_model_serving_cpus" in body["error"]["message"]
    vertex_env.faults(quotas={}, errors=[{"method": "GetModel", "status": "PERMISSION_DENIED",
                                          "count": 1}])
    status, body = _raw(vertex_env, "GET", f"/v1/{model}", token=token)
    assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED"), body
    assert "aiplatform.models.get" in body["error"]["message"]
    assert _raw(vertex_env, "GET", f"/v1/{model}", token=token)[0] == 200
    status, body = _raw(vertex_env, "PATCH", f"/v1/{endpoint}?updateMask=trafficSplit",
                        {"trafficSplit": {"123": 100}}, token=token)
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT"), body


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) |
                     st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
_PATHS = ["models:upload", "endpoints", "endpoints/e1:deployModel", "endpoints/e1:undeployModel",
          "endpoints/e1:predict", "models/m%40x", "endpoints/e1?updateMask=trafficSplit"]


@settings(max_examples=60)
@given(path=st.sampled_from(_PATHS), body=_JSON | st.dictionaries(
    st.sampled_from(["model", "deployedModel", "trafficSplit", "instances", "deployedModelId",
                     "displayName", "modelId"]), _JSON, max_size=3))
def test_any_request_body_is_answered_with_a_client_error(vertex_emulator, path, body):
    """Whatever a client sends is a 4xx in Google's shape, never a 500 or a hang."""
    from tests.infra.vertex import PROJECT, REGION
    url = f"{vertex_emulator.url}/v1/projects/{PROJECT}/locations/{REGION}/{path}"
    method = "PATCH" if "updateMask" in path else "POST"
    token = _anonymous_token(vertex_emulator)
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, answer = reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        status, answer = exc.code, json.loads(exc.read())
    if status == 200:                           # a well-formed request (an empty model list...)
        return
    assert 400 <= status < 500, (status, answer)
    assert set(answer["error"]) >= {"code", "message", "status"} and \
        answer["error"]["code"] == status


def _anonymous_token(emulator) -> str:
    """A self-signed-JWT-shaped bearer token (issuer = subject), as a service account sends."""
    import base64
    part = base64.urlsafe_b64encode(json.dumps(
        {"iss": "t@p.iam.gserviceaccount.com", "sub": "t@p.iam.gserviceaccount.com"}
    ).encode()).decode().rstrip("=")
    return f"e30.{part}.c2ln"
