"""Rolling deploys over a fleet of real sshd hosts, each in its own network namespace (root).

The hosts share this machine's filesystem, so they share one ``base_dir``: per-host state is kept
apart by login (``hostkey``), which is also what hosts with an NFS home need.
"""

from __future__ import annotations

import pytest

from mlserve import service
from mlserve.report import Reporter
from mlserve.errors import DeployError
from tests.infra.net import free_port
from tests.ssh_models import VersionPoller, health, make, predict, set_version
from tests.ssh_models import undeploy_afterwards  # noqa: F401 - autouse fixture

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _fleet_target(fleet, base_dir, port: int, **more) -> dict:
    return {"hosts": [f"{h.user}@{h.host}" for h in fleet], "identity_file": str(fleet.key_path),
            "known_hosts": str(fleet.known_hosts), "base_dir": str(base_dir), "port": port,
            "bind": "0.0.0.0", "max_parallel": 4, "max_unavailable": 1, "health_timeout": 60,
            **more}


def _versions(fleet, port: int) -> list[str]:
    return [predict(f"http://{h.host}:{port}")["version"] for h in fleet]


def test_rolling_fleet_deploy_stops_at_a_bad_host_and_the_rest_stay_on_the_old_release(
        ssh_fleet, tmp_path):
    port = free_port()
    remote = tmp_path / "remote"
    manifest = make(tmp_path, _fleet_target(ssh_fleet, remote, port), name="echo-fleet")
    state = tmp_path / "state"

    first = service.deploy(manifest, "box", state)
    assert [h["status"] for h in first.extra["hosts"]] == ["deployed"] * len(ssh_fleet)
    assert _versions(ssh_fleet, port) == ["v1"] * len(ssh_fleet)
    assert first.url == f"http://{ssh_fleet[0].host}:{port}"

    bad = ssh_fleet[2]
    bad.stop()                                    # the host's SSH goes away; its model keeps serving
    try:
        set_version(manifest, "v2")
        pollers = [VersionPoller(f"http://{h.host}:{port}") for h in ssh_fleet]
        for poller in pollers:
            poller.__enter__()
        try:
            with pytest.raises(DeployError) as failed:
                service.deploy(manifest, "box", state)
        finally:
            for poller in pollers:
                poller.__exit__(None, None, None)
    finally:
        bad.start()
    error = failed.value
    assert error.exit_code == 1
    assert error.message.startswith("the rollout of ")
    assert f"stopped at root@{bad.host}" in error.message and "0 of 4 hosts switched" in error.message
    by_host = {h["host"]: h for h in error.hosts}
    assert by_host[f"root@{bad.host}"]["status"] == "failed"
    assert "refused the connection" in by_host[f"root@{bad.host}"]["reason"]
    others = [h for h in error.hosts if h["host"] != f"root@{bad.host}"]
    assert {h["status"] for h in others} <= {"not switched", "skipped"}
    assert all(h["release"] == first.release for h in error.hosts)
    assert f"root@{bad.host}" in error.details and "not switched" in error.details
    assert _versions(ssh_fleet, port) == ["v1"] * len(ssh_fleet)
    for poller in pollers:
        assert poller.failures == [] and poller.versions == ["v1"]

    # the host is back: the same deploy now rolls through every host
    second = service.deploy(manifest, "box", state)
    assert [h["status"] for h in second.extra["hosts"]] == ["deployed"] * len(ssh_fleet)
    assert _versions(ssh_fleet, port) == ["v2"] * len(ssh_fleet)
    info = service.status(manifest, "box", state)
    assert info["status"] == "READY" and info["detail"] == "4/4 host(s) ready"
    lines = list(service.logs(manifest, "box", state, lines=5))
    assert {line.split("]")[0] + "]" for line in lines} == {f"[root@{h.host}]" for h in ssh_fleet}

    # predict asks the hosts in order and skips one it cannot reach, saying so
    ssh_fleet[0].stop()
    try:
        reporter = Reporter()
        code, body = service.predict(manifest, "box", state, {"x": [1, 2]}, reporter)
    finally:
        ssh_fleet[0].start()
    assert code == 200 and body["output"]["version"] == "v2"
    [warning] = [line for line in reporter.lines if line.startswith("warning:")]
    assert f"root@{ssh_fleet[0].host}" in warning and f"asking root@{ssh_fleet[1].host}" in warning

    service.delete(manifest, "box", state)
    assert not remote.exists()
    for host in ssh_fleet:
        with pytest.raises(OSError):
            health(f"http://{host.host}:{port}", timeout=2)
