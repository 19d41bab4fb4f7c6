"""The runtime's HTTP/1.1 protocol: httptools parses straight into ``App.respond``, no ASGI.

uvicorn still runs the server (sockets, signals, the date header, graceful shutdown, the
handover's second listener): it builds one ``HttpProtocol`` per connection, as it builds its own
protocols. What this replaces is uvicorn's per-request path, which on a small request costs
about as much CPU as parsing a 1,024-float JSON body (issue 14 measured it: at 64 connections
it kept a batching server at 0.88x of the model's own limit on one core). Per request this
does the least the runtime's routes need: the body is collected whole (the routes all take a
whole JSON body), ``App.respond`` runs right in the parser's callback, without a task, up to its
first wait (a request that needs none, such as a health check or a batch of one run inline, is
answered there; one that waits for a worker resumes from the future's callback), and the answer
leaves in one write: status line, headers and body together (a ``writelines`` without a copy for
a large body). An ``async def predict`` gets a task (it may ask for one: ``asyncio.timeout``).

What it keeps of HTTP/1.1 (RFC 9112), each tested in ``tests/test_runtime_http.py``:

- keep-alive (HTTP/1.1 by default, HTTP/1.0 with ``Connection: keep-alive``), ``Connection:
  close``, an idle connection closed after ``timeout_keep_alive`` seconds (uvicorn's setting,
  5 s), also before its first request;
- pipelining: requests that arrive while one is being answered are answered in order; reading
  pauses meanwhile, and while the peer does not read what it is sent;
- chunked request bodies; ``Expect: 100-continue`` (for a pipelined request, once the answers
  before it are sent); ``HEAD`` gets headers only;
- limits, each answered (after the requests pipelined before it) and the connection closed
  lingering (the server stops writing and discards what the client still sends, 2 s at most, so
  a client mid-body is not reset before it reads the answer): a
  body over ``max_body`` is a 413 as soon as its ``Content-Length`` or running size says so; a
  request line with headers over 64 KiB is a 431 (a header line that never ends is cut off
  within 64 KiB and one read: httptools holds a line until it ends); bytes that are not HTTP
  are a 400;
- ``Upgrade`` (WebSocket, h2c) is ignored, as RFC 9110 7.8 allows: the request is answered as
  HTTP/1.1, the connection's last (httptools parses nothing after it); HTTP/1.0 keep-alive
  answers say ``connection: keep-alive``; no ``100 Continue`` to an HTTP/1.0 client; ``HEAD``
  is answered wherever ``GET`` is;
- graceful shutdown: uvicorn calls ``shutdown()``; an idle connection closes at once, a busy one
  after its answer (``Connection: close``); uvicorn waits ``timeout_graceful_shutdown`` for the
  connections to close (and cancels the tasks of ``async def predict`` answers past it).

Every error body is JSON (``{"error": ...}``) like the app's. Without httptools the runtime
serves through uvicorn's h11 protocol and ``App.__call__`` (ASGI) instead: the app's answers are
the same, slower; errors h11 answers itself (bytes that are not HTTP) are uvicorn's plain text.
"""

from __future__ import annotations

import asyncio
import functools
import http
import urllib.parse
from collections import deque
from time import perf_counter

import httptools

from .app import HTTPError, JSON_HEADERS, _encode, body_too_large, declared_too_large

MAX_HEAD = 64 * 1024          # request line + headers, bytes
LINGER = 2.0                  # seconds a refused client may go on sending before the connection closes
_LARGE_BODY = 64 * 1024       # above this an answer's body is written beside its head, not copied into it
_STATUS = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_HEAD_TOO_LONG = f"the request line and headers are longer than {MAX_HEAD} bytes"


def _path(url: bytes) -> str:
    """The path of a request target, percent-decoded (``/`` when it has none, as ``http://x``);
    ``httptools.HttpParserInvalidURLError`` when the target is not a URL."""
    path = (httptools.parse_url(url).path or b"/").decode("latin-1")
    return urllib.parse.unquote(path) if "%" in path else path


