"""Emulators of provider APIs that cannot run here, written from the providers' public API
references (see each package's README). They keep state, go through the provider's states,
return its error shapes and run the image on the real Docker engine with that provider's
container contract; the real SDKs reach them through their documented endpoint overrides."""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable


def serve_until_signalled(server, port_file: str | None, cleanup: Callable[[], None]) -> None:
    """Write the server's port to ``port_file`` (atomically: the fixture waits for the file),
    serve until SIGTERM or SIGINT, then ``cleanup()`` (remove the containers) and close."""
    if port_file:
        tmp = port_file + ".tmp"
        with open(tmp, "w") as out:
            out.write(f"{server.server_address[1]}\n")
        os.replace(tmp, port_file)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        cleanup()
        server.server_close()


def remove_labelled(client, label: str) -> None:
    """Remove every container carrying ``label`` (an emulator's reset and exit)."""
    for container in client.containers.list(all=True, filters={"label": label}):
        try:
            container.remove(force=True)
        except Exception:  # gone meanwhile
            pass
