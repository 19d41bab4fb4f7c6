"""The runtime's HTTP/1.1 protocol (``mlserve/runtime/http11.py``), against the real runtime
process over raw sockets: keep-alive, pipelining, back-pressure, chunked bodies, ``Expect:
100-continue``, ``HEAD``, the limits (413, 431, 400), the idle timeout, graceful shutdown, and
uvicorn's h11 fallback giving the same answers. Responses are parsed here byte by byte (status
line, headers, ``content-length`` body), so a framing error of the server is a failure.

Routes and JSON bodies are in test_runtime.py; SIGTERM draining in test_runtime_lifecycle.py.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime_models.harness import ROOT, Runtime

pytestmark = pytest.mark.slow

MAX_BODY = 4096
STATUS_LINE = re.compile(r"HTTP/1\.1 (\d{3}) ([^\r\n]*)")


# -- a raw HTTP/1.1 client ------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self):
        return json.loads(self.body)


def parse_one(buf: bytes, head_only: bool = False) -> tuple[Response, int] | None:
    """The response at the start of ``buf`` and its length; None if more bytes are needed.

    Raises AssertionError for anything that is not a well-formed response of this server.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        assert len(buf) < 70_000, f"no end of head in {buf[:200]!r}"
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    match = STATUS_LINE.fullmatch(lines[0])
    assert match, f"bad status line {lines[0]!r} in {buf[:300]!r}"
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep and name and name == name.strip(), f"bad header line {line!r}"
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    status, start = int(match[1]), end + 4
    if 100 <= status < 200:
        assert headers == {}, headers
        length = 0
    else:
        assert re.fullmatch(r"\d+", headers.get("content-length", "")), headers
        length = 0 if head_only else int(headers["content-length"])
    if len(buf) < start + length:
        return None
    return Response(status, match[2], headers, buf[start:start + length]), start + length


def parse_all(data: bytes) -> list[Response]:
    """Every response in ``data``, which must hold whole responses only (no HEAD answers)."""
    responses = []
    while data:
        parsed = parse_one(data)
        assert parsed is not None, f"incomplete response at the end: {data[:300]!r}"
        response, used = parsed
        responses.append(response)
        data = data[used:]
    return responses


class Conn:
    """One client connection; reads whole responses off a buffer."""

    def __init__(self, port: int, timeout: float = 10.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, head_only: bool = False) -> Response:
        while True:
            parsed = parse_one(self.buf, head_only)
            if parsed is not None:
                response, used = parsed
                self.buf = self.buf[used:]
                return response
            data = self.sock.recv(1 << 16)
            assert data, f"connection closed with {self.buf[:300]!r} unanswered"
            self.buf += data

    def at_eof(self) -> bool:
        """True when the server closed the connection with nothing more sent (waits for it)."""
        try:
            data = self.sock.recv(1 << 16)
        except ConnectionResetError:
            data = b""
        return self.buf == b"" and data == b""

    def readable(self) -> bool:
        return bool(self.buf) or bool(select.select([self.sock], [], [], 0)[0])


