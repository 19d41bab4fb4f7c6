"""The emulator's HTTP front: SageMaker's control plane (awsJson1_1: ``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``), SageMaker Runtime's ``InvokeEndpoint`` (rest-json:
``POST /endpoints/NAME/invocations``) and the test's admin routes under ``/_emulator/``:

``POST /_emulator/faults``  set faults (see ``faults``)
``POST /_emulator/reset``   forget every resource and fault, remove every container
``GET  /_emulator/calls``   the operations received, in order (``[{"operation", "name", "code"}]``)
``GET  /_emulator/health``  200 once serving

Requests must carry a SigV4 ``Authorization`` header (the signature is not checked: there is
no IAM here); the region in its credential scope is the one ARNs are made in. Nothing of a
request body is logged (a model's Environment may hold secrets).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import api
from .errors import ApiError
from .validate import problems

log = logging.getLogger("sagemaker-emulator")
INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
MAX_PAYLOAD = 6 * 1024 * 1024          # InvokeEndpoint's documented payload limit (6 MB)
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY a kept-alive client's delayed
    # ACK holds the body back ~40 ms per answer
    disable_nagle_algorithm = True
    server_version = "sagemaker-emulator"
    store: api.Store      # set on the subclass the server makes

    def log_message(self, fmt: str, *args: Any) -> None:  # the access log says too much
        pass

    # -- plumbing ----------------------------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/x-amz-json-1.1", headers)

    def _error(self, error: ApiError) -> None:
        body = {"__type": error.code, "message": error.message, "Message": error.message,
                **error.extra}
        self._json(error.status, body, {"x-amzn-ErrorType": error.code})

    def _region(self) -> str | None:
        found = _SCOPE.search(self.headers.get("Authorization") or "")
        return found.group(1) if found else None

    # -- routes ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        if self.path == "/_emulator/health":
            return self._json(200, {"status": "ok"})
        if self.path == "/_emulator/calls":
            with self.store.lock:
                return self._json(200, list(self.store.calls))
        if self.path == "/_emulator/faults":
            return self._json(200, self.store.faults.snapshot())
        self._error(ApiError("UnknownOperationException", f"No route for GET {self.path}", 404))

    def do_POST(self) -> None:
        body = self._body()
        if self.path.startswith("/_emulator/"):
            return self._admin(body)
        match = INVOKE.match(self.path.split("?", 1)[0])
        if match:
            return self._invoke(match.group(1), body)
        if self.path.split("?", 1)[0] == "/":
            return self._control(body)
        self._error(ApiError("UnknownOperationException", f"No route for POST {self.path}", 404))

    def _admin(self, body: bytes) -> None:
        try:
            spec = json.loads(body or b"{}")
            if self.path == "/_emulator/faults":
                self.store.faults.update(spec)
                return self._json(200, self.store.faults.snapshot())
            if self.path == "/_emulator/reset":
                self.store.reset()
                return self._json(200, {"reset": True})
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return self._json(400, {"error": str(exc)})
        self._json(404, {"error": f"no admin route {self.path}"})

    def _record(self, operation: str, name: str | None, code: str | None) -> None:
        with self.store.lock:
            self.store.calls.append({"operation": operation, "name": name, "code": code})
        log.info("%s %s -> %s", operation, name or "", code or "ok")

    def _control(self, body: bytes) -> None:
        target = self.headers.get("X-Amz-Target") or ""
        operation = target.split(".", 1)[1] if target.startswith("SageMaker.") else target
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = None
        name = None
        if isinstance(params, dict):
            name = next((params.get(k) for k in ("EndpointName", "EndpointConfigName",
                                                 "ModelName", "ResourceArn") if params.get(k)), None)
        try:
            if not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
                raise ApiError("MissingAuthenticationTokenException",
                               "Missing Authentication Token", 403)
            handler = api.OPERATIONS.get(operation)
            if handler is None:
                raise ApiError("UnknownOperationException",
                               f"The operation {operation or '(none)'} is not modelled by the "
                               "SageMaker emulator (tests/emulators/sagemaker/README.md).")
            if not isinstance(params, dict):
                raise ApiError("SerializationException", "The request body is not a JSON object.")
            injected = self.store.faults.take(operation)
            if injected:
                raise ApiError(injected[0], injected[2], injected[1])
            message = problems("sagemaker", operation, params)
            if message:
                raise ApiError("ValidationException", message)
            with self.store.lock:
                self.store.region = self._region() or self.store.region
                result = handler(self.store, params)
        except ApiError as exc:
            self._record(operation, name, exc.code)
            return self._error(exc)
        except Exception as exc:  # a bug here must look like AWS's 500, not a hang
            log.exception("%s failed", operation)
            self._record(operation, name, "InternalFailure")
            return self._error(ApiError("InternalFailure", f"emulator error: {exc}", 500))
        self._record(operation, name, None)
        self._json(200, result)

    def _invoke(self, name: str, body: bytes) -> None:
        import urllib.parse

        name = urllib.parse.unquote(name)
        try:
            if not self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256"):
                raise ApiError("MissingAuthenticationTokenException",
                               "Missing Authentication Token", 403)
            injected = self.store.faults.take("InvokeEndpoint")
            if injected:
                raise ApiError(injected[0], injected[2], injected[1])
            if len(body) > MAX_PAYLOAD:
                raise ApiError("ValidationError", "Request payload size exceeds the maximum "
                               f"allowed size of {MAX_PAYLOAD} bytes.")
            with self.store.lock:
                endpoint = self.store.endpoints.get(name)
            if endpoint is None:
                raise ApiError("ValidationError",
                               f"Endpoint {name} of account {api.ACCOUNT} not found.")
            fleet, instance = self.store.lifecycle.route(
                endpoint, self.headers.get("X-Amzn-SageMaker-Target-Variant"))
            headers = {"Content-Type": self.headers.get("Content-Type") or "application/octet-stream",
                       "Accept": self.headers.get("Accept") or "*/*"}
            custom = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
            if custom:
                headers["X-Amzn-SageMaker-Custom-Attributes"] = custom
            try:
                status, reply_headers, reply = instance.request("POST", "/invocations", body,
                                                                headers, timeout=60)
            except TimeoutError:
                raise ApiError("ModelError", "Your invocation timed out while waiting for a "
                               "response from container primary.", 424) from None
            except (OSError, http.client.HTTPException) as exc:
                raise ApiError("ModelError", f"Received server error (0) from primary with "
                               f"message \"{exc}\".", 424, OriginalStatusCode=0) from None
            finally:
                instance.lease(False)
            if not 200 <= status < 300:
                text = reply.decode(errors="replace")[:1000]
                kind = "client" if status < 500 else "server"
                group = f"/aws/sagemaker/Endpoints/{name}"
                raise ApiError(
                    "ModelError", f"Received {kind} error ({status}) from primary with message "
                    f"\"{text}\". See https://{self.store.region}.console.aws.amazon.com/"
                    f"cloudwatch/home?region={self.store.region}#logEventViewer:group={group} "
                    f"in account {api.ACCOUNT} for more information.", 424,
                    OriginalStatusCode=status, OriginalMessage=text,
                    LogStreamArn=f"arn:aws:logs:{self.store.region}:{api.ACCOUNT}:log-group:"
                                 f"{group}")
        except ApiError as exc:
            self._record("InvokeEndpoint", name, exc.code)
            return self._error(exc)
        except Exception as exc:  # a bug here must look like AWS's 500, not a hang
            log.exception("InvokeEndpoint failed")
            self._record("InvokeEndpoint", name, "InternalFailure")
            return self._error(ApiError("InternalFailure", f"emulator error: {exc}", 500))
        self._record("InvokeEndpoint", name, None)
        out_headers = {"x-Amzn-Invoked-Production-Variant": fleet.name}
        if reply_headers.get("X-Amzn-SageMaker-Custom-Attributes"):
            out_headers["X-Amzn-SageMaker-Custom-Attributes"] = \
                reply_headers["X-Amzn-SageMaker-Custom-Attributes"]
        content_type = next((v for k, v in reply_headers.items() if k.lower() == "content-type"),
                            "application/octet-stream")
        self._send(200, reply, content_type, out_headers)


def make_server(store: api.Store, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
