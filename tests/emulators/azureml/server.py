"""The emulator's HTTPS front (one port, a self-signed certificate the tests trust through
REQUESTS_CA_BUNDLE: azure-core sends bearer tokens over TLS only):

``GET  /metadata/endpoints``          ARM's cloud metadata (what ``ARM_CLOUD_METADATA_URL`` names:
                                      the SDK takes the resource manager URL from it)
``GET  /msi/token``                   an App Service managed identity endpoint (``IDENTITY_ENDPOINT``
                                      + ``IDENTITY_HEADER``: azure-identity's default chain)
``/subscriptions/.../workspaces/WS/...``  ARM (workspace, environment versions, online endpoints
                                      and deployments, listKeys, getLogs; bearer token required)
``GET  /subscriptions/S/providers/Microsoft.MachineLearningServices/locations/L/
mfeOperationsStatus/ID``              async operation status (``Azure-AsyncOperation``)
``POST /score/ENDPOINT/score``        the endpoint's scoring URI (``Authorization: Bearer KEY``;
                                      ``azureml-model-deployment: NAME`` pins a deployment)
``/_emulator/{faults,reset,calls,health}``  the tests' admin routes

No request body is logged (a deployment's environment variables may hold secrets).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api import PROVIDER, ApiError, Store, not_found
from .faults import ERRORS

log = logging.getLogger("azureml-emulator")
WORKSPACE = re.compile(r"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                       + re.escape(PROVIDER) + r"/workspaces/([^/]+)(/.*)?$", re.I)
OPERATION = re.compile(r"^/subscriptions/([^/]+)/providers/" + re.escape(PROVIDER)
                       + r"/locations/([^/]+)/mfeOperationsStatus/([^/]+)$", re.I)
SCORE = re.compile(r"^/score/([^/]+)/score$")
CLOUD = "MlserveEmulator"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "azureml-emulator"
    store: Store
    identity_header: str

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, headers: dict | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        self._send(status, b"" if status == 204 else json.dumps(payload).encode(), headers)

    def _error(self, error: ApiError) -> None:
        self._json(error.status, error.body(), {"x-ms-failure-cause": "service",
                                                **error.headers})

    def _record(self, operation: str, name: str | None, code: str | None) -> None:
        with self.store.lock:
            self.store.calls.append({"operation": operation, "name": name, "code": code})
        log.info("%s %s -> %s", operation, name or "", code or "ok")

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def _route(self, method: str) -> None:
        body = self._body()
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/_emulator/"):
            return self._admin(method, path, body)
        if path == "/metadata/endpoints":
            return self._json(200, self._metadata())
        if path == "/msi/token":
            return self._token(parse_qs(url.query))
        match = SCORE.match(path)
        if match and method == "POST":
            return self._score(match.group(1), body)
        self._arm(method, path, body)

    # -- identity and metadata -----------------------------------------------------------------
    def _metadata(self) -> list[dict]:
        base = self.store.base_url
        return [{"name": CLOUD, "portal": "https://portal.mlserve.test",
                 "resourceManager": base + "/",
                 "authentication": {"loginEndpoint": base + "/", "audiences": [base + "/"],
                                    "tenant": "common", "identityProvider": "AAD"},
                 "suffixes": {"storage": "core.mlserve.test", "acrLoginServer": "azurecr.io"}}]

    def _token(self, query: dict) -> None:
        """App Service's managed identity protocol (api-version 2019-08-01)."""
        if self.headers.get("X-IDENTITY-HEADER") != self.identity_header:
            self._record("GET msi/token", None, "Unauthorized")
            return self._json(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER is wrong "
                                    "or missing."})
        resource = (query.get("resource") or [""])[0]
        self._record("GET msi/token", resource, None)
        self._json(200, {"access_token": self.store.token, "expires_on": str(int(time.time())
                                                                             + 3600),
                         "resource": resource, "token_type": "Bearer",
                         "client_id": "00000000-0000-0000-0000-000000000002"})

    # -- ARM -----------------------------------------------------------------------------------
    def _arm(self, method: str, path: str, body: bytes) -> None:
        operation, name = f"{method} {_kind(path)}", _name(path)
        try:
            if self.headers.get("Authorization") != f"Bearer {self.store.token}":
                raise ApiError("InvalidAuthenticationToken", "The access token is invalid or "
                               "missing.", 401)
            fault = self.store.faults.take(operation)
            if fault is not None:
                raise _injected(fault, path, method)
            status, payload, headers = self._dispatch(method, path, body)
        except ApiError as exc:
            self._record(operation, name, exc.code)
            return self._error(exc)
        except Exception as exc:  # a bug here must look like ARM's 500, not a hang
            log.exception("%s failed", operation)
            self._record(operation, name, "InternalServerError")
            return self._error(ApiError("InternalServerError", f"emulator error: {exc}", 500))
        self._record(operation, name, None)
        with self.store.lock:           # the operations' threads change resources meanwhile
            text = json.dumps(payload).encode() if status != 204 else b""
        self._send(status, text, headers)

    def _dispatch(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict]:
        store = self.store
        found = OPERATION.match(path)
        if found and method == "GET":
            # ARM clients poll again after retry-after(-ms); without it azure-ai-ml waits 5 s
            return 200, store.operation_status(found.group(3)), {"retry-after-ms": "200"}
        found = WORKSPACE.match(path)
        if not found:
            raise ApiError("InvalidResourceType", f"No route for {method} {path}.", 404)
        sub, rg, ws, rest = found.group(1), found.group(2), found.group(3), found.group(4) or ""
        parts = [p for p in rest.split("/") if p]
        data = json.loads(body) if body.strip() else {}
        scope = store.scope(sub, rg, ws)
        if not parts and method == "GET":
            return 200, {"id": scope, "name": ws, "type": f"{PROVIDER}/workspaces",
                         "location": store.location, "kind": "Default",
                         "identity": {"type": "SystemAssigned"},
                         "properties": {"friendlyName": ws, "workspaceId": str(uuid.uuid5(
                             uuid.NAMESPACE_URL, scope)), "provisioningState": "Succeeded",
                             "discoveryUrl": f"{store.base_url}/discovery"}}, {}
        kind = parts[0].lower() if parts else ""
        if kind == "environments" and len(parts) == 4 and parts[2].lower() == "versions":
            key = f"{parts[1]}/versions/{parts[3]}".lower()
            if method == "PUT":
                with store.lock:
                    store.environments[key] = {
                        "id": f"{scope}/environments/{parts[1]}/versions/{parts[3]}",
                        "name": parts[3], "type": f"{PROVIDER}/workspaces/environments/versions",
                        "properties": {**(data.get("properties") or {}),
                                       "provisioningState": "Succeeded"}}
                return 200, store.environments[key], {}
            if method == "GET":
                if key not in store.environments:
                    raise not_found("environments", f"workspaces/{ws}/environments/{key}")
                return 200, store.environments[key], {}
        if kind == "onlineendpoints":
            return self._endpoints(method, sub, rg, ws, parts[1:], data)
        raise ApiError("InvalidResourceType", f"No route for {method} {path} in the emulator "
                       "(tests/emulators/azureml/README.md).", 404)

    def _endpoints(self, method: str, sub: str, rg: str, ws: str, parts: list[str],
                   data: dict) -> tuple[int, Any, dict]:
        store = self.store
        if not parts:
            if method == "GET":
                with store.lock:
                    return 200, {"value": [e.body for e in store.endpoints.values()]}, {}
            raise ApiError("MethodNotAllowed", f"{method} on onlineEndpoints", 405)
        name, where = parts[0], f"workspaces/{ws}/onlineEndpoints/{parts[0]}"
        if len(parts) == 1:
            if method == "PUT":
                return store.put_endpoint(sub, rg, ws, name, data)
            if method == "DELETE":
                return store.delete_endpoint(sub, rg, ws, name)
            if method == "GET":
                return 200, store.endpoint(name, where).body, {}
        if len(parts) == 2 and parts[1] == "listKeys" and method == "POST":
            return 200, store.endpoint(name, where).keys, {}
        if len(parts) >= 2 and parts[1] == "deployments":
            endpoint = store.endpoint(name, where)
            if len(parts) == 2 and method == "GET":
                with store.lock:
                    return 200, {"value": [d.body for d in endpoint.deployments.values()]}, {}
            if len(parts) < 3:
                raise ApiError("MethodNotAllowed", f"{method} on deployments", 405)
            deployment = parts[2]
            if len(parts) == 3:
                if method == "PUT":
                    return store.put_deployment(sub, rg, ws, name, deployment, data)
                if method == "DELETE":
                    return store.delete_deployment(sub, rg, ws, name, deployment)
                if method == "GET":
                    found = endpoint.deployments.get(deployment)
                    if found is None:
                        raise not_found("deployments", f"{where}/deployments/{deployment}")
                    return 200, found.body, {}
            if len(parts) == 4 and parts[3] == "getLogs" and method == "POST":
                found = endpoint.deployments.get(deployment)
                if found is None:
                    raise not_found("deployments", f"{where}/deployments/{deployment}")
                if (data.get("containerType") or "InferenceServer") != "InferenceServer":
                    return 200, {"content": ""}, {}
                tail = int(data.get("tail") or 0)
                text = "".join(i.logs(tail) for i in list(found.instances))
                return 200, {"content": text}, {}
        raise ApiError("MethodNotAllowed", f"{method} /{'/'.join(parts)}", 405)

    # -- scoring -------------------------------------------------------------------------------
    def _score(self, endpoint: str, body: bytes) -> None:
        auth = self.headers.get("Authorization") or ""
        key = auth[7:] if auth.startswith("Bearer ") else None
        pinned = self.headers.get("azureml-model-deployment")
        name = f"{endpoint}/{pinned}" if pinned else endpoint      # as the calls list shows it
        try:
            deployment, instance = self.store.route(endpoint, key, pinned)
            headers = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
            status, reply_headers, reply = instance.request(
                "POST", deployment.routes["scoringRoute"], body, headers, timeout=90)
        except ApiError as exc:
            self._record("POST score", name, exc.code)
            return self._error(exc)
        except (OSError, http.client.HTTPException) as exc:
            self._record("POST score", name, "BadGateway")
            return self._json(502, {"error": {"code": "BadGateway",
                                              "message": f"upstream failed: {exc}"}})
        self._record("POST score", name, None if status < 400 else str(status))
        content_type = next((v for k, v in reply_headers.items() if k.lower() == "content-type"),
                            "application/json")
        self._send(status, reply, {"azureml-model-deployment": deployment.name}, content_type)

    # -- admin -----------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: bytes) -> None:
        store = self.store
        if method == "GET" and path == "/_emulator/health":
            return self._json(200, {"status": "ok"})
        if method == "GET" and path == "/_emulator/calls":
            with store.lock:
                return self._json(200, list(store.calls))
        try:
            spec = json.loads(body or b"{}")
            if path == "/_emulator/faults":
                store.faults.update(spec)
                return self._json(200, store.faults.snapshot())
            if path == "/_emulator/reset":
                store.reset()
                return self._json(200, {"reset": True})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return self._json(400, {"error": str(exc)})
        self._json(404, {"error": f"no admin route {method} {path}"})