class _Reject(Exception):
    """A request the protocol answers itself, then closes the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("app", "loop", "state", "keep_alive_timeout", "max_body", "transport", "parser", "client",
                 "url", "chunks", "size", "head_size", "in_head", "head_chunks", "expect_continue", "continue_owed",
                 "busy", "pending", "closing", "refused", "idle_timer", "write_paused", "reading_paused",
                 "current", "_head_cache")

    def __init__(self, config, server_state, app_state=None, _loop=None) -> None:
        self.app = config.app
        self.loop = _loop or asyncio.get_event_loop()
        self.state = server_state
        self.keep_alive_timeout = config.timeout_keep_alive
        self.max_body = self.app.max_body
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = None
        self.url = b""
        self.chunks: list[bytes] = []
        self.size = 0
        self.head_size = 0
        self.in_head = False         # between a request's first byte and the end of its headers
        self.head_chunks = 0         # bytes of reads that fell wholly inside one unfinished head
        self.expect_continue = False
        self.continue_owed = False   # a pipelined request waits for its 100 Continue
        self.busy = False            # an answer is being computed
        self.pending: deque = deque()  # pipelined requests parsed while busy
        self.closing = False         # close after the answer in progress
        self.refused = False         # the parser stopped: the rest of the stream is ignored
        self.idle_timer = None
        self.write_paused = False
        self.reading_paused = False
        self.current = None          # (method, path, keep-alive, HTTP/1.0, started) of the request answered
        self._head_cache = (None, b"")

    # -- connection ----------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.state.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self._arm_idle_timer()

    def connection_lost(self, exc) -> None:
        self.state.connections.discard(self)
        self._cancel_idle_timer()
        self.pending.clear()
        self.closing = True

    def eof_received(self):
        return None  # the transport closes; an answer in progress is dropped

    def pause_writing(self) -> None:
        self.write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._set_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after the answer in progress."""
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def _set_reading(self) -> None:
        pause = self.write_paused or bool(self.pending)
        if pause != self.reading_paused and not self.transport.is_closing():
            self.reading_paused = pause
            (self.transport.pause_reading if pause else self.transport.resume_reading)()

    def _arm_idle_timer(self) -> None:
        self._cancel_idle_timer()
        self.idle_timer = self.loop.call_later(self.keep_alive_timeout, self._idle)

    def _cancel_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _idle(self) -> None:
        self.idle_timer = None
        if not self.busy and not self.transport.is_closing():
            self.transport.close()

    # -- parsing -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.idle_timer is not None:
            self._cancel_idle_timer()
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # raised in a callback below: the reason is its context
            reason = exc.__context__
            if isinstance(reason, _Reject):
                self._refuse(reason.status, str(reason))
            else:
                self.app.log_failure("error: the runtime's HTTP protocol failed on a request:", reason)
                self._refuse(500, f"the runtime failed on this request ({type(reason).__name__}); see its log")
        except httptools.HttpParserUpgrade:
            # RFC 9110 7.8: a server may ignore Upgrade (curl --http2 asks for h2c on every plain
            # request). The request is answered as HTTP/1.1, the last on this connection: httptools
            # parses nothing after it.
            self.refused = True
            self._last_request()
        except httptools.HttpParserError as exc:
            self._refuse(400, f"the request is not valid HTTP/1.1 ({exc})")
        else:
            if self.in_head:
                # httptools holds a header line until it ends, so on_header cannot bound it: count
                # the reads that fell wholly inside this head (the first one may hold earlier requests).
                if was_in_head:
                    self.head_chunks += len(data)
                    if self.head_chunks > MAX_HEAD:
                        self._refuse(431, _HEAD_TOO_LONG)
                        return
                else:
                    self.head_chunks = 0
            if not self.busy and not self.transport.is_closing():
                self._arm_idle_timer()  # a request begun and not finished gets the same time as an idle one

    def on_message_begin(self) -> None:
        self.url = b""
        self.chunks = []
        self.size = 0
        self.head_size = 0
        self.in_head = True
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise _Reject(431, _HEAD_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        if self.head_size > MAX_HEAD:
            raise _Reject(431, _HEAD_TOO_LONG)
        if len(name) == 14 and name.lower() == b"content-length":
            if declared_too_large(value, self.max_body):
                raise _Reject(413, body_too_large(self.max_body))
        elif len(name) == 6 and name.lower() == b"expect" and value.strip().lower() == b"100-continue":
            self.expect_continue = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.expect_continue and self.parser.get_http_version() != "1.0":  # RFC 9110 15.2: no 1xx to 1.0
            if self.busy or self.pending:
                self.continue_owed = True  # sent when the answers before it are
            else:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body:
            raise _Reject(413, body_too_large(self.max_body))
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        parser = self.parser
        request = (parser.get_method(), self.url, body, parser.should_keep_alive(),
                   parser.get_http_version() == "1.0", perf_counter())
        if self.busy or self.pending:
            self.pending.append(request)
            self._set_reading()
        else:
            self._start(request)

    # -- answering -----------------------------------------------------------------------------

    def _start(self, request: tuple) -> None:
        raw_method, url, body, keep_alive, http10, started = request
        if raw_method is None:  # a refusal queued behind pipelined requests (``_refuse``)
            self.current = (*url, False, False, started)
            self._send(*body)
            return
        method = raw_method.decode("ascii", "replace")
        try:
            path = _path(url)
        except httptools.HttpParserInvalidURLError:
            self.current = (method, url.decode("latin-1")[:200], False, http10, started)
            self._send(*self.app.error(HTTPError(400, "the request target is not a valid URL")))
            return
        if raw_method == b"POST":
            self.app.clients.arrived(self, started)
        self.busy = True
        self.current = (method, path, keep_alive and not self.closing, http10, started)
        answer = self.app.respond(method, path, body)
        if getattr(self.app.runner, "needs_task", False):
            # An ``async def predict`` may need a task of its own (asyncio.timeout, current_task()).
            task = self.loop.create_task(answer)
            self.state.tasks.add(task)
            task.add_done_callback(self._answered)
        else:
            self._step(answer)

    def _step(self, answer, _future=None) -> None:
        """Run ``App.respond`` up to its next wait, as a task would, without a task: a request
        that needs no wait (health, errors, a batch of one run inline) is answered right here,
        and one that waits for a worker resumes from the future's callback. A task would cost
        two more turns of the event loop per request."""
        try:
            awaited = answer.send(None)
        except StopIteration as done:
            self._respond(done.value)
            return
        except BaseException:  # noqa: BLE001 - respond() answers every Exception; anything else ends the connection
            self.busy = False
            self.transport.close()
            return
        if awaited is None:  # a bare yield (asyncio.sleep(0)): go round the loop once
            self.loop.call_soon(self._step, answer)
        elif getattr(awaited, "_asyncio_future_blocking", None):
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(functools.partial(self._step, answer))
        else:
            answer.throw(RuntimeError(f"the runtime cannot await {awaited!r} outside a task"))

    def _answered(self, task: asyncio.Task) -> None:
        self.state.tasks.discard(task)
        if task.cancelled():
            self.busy = False
            self.transport.close()  # the server is past its graceful timeout
            return
        try:
            answer = task.result()
        except BaseException:  # noqa: BLE001 - respond() answers every Exception; anything else ends the connection
            self.busy = False
            self.transport.close()
            return
        self._respond(answer)

    def _respond(self, answer: tuple) -> None:
        self.busy = False
        if self.transport.is_closing():
            return  # the client left
        self._send(*answer)

    def _send(self, status: int, body: bytes, headers: list) -> None:
        method, path, keep_alive, http10, started = self.current
        keep_alive = keep_alive and not self.closing
        head = [_STATUS.get(status) or b"HTTP/1.1 %d \r\n" % status, self._default_head()]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        if not keep_alive:
            head.append(b"connection: close\r\n")
        elif http10:
            head.append(b"connection: keep-alive\r\n")  # an HTTP/1.0 client assumes close otherwise
        head.append(b"\r\n")
        if method == "HEAD":
            self.transport.write(b"".join(head))
        elif len(body) > _LARGE_BODY:
            self.transport.writelines((b"".join(head), body))
        else:
            head.append(body)
            self.transport.write(b"".join(head))
        self.state.total_requests += 1
        self.app.log_access(self.client, method, path, status, started)
        if not keep_alive:
            self.pending.clear()
            if self.refused and self.transport.can_write_eof():
                # A lingering close (RFC 9112 9.6): the client may still be sending the body we
                # refused; closing now would reset the connection and it could lose this answer.
                # Stop writing, keep reading (and discarding) until it closes, LINGER at most.
                self.transport.write_eof()
                self.loop.call_later(LINGER, self.transport.close)
            else:
                self.transport.close()
        elif self.pending:
            self._start(self.pending.popleft())
            self._set_reading()
        elif self.continue_owed:
            self.continue_owed = False
            self.transport.write(_CONTINUE)
        else:
            self._arm_idle_timer()

    def _default_head(self) -> bytes:
        """uvicorn's default headers (the date, refreshed once a second), encoded once per refresh."""
        defaults = self.state.default_headers
        cached, encoded = self._head_cache
        if cached is not defaults:
            encoded = b"".join(b"%s: %s\r\n" % (name, value) for name, value in defaults)
            self._head_cache = (defaults, encoded)
        return encoded

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request the parser stopped on, after any parsed before it, then close: nothing
        after it in the stream can be trusted."""
        self.refused = True
        if self.transport.is_closing():
            return
        refusal = (None, self._request_line(), (status, _encode({"error": message}).encode(), JSON_HEADERS),
                   False, False, perf_counter())
        if self.busy or self.pending:
            self.pending.append(refusal)
            self._set_reading()
        else:
            self._start(refusal)

    def _request_line(self) -> tuple[str, str]:
        """Method and path of the request being refused, for the access log, as far as they were read."""
        try:
            method = self.parser.get_method().decode("ascii", "replace")
        except httptools.HttpParserError:
            method = "-"
        try:
            path = _path(self.url) if self.url else "-"
        except httptools.HttpParserInvalidURLError:
            path = "-"
        return method, path[:200]

    def _last_request(self) -> None:
        """Make the latest request parsed the connection's last: answered with ``connection: close``."""
        if self.pending:
            method, url, body, _, http10, started = self.pending[-1]
            self.pending[-1] = (method, url, body, False, http10, started)
        elif self.busy:
            method, path, _, http10, started = self.current
            self.current = (method, path, False, http10, started)
        elif not self.transport.is_closing():
            self.transport.close()
