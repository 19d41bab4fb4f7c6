"""The ssh provider on a host that runs systemd (fixture ``systemd_host``: a Debian machine
booted by systemd-nspawn, systemd as its PID 1, reached over its own sshd).

There every release runs as a transient unit from ``systemd-run`` instead of a setsid process:
these tests check the unit exists with the manifest's resource limits, holds the runtime in its
cgroup, survives the SSH session, restarts a killed runtime, is replaced without a failed request
on redeploy and rollback, is cleaned up when a deploy fails, and is gone after ``delete``.
"""

from __future__ import annotations

import os

import pytest

from mlserve import service
from mlserve.report import Reporter
from tests.infra.net import free_port
from tests.infra.systemd import UNLINGERED_USER
from tests.ssh_models import (VersionPoller, answers, deploy_failing_load, edit, make, predict,
                              set_version, target_for, wait_until)
from tests.ssh_models import undeploy_afterwards  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.slow

BASE = "/var/lib/mlserve-test"      # base_dir inside the machine


def test_releases_run_as_transient_units_with_the_manifests_limits(systemd_host, tmp_path,
                                                                    monkeypatch):
    host = systemd_host
    manifest = make(tmp_path, target_for(host, BASE, free_port()))
    edit(manifest, resources={"cpu": 0.5, "memory": "256Mi"}, secrets=["MLSV_TOKEN"])
    secret = "s3cret-" + os.urandom(6).hex()
    monkeypatch.setenv("MLSV_TOKEN", secret)
    state = tmp_path / "state"

    first = service.deploy(manifest, "box", state)
    [info] = first.extra["hosts"]
    assert (info["status"], info["supervision"]) == ("deployed", "system")
    unit = info["unit"]
    assert unit.startswith("mlserve-echo.box-" + first.release) and unit.endswith(".service")
    assert host.units() == {unit: "active"}
    props = host.show(unit, "MemoryMax", "CPUQuotaPerSecUSec", "KillMode", "MainPID")
    assert props["MemoryMax"] == str(256 << 20)
    assert props["CPUQuotaPerSecUSec"] == "500ms"
    assert props["KillMode"] == "mixed"
    # the unit's main process is the supervisor; the runtime lives in the unit's cgroup
    assert unit in host.run(f"cat /proc/{info['pid']}/cgroup")
    assert host.run(f"ps -o ppid= -p {info['pid']}").strip() == props["MainPID"]
    # the secret reaches the model, but not the unit's properties (world-readable through
    # systemctl), the journal, or any file in the machine
    assert f"MLSV_TOKEN={secret}" in host.run(f"tr '\\0' '\\n' < /proc/{info['pid']}/environ")
    assert secret not in host.run(f"systemctl show {unit}")
    assert secret not in host.run("journalctl --no-pager -o cat || true")
    assert host.run(f"grep -rlF {secret} / --exclude-dir=proc --exclude-dir=sys "
                    "--exclude-dir=dev 2>/dev/null || true").strip() == ""
    # the SSH session is over; the unit serves on
    assert predict(first.url)["version"] == "v1"
    status = service.status(manifest, "box", state)
    assert status["status"] == "READY"

    # a killed runtime is restarted by its supervisor inside the unit
    host.run(f"kill -9 {info['pid']}")
    answer = wait_until(lambda: (a := answers(first.url)) and a["pid"] != info["pid"] and a,
                         what="the runtime to be restarted")
    assert answer["version"] == "v1"
    assert host.units() == {unit: "active"}

    # a one-file redeploy: a new unit takes over without a failed request, the old one is gone
    with VersionPoller(first.url) as poller:
        set_version(manifest, "v2")
        second = service.deploy(manifest, "box", state)
    assert poller.failures == [] and poller.versions == ["v1", "v2"]
    unit2 = second.extra["hosts"][0]["unit"]
    assert unit2 != unit
    wait_until(lambda: host.units() == {unit2: "active"}, what=f"only {unit2} to be left")

    # rollback starts the previous release again, as a unit of its own
    with VersionPoller(first.url) as poller:
        back = service.rollback(manifest, "box", state)
    assert poller.failures == [] and poller.versions == ["v2", "v1"]
    assert back.release == first.release
    units = wait_until(lambda: (u := host.units()) and len(u) == 1 and unit2 not in u and u,
                        what="the rolled-back unit alone")
    assert list(units.values()) == ["active"]

    service.delete(manifest, "box", state)
    assert host.units() == {}
    assert not (host.rootfs / BASE.lstrip("/")).exists()


def test_a_release_that_fails_to_load_leaves_no_unit_behind(systemd_host, tmp_path):
    host = systemd_host
    manifest = make(tmp_path, target_for(host, BASE, free_port()))
    state = tmp_path / "state"
    first = service.deploy(manifest, "box", state)
    unit = first.extra["hosts"][0]["unit"]
    deploy_failing_load(manifest, state, first.url)
    # the failed release's unit was collected (--collect), even though it exited non-zero
    wait_until(lambda: host.units() == {unit: "active"}, what="the failed unit to be collected")
    assert host.run("systemctl list-units --failed --no-legend --plain 'mlserve-*'").strip() == ""
    service.delete(manifest, "box", state)
    assert host.units() == {}


def test_a_user_whose_systemd_lingers_gets_user_units(systemd_host, tmp_path):
    host = systemd_host.as_user()
    manifest = make(tmp_path, target_for(host, "~/.mlserve-test", free_port()))
    edit(manifest, resources={"cpu": 1, "memory": "128Mi"})
    state = tmp_path / "state"
    first = service.deploy(manifest, "box", state)
    [info] = first.extra["hosts"]
    assert info["supervision"] == "user"
    assert host.units() == {info["unit"]: "active"}
    assert host.show(info["unit"], "MemoryMax")["MemoryMax"] == str(128 << 20)
    assert systemd_host.units() == {}           # nothing in the system manager
    with VersionPoller(first.url) as poller:
        set_version(manifest, "v2")
        second = service.deploy(manifest, "box", state)
    assert poller.failures == [] and poller.versions == ["v1", "v2"]
    unit2 = second.extra["hosts"][0]["unit"]
    wait_until(lambda: host.units() == {unit2: "active"}, what=f"only {unit2} to be left")
    service.delete(manifest, "box", state)
    assert host.units() == {}
    assert host.run("ls -A ~").split() == [".bash_logout", ".bashrc", ".profile", ".ssh"]


def test_a_user_whose_systemd_does_not_linger_is_told_how_to_get_units(systemd_host, tmp_path):
    host = systemd_host.as_user(UNLINGERED_USER)
    manifest = make(tmp_path, target_for(host, "~/.mlserve-test", free_port()))
    state = tmp_path / "state"
    reporter = Reporter()
    first = service.deploy(manifest, "box", state, reporter)
    assert first.extra["hosts"][0]["supervision"] == "setsid"
    [hint] = [line for line in reporter.lines if "loginctl" in line]
    assert f"sudo loginctl enable-linger {UNLINGERED_USER}" in hint
    assert predict(first.url)["version"] == "v1"         # the session is over; it serves on
    service.delete(manifest, "box", state)
    assert host.run("ls -A ~").split() == [".bash_logout", ".bashrc", ".profile", ".ssh"]
