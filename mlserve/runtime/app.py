"""The application: every provider's routes in one dict, no framework.

``App.respond(method, path, body)`` answers a request whose body has been read, as
``(status, body, headers)``; ``http11.HttpProtocol`` calls it directly, and ``App.__call__`` is
the same app as ASGI for uvicorn's h11 protocol (when httptools is not installed) and in-process
tests.

| route | answer |
|---|---|
| GET /health, GET /ping, Vertex AIP_HEALTH_ROUTE | 200 {"status":"ready","name","release","loop","http"} or 503 {"status":"loading"} |
| GET / (Azure ML / KServe liveness) | 200 {"status":"alive"} as soon as the process serves |
| GET /metrics | Prometheus text: histograms of batch sizes and queue waits (``metrics``) |
| POST /predict | {"input": X} -> {"output": predict(X)} |
| POST /invocations (SageMaker), POST /score (Azure ML) | {"instances": [...]} -> {"predictions": [...]}; {"input": X} -> {"output": ...}; any other JSON is the payload, the output is the body |
| POST Vertex AIP_PREDICT_ROUTE, POST /v1/models/NAME:predict (KServe v1) | {"instances": [...]} -> {"predictions": [...]} |
| GET /v1/models/NAME | {"name": NAME, "ready": bool} |

Errors are JSON ``{"error": ...}``: 400 bad JSON or shape, 404, 405, 413 body too large,
500 user code raised or its output is not JSON (``"<ExcType>: <message>"``, secrets masked),
503 not loaded yet.

Strict JSON (RFC 8259) both ways. A request body must be UTF-8; ``NaN``, ``Infinity``, a number
too large for a double (``1e999``), an integer of more than 4,300 digits, a lone UTF-16
surrogate escape (``"\\ud800"``) and nesting deeper than Python's recursion limit (about 1,000
levels) are a 400 that says which. An output holding NaN or an infinity, or that cannot be
encoded at all, is a 500 that says why. A lone surrogate in an output is sent escaped.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .batching import Clients
from .engines import detect
from .logs import Logs

JSON_TYPE = (b"content-type", b"application/json")
JSON_HEADERS = [JSON_TYPE]
PROMETHEUS_TYPE = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
Response = tuple  # (status, body bytes, [(header name, value), ...]): content-length is the server's


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (send null or a string instead)")


def _finite_float(literal: str, float=float) -> float:
    """Called for float literals only (integers and strings cost nothing): ~75 ns each."""
    value = float(literal)
    if value - value:  # inf - inf is nan, which is true; a finite value gives 0.0
        shown = literal if len(literal) <= 40 else literal[:20] + "..." + literal[-10:]
        raise ValueError(f"{shown} is too large for a 64-bit float (send it as a string)")
    return value


_decode = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode
# The C float parser, for bodies that cannot hold a float too large for a double (below): calling
# _finite_float for every literal doubles the cost of decoding a body of numbers (a tensor).
_decode_fast = json.JSONDecoder(parse_constant=_reject_constant).decode
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_OVERFLOW_DIGITS = b"0" * 309  # fewer digits before the point and no exponent: below 1e309
_MAX_EXPONENTS = 64


def _surely_finite(body: bytes) -> bool:
    """True when no float literal in ``body`` can overflow a double: that needs an exponent
    (``e`` followed by a digit or ``+``; ``e-`` only underflows, to a finite 0.0) or 309 digits
    in a row. False means "maybe": the exact decoder runs. Costs ~5% of a decode."""
    for letter in b"eE":
        at = body.find(letter)
        seen = 0
        while at >= 0:
            seen += 1
            following = body[at + 1:at + 2]
            if seen > _MAX_EXPONENTS or following == b"+" or following.isdigit():
                return False
            at = body.find(letter, at + 1)
    return len(body) < len(_OVERFLOW_DIGITS) or _OVERFLOW_DIGITS not in body.translate(_DIGITS_AS_ZERO)
# Only a body holding a "\u" escape can hold a lone surrogate; the exact test runs only then.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_INTEGER_DIGITS = "integer string conversion"


def _make_encoder():
    """Compact JSON text, with numpy-friendly fallbacks.

    ``json.dumps`` builds a new C encoder on every call; building it once saves a microsecond
    per request. Without the circular-reference check a self-containing output raises
    RecursionError (a 500) instead of ValueError. NaN and infinities raise ValueError: JSON has
    no such numbers, and a client's parser would choke on Python's ``NaN``.
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # no C accelerator (e.g. PyPy)
        return json.JSONEncoder(separators=(",", ":"), default=_jsonable, allow_nan=False).encode
    encoder = c_make_encoder(None, _jsonable, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False)
    join = "".join

    def encode(obj: Any) -> str:
        return join(encoder(obj, 0))

    return encode


def _jsonable(obj: Any) -> Any:
    """Last resort for outputs JSON cannot hold as is: numpy arrays/scalars, sets, tuples."""
    for method in ("tolist", "item"):
        convert = getattr(obj, method, None)
        if callable(convert):
            return convert()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = _make_encoder()


