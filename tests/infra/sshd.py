"""Private OpenSSH servers for tests: fixtures ``sshd_host`` and ``sshd_user_host``.

Each server is the distribution's real ``sshd`` with its own config, host key, authorized
keys and pidfile in a temporary directory, run in the foreground (``-D``) so teardown stops
it by PID. Clients connect with strict host key checking: ``known_hosts`` holds the server's
key in the ``[host]:port`` form paramiko's ``load_host_keys`` reads. ``fleet.py`` reuses
``running_sshd`` to put one server in each of several network namespaces.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.net import free_port, port_open
from tests.infra.policy import require, require_tool
from tests.infra.procs import (
    ComponentError, descendants_of, kill_pids, new_workdir, start_process, stop_process,
)

TEST_USER = "mlsvtest"  # the non-root login created by sshd_user_host when running as root


@dataclass
class SshdHost:
    """One running sshd and everything a client needs to log in to it.

    ``key_path`` is the authorised client private key; ``known_hosts`` trusts exactly this
    server's ``host_public_key``; ``wrong_known_hosts`` pins another key for the same address
    (a "changed host key"); ``unauthorized_key_path`` is a client key the server refuses.
    """

    host: str
    port: int
    user: str
    home: str
    key_path: Path
    known_hosts: Path
    host_public_key: str
    wrong_known_hosts: Path
    unauthorized_key_path: Path
    config_path: Path
    log_path: Path
    netns: str | None = None
    argv: list[str] = field(default_factory=list, repr=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """PID of the listening sshd, None while stopped."""
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    @property
    def known_hosts_line(self) -> str:
        return known_hosts_line(self.host, self.port, self.host_public_key)

    def start(self, timeout: float = 10.0) -> None:
        """(Re)start the listener on the same address, port and keys."""
        if self.pid is None:
            self.proc = start_process(
                self.argv, self.log_path, lambda: port_open(self.host, self.port),
                f"sshd on {self.host}:{self.port}", timeout,
            )

    def stop(self) -> None:
        """Stop the listener and cut every open session (the host "goes down")."""
        if self.proc is not None:
            self.kill_sessions()
            stop_process(self.proc)

    def kill_sessions(self) -> list[int]:
        """SIGKILL every server-side session process (all descendants of the listener) so
        open connections drop mid-transfer; the listener keeps accepting new ones.
        Returns the PIDs killed."""
        return kill_pids(descendants_of(self.pid)) if self.pid else []

    def connect(self, key_path: Path | None = None, known_hosts: Path | None = None,
                timeout: float = 10.0):
        """A paramiko ``SSHClient`` logged in with strict host key checking (RejectPolicy)."""
        import paramiko  # lazy: only tests that talk SSH need it

        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts or self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.host, self.port, username=self.user,
                key_filename=str(key_path or self.key_path), look_for_keys=False,
                allow_agent=False, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except BaseException:
            client.close()
            raise
        return client

    def ssh_argv(self, *command: str) -> list[str]:
        """argv for the OpenSSH client: this host, its key, strict checking, no prompts."""
        return [
            "ssh", "-i", str(self.key_path), "-p", str(self.port), "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            f"{self.user}@{self.host}", *command,
        ]

    def run(self, command: str, timeout: float = 30.0) -> str:
        """Run ``command`` over a fresh connection; return stdout, raise on non-zero exit."""
        with contextlib.closing(self.connect()) as client:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            status = stdout.channel.recv_exit_status()
            out, err = stdout.read().decode(), stderr.read().decode()
        if status:
            raise RuntimeError(f"{command!r} exited {status} on {self.host}: {err.strip()}")
        return out


def known_hosts_line(host: str, port: int, public_key: str) -> str:
    """``host key`` for port 22, ``[host]:port key`` otherwise (OpenSSH/paramiko format)."""
    name = host if port == 22 else f"[{host}]:{port}"
    return f"{name} {public_key}"


def make_keypair(path: Path, comment: str) -> str:
    """Write an ed25519 key pair at ``path``/``path.pub``; return 'ssh-ed25519 AAAA...'."""
    keygen = require_tool("ssh-keygen", "ssh-keygen", "openssh-client")
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def sshd_config(workdir: Path, listen: str, port: int, user: str) -> str:
    """A self-contained sshd_config: keys-only, no PAM, everything under ``workdir``."""
    return f"""\