def request(method: str, path: str, body: bytes | None = None, headers: tuple = (), version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: test"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += headers
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def predict(value, headers: tuple = (), version: str = "1.1") -> bytes:
    return request("POST", "/predict", json.dumps({"input": value}).encode(), headers, version)


def health() -> bytes:
    return request("GET", "/health")


def assert_json_error(response: Response, status: int, text: str) -> None:
    assert response.status == status, (response, status)
    assert response.headers["content-type"] == "application/json"
    assert text in response.json()["error"], response.json()


def assert_closes_and_serves_on(runtime: Runtime, conn: Conn, response: Response) -> None:
    """``response`` said ``connection: close``, the socket closed, and a new connection is served."""
    assert response.headers.get("connection") == "close", response.headers
    assert conn.at_eof()
    with Conn(runtime.port) as fresh:
        fresh.send(health())
        assert fresh.response().json()["status"] == "ready"


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    runtime = Runtime(tmp_path_factory.mktemp("http"), "models.py:Echo", "--max-body-bytes", str(MAX_BODY),
                      "--no-access-log")
    runtime.wait_ready()
    yield runtime
    assert runtime.stop() == 0


# -- keep-alive -----------------------------------------------------------------------------------


def test_keep_alive_answers_many_requests_on_one_connection(echo):
    with Conn(echo.port) as conn:
        for i in range(20):
            conn.send(predict(i))
            answer = conn.response()
            assert (answer.status, answer.json()) == (200, {"output": i})
            assert "connection" not in answer.headers
        assert not conn.readable()  # still open, nothing more sent


def test_http10_without_keep_alive_is_answered_then_closed(echo):
    with Conn(echo.port) as conn:
        conn.send(predict("old", version="1.0"))
        answer = conn.response()
        assert (answer.status, answer.json()) == (200, {"output": "old"})
        assert_closes_and_serves_on(echo, conn, answer)


def test_http10_with_keep_alive_stays_open(echo):
    with Conn(echo.port) as conn:
        for i in range(3):
            conn.send(predict(i, headers=("Connection: keep-alive",), version="1.0"))
            assert conn.response().json() == {"output": i}
        conn.send(predict("last", version="1.0"))
        last = conn.response()
        assert last.json() == {"output": "last"}
        assert_closes_and_serves_on(echo, conn, last)


def test_http10_keep_alive_answer_says_keep_alive(echo):
    with Conn(echo.port) as conn:
        conn.send(predict(1, headers=("Connection: keep-alive",), version="1.0"))
        assert conn.response().headers.get("connection", "").lower() == "keep-alive"


def test_connection_close_is_answered_then_closed(echo):
    with Conn(echo.port) as conn:
        conn.send(predict("bye", headers=("Connection: close",)))
        answer = conn.response()
        assert (answer.status, answer.json()) == (200, {"output": "bye"})
        assert_closes_and_serves_on(echo, conn, answer)


def test_a_pipelined_connection_close_is_answered_last(echo):
    with Conn(echo.port) as conn:
        conn.send(predict(1) + predict(2, headers=("Connection: close",)))
        first, second = conn.response(), conn.response()
        assert (first.json(), second.json()) == ({"output": 1}, {"output": 2})
        assert "connection" not in first.headers and second.headers["connection"] == "close"
        assert conn.at_eof()


def test_a_pipelined_connection_close_is_answered_and_what_follows_ignored(echo):
    with Conn(echo.port) as conn:
        conn.send(predict(1) + predict(2, headers=("Connection: close",)) + predict(3))
        assert conn.response().json() == {"output": 1}
        second = conn.response()
        assert second.json() == {"output": 2} and second.headers["connection"] == "close"
        assert conn.at_eof()


# -- pipelining and back-pressure -----------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order(echo):
    requests, checks = [], []
    for i in range(50):
        kind = i % 5
        if kind == 0:
            requests.append(health())
            checks.append((200, lambda body: body["status"] == "ready"))
        elif kind == 1:
            requests.append(request("GET", f"/nope-{i}"))
            checks.append((404, lambda body, i=i: body == {"error": f"no route /nope-{i}"}))
        elif kind == 2:
            requests.append(request("GET", "/predict"))
            checks.append((405, lambda body: "use POST" in body["error"]))
        else:
            requests.append(predict({"i": i, "text": "x" * i}))
            checks.append((200, lambda body, i=i: body == {"output": {"i": i, "text": "x" * i}}))
    with Conn(echo.port) as conn:
        conn.send(b"".join(requests))
        for i, (status, check) in enumerate(checks):
            answer = conn.response()
            assert answer.status == status and check(answer.json()), (i, answer)
        assert not conn.readable()


def test_a_client_that_pipelines_and_does_not_read_gets_every_answer_in_order(echo):
    """2,000 requests of ~2 KB each, sent by a thread while nobody reads: more than the socket
    buffers hold, so the server has to stop reading and writing, then resume, in order."""
    count, pad = 2000, "p" * 2000
    stream = b"".join(predict([i, pad]) for i in range(count))
    with Conn(echo.port, timeout=20, rcvbuf=8192) as conn:
        sent: list[BaseException | None] = []

        def send() -> None:
            try:
                conn.send(stream)
                sent.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                sent.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)  # not reading "for a while"
        for i in range(count):
            answer = conn.response()
            assert (answer.status, answer.json()) == (200, {"output": [i, pad]}), i
        sender.join(10)
        assert sent == [None]
        assert not conn.readable()


# -- request bodies -------------------------------------------------------------------------------


def chunked(pieces: list[bytes], headers: str = "") -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode()
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def test_chunked_body_is_decoded(echo):
    with Conn(echo.port) as conn:
        conn.send(chunked([b'{"in', b'put": ', b'"chunked', b'"}']) + predict("after"))
        assert conn.response().json() == {"output": "chunked"}
        assert conn.response().json() == {"output": "after"}  # the connection is still in step


