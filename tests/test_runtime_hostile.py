"""Hostile HTTP bodies and outputs against the runtime's real ASGI app and dispatcher, in-process.

The app (``mlserve.runtime.app.App``) is called as uvicorn calls it, with a real
``ThreadDispatcher`` running the model in worker threads: no server, so hundreds of generated
bodies run in seconds. Every answer must be one of 200/400/413/500 with a JSON body; the classes
of invalid JSON must be exactly 400, and outputs JSON cannot carry exactly 500 with the reason.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlserve.runtime.app import App
from mlserve.runtime.batching import Batcher
from mlserve.runtime.config import Settings
from mlserve.runtime.dispatch import AsyncRunner, ThreadDispatcher
from mlserve.runtime.logs import Logs, Redactor

MAX_BODY = 1 << 20
POST_ROUTES = ["/predict", "/invocations", "/score", "/vertex/predict", "/v1/models/m:predict"]
INSTANCE_ROUTES = {"/vertex/predict", "/v1/models/m:predict"}


class Model:
    """Echoes; special payloads return what JSON cannot carry."""

    def predict(self, payload):
        if isinstance(payload, dict) and "give" in payload:
            return make_output(payload["give"])
        if isinstance(payload, dict) and "raise" in payload:
            raise make_exception(payload["raise"], payload.get("message", ""))
        return payload

    def predict_batch(self, payloads):
        return [self.predict(p) for p in payloads]


def make_output(kind):
    if kind == "nan":
        return {"a": [1.0, float("nan")]}
    if kind == "inf":
        return [float("inf")]
    if kind == "-inf":
        return {"x": {"y": -math.inf}}
    if kind == "self":
        loop: list = []
        loop.append(loop)
        return loop
    if kind == "object":
        return {"o": object()}
    if kind == "bad-tolist":
        return BadArray()
    if kind == "surrogate":
        return "\ud800"
    return kind


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("__str__ fails too")


def make_exception(kind: str, message: str) -> BaseException:
    return {"value": ValueError, "exit": SystemExit, "interrupt": KeyboardInterrupt,
            "unprintable": Unprintable}[kind](message)


class BadArray:
    """Like a numpy array whose conversion fails."""

    def tolist(self):
        raise MemoryError("cannot convert")


class Server:
    """One App on its own event loop thread, as uvicorn runs it."""

    def __init__(self, batch: bool = False, async_predict: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.log = io.StringIO()
        settings = Settings(name="m", max_body_bytes=MAX_BODY, vertex_predict_route="/vertex/predict",
                            vertex_health_route="/vertex/health")
        self.app = App(settings, Logs(Redactor([]), True, io.StringIO(), self.log))
        model = Model()

        async def apredict(payload):
            return model.predict(payload)

        def make_runner():
            if async_predict:
                return AsyncRunner(apredict, 4)
            if batch:
                return Batcher(self.loop, model.predict_batch, 2, 8, 10)
            return ThreadDispatcher(self.loop, model.predict, 2)

        self.runner = asyncio.run_coroutine_threadsafe(_call(make_runner), self.loop).result()
        self.app.set_ready(self.runner)

    def request(self, path: str, body: bytes, method: str = "POST", chunk: int | None = None):
        """(status, parsed JSON body); the body is sent in pieces of ``chunk`` bytes if given."""
        return asyncio.run_coroutine_threadsafe(self._request(path, body, method, chunk), self.loop).result(30)

    async def _request(self, path, body, method, chunk):
        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk and body else [body]
        messages = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)]
        sent = []

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "client": ("127.0.0.1", 1),
                 "headers": [(b"content-length", str(len(body)).encode())]}
        await self.app(scope, receive, send)
        start, response = sent
        headers = dict(start["headers"])
        assert headers[b"content-type"] == b"application/json"
        assert int(headers[b"content-length"]) == len(response["body"])
        return start["status"], json.loads(response["body"])

    def close(self):
        self.runner.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _call(factory):
    return factory()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def batch_server():
    s = Server(batch=True)
    yield s
    s.close()


def wrap(path: str, value_text: str) -> str:
    """A body putting ``value_text`` where each route takes its payload."""
    if path in INSTANCE_ROUTES:
        return '{"instances": [%s]}' % value_text
    return '{"input": %s}' % value_text


def unwrap(path: str, body: dict):
    return body["predictions"][0] if path in INSTANCE_ROUTES else body["output"]


def assert_sane(status: int, body) -> None:
    assert status in (200, 400, 413, 500), status
    if status != 200:
        assert isinstance(body, dict) and isinstance(body["error"], str) and body["error"]


# -- generated request bodies -------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                          max_leaves=20)
route = st.sampled_from(POST_ROUTES)


@given(route, st.binary(max_size=300), st.sampled_from([None, 1, 7]))
def test_arbitrary_bytes_get_a_json_answer(server, path, body, chunk):
    status, answer = server.request(path, body, chunk=chunk)
    assert_sane(status, answer)
    if status == 200:  # only if the bytes happened to be JSON
        json.loads(body.decode("utf-8"))


@given(route, json_value)
def test_valid_json_is_echoed(server, path, value):
    status, answer = server.request(path, wrap(path, json.dumps(value)).encode())
    assert status == 200, answer
    assert unwrap(path, answer) == value


@st.composite
def with_constant(draw):
    """JSON text with NaN, Infinity or -Infinity at a random value position."""
    token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    marker = "\u2603mark\u2603"
    leaves = json_leaf | st.just(marker)
    tree = draw(st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                             max_leaves=8))
    text = json.dumps(tree, ensure_ascii=False)
    quoted = json.dumps(marker, ensure_ascii=False)
    if quoted not in text:
        text = json.dumps([tree, marker], ensure_ascii=False)
    return token, text.replace(quoted, token, 1)


@given(route, with_constant(), st.booleans())
def test_nan_and_infinity_in_a_request_are_400_naming_the_token(server, path, case, bare):
    token, text = case
    bare = bare and path in ("/invocations", "/score")  # these take any JSON as the payload
    status, answer = server.request(path, (text if bare else wrap(path, text)).encode())
    assert status == 400, answer
    assert f"{token} is not a JSON number" in answer["error"]


@given(route, st.integers(1, 100_000), st.sampled_from(["[", '{"k":']), st.sampled_from([None, 4096]))
def test_deep_nesting_is_200_or_400_never_500(server, path, depth, opener, chunk):
    closer = "]" if opener == "[" else "}"
    inner = opener * depth + "0" + closer * depth
    status, answer = server.request(path, wrap(path, inner).encode(), chunk=chunk)
    if depth <= 900:
        assert status == 200, answer
    elif depth >= sys.getrecursionlimit():  # about 1,000; hypothesis raises it while it runs a test
        assert status == 400, answer
    assert status in (200, 400), answer
    if status == 400:
        assert "nests arrays or objects too deeply" in answer["error"]


def test_nesting_100000_deep_is_400_on_every_route(server):
    for path in POST_ROUTES:
        status, answer = server.request(path, b"[" * 100_000 + b"]" * 100_000)
        assert status == 400 and "too deeply" in answer["error"], (path, answer)


@st.composite
def number_literal(draw):
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.sampled_from(["0", "1", "9", "123"]))
    if whole != "0":  # JSON has no leading zeros
        whole += "0" * draw(st.sampled_from([0, 5, 150, 250, 320]))
    fraction = draw(st.sampled_from(["", ".5", ".000001"]))
    exponent = draw(st.sampled_from(["", "e10", "E+99", "e308", "e309", "E400", "e-400", "e+0309", "e999"]))
    return sign + whole + fraction + exponent


@given(route, number_literal())
def test_numbers_a_double_cannot_hold_are_400(server, path, literal):
    status, answer = server.request(path, wrap(path, literal).encode())
    expected = float(literal) if any(c in literal for c in ".eE") else int(literal)
    if isinstance(expected, float) and math.isinf(expected):
        assert status == 400 and "too large for a 64-bit float (send it as a string)" in answer["error"], answer
    else:
        assert status == 200, answer
        assert unwrap(path, answer) == expected


@given(route, st.integers(4301, 20_000))
def test_integers_past_the_digit_limit_are_400(server, path, digits):
    status, answer = server.request(path, wrap(path, "7" * digits).encode())
    assert status == 400 and "more than 4300 digits" in answer["error"], answer


@given(route, st.text(max_size=10), st.binary(min_size=1, max_size=4).filter(lambda b: not _is_utf8(b)), st.text(max_size=10))
def test_invalid_utf8_is_400(server, path, before, bad, after):
    marker = "\u2603"
    body = wrap(path, json.dumps(before + marker + after, ensure_ascii=False)).encode().replace(marker.encode(), bad, 1)
    status, answer = server.request(path, body)
    assert status == 400 and "not UTF-8" in answer["error"], answer


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@given(route, st.integers(0xD800, 0xDFFF), st.text(max_size=5), st.sampled_from(["x", "ud", "uDC00", ""]))
def test_lone_surrogate_escapes_are_400(server, path, code, text, after):
    escape = "\\u%04x" % code if code % 2 else "\\u%04X" % code
    if 0xD800 <= code <= 0xDBFF and after == "uDC00":
        after = ""  # a high surrogate followed by a low one is a valid pair: tested below
    body = wrap(path, json.dumps(text)[:-1] + escape + after + '"').encode()
    status, answer = server.request(path, body)
    assert status == 400 and "lone UTF-16 surrogate" in answer["error"], answer


@given(route, st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF))
def test_surrogate_pairs_are_one_character(server, path, char):
    status, answer = server.request(path, wrap(path, json.dumps(char)).encode())
    assert (status, unwrap(path, answer)) == (200, char)


def test_an_escaped_backslash_before_u_is_not_a_surrogate(server):
    status, answer = server.request("/predict", b'{"input": "\\\\ud800 and 1e999x"}')
    assert (status, answer) == (200, {"output": "\\ud800 and 1e999x"})


def test_body_over_the_limit_is_413(server):
    status, answer = server.request("/predict", b" " * (MAX_BODY + 1), chunk=MAX_BODY // 2)
    assert status == 413 and "larger than" in answer["error"]


# -- outputs JSON cannot carry ----------------------------------------------------------------------

OUTPUT_ERRORS = {
    "nan": "NaN or Infinity, which JSON cannot carry",
    "inf": "NaN or Infinity, which JSON cannot carry",
    "-inf": "NaN or Infinity, which JSON cannot carry",
    "self": "or contains itself",
    "object": "Object of type object is not JSON serializable",
    "bad-tolist": "MemoryError: cannot convert",
}


@pytest.mark.parametrize("kind", sorted(OUTPUT_ERRORS))
@pytest.mark.parametrize("path", POST_ROUTES)
@pytest.mark.parametrize("flavour", ["predict", "predict_batch", "async"])
def test_outputs_json_cannot_carry_are_500_saying_why(flavour, path, kind, server, batch_server):
    target = {"predict": server, "predict_batch": batch_server}.get(flavour) or _async_server()
    status, answer = target.request(path, wrap(path, json.dumps({"give": kind})).encode())
    assert status == 500 and OUTPUT_ERRORS[kind] in answer["error"], answer
    # the server goes on serving
    assert target.request(path, wrap(path, "1").encode())[0] == 200


_ASYNC: list = []


def _async_server() -> Server:
    if not _ASYNC:
        _ASYNC.append(Server(async_predict=True))
    return _ASYNC[0]


def test_a_lone_surrogate_in_an_output_is_sent_escaped(server):
    status, answer = server.request("/predict", b'{"input": {"give": "surrogate"}}')
    assert (status, answer) == (200, {"output": "\ud800"})


def test_a_bad_request_or_output_in_a_batch_fails_only_its_own_request(batch_server):
    """Payloads of concurrent requests share predict_batch calls; one bad one spoils no other."""
    bodies = [wrap("/predict", json.dumps({"give": "nan"}) if i % 5 == 0 else ("NaN" if i % 7 == 0 else str(i)))
              for i in range(40)]
    futures = [asyncio.run_coroutine_threadsafe(batch_server._request("/predict", b.encode(), "POST", None), batch_server.loop)
               for b in bodies]
    for i, future in enumerate(futures):
        status, answer = future.result(30)
        if i % 5 == 0:
            assert status == 500 and "NaN or Infinity" in answer["error"]
        elif i % 7 == 0:
            assert status == 400 and "NaN is not a JSON number" in answer["error"]
        else:
            assert (status, answer) == (200, {"output": i})


@given(st.sampled_from(["predict", "predict_batch", "async"]), route,
       st.sampled_from(["value", "exit", "interrupt", "unprintable"]), st.text(max_size=50))
def test_whatever_the_model_raises_is_a_json_500_with_its_message(server, batch_server, flavour, path, kind, message):
    target = {"predict": server, "predict_batch": batch_server}.get(flavour) or _async_server()
    status, answer = target.request(path, wrap(path, json.dumps({"raise": kind, "message": message})).encode())
    assert status == 500, answer
    name = type(make_exception(kind, "")).__name__
    if kind == "unprintable":
        assert answer["error"] == f"{name}: <the exception's message cannot be printed>"
    else:
        assert answer["error"] == f"{name}: {message}"


@pytest.mark.slow
def test_the_real_server_answers_hostile_bodies_with_json(tmp_path):
    """The same classes over real HTTP (httptools or h11 in front of the app)."""
    from tests.runtime_models.harness import Runtime

    runtime = Runtime(tmp_path, "models.py:Echo")
    try:
        runtime.wait_ready()
        cases = {
            b"[" * 100_000 + b"]" * 100_000: "too deeply",
            b'{"input": NaN}': "NaN is not a JSON number",
            b'{"input": [1, -Infinity]}': "-Infinity is not a JSON number",
            b'{"input": 1e999}': "1e999 is too large for a 64-bit float",
            b'{"input": "\xff"}': "not UTF-8",
            b'{"input": "\\udc00"}': "lone UTF-16 surrogate",
        }
        for body, reason in cases.items():
            for path in POST_ROUTES[:3]:
                status, answer, headers = runtime.request("POST", path, body)
                assert status == 400 and reason in answer["error"], (path, body[:20], answer)
                assert headers["content-type"] == "application/json"
        assert runtime.request("POST", "/predict", b'{"input": 1.5e300}')[:2] == (200, {"output": 1.5e300})
    finally:
        assert runtime.stop() == 0
