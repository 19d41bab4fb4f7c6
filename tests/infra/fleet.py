"""Several SSH hosts, each a real sshd in its own network namespace: fixture ``ssh_fleet``.

Layout (root only): a bridge ``mlsvbr<pid><letter>`` holding 10.231.X.1/24 on the host side, and
per host a namespace ``mlsv-<pid>-<fleet>-<n>`` whose ``eth0`` (one end of a veth pair, the
other end enslaved to the bridge) has 10.231.X.<n+2>. Each namespace runs sshd on its own
address, port 22; all hosts accept the same client key and one ``known_hosts`` trusts them
all. X is chosen so the /24 is not in use on this machine. Teardown stops every sshd by PID,
deletes the namespaces and the bridge.

The host count defaults to 4; pick another with indirect parametrisation::

    @pytest.mark.parametrize("ssh_fleet", [3], indirect=True)
    def test_three(ssh_fleet): ...
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import secrets
import shutil
import string
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra.policy import require_root, require_tool
from tests.infra.procs import new_workdir
from tests.infra.sshd import SshdHost, make_keypair, running_sshd

DEFAULT_FLEET_SIZE = 4
SUBNET_PREFIX = "10.231"  # 10.231.X.0/24, X picked free per fleet
LOCK_FILE = "/run/lock/mlsv-fleet.lock"  # serialises subnet choice between parallel runs
_fleet_numbers = itertools.count()


@dataclass
class SshFleet:
    """The hosts of one fleet (index, iterate or ``len()`` it like a list).

    Every host's ``known_hosts`` is the shared file trusting all of them; ``key_path`` is the
    one client key they all accept. Per host: ``kill_sessions()``, ``stop()``, ``start()``.
    """

    hosts: list[SshdHost]
    known_hosts: Path
    key_path: Path
    bridge: str
    subnet: str
    gateway: str
    namespaces: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> SshdHost:
        return self.hosts[index]


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def used_third_octets() -> set[int]:
    """X values for which some address or route in 10.231.X.0/24 exists here already."""
    text = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    text += subprocess.run(["ip", "-o", "route"], capture_output=True, text=True).stdout
    used = set()
    for word in text.split():
        if word.startswith(SUBNET_PREFIX + "."):
            used.add(int(word.split(".")[2].split("/")[0]))
    return used


def create_bridge(name: str) -> str:
    """Create bridge ``name`` holding .1 of a free 10.231.X.0/24; return '10.231.X'."""
    Path(LOCK_FILE).parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = used_third_octets()
        start = os.getpid() % 250
        third = next((x % 250 + 1 for x in range(start, start + 250) if x % 250 + 1 not in used), None)
        if third is None:
            raise RuntimeError(f"no free /24 left in {SUBNET_PREFIX}.0.0/16")
        net = f"{SUBNET_PREFIX}.{third}"
        ip("link", "add", name, "type", "bridge")
        ip("addr", "add", f"{net}.1/24", "dev", name)
        ip("link", "set", name, "up")
    return net


def add_namespace(ns: str, bridge: str, veth: str, address: str, gateway: str) -> None:
    """Namespace ``ns`` with lo up and eth0 = ``address``/24, wired to ``bridge``."""
    ip("netns", "add", ns)
    ip("link", "add", f"{veth}h", "type", "veth", "peer", "name", f"{veth}p")
    ip("link", "set", f"{veth}h", "master", bridge, "up")
    ip("link", "set", f"{veth}p", "netns", ns)
    inside = ("netns", "exec", ns, "ip")
    ip(*inside, "link", "set", "lo", "up")
    ip(*inside, "link", "set", f"{veth}p", "name", "eth0")
    ip(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
    ip(*inside, "link", "set", "eth0", "up")
    ip(*inside, "route", "add", "default", "via", gateway)


def remove_network(bridge: str, namespaces: list[str], veths: list[str]) -> None:
    """Delete namespaces (their veth ends go with them), leftover host ends and the bridge."""
    for ns in namespaces:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    for name in [*veths, bridge]:
        subprocess.run(["ip", "link", "del", name], capture_output=True)


@contextlib.contextmanager
def running_fleet(count: int = DEFAULT_FLEET_SIZE,
                  user: str | list[str] = "root") -> Iterator[SshFleet]:
    """Start ``count`` namespaced sshd hosts; tear everything down on exit. ``user``: the login
    of every host, or one per host (hosts with their own accounts have their own homes, so
    ``~/...`` base dirs do not share one store on this machine's single disk)."""
    users = [user] * count if isinstance(user, str) else list(user)
    if len(users) != count:
        raise ValueError(f"{count} hosts but {len(users)} users")
    require_root("ssh_fleet")
    require_tool("ssh_fleet", "ip", "iproute2")
    require_tool("ssh_fleet", "sshd", "openssh-server")
    token = secrets.token_hex(3)
    number = next(_fleet_numbers)
    # names carry the pytest PID so tests.infra.cleanup can spot those of a killed run
    bridge = f"mlsvbr{os.getpid()}{string.ascii_lowercase[number % 26]}"  # <= 15 chars
    veths, namespaces = [], []
    workdir = new_workdir("fleet", 0o755)
    try:
        net = create_bridge(bridge)
        gateway = f"{net}.1"
        client_key = workdir / "client_ed25519"
        make_keypair(client_key, "mlsv-fleet-client")
        with contextlib.ExitStack() as stack:
            hosts = []
            for n in range(count):
                ns, veth = f"mlsv-{os.getpid()}-{number}-{n}", f"mlsv{token}{n}"
                namespaces.append(ns)
                veths.append(f"{veth}h")
                add_namespace(ns, bridge, veth, f"{net}.{n + 2}", gateway)
                hostdir = workdir / f"host{n}"
                hostdir.mkdir(mode=0o755)
                hosts.append(stack.enter_context(running_sshd(
                    users[n], listen=f"{net}.{n + 2}", port=22, netns=ns,
                    client_key=client_key, workdir=hostdir)))
            known_hosts = workdir / "known_hosts"
            known_hosts.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
            for host in hosts:
                host.known_hosts = known_hosts
            yield SshFleet(hosts, known_hosts, client_key, bridge, f"{net}.0/24", gateway, namespaces)
    finally:
        remove_network(bridge, namespaces, veths)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def ssh_fleet(request) -> Iterator[SshFleet]:
    """``DEFAULT_FLEET_SIZE`` (4) root-login SSH hosts in network namespaces; parametrise
    indirectly with an int for another size. Needs root: skips locally, fails under CI."""
    count = getattr(request, "param", DEFAULT_FLEET_SIZE)
    with running_fleet(count) as fleet:
        yield fleet
