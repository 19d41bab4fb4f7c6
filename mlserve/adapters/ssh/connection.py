"""SSH connections with paramiko: strict host keys, key or agent auth, an optional bastion.

Contract: ``connect(spec, options, target_name)`` returns a logged-in ``Connection`` or raises an
``MlserveError`` that names the host and the fix; paramiko and socket exceptions never leave
this module (``translate`` is reused by the callers for errors on an open connection).

- Host keys are checked strictly against ``known_hosts``: an unknown host is refused unless
  ``accept_new_host_keys`` is set (then its key is recorded, like OpenSSH's ``accept-new``);
  a changed key is always refused. Both are exit 3 (trust is configured by the user, a retry
  cannot help), as is a refused client key.
- A host that does not answer in ``connect_timeout`` seconds, refuses the TCP connection or
  drops it is exit 1 (a provider failure: retrying later may work).
- Every byte written to the TCP socket (or to the bastion channel) is counted, so deploys can
  report what they really sent.
"""

from __future__ import annotations

import base64
import fcntl
import getpass
import hashlib
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko

from ...errors import MissingCredentials, MlserveError, ProviderError

if not logging.getLogger("paramiko").handlers:     # its errors become ours; no stray stderr
    logging.getLogger("paramiko").addHandler(logging.NullHandler())

_HOST_RE = re.compile(r"^(?:(?P<user>[^@]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:]+)(?::(?P<port>\d+))?$")
_known_hosts_lock = threading.Lock()


