"""moto's S3 server for the shared-journal tests: ``python -m tests.infra.moto_s3 PORT
[--serialize]``.

moto (5.2) checks ``If-None-Match: *`` and ``If-Match`` on PutObject, but not atomically: the
check and the write are separate steps of a request handler and werkzeug serves requests on
threads, so two racing conditional puts of one key can both succeed (shown by
``benchmarks/journal/moto_race.py``: 5 rounds in 3,000 with 16 writers here). AWS S3, MinIO and
R2 apply them atomically. ``--serialize`` makes this test store honour them the same way: one
request at a time through a lock around moto's WSGI app (a thin wrapper, nothing of S3 is
faked). Requests still arrive concurrently, from several processes and connections.
"""

from __future__ import annotations

import sys
import threading


def serialized(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        with lock:
            # the whole response is produced under the lock (moto answers with a list body)
            return list(app(environ, start_response))
    return wrapped


def main(argv: list[str]) -> None:
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    port, serialize = int(argv[0]), "--serialize" in argv[1:]
    app = DomainDispatcherApplication(create_backend_app)
    run_simple("127.0.0.1", port, serialized(app) if serialize else app, threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1:])
