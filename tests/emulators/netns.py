"""Reaching a container that runs with ``--network none`` (its own network namespace, only a
loopback interface): what the provider emulators do to probe and proxy to instances without
publishing any port on the host. Opening a socket from a thread that joined the container's
namespace (``setns``) needs root, as dockerd does.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import socket
import threading
from typing import Any

PORT = 8080
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def connect_in_netns(pid: int, port: int = PORT, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:``port`` inside the network namespace of process ``pid``
    (the socket stays usable from any thread)."""
    result: dict[str, Any] = {}

    def join_and_connect() -> None:
        try:
            with open(f"/proc/{pid}/ns/net", "rb") as ns:
                if _libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into the network namespace of {pid}: "
                                       f"{os.strerror(err)}")
            result["sock"] = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    # A fresh thread per connection: it ends inside the container's namespace, never the caller.
    worker = threading.Thread(target=join_and_connect, daemon=True)
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["sock"]


class NetnsHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a socket opened inside a container's network namespace."""

    def __init__(self, pid: int, port: int = PORT, timeout: float = 60.0) -> None:
        super().__init__("127.0.0.1", port, timeout=timeout)
        self._pid = pid

    def connect(self) -> None:
        self.sock = connect_in_netns(self._pid, self.port, timeout=self.timeout)


def listeners(pid: int, port: int = PORT) -> set[str]:
    """Addresses a socket listens on at ``port`` in ``pid``'s network namespace ("0.0.0.0",
    "127.0.0.1", "::"...), read from /proc/PID/net/tcp{,6}."""
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port and len(address) == width:
                if width == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                elif int(address, 16) == 0:
                    found.add("::")
                else:
                    found.add("::1" if address == "0" * 24 + "01000000" else address)
    return found


def split_reference(image: str) -> tuple[str, str]:
    """("registry/repo", "tag") of ``registry/repo:tag`` or ``...@sha256:...`` (tag "latest"
    when none is given)."""
    if "@" in image:
        repository, digest = image.split("@", 1)
        return repository, digest
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
        return repository, tag
    return image, "latest"
