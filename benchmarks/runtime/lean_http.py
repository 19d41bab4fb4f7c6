"""A ceiling probe for issue 14, not a server to ship: how close to the model's own limit can an
HTTP server with a much leaner request path than uvicorn + ASGI come on this machine?

    python lean_http.py APP_DIR PORT MAX_BATCH

MAX_BATCH 0 calls ``predict`` inline on the event loop, one request at a time (no thread, no
batching): the floor of what HTTP costs a request at one connection on this machine.

uvloop and httptools (what the runtime's uvicorn uses underneath), but no ASGI: one protocol
object per connection parses with httptools' callbacks, decodes the JSON body, queues it; one
worker thread runs ``predict_batch`` on whatever is queued (at most MAX_BATCH, at once when
nothing runs: the runtime's policy without its waiting rules) and hands the answers back in one
``call_soon_threadsafe``; the answer is written straight to the transport. No routes but
``POST /predict`` (and ``GET /health``), no access log, no metrics, no masking, no limits on the
body: the features the runtime has and this does not are what a lean path would have to add
back. ``batching.py --servers runtime-b64,lean-b64`` measures both in one run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections import deque

import httptools
import uvloop


def main(app_dir: str, port: int, max_batch: int) -> None:
    sys.path.insert(0, os.path.abspath(app_dir))
    from model import Model
    model = Model()
    model.load()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    queue: deque = deque()
    wake = threading.Condition()

    def answer(done: list) -> None:
        for transport, output in done:
            if not transport.is_closing():
                body = json.dumps({"output": output}).encode()
                transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                b"content-length: %d\r\n\r\n%s" % (len(body), body))

    def work() -> None:
        while True:
            with wake:
                while not queue:
                    wake.wait()
                batch = [queue.popleft() for _ in range(min(len(queue), max_batch))]
            outputs = model.predict_batch([payload for _, payload in batch])
            loop.call_soon_threadsafe(answer, [(t, o) for (t, _), o in zip(batch, outputs)])

    if max_batch:
        threading.Thread(target=work, daemon=True).start()

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport, self.parser, self.body = transport, httptools.HttpRequestParser(self), []

        def data_received(self, data):
            self.parser.feed_data(data)

        def on_body(self, body):
            self.body.append(body)

        def on_message_complete(self):
            body, self.body = b"".join(self.body), []
            if self.parser.get_method() == b"GET":
                self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                return
            payload = json.loads(body)["input"]
            if not max_batch:
                answer([(self.transport, model.predict(payload))])
                return
            with wake:
                queue.append((self.transport, payload))
                wake.notify()

    server = loop.run_until_complete(loop.create_server(Protocol, "127.0.0.1", port, backlog=1024))
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
