"""An SSH host that runs systemd: fixture ``systemd_host`` (root only).

The test machines have no systemd of their own (PID 1 is the sandbox's init), so the ssh
provider's systemd path gets a machine of its own: a Debian bookworm root filesystem with
systemd, openssh-server and python3 (``.ci/build-base-image.sh --flavour systemd-host``, cached),
unpacked into a temporary directory and booted by ``systemd-nspawn --boot``. Inside it systemd
is PID 1 of its own PID and mount namespaces, with its own root: nothing it does at boot (such
as systemd-tmpfiles cleaning /tmp) reaches this machine's files. Never boot systemd with only
``unshare`` on the real root: it wipes /tmp.

It shares this machine's network namespace, so its sshd listens on a free loopback port (a
drop-in in the container's ``/etc/ssh/sshd_config.d``) and a model deployed there answers on
127.0.0.1. Host keys are made at every boot; login is root with the fixture's client key,
checked strictly against ``known_hosts``; ``as_user()`` logs in as ``mlsvtest`` instead, a user
whose own systemd lingers (``/var/lib/systemd/linger``), so ``systemd-run --user`` works for it,
or as ``mlsvnolinger``, whose does not.

nspawn runs with ``--keep-unit --register=no`` (there is no host systemd to register with) from
a cgroup of its own, ``mlsv-<pytest pid>-sd`` in each cgroup hierarchy systemd uses, which
teardown removes after stopping the machine by PID (SIGTERM: nspawn asks the container's
systemd to shut down).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.containers import rootfs_tarball
from tests.infra.net import free_port, port_open
from tests.infra.policy import require_root, require_tool
from tests.infra.procs import ComponentError, new_workdir, stop_process, tail
from tests.infra.sshd import TEST_USER, SshdHost, known_hosts_line, make_keypair

CGROUP_ROOT = Path("/sys/fs/cgroup")
BOOT_TIMEOUT = 90.0
UNLINGERED_USER = "mlsvnolinger"     # a login on the machine whose own systemd does not linger
STALE_CGROUP = re.compile(r"^mlsv-(\d+)-sd$")   # own_cgroups' names


@dataclass
class SystemdHost(SshdHost):
    """A booted machine: ``run(command)`` executes as root inside it over SSH; ``rootfs`` is its
    root directory seen from outside. ``start``/``stop``/``kill_sessions`` of ``SshdHost`` do not
    apply (the machine's own systemd runs its sshd)."""

    rootfs: Path = field(default=Path("/"), repr=False)
    machine: str = ""

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError("the systemd host's sshd is run by its own systemd")

    def stop(self) -> None:
        raise NotImplementedError("the systemd host's sshd is run by its own systemd")

    def kill_sessions(self) -> list[int]:
        raise NotImplementedError("the systemd host's sshd is run by its own systemd")

    def as_user(self, user: str = TEST_USER) -> "SystemdHost":
        """The same machine logged into as ``mlsvtest``, a user whose systemd lingers (or
        ``UNLINGERED_USER``, whose does not); ``units``/``show`` then ask that user's manager
        (``systemctl --user``)."""
        return dataclasses.replace(self, user=user, home=f"/home/{user}")

    def _systemctl(self) -> str:
        return "systemctl" if self.user == "root" else "systemctl --user"

    def units(self, pattern: str = "mlserve-*") -> dict[str, str]:
        """Loaded units matching ``pattern``: name -> active state."""
        out = self.run(f"{self._systemctl()} list-units --all --no-legend --plain {pattern!r}")
        return {line.split()[0]: line.split()[2] for line in out.splitlines() if line.strip()}

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run(f"{self._systemctl()} show {unit!r} "
                       + " ".join(f"-p {p}" for p in properties))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def cgroup_parents() -> list[Path]:
    """Where ``own_cgroups`` makes its groups: this process's cgroup in the hierarchies systemd
    uses (the named ``systemd`` one and the unified one, or the single cgroup2 tree)."""
    parents = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "name=systemd":
            mount = CGROUP_ROOT / "systemd"
        elif controllers == "":
            mount = CGROUP_ROOT / "unified" if (CGROUP_ROOT / "unified").is_dir() else CGROUP_ROOT
        else:
            continue
        if (mount / "cgroup.procs").exists():
            parents.append(mount / path.lstrip("/"))
    return parents


def own_cgroups(name: str) -> list[Path]:
    """Create ``name`` in each of ``cgroup_parents()``; return them."""
    made = []
    for parent in cgroup_parents():
        group = parent / name
        group.mkdir(exist_ok=True)
        made.append(group)
    return made


def remove_cgroups(groups: list[Path]) -> None:
    """rmdir each group and what systemd made inside it, deepest first (only empty ones go)."""
    for group in groups:
        if group.is_dir():
            for sub in sorted(group.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                group.rmdir()


def _prepare_rootfs(rootfs: Path, workdir: Path, port: int) -> tuple[Path, str]:
    """Host key, sshd drop-in, the lingering user ``mlsvtest``, root's and its authorized key;
    return (client key, host public key)."""
    keygen = require_tool("ssh-keygen", "ssh-keygen", "openssh-client")
    ssh = rootfs / "etc" / "ssh"
    for old in ssh.glob("ssh_host_*"):
        old.unlink()
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "mlsv-systemd-host",
                    "-f", str(ssh / "ssh_host_ed25519_key")], check=True, capture_output=True)
    host_key = " ".join((ssh / "ssh_host_ed25519_key.pub").read_text().split()[:2])
    (ssh / "sshd_config.d" / "mlserve-test.conf").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUseDNS no\nPrintMotd no\nMaxStartups 64:30:128\n")
    client_key = workdir / "client_ed25519"
    make_keypair(client_key, "mlsv-systemd-client")
    for user in (TEST_USER, UNLINGERED_USER):
        for command in (["useradd", "-m", "-s", "/bin/bash", user], ["usermod", "-p", "*", user]):
            subprocess.run(["chroot", str(rootfs), *command], check=True, capture_output=True)
    # lingering: logind starts the user's own systemd at boot and keeps it after logout
    (rootfs / "var/lib/systemd/linger").mkdir(parents=True, exist_ok=True)
    (rootfs / "var/lib/systemd/linger" / TEST_USER).touch()
    for home in (rootfs / "root", rootfs / "home" / TEST_USER, rootfs / "home" / UNLINGERED_USER):
        dot_ssh = home / ".ssh"
        dot_ssh.mkdir(mode=0o700, exist_ok=True)
        (dot_ssh / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
        shutil.chown(dot_ssh, home.stat().st_uid, home.stat().st_gid)
        shutil.chown(dot_ssh / "authorized_keys", home.stat().st_uid, home.stat().st_gid)
    (rootfs / "etc" / "machine-id").write_text("")     # a fresh one at boot
    return client_key, host_key


@contextlib.contextmanager
def running_systemd_host() -> Iterator[SystemdHost]:
    require_root("systemd_host")
    nspawn = require_tool("systemd_host", "systemd-nspawn", "systemd-container")
    tarball = rootfs_tarball("systemd_host", "systemd-host")
    workdir = new_workdir("systemd", 0o755)
    machine = f"mlsv-{os.getpid()}-sd"
    groups: list[Path] = []
    proc = None
    try:
        rootfs = workdir / "rootfs"
        rootfs.mkdir()
        subprocess.run(["tar", "--numeric-owner", "-xf", str(tarball), "-C", str(rootfs)],
                       check=True, capture_output=True)
        port = free_port()
        client_key, host_key = _prepare_rootfs(rootfs, workdir, port)
        known_hosts, wrong = workdir / "known_hosts", workdir / "wrong_known_hosts"
        known_hosts.write_text(known_hosts_line("127.0.0.1", port, host_key) + "\n")
        wrong.write_text(known_hosts_line("127.0.0.1", port,
                                          make_keypair(workdir / "wrong_host", "mlsv-wrong")) + "\n")
        groups = own_cgroups(machine)
        procs_files = [g / "cgroup.procs" for g in groups]

        def into_own_cgroup() -> None:
            for procs in procs_files:
                procs.write_text(str(os.getpid()))

        argv = [nspawn, "--quiet", "--boot", "--keep-unit", "--register=no",
                f"--directory={rootfs}", f"--machine={machine}", "--console=pipe",
                "--resolv-conf=off", "--timezone=off", "--link-journal=no"]
        log = workdir / "boot.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=into_own_cgroup)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ComponentError(f"systemd-nspawn did not bring up sshd on port {port}:\n"
                                     f"{tail(log)}")
            time.sleep(0.1)
        unauthorized = workdir / "unauthorized_ed25519"
        make_keypair(unauthorized, "mlsv-unauthorized-client")
        host = SystemdHost(
            host="127.0.0.1", port=port, user="root", home="/root", key_path=client_key,
            known_hosts=known_hosts, host_public_key=host_key, wrong_known_hosts=wrong,
            unauthorized_key_path=unauthorized, config_path=rootfs / "etc/ssh/sshd_config",
            log_path=log, argv=argv, rootfs=rootfs, machine=machine)
        state = _wait_running(host, deadline)
        if state not in ("running", "degraded"):
            raise ComponentError(f"systemd in {machine} is {state!r}:\n{tail(log)}")
        uid = host.run(f"id -u {TEST_USER}").strip()
        while host.run(f"systemctl is-active user@{uid}.service || true").strip() != "active":
            if time.monotonic() > deadline:
                raise ComponentError(f"the user manager of {TEST_USER} did not start in {machine}")
            time.sleep(0.1)
        yield host
    finally:
        if proc is not None:
            stop_process(proc, timeout=30)
        remove_cgroups(groups)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_running(host: SystemdHost, deadline: float) -> str:
    """Wait until the container's systemd has finished booting; return its state."""
    state = ""
    while time.monotonic() < deadline:
        try:
            state = host.run("systemctl is-system-running || true").strip()
        except Exception:  # noqa: BLE001 - sshd up before the login works
            state = "unreachable"
        if state in ("running", "degraded"):
            return state
        time.sleep(0.2)
    return state


@pytest.fixture(scope="session")
def systemd_host() -> Iterator[SystemdHost]:
    """A booted Debian machine with systemd as PID 1 and sshd on 127.0.0.1:<free port>, root
    login (see the module docstring)."""
    with running_systemd_host() as host:
        yield host