def declared_too_large(content_length: bytes, limit: int) -> bool:
    """True when a ``Content-Length`` value declares more than ``limit`` bytes. Leading zeros
    are no size (``0012`` is 12); a value that is not a number is the HTTP parser's to refuse."""
    digits = content_length.strip().lstrip(b"0")
    return digits.isdigit() and (len(digits) > 18 or int(digits) > limit)


def body_too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_body(body: bytes) -> Any:
    """The request body as JSON, or HTTPError(400) saying what is wrong with it (module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(400, f"request body is not UTF-8: byte 0x{body[exc.start]:02x} at offset {exc.start}") from None
    try:
        value = (_decode_fast if _surely_finite(body) else _decode)(text)
    except RecursionError:
        raise HTTPError(400, f"request body nests arrays or objects too deeply (about {_depth_left()} levels at most)") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, and integers past Python's digit limit
        reason = str(exc)
        if _INTEGER_DIGITS in reason:
            reason = "it holds an integer of more than 4300 digits"
        raise HTTPError(400, f"request body is not valid JSON: {reason}") from None
    if b"\\" in body and _SURROGATE_ESCAPE.search(body):  # one byte: memchr; two bytes cost 80x more
        _check_unicode(value)
    return value


def _depth_left() -> int:
    """How deep the decoder could have nested from here: the recursion limit less the stack in use."""
    depth, frame = 0, sys._getframe(1)
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    return sys.getrecursionlimit() - depth


def _check_unicode(value: Any) -> None:
    """The exact test behind the cheap suspicion: valid pairs decode to one character, lone halves stay."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise HTTPError(400, "request body is not valid JSON: it holds a lone UTF-16 surrogate escape "
                             "(such as \\ud800), which is not a Unicode character") from None