@dataclass(frozen=True)
class HostSpec:
    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "HostSpec":
        m = _HOST_RE.match(text)
        if not m:  # the manifest validator already refused it; kept for direct callers
            raise ProviderError(f"{text!r} is not user@host[:port]")
        host = m.group("host").strip("[]")
        return cls(m.group("user") or getpass.getuser(), host, int(m.group("port") or 22))

    @property
    def address(self) -> str:
        """``host`` or ``[host]:port``: the name known_hosts files use."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + ("" if self.port == 22 else f":{self.port}")

    @property
    def key(self) -> str:
        """A file-name-safe identity of this login, used for per-host state on the remote side."""
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.user}@{self.host}_{self.port}")


class Counter:
    """Bytes through one or more sockets (thread-safe)."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self._lock = threading.Lock()

    def add(self, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.received += received


class CountingSocket:
    """Wraps a socket (or a paramiko channel) and counts what goes through it."""

    def __init__(self, sock, counter: Counter) -> None:
        self._sock, self._counter = sock, counter

    def send(self, data) -> int:
        n = self._sock.send(data)
        self._counter.add(sent=n)
        return n

    def sendall(self, data) -> None:
        self._sock.sendall(data)
        self._counter.add(sent=len(data))

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self._counter.add(received=len(data))
        return data

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_sock", "_counter"):
            raise AttributeError(name)
        return getattr(self._sock, name)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` form, as `ssh-keygen -lf` and `ssh` print it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class UnknownHostKey(Exception):
    def __init__(self, address: str, key: paramiko.PKey) -> None:
        super().__init__(address)
        self.address, self.key = address, key


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust a host seen for the first time and append its key to ``known_hosts``."""

    def __init__(self, path: Path, on_accept) -> None:
        self.path, self.on_accept = path, on_accept

    def missing_host_key(self, client, hostname, key):
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with _known_hosts_lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.on_accept(hostname, key)


@dataclass
class Connection:
    spec: HostSpec
    client: paramiko.SSHClient
    counter: Counter
    jump: "Connection | None" = None

    def close(self) -> None:
        self.client.close()
        if self.jump is not None:
            self.jump.close()


def connect(spec: HostSpec, options, target_name: str, counter: Counter | None = None,
            on_accept=lambda host, key: None, direct: bool = False) -> Connection:
    """Log in to ``spec`` as the target's options say (see the module docstring); through
    ``jump_host`` unless ``direct``."""
    counter = counter or Counter()
    jump = None
    if options.jump_host and not direct:
        jump = connect(HostSpec.parse(options.jump_host), options, target_name, Counter(),
                       on_accept, direct=True)
    client = None
    try:
        sock = _open_socket(spec, options, jump)
        client = paramiko.SSHClient()
        known = Path(os.path.expanduser(options.known_hosts))
        if known.is_file():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(
            _AcceptNew(known, on_accept) if options.accept_new_host_keys else _Refuse())
        timeout = options.connect_timeout
        client.connect(spec.host, spec.port, username=spec.user, sock=CountingSocket(sock, counter),
                       timeout=timeout, banner_timeout=timeout, auth_timeout=timeout,
                       channel_timeout=timeout, **_auth_args(options, target_name))
        client.get_transport().set_keepalive(15)
        return Connection(spec, client, counter, jump)
    except BaseException as exc:
        if jump is not None:
            jump.close()
        if isinstance(exc, MlserveError):
            raise
        # paramiko stops waiting for the handshake at the timeout without saying so, then
        # fails with "No existing session"
        if isinstance(exc, paramiko.SSHException) and "No existing session" in str(exc):
            exc = TimeoutError()
        if client is not None:
            client.close()
        error = translate(exc, spec, options, target_name, connecting=True)
        if error is None:
            raise
        raise error from None


def _open_socket(spec: HostSpec, options, jump: Connection | None):
    if jump is None:
        return socket.create_connection((spec.host, spec.port), timeout=options.connect_timeout)
    transport = jump.client.get_transport()
    return transport.open_channel("direct-tcpip", (spec.host, spec.port), ("127.0.0.1", 0),
                                  timeout=options.connect_timeout)


def _auth_args(options, target_name: str) -> dict:
    if options.identity_file is None:
        return {"allow_agent": True, "look_for_keys": True}
    path = Path(os.path.expanduser(options.identity_file))
    if not path.is_file():
        raise MissingCredentials(f"identity_file {options.identity_file} does not exist",
                                 where=f"targets.{target_name}.identity_file",
                                 fix="point it at your private key, or remove it to use the "
                                     "ssh-agent")
    return {"key_filename": str(path), "allow_agent": False, "look_for_keys": False}


def translate(exc: BaseException, spec: HostSpec, options, target_name: str,
              connecting: bool = False) -> MlserveError | None:
    """The MlserveError for a paramiko/socket failure talking to ``spec``; None if not ours."""
    where = f"targets.{target_name}"
    known = options.known_hosts
    if isinstance(exc, UnknownHostKey):
        return MissingCredentials(
            f"{spec.label}: unknown host: its key ({exc.key.get_name()} {fingerprint(exc.key)}) "
            f"is not in {known}",
            where=f"{where}.known_hosts",
            fix=f"check that fingerprint with the host's provider, then record it: "
                f"ssh-keyscan -p {spec.port} {spec.host} >> {known} ; or set "
                f"{where}.accept_new_host_keys: true to trust hosts on first use")
    if isinstance(exc, paramiko.BadHostKeyException):
        return MissingCredentials(
            f"{spec.label}: the host key CHANGED: it offers {exc.key.get_name()} "
            f"{fingerprint(exc.key)} but {known} records {fingerprint(exc.expected_key)}; "
            "the connection may be intercepted, or the host was reinstalled",
            where=f"{where}.known_hosts",
            fix=f"if the change is expected, remove the old key (ssh-keygen -R '{spec.address}' "
                f"-f {known}), verify the new fingerprint, then add it (ssh-keyscan -p {spec.port} "
                f"{spec.host} >> {known}); accept_new_host_keys never accepts a changed key")
    if isinstance(exc, paramiko.PasswordRequiredException):
        return MissingCredentials(
            f"{spec.label}: identity_file {options.identity_file} is encrypted",
            where=f"{where}.identity_file",
            fix="load it into the agent (ssh-add KEY) and remove identity_file from the target")
    if isinstance(exc, paramiko.AuthenticationException) or (
            isinstance(exc, paramiko.SSHException) and "No authentication methods" in str(exc)):
        offered = (f"the key {options.identity_file}" if options.identity_file
                   else "the ssh-agent's keys and ~/.ssh/id_*")
        return MissingCredentials(
            f"{spec.label} refused {offered} (authentication failed)",
            where=f"{where}.identity_file",
            fix=f"authorise the public key for {spec.user} on the host (ssh-copy-id -i KEY.pub "
                f"-p {spec.port} {spec.user}@{spec.host}), or set identity_file to a key it accepts")
    reach = f"{spec.label} ({spec.host}:{spec.port})"
    if isinstance(exc, (socket.timeout, TimeoutError)) or (
            isinstance(exc, paramiko.SSHException) and "banner" in str(exc)):
        return ProviderError(
            f"{reach} did not answer within {options.connect_timeout:g}s" if connecting else
            f"{reach} stopped answering",
            fix=f"check the address and that port {spec.port} is reachable from here (firewall, "
                f"VPN), or raise {where}.connect_timeout")
    if isinstance(exc, socket.gaierror):
        return ProviderError(f"cannot resolve {spec.host!r} ({exc.strerror})",
                             where=f"{where}.hosts", fix="check the host name for typos and DNS")
    if isinstance(exc, ConnectionRefusedError):
        return ProviderError(f"{reach} refused the connection",
                             fix="check that sshd runs on that port (`systemctl status ssh` on "
                                 "the host) and the port in the target")
    if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
        what = "connecting to" if connecting else "the connection to"
        return ProviderError(f"{what} {reach} failed: {exc.__class__.__name__}: {exc}".rstrip(": "),
                             fix="run the command again; uploads already made are kept and "
                                 "resume where they stopped")
    return None
