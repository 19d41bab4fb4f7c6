"""Network helpers for tests: pick a free TCP port, wait until something listens on one."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it; another process may
    still take it before you bind, so servers started on it should retry on a bind error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> float:
    """Wait until ``host:port`` accepts TCP connections; return the seconds waited.

    Raises ``TimeoutError`` naming the address when nothing listens within ``timeout``.
    """
    start = time.monotonic()
    delay = 0.005
    while True:
        if port_open(host, port):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.1f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