def _kind(path: str) -> str:
    """The resource kind a path addresses last (``deployments``, ``listKeys``...)."""
    parts = [p for p in path.split("/") if p]
    known = ("onlineEndpoints", "deployments", "listKeys", "getLogs", "environments",
             "mfeOperationsStatus", "workspaces")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in known:
            return parts[index]
    return "unknown"


def _name(path: str) -> str | None:
    parts = [p for p in path.split("/") if p]
    for kind in ("deployments", "onlineEndpoints"):
        if kind in parts and parts.index(kind) + 1 < len(parts):
            return parts[parts.index(kind) + 1]
    return None


def _injected(fault, path: str, method: str) -> ApiError:
    status, message = ERRORS[fault.code]
    found = WORKSPACE.match(path)
    scope = path.split("/providers/", 1)[-1] if found else path
    verb = {"PUT": "write", "DELETE": "delete", "GET": "read"}.get(method, "action")
    text = fault.message or message.format(kind=_kind(path), verb=verb, scope=scope,
                                           sub=found.group(1) if found else "")
    headers = {"Retry-After": "1"} if status == 429 else {}
    return ApiError(fault.code, text, status, headers)


def make_server(store: Store, host: str, port: int, ssl_context,
                identity_header: str) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"store": store,
                                                "identity_header": identity_header})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    return server