Port {port}
ListenAddress {listen}
HostKey {workdir}/host_ed25519
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {workdir}/authorized_keys
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 64:30:128
MaxSessions 32
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def home_of(user: str) -> str:
    return pwd.getpwnam(user).pw_dir


def current_user() -> str:
    """The effective user's name (not $USER, which CI may set to anything)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def ensure_test_user(name: str = TEST_USER) -> str:
    """Create the non-root login ``name`` (with a home) if missing; return its home.

    The account gets password ``*`` instead of useradd's locked ``!``: with ``UsePAM no``
    sshd refuses even key logins to a locked account.
    """
    try:
        return home_of(name)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], capture_output=True, text=True)
    if done.returncode not in (0, 9):  # 9: created meanwhile by a parallel test run
        raise ComponentError(f"useradd {name} failed: {done.stderr.strip()}")
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    return home_of(name)


@contextlib.contextmanager
def running_sshd(
    user: str,
    listen: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    client_key: Path | None = None,
    workdir: Path | None = None,
    extra_config: str = "",
) -> Iterator[SshdHost]:
    """Start an sshd (in ``netns`` when given) and stop it on exit.

    Without ``port`` a free loopback port is picked, retried if another process takes it
    first. ``client_key`` lets several servers accept one key (a fleet). ``extra_config``
    lines are appended to its sshd_config (e.g. ``SetEnv`` for the sessions it starts).
    """
    sshd = require_tool("sshd", "sshd", "openssh-server")
    own_dir = workdir is None
    workdir = workdir or new_workdir("sshd", 0o755)  # sshd reads authorized_keys as the login user
    host = None
    try:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        host = _configure(workdir, user, listen, netns, client_key, sshd)
        for attempt in range(3):
            host.port = port or free_port(listen)
            host.known_hosts.write_text(host.known_hosts_line + "\n")
            host.wrong_known_hosts.write_text(
                known_hosts_line(host.host, host.port, (workdir / "wrong_host.pub").read_text()) + "\n")
            host.config_path.write_text(sshd_config(workdir, listen, host.port, user) + extra_config)
            try:
                host.start()
                break
            except ComponentError:
                if port is not None or attempt == 2:
                    raise
        yield host
    finally:
        if host is not None:
            host.stop()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _configure(workdir, user, listen, netns, client_key, sshd) -> SshdHost:
    """Generate keys and paths for one server in ``workdir`` (port filled in later)."""
    host_key = make_keypair(workdir / "host_ed25519", f"mlsv-host-{listen}")
    wrong = make_keypair(workdir / "wrong_host", "mlsv-wrong-host-key")
    (workdir / "wrong_host.pub").write_text(wrong)
    if client_key is None:
        client_key = workdir / "client_ed25519"
        make_keypair(client_key, "mlsv-client")
    unauthorized = workdir / "unauthorized_ed25519"
    if not unauthorized.exists():
        make_keypair(unauthorized, "mlsv-unauthorized-client")
    authorized = workdir / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o644)
    config, log = workdir / "sshd_config", workdir / "sshd.log"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return SshdHost(
        host=listen, port=0, user=user, home=home_of(user), key_path=client_key,
        known_hosts=workdir / "known_hosts", host_public_key=host_key,
        wrong_known_hosts=workdir / "wrong_known_hosts", unauthorized_key_path=unauthorized,
        config_path=config, log_path=log, netns=netns,
        argv=[*prefix, sshd, "-D", "-f", str(config), "-E", str(log)],
    )


@pytest.fixture(scope="session")
def sshd_host() -> Iterator[SshdHost]:
    """sshd on 127.0.0.1:<free port>; logs in as the user running the tests (root in CI)."""
    with running_sshd(user=current_user()) as host:
        yield host


@pytest.fixture(scope="session")
def sshd_user_host() -> Iterator[SshdHost]:
    """sshd on 127.0.0.1:<free port> logging in as a non-root user: ``mlsvtest`` (created if
    missing) when running as root, otherwise the current user."""
    if os.geteuid() == 0:
        if shutil.which("useradd") is None:
            require("sshd_user_host", "useradd missing: apt-get install -y passwd")
        user = TEST_USER
        ensure_test_user(user)
    else:
        user = current_user()
    with running_sshd(user=user) as host:
        yield host