def test_chunked_body_over_the_limit_is_413_and_closes(echo):
    pieces = [b'{"input": "'] + [b"y" * 1000] * 4 + [b'"}']  # 4,013 bytes: under the limit
    with Conn(echo.port) as conn:
        conn.send(chunked(pieces))
        assert conn.response().json() == {"output": "y" * 4000}
        conn.send(chunked(pieces[:1] + [b"y" * 1000] * 5 + pieces[-1:]))  # 5,013 bytes
        answer = conn.response()
        assert_json_error(answer, 413, f"larger than {MAX_BODY} bytes")
        assert_closes_and_serves_on(echo, conn, answer)


def test_content_length_over_the_limit_is_413_before_the_body(echo):
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1))
        answer = conn.response()  # the body was never sent
        assert_json_error(answer, 413, f"larger than {MAX_BODY} bytes")
        assert_closes_and_serves_on(echo, conn, answer)
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: 9999999999999999999\r\n\r\n")
        assert_json_error(conn.response(), 413, "larger than")


def test_a_refused_client_may_finish_sending_before_the_connection_closes(echo):
    """A lingering close (RFC 9112 9.6): after a 413 the server stops writing but reads and
    discards what the client still sends, so the client is not reset before it reads the answer."""
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY * 50))
        answer = conn.response()
        assert_json_error(answer, 413, f"larger than {MAX_BODY} bytes")
        for _ in range(10):
            conn.send(b"x" * MAX_BODY * 5)  # a reset connection raises here (EPIPE, ECONNRESET)
        assert conn.at_eof()


def test_content_length_with_leading_zeros_is_its_value(echo):
    body = b'{"input": 1}'
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Length: %s\r\n\r\n%s" % (b"%022d" % len(body), body))
        answer = conn.response()
        assert (answer.status, answer.json()) == (200, {"output": 1})


def test_expect_100_continue_is_answered_before_the_body(echo):
    body = json.dumps({"input": "continued"}).encode()
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = conn.response()
        assert (interim.status, interim.reason, interim.body) == (100, "Continue", b"")
        assert not conn.readable()
        conn.send(body)
        answer = conn.response()
        assert (answer.status, answer.json()) == (200, {"output": "continued"})


