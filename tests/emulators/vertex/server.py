"""The emulator's HTTP front: Vertex AI's REST surface (``/v1/...``; long-running operations
also under ``/ui/...``, where the SDK's REST transport polls them), the OAuth 2 token endpoint
ADC refreshes against (``POST /token``), Cloud Logging's ``POST /v2/entries:list`` for an
endpoint's container output, and the test's admin routes:

``POST /_emulator/faults``  set faults (``faults.py``)
``POST /_emulator/reset``   forget every resource and fault, remove every container
``GET  /_emulator/calls``   the methods received, in order (``[{"method", "name", "code"}]``)
``GET  /_emulator/health``  200 once serving

Every API request needs ``Authorization: Bearer TOKEN``: a token ``/token`` issued, or a
service account's self-signed JWT (signatures are not checked), else 401 UNAUTHENTICATED. Errors are Google's JSON shape (``errors.py``). Request bodies are never
logged (a container spec's env may hold secrets).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import secrets
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import ApiError, invalid
from .store import MAX_PREDICT_BYTES, Store

log = logging.getLogger("vertex-emulator")
_LOC = r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/:]+)"
ROUTES = [  # (HTTP method, path pattern after /v1/, RPC method)
    ("POST", rf"{_LOC}/models:upload", "UploadModel"),
    ("GET", rf"{_LOC}/models", "ListModels"),
    ("GET", rf"{_LOC}/models/(?P<id>[^/:]+)", "GetModel"),
    ("DELETE", rf"{_LOC}/models/(?P<id>[^/:]+)", "DeleteModel"),
    ("POST", rf"{_LOC}/endpoints", "CreateEndpoint"),
    ("GET", rf"{_LOC}/endpoints", "ListEndpoints"),
    ("GET", rf"{_LOC}/endpoints/(?P<id>[^/:]+)", "GetEndpoint"),
    ("PATCH", rf"{_LOC}/endpoints/(?P<id>[^/:]+)", "UpdateEndpoint"),
    ("DELETE", rf"{_LOC}/endpoints/(?P<id>[^/:]+)", "DeleteEndpoint"),
    ("POST", rf"{_LOC}/endpoints/(?P<id>[^/:]+):deployModel", "DeployModel"),
    ("POST", rf"{_LOC}/endpoints/(?P<id>[^/:]+):undeployModel", "UndeployModel"),
    ("POST", rf"{_LOC}/endpoints/(?P<id>[^/:]+):predict", "Predict"),
    ("GET", rf"(?P<op>{_LOC}/(?:[a-zA-Z]+/[^/]+/)?operations/[^/:]+)", "GetOperation"),
    ("POST", rf"(?P<op>{_LOC}/(?:[a-zA-Z]+/[^/]+/)?operations/[^/:]+):cancel",
     "CancelOperation"),
    ("GET", rf"{_LOC}/(?P<kind>endpoints|models)/(?P<id>[^/:]+)/operations", "ListOperations"),
]
ROUTES = [(verb, re.compile(pattern), method) for verb, pattern, method in ROUTES]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "vertex-emulator"
    store: Store

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, method: str, name: str | None, code: str | None) -> None:
        with self.store.lock:
            self.store.calls.append({"method": method, "name": name, "code": code})
        log.info("%s %s -> %s", method, name or "", code or "ok")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, verb: str) -> None:
        body = self._body()
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        if path.startswith("/_emulator/"):
            return self._admin(verb, path, body)
        if path == "/token" and verb == "POST":
            return self._token(body)
        if path == "/v2/entries:list" and verb == "POST":
            return self._api("ListLogEntries", None, body, lambda p: self._entries(p))
        for prefix in ("/v1/", "/ui/"):
            if not path.startswith(prefix):
                continue
            for route_verb, pattern, method in ROUTES:
                found = pattern.fullmatch(path[len(prefix):])
                if found and route_verb == verb:
                    return self._api(method, found, body, lambda p: self._call(
                        method, found, p, query))
        self._json(404, ApiError("NOT_FOUND", f"No route for {verb} {url.path}").body())

    # -- auth, faults, errors ----------------------------------------------------------------
    def _token(self, body: bytes) -> None:
        """OAuth 2's token endpoint for a service account: a signed JWT assertion
        (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``) for an access token. The
        signature is not checked (no IAM here); the JWT must name this endpoint as its
        audience."""
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        claims = _claims(form.get("assertion", [""])[0])
        if form.get("grant_type", [""])[0] != "urn:ietf:params:oauth:grant-type:jwt-bearer" \
                or not str(claims.get("aud", "")).endswith("/token") or not claims.get("iss"):
            self._record("Token", None, "invalid_grant")
            return self._json(400, {"error": "invalid_grant",
                                    "error_description": "Invalid JWT Signature."})
        token = "ya29.emulator-" + secrets.token_urlsafe(24)
        with self.store.lock:
            self.store.tokens.add(token)
        self._record("Token", None, None)
        self._json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _api(self, method: str, found, body: bytes, handler) -> None:
        name = None
        if found is not None:
            groups = found.groupdict()
            name = groups.get("op") or (f"projects/{groups['project']}/locations/"
                                        f"{groups['location']}" +
                                        (f"/{_kind(method, groups)}/{groups['id']}"
                                         if groups.get("id") else ""))
        try:
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer ") or not (auth[7:] in self.store.tokens
                                                      or _self_signed(auth[7:])):
                raise ApiError("UNAUTHENTICATED", "Request had invalid authentication "
                               "credentials. Expected OAuth 2 access token, login cookie or "
                               "other valid authentication credential. See "
                               "https://developers.google.com/identity/sign-in/web/devconsole-project.")
            injected = self.store.faults.take(method, name or "")
            if injected:
                raise injected
            if method == "Predict" and len(body) > MAX_PREDICT_BYTES:
                raise invalid(f"Request payload size exceeds the limit: {MAX_PREDICT_BYTES} "
                              "bytes.")
            try:
                params = json.loads(body) if body.strip() else {}
            except ValueError:
                raise invalid("Invalid JSON payload received.") from None
            if not isinstance(params, dict):
                raise invalid("Invalid JSON payload received. Expected an object.")
            result = handler(params)
        except ApiError as exc:
            self._record(method, name, exc.status)
            return self._json(exc.http, exc.body())
        except Exception as exc:  # a bug here must look like Google's 500, not a hang
            log.exception("%s failed", method)
            self._record(method, name, "INTERNAL")
            return self._json(500, ApiError("INTERNAL", f"emulator error: {exc}").body())
        self._record(method, name, None)
        if isinstance(result, tuple):                 # a predict the container refused
            return self._json(*result)
        self._json(200, result)

    # -- methods -----------------------------------------------------------------------------
    def _call(self, method: str, found, params: dict, query: dict) -> Any:
        store, g = self.store, found.groupdict()
        if method == "GetOperation":
            return store.get_operation(g["op"])
        if method == "CancelOperation":
            return store.cancel_operation(g["op"])
        if method == "Predict":
            return self._predict(f"{store.parent(g['project'], g['location'])}/endpoints/"
                                 f"{g['id']}", params)
        with store.lock:
            parent = store.parent(g["project"], g["location"])
            resource = f"{parent}/{_kind(method, g)}/{g['id']}" if g.get("id") else None
            if method == "UploadModel":
                return store.upload_model(parent, params)
            if method == "ListModels":
                return store.list_models(parent, query)
            if method == "GetModel":
                return json.loads(json.dumps(store.model(resource)))
            if method == "DeleteModel":
                return store.delete_model(resource)
            if method == "CreateEndpoint":
                return store.create_endpoint(parent, params, query)
            if method == "ListEndpoints":
                return store.list_endpoints(parent, query)
            if method == "GetEndpoint":
                return store.get_endpoint(resource)
            if method == "UpdateEndpoint":
                return store.update_endpoint(resource, params, query)
            if method == "DeleteEndpoint":
                return store.delete_endpoint(resource)
            if method == "DeployModel":
                _enum_names(params)
                return store.deploy_model(resource, params)
            if method == "UndeployModel":
                return store.undeploy_model(resource, params)
            if method == "ListOperations":
                return store.list_operations(resource)
        raise ApiError("UNIMPLEMENTED", f"{method} is not modelled by the emulator.")

    def _predict(self, name: str, params: dict) -> Any:
        instances = params.get("instances")
        if not isinstance(instances, list) or not instances:
            raise invalid('"instances" must be a non-empty list.')
        with self.store.lock:
            deployed, replica = self.store.route(name)
        body = json.dumps({k: v for k, v in params.items()
                           if k in ("instances", "parameters")}).encode()
        try:
            status, reply = replica.request("POST", replica.predict_route, body,
                                            {"Content-Type": "application/json"}, timeout=60)
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError("UNAVAILABLE", f"The model server did not answer: {exc}") from None
        text = reply.decode(errors="replace")
        if not 200 <= status < 300:
            kind = "FAILED_PRECONDITION" if status < 500 else "INTERNAL"
            return status, {"error": {"code": status, "message": text[:2000], "status": kind}}
        try:
            answer = json.loads(text)
            predictions = answer["predictions"]
        except (ValueError, KeyError, TypeError):
            raise ApiError("INTERNAL", "The model server's response is not a JSON object with "
                           f'"predictions": {text[:300]}') from None
        model = self.store.models.get(deployed["model"], {})
        return {"predictions": predictions, "deployedModelId": deployed["id"],
                "model": deployed["model"], "modelDisplayName": model.get("displayName", ""),
                "modelVersionId": "1"}

    def _entries(self, params: dict) -> dict:
        """Cloud Logging ``entries.list`` for the one filter shape mlserve sends:
        ``resource.type="aiplatform.googleapis.com/Endpoint" AND
        resource.labels.endpoint_id="ID"`` (optionally ``AND timestamp>="RFC3339"``)."""
        flt = params.get("filter") or ""
        endpoint = re.search(r'resource\.labels\.endpoint_id\s*=\s*"([^"]+)"', flt)
        if 'resource.type="aiplatform.googleapis.com/Endpoint"' not in flt or not endpoint:
            raise invalid("The emulator's entries.list reads only resource.type="
                          '"aiplatform.googleapis.com/Endpoint" AND resource.labels.endpoint_id="ID".')
        since = re.search(r'timestamp\s*>=?\s*"([^"]+)"', flt)
        from datetime import datetime
        floor = datetime.fromisoformat(since.group(1).replace("Z", "+00:00")).timestamp() \
            if since else 0.0
        rows = [(t, line) for t, line in self.store.log_entries(endpoint.group(1)) if t >= floor]
        if (params.get("orderBy") or "").endswith("desc"):
            rows.reverse()
        start = int(params.get("pageToken") or 0)
        size = min(int(params.get("pageSize") or 1000), 1000)
        page = rows[start:start + size]
        out: dict[str, Any] = {"entries": [
            {"logName": f"projects/{self.store.project}/logs/aiplatform.googleapis.com%2Fprediction_container",
             "resource": {"type": "aiplatform.googleapis.com/Endpoint",
                          "labels": {"endpoint_id": endpoint.group(1)}},
             "timestamp": datetime.fromtimestamp(t).astimezone().isoformat(),
             "textPayload": line, "insertId": f"{t:.6f}-{i + start}"}
            for i, (t, line) in enumerate(page)]}
        if start + size < len(rows):
            out["nextPageToken"] = str(start + size)
        return out

    def _admin(self, verb: str, path: str, body: bytes) -> None:
        try:
            if path == "/_emulator/health":
                return self._json(200, {"status": "ok"})
            if path == "/_emulator/calls":
                with self.store.lock:
                    return self._json(200, list(self.store.calls))
            spec = json.loads(body or b"{}")
            if path == "/_emulator/faults":
                if verb == "POST":
                    self.store.faults.update(spec)
                return self._json(200, self.store.faults.snapshot())
            if path == "/_emulator/reset":
                self.store.reset()
                return self._json(200, {"reset": True})
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return self._json(400, {"error": str(exc)})
        self._json(404, {"error": f"no admin route {path}"})


def _claims(jwt: str) -> dict:
    try:
        return json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))
    except (ValueError, IndexError):
        return {}


def _self_signed(token: str) -> bool:
    """A service account's self-signed JWT, which Google accepts as a bearer token in place of
    an access token (the SDK sends one for service account keys): issuer and subject set. Its
    signature is not checked (no IAM here)."""
    claims = _claims(token)
    return bool(claims.get("iss")) and claims.get("iss") == claims.get("sub")


def _kind(method: str, groups: dict) -> str:
    if groups.get("kind"):
        return groups["kind"]
    return "models" if "Model" in method and method not in ("DeployModel", "UndeployModel") \
        else "endpoints"


def _enum_names(params: dict) -> None:
    """The SDK's REST transport sends enums as numbers (``$alt=json;enum-encoding=int``); the
    REST reference names them: accept both, as Google does."""
    spec = ((params.get("deployedModel") or {}).get("dedicatedResources") or {}).get(
        "machineSpec") or {}
    value = spec.get("acceleratorType")
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        from google.cloud.aiplatform_v1.types import AcceleratorType
        try:
            spec["acceleratorType"] = AcceleratorType(int(value)).name
        except ValueError:
            raise invalid(f'Invalid value for "accelerator_type": {value}.') from None


def make_server(store: Store, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
