"""Serving an emulator until SIGTERM (``python -m tests.emulators.NAME``): the port written to
``--port-file`` once it listens, SIGTERM/SIGINT shut the server down, ``cleanup()`` runs on the
way out (the emulators remove their containers there)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable


def serve(server, host: str, port_file: str | None, what: str, cleanup: Callable[[], None]) -> int:
    port = server.server_address[1]
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as out:
            out.write(f"{port}\n")
        os.replace(tmp, port_file)
    logging.info("%s listening on %s:%d", what, host, port)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        cleanup()
        server.server_close()
    return 0
