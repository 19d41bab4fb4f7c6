"""The Azure ML emulator's own contract, over raw HTTPS (no SDK): what it answers must be what
the REST reference documents, or the adapter's tests prove nothing. Control plane and scoring
auth only; deployments that run images are exercised through the adapter in
tests/test_azureml_deploy.py."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

import pytest

from tests.infra.azureml import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE

SCOPE = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
         f"Microsoft.MachineLearningServices/workspaces/{WORKSPACE}")


def request(emulator, method: str, path: str, data=None, token: str | None = "auto",
            headers: dict | None = None) -> tuple[int, dict, dict]:
    context = ssl.create_default_context(cafile=str(emulator.ca_bundle))
    if token == "auto":
        token_request = urllib.request.Request(
            f"{emulator.url}/msi/token?resource=x&api-version=2019-08-01",
            headers={"X-IDENTITY-HEADER": emulator.identity_header})
        with urllib.request.urlopen(token_request, context=context, timeout=10) as reply:
            token = json.loads(reply.read())["access_token"]
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    url = path if path.startswith("https://") else f"{emulator.url}{path}"
    body = None if data is None else json.dumps(data).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, sent, method=method),
                                    context=context, timeout=30) as reply:
            raw = reply.read()
            return reply.status, dict(reply.headers), json.loads(raw) if raw else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, dict(exc.headers), json.loads(raw) if raw else {}


@pytest.fixture
def emulator(azureml_emulator):
    azureml_emulator.reset()
    yield azureml_emulator
    azureml_emulator.reset()


def wait_operation(emulator, headers: dict) -> dict:
    deadline = time.monotonic() + 30
    while True:
        _, _, status = request(emulator, "GET", headers["Azure-AsyncOperation"])
        if status["status"] != "InProgress" or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_arm_needs_the_managed_identity_token(emulator):
    code, _, body = request(emulator, "GET", f"{SCOPE}/onlineEndpoints", token=None)
    assert code == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    code, _, body = request(emulator, "GET", f"{SCOPE}/onlineEndpoints", token="forged")
    assert code == 401
    code, _, _ = request(emulator, "GET", "/msi/token?resource=x", token=None,
                         headers={"X-IDENTITY-HEADER": "wrong"})
    assert code == 401


def test_an_endpoint_goes_through_an_async_operation_and_has_keys(emulator):
    code, headers, body = request(emulator, "PUT", f"{SCOPE}/onlineEndpoints/ep1",
                                  {"location": "eastus", "properties": {"authMode": "Key"}})
    assert code == 201 and body["properties"]["provisioningState"] == "Creating"
    assert "Azure-AsyncOperation" in headers and headers.get("retry-after-ms")
    assert wait_operation(emulator, headers)["status"] == "Succeeded"
    code, _, found = request(emulator, "GET", f"{SCOPE}/onlineEndpoints/ep1")
    assert found["properties"]["provisioningState"] == "Succeeded"
    keys = request(emulator, "POST", f"{SCOPE}/onlineEndpoints/ep1/listKeys", {})[2]
    uri = found["properties"]["scoringUri"]
    assert request(emulator, "POST", uri, {"input": 1}, token=None)[0] == 401
    assert request(emulator, "POST", uri, {"input": 1}, token="wrong-key")[0] == 401
    code, _, body = request(emulator, "POST", uri, {"input": 1}, token=keys["primaryKey"])
    assert code == 424 and body["error"]["code"] == "NoValidDeployments"
    code, _, body = request(emulator, "PUT", f"{SCOPE}/onlineEndpoints/ep1",
                            {"properties": {"authMode": "Key", "traffic": {"ghost": 100}}})
    assert code == 400 and "ghost" in body["error"]["message"]


def test_error_shapes(emulator):
    code, _, body = request(emulator, "GET", f"{SCOPE}/onlineEndpoints/nope")
    assert code == 404 and body["error"]["code"] == "ResourceNotFound"
    request(emulator, "PUT", f"{SCOPE}/onlineEndpoints/ep2", {"properties": {}})
    code, _, body = request(emulator, "PUT", f"{SCOPE}/onlineEndpoints/ep2/deployments/blue",
                            {"sku": {"capacity": 1}, "properties": {
                                "endpointComputeType": "Managed", "instanceType": "Standard_X1",
                                "environmentId": f"{SCOPE}/environments/e/versions/1"}})
    assert code == 400 and body["error"]["code"] == "BadArgument"
    assert "Standard_X1" in body["error"]["message"]
    emulator.faults(errors=[{"operation": "GET onlineEndpoints", "code": "TooManyRequests",
                             "count": 1}])
    code, headers, body = request(emulator, "GET", f"{SCOPE}/onlineEndpoints/ep2")
    assert code == 429 and headers.get("Retry-After") and \
        body["error"]["code"] == "TooManyRequests"
    assert request(emulator, "GET", f"{SCOPE}/onlineEndpoints/ep2")[0] == 200   # count used up
    emulator.faults(errors=[{"operation": "*", "code": "AuthorizationFailed", "count": None}])
    code, _, body = request(emulator, "DELETE", f"{SCOPE}/onlineEndpoints/ep2")
    assert code == 403 and "does not have authorization to perform action" in \
        body["error"]["message"] and "onlineEndpoints/delete" in body["error"]["message"]
    assert [c["code"] for c in emulator.calls()][-1] == "AuthorizationFailed"