class App:
    def __init__(self, settings, logs: Logs) -> None:
        self._name = settings.name
        self._release = settings.release
        self._max_body = settings.max_body_bytes
        self._logs = logs
        self._access = logs.access if settings.access_log else None
        self._redact = logs.redact
        self.runner = None  # set by set_ready(); None means "loading"
        self.clients = Clients()  # who sends predictions; only ``http11`` reports them
        self._ready_body = b""
        self.routes = self._build_routes(settings)

    def _build_routes(self, settings) -> dict[str, dict[str, Callable]]:
        health = {"GET": self._health}
        instances = {"POST": self._instances}
        routes = {
            "/": {"GET": self._alive},
            "/health": health,
            "/metrics": {"GET": self._metrics},
            "/ping": health,
            "/predict": {"POST": self._predict},
            "/invocations": {"POST": self._invocations},
            "/score": {"POST": self._invocations},
            f"/v1/models/{settings.name}": {"GET": self._kserve_ready},
            f"/v1/models/{settings.name}:predict": instances,
        }
        if settings.vertex_health_route:
            routes[settings.vertex_health_route] = health
        if settings.vertex_predict_route:
            routes[settings.vertex_predict_route] = instances
        return routes

    def set_ready(self, runner) -> None:
        engines = detect()
        self._ready_body = _encode({"status": "ready", "name": self._name, "release": self._release,
                                    "loop": engines.loop, "http": engines.http}).encode()
        self.runner = runner

    # -- transport-neutral core ----------------------------------------------------------------

    async def respond(self, method: str, path: str, body: bytes) -> Response:
        """The answer to one request whose body has been read whole (within ``max_body``).

        Never raises for a request: a bad one is a 4xx, a model's failure or a bug of ours a 500,
        each with a JSON body. ``http11.HttpProtocol`` calls this directly; the ASGI entry below
        (for uvicorn's h11 fallback) reads the body and calls it too.
        """
        try:
            handler = self.routes[path][method]
        except KeyError:
            handler = self._unrouted
            if method == "HEAD":  # RFC 9110 9.1: HEAD wherever GET; the server sends the head only
                handler = self.routes.get(path, {}).get("GET", handler)
        try:
            return await handler(method, path, body)
        except HTTPError as exc:
            return self.error(exc)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: still a JSON answer, never a server's plain text
            message = self._redact(f"the runtime failed on this request ({_describe(exc)}); see its log")
            self.log_failure(f"error: the runtime failed on {method} {path}:", exc)
            return 500, _encode({"error": message}).encode(), JSON_HEADERS

    def error(self, exc: HTTPError) -> Response:
        return exc.status, _encode({"error": self._redact(str(exc))}).encode(), JSON_HEADERS

    def log_failure(self, message: str, exc: BaseException) -> None:
        try:
            self._logs.failure(message, exc)
        except Exception:  # noqa: BLE001 - a log stream that fails must not lose the answer
            pass

    def log_access(self, client, method: str, path: str, status: int, started: float) -> None:
        if self._access is not None:
            self._access((self._logs.now, client, method, path, status, perf_counter() - started))

    @property
    def max_body(self) -> int:
        return self._max_body

    # -- ASGI entry (uvicorn's h11 protocol, when httptools is not installed) ------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return
        started = perf_counter()
        try:
            body = await self._read_body(scope, receive)
        except HTTPError as exc:
            status, payload, headers = self.error(exc)
        else:
            status, payload, headers = await self.respond(scope["method"], scope["path"], body)
        try:
            await send({"type": "http.response.start", "status": status,
                        "headers": [*headers, (b"content-length", b"%d" % len(payload))]})
            await send({"type": "http.response.body", "body": payload})
        except Exception:  # noqa: BLE001 - the client is gone: nothing to answer
            pass
        self.log_access(scope["client"], scope["method"], scope["path"], status, started)

    async def _read_body(self, scope: dict, receive: Callable) -> bytes:
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > self._max_body:
                raise HTTPError(413, body_too_large(self._max_body))
            return body
        for key, value in scope["headers"]:  # Content-Length first, then a running total
            if key == b"content-length" and declared_too_large(value, self._max_body):
                raise HTTPError(413, body_too_large(self._max_body))
        chunks, size, more = [body], len(body), True
        while more:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                raise HTTPError(413, body_too_large(self._max_body))
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _unrouted(self, method: str, path: str, body: bytes) -> Response:
        methods = self.routes.get(path)
        if methods is None:
            raise HTTPError(404, f"no route {path}")
        allow = ", ".join(sorted({*methods, "HEAD"} if "GET" in methods else methods))
        payload = _encode({"error": f"method {method} not allowed on {path}; use {allow}"}).encode()
        return 405, payload, [JSON_TYPE, (b"allow", allow.encode())]

    # -- health --------------------------------------------------------------------------------

    async def _alive(self, method: str, path: str, body: bytes) -> Response:
        return 200, b'{"status":"alive"}', JSON_HEADERS

    async def _health(self, method: str, path: str, body: bytes) -> Response:
        if self.runner is None:
            return 503, b'{"status":"loading"}', JSON_HEADERS
        return 200, self._ready_body, JSON_HEADERS

    async def _metrics(self, method: str, path: str, body: bytes) -> Response:
        stats = getattr(self.runner, "stats", None)
        text = stats.render() if stats is not None else "# no batching: the model has no predict_batch, or is loading\n"
        return 200, text.encode(), [PROMETHEUS_TYPE]

    async def _kserve_ready(self, method: str, path: str, body: bytes) -> Response:
        return 200, _encode({"name": self._name, "ready": self.runner is not None}).encode(), JSON_HEADERS

    # -- predictions ---------------------------------------------------------------------------

    async def _predict(self, method: str, path: str, body: bytes) -> Response:
        request = self._read_json(body)
        if type(request) is not dict or "input" not in request:
            raise HTTPError(400, 'body must be a JSON object with an "input" key: {"input": ...}')
        ok, output = await self.runner.submit(request["input"])
        return self._answer(method, path, ok, output, "output")

    async def _invocations(self, method: str, path: str, body: bytes) -> Response:
        request = self._read_json(body)
        if type(request) is dict:
            if "instances" in request:
                return await self._many(method, path, request["instances"])
            if "input" in request:
                ok, output = await self.runner.submit(request["input"])
                return self._answer(method, path, ok, output, "output")
        ok, output = await self.runner.submit(request)
        return self._answer(method, path, ok, output, None)

    async def _instances(self, method: str, path: str, body: bytes) -> Response:
        request = self._read_json(body)
        if type(request) is not dict or "instances" not in request:
            raise HTTPError(400, 'body must be a JSON object with an "instances" list: {"instances": [...]}')
        return await self._many(method, path, request["instances"])

    async def _many(self, method: str, path: str, instances: Any) -> Response:
        if type(instances) is not list:
            raise HTTPError(400, '"instances" must be a JSON list')
        outcomes = await self.runner.submit_many(instances)
        for ok, value in outcomes:
            if not ok:
                return self._answer(method, path, False, value, None)
        return self._answer(method, path, True, [value for _, value in outcomes], "predictions")

    def _answer(self, method: str, path: str, ok: bool, value: Any, key: str | None) -> Response:
        if ok:
            try:
                return 200, _encode(value if key is None else {key: value}).encode(), JSON_HEADERS
            except Exception as exc:  # noqa: BLE001 - the output cannot be JSON: the model's fault, reported like a raise
                value = _not_json(exc)
        self._logs.failure(f"predict failed for {method} {path}:", value)
        return 500, _encode({"error": self._redact(_describe(value))}).encode(), JSON_HEADERS

    def _read_json(self, body: bytes) -> Any:
        if self.runner is None:
            raise HTTPError(503, "model is loading; retry when GET /health answers 200")
        return parse_body(body)


def _describe(exc: BaseException) -> str:
    """``"<ExcType>: <message>"``, even for an exception whose ``__str__`` raises."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - user code
        return f"{type(exc).__name__}: <the exception's message cannot be printed>"


def _not_json(exc: Exception) -> Exception:
    """The reason an output cannot be sent, as the exception a user reads in the 500."""
    if isinstance(exc, RecursionError):
        return RecursionError(f"the output cannot be JSON: it nests deeper than about {sys.getrecursionlimit()} levels, or contains itself")
    if type(exc) is ValueError and "Out of range float" in str(exc):
        return ValueError("the output cannot be JSON: it holds a float NaN or Infinity, which JSON cannot carry; "
                          "return None or a string instead")
    return exc