def test_a_pipelined_expect_100_continue_gets_its_100_after_the_answers_before_it(echo):
    body = json.dumps({"input": "second"}).encode()
    with Conn(echo.port) as conn:
        conn.send(predict(1) + b"POST /predict HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        assert conn.response().json() == {"output": 1}
        interim = conn.response()
        assert (interim.status, interim.reason) == (100, "Continue")
        conn.send(body)
        assert conn.response().json() == {"output": "second"}


def test_expect_100_continue_over_the_limit_is_413_without_continue(echo):
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        answer = conn.response()
        assert_json_error(answer, 413, "larger than")
        assert_closes_and_serves_on(echo, conn, answer)


def test_http10_expect_100_continue_gets_no_interim_answer(echo):
    body = json.dumps({"input": 1}).encode()
    with Conn(echo.port) as conn:
        conn.send(b"POST /predict HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert conn.response().status == 200


# -- HEAD -----------------------------------------------------------------------------------------


def test_head_gets_the_head_without_the_body(echo):
    with Conn(echo.port) as conn:
        conn.send(request("HEAD", "/nope") + request("GET", "/nope") + request("HEAD", "/predict") + predict("next"))
        head = conn.response(head_only=True)
        get = conn.response()
        assert (head.status, get.status) == (404, 404)
        assert int(head.headers["content-length"]) == len(get.body) > 0
        assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
        head405 = conn.response(head_only=True)
        assert head405.status == 405 and head405.headers["allow"] == "POST"
        assert int(head405.headers["content-length"]) > 0
        assert conn.response().json() == {"output": "next"}  # nothing of a body was sent for either HEAD


def test_head_on_a_get_route_is_answered_like_get(echo):
    with Conn(echo.port) as conn:
        conn.send(request("HEAD", "/health") + health())
        head = conn.response(head_only=True)
        get = conn.response()
        assert head.status == get.status == 200
        assert head.headers["content-length"] == get.headers["content-length"]


# -- limits and hostile bytes ---------------------------------------------------------------------


def test_head_over_64_kib_is_431_and_closes(echo):
    with Conn(echo.port) as conn:
        conn.send(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n")
        answer = conn.response()
        assert_json_error(answer, 431, "longer than 65536 bytes")
        assert_closes_and_serves_on(echo, conn, answer)
    with Conn(echo.port) as conn:  # many headers, each small
        conn.send(b"GET /health HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(70)) + b"\r\n")
        assert_json_error(conn.response(), 431, "longer than 65536 bytes")
    with Conn(echo.port) as conn:  # a request target alone, not yet ended
        conn.send(b"GET /" + b"a" * (65 * 1024))
        assert_json_error(conn.response(), 431, "longer than 65536 bytes")
    with Conn(echo.port) as conn:  # an absolute-form target without a path (logged as "/")
        conn.send(b"GET http://x HTTP/1.1\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n")
        assert_json_error(conn.response(), 431, "longer than 65536 bytes")


def test_a_header_line_over_64_kib_is_431_before_it_ends(echo):
    """httptools holds a header line until it ends, so the protocol counts whole reads inside one
    head: the line is cut off within 64 KiB plus one read (uvloop reads 256 KiB at most)."""
    with Conn(echo.port, timeout=5) as conn:
        conn.send(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * (512 * 1024))
        assert_json_error(conn.response(), 431, "longer than 65536 bytes")


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),  # a TLS ClientHello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # HTTP/2 with prior knowledge
    b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # smuggling
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
], ids=["tls", "h2-preface", "bad-header", "cl-and-te", "connect"])
def test_bytes_that_are_not_http_are_400_and_close(echo, garbage):
    with Conn(echo.port) as conn:
        conn.send(garbage)
        answer = conn.response()
        assert answer.status == 400 and answer.headers["content-type"] == "application/json"
        assert answer.json()["error"]
        assert_closes_and_serves_on(echo, conn, answer)


UPGRADES = {
    "websocket": b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "h2c": b"GET /health HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
}


@pytest.mark.parametrize("kind", sorted(UPGRADES))
def test_an_upgrade_is_ignored_the_request_answered_and_the_connection_closed(echo, kind):
    """RFC 9110 7.8 lets a server ignore Upgrade (curl --http2 asks for h2c on every plain
    request): the request is answered as HTTP/1.1, the connection's last."""
    with Conn(echo.port) as conn:
        conn.send(predict(1) + UPGRADES[kind] + predict(3))
        assert conn.response().json() == {"output": 1}
        answer = conn.response()
        assert answer.status == 200 and answer.json()["status"] == "ready"
        assert answer.headers["connection"] == "close"
        assert_closes_and_serves_on(echo, conn, answer)


@pytest.mark.parametrize(("bad", "status"), [
    (b"\x00garbage\r\n\r\n", 400),
    (b"POST /predict HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", 413),
], ids=["garbage", "too-large"])
def test_requests_pipelined_before_a_bad_one_are_answered_then_the_refusal(echo, bad, status):
    with Conn(echo.port) as conn:
        conn.send(predict(1) + predict(2) + predict(3) + bad)
        assert [conn.response().json() for _ in range(3)] == [{"output": i} for i in (1, 2, 3)]
        refusal = conn.response()
        assert refusal.status == status and refusal.json()["error"]
        assert_closes_and_serves_on(echo, conn, refusal)


# -- arbitrary bytes ------------------------------------------------------------------------------

PIECES = [
    health(), request("GET", "/"), predict(1), predict("x" * 50), request("GET", "/nope"),
    request("POST", "/health", b"{}"), request("GET", "/health", headers=("Connection: close",)),
    predict(2, version="1.0"), chunked([b'{"input"', b": 3}"]), UPGRADES["websocket"],
    b"POST /predict HTTP/1.1\r\nContent-Length: 99999\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 12\r\n\r\n{\"input\": 4}",
    b"\r\n", b"\r\n\r\n", b"GET ", b"POST /predict HTTP/1.1\r\n", b" HTTP/1.1\r\n", b"HTTP/1.0\r\n",
    b"Content-Length: ", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", b"Host: x\r\n", b": ", b"\x00",
    b" ", b"/%zz", b"?a=b#c", b'{"input": ', b"Connection: keep-alive\r\n",
]
# After any bytes: end a header block, then a request that makes the server close when it gets there.
CLOSER = b"\r\n\r\n" + request("GET", "/health", headers=("Connection: close",))
ALLOWED = {100, 200, 400, 404, 405, 413, 431}


def exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send ``data``; read until the server closes, or sends nothing for a while after whole answers."""
    with Conn(port) as conn:
        try:
            conn.send(data)
        except OSError:  # closed by the server part-way: what it answered is still to be read
            pass
        received, deadline = b"", time.monotonic() + 10
        conn.sock.settimeout(0.3)
        while time.monotonic() < deadline:
            try:
                chunk = conn.sock.recv(1 << 16)
            except ConnectionResetError:
                return received, True
            except TimeoutError:
                try:
                    parse_all(received)
                except AssertionError:
                    continue  # mid-answer: wait for the rest
                return received, False  # the server waits for more bytes (e.g. a body)
            if not chunk:
                return received, True
            received += chunk
        raise AssertionError(f"no end after 10 s: {received[-300:]!r}")


@settings(max_examples=100)
@given(st.lists(st.sampled_from(PIECES) | st.binary(max_size=40), max_size=8), st.booleans())
def test_arbitrary_bytes_get_nothing_or_well_formed_json_answers(echo, pieces, closer):
    received, closed = exchange(echo.port, b"".join(pieces) + (CLOSER if closer else b""))
    responses = parse_all(received)
    for n, response in enumerate(responses):
        assert response.status in ALLOWED, response
        if response.status == 100:
            continue
        assert response.headers["content-type"] == "application/json", response
        body = response.json()
        assert isinstance(body, dict) and (response.status == 200 or isinstance(body["error"], str)), body
        if response.headers.get("connection") == "close":
            assert n == len(responses) - 1 and closed, "answers after connection: close"
    with Conn(echo.port) as fresh:
        fresh.send(health())
        assert fresh.response().status == 200


# -- timeouts and shutdown ------------------------------------------------------------------------


def test_idle_connections_are_closed_after_the_keep_alive_timeout(echo):
    """uvicorn's timeout_keep_alive, 5 s: after an answer, before a first request, and mid-request."""
    conns = [Conn(echo.port, timeout=10) for _ in range(3)]
    try:
        after_answer, before_first, mid_request = conns
        after_answer.send(health())
        assert after_answer.response().status == 200
        mid_request.send(b"GET /health HTTP/1.1\r\nHost: te")
        started = time.monotonic()
        for conn in conns:
            assert conn.at_eof()
            elapsed = time.monotonic() - started
            assert 4.5 < elapsed < 8, elapsed
    finally:
        for conn in conns:
            conn.sock.close()


def test_shutdown_closes_idle_connections_at_once_and_busy_ones_after_their_answer(tmp_path):
    """SIGTERM: a kept-alive idle connection closes at once; a request in flight is answered with
    connection: close (draining itself is in test_runtime_lifecycle.py)."""
    runtime = Runtime(tmp_path, "models.py:Slow")
    try:
        runtime.wait_ready()
        with Conn(runtime.port) as busy, Conn(runtime.port) as idle:
            busy.send(predict({"sleep": 1.5}))
            idle.send(health())  # answered after the server has read the busy request
            assert idle.response().status == 200
            runtime.signal(signal.SIGTERM)
            assert idle.at_eof()
            assert not busy.readable()  # the idle connection went first
            answer = busy.response()
            assert (answer.status, answer.json()) == (200, {"output": {"max_in_flight": 1}})
            assert answer.headers["connection"] == "close"
            assert busy.at_eof()
        assert runtime.wait_exit() == 0
    finally:
        runtime.stop()


# -- uvicorn's h11 fallback -----------------------------------------------------------------------

SAME_ANSWERS = {  # name: (request, status)
    "predict": (predict({"a": [1, 2]}), 200),
    "invocations": (request("POST", "/invocations", b'{"instances": [1, "two"]}'), 200),
    "bad-json": (request("POST", "/predict", b'{"input": '), 400),
    "no-route": (request("GET", "/nope"), 404),
    "wrong-method": (request("GET", "/predict"), 405),
    "too-large": (predict("z" * (MAX_BODY + 100)), 413),
}


def test_without_httptools_h11_gives_the_same_answers(echo, tmp_path):
    blocker = tmp_path / "no-httptools" / "httptools"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("httptools is blocked by a test")\n')
    fallback = Runtime(tmp_path, "models.py:Echo", "--max-body-bytes", str(MAX_BODY), "--no-access-log",
                       pythonpath=os.pathsep.join([str(blocker.parent), str(ROOT)]))
    try:
        assert fallback.wait_ready()["http"] == "h11"
        assert "httptools is blocked by a test" in fallback.stderr
        for name, (raw, status) in SAME_ANSWERS.items():
            answers = []
            for runtime in (echo, fallback):
                with Conn(runtime.port) as conn:
                    conn.send(raw)
                    answer = conn.response()
                answers.append((answer.status, answer.json(), answer.headers["content-type"], answer.headers.get("allow")))
            assert answers[0] == answers[1], name
            assert answers[0][0] == status, (name, answers[0])
            assert answers[0][3] == ("POST" if status == 405 else None), (name, answers[0])
    finally:
        assert fallback.stop() == 0
