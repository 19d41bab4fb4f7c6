"""Trust and reachability over SSH, against a real sshd: host keys, client keys, timeouts.

Each refusal must be one clear error naming the host and the fix, with the documented exit code:
3 for trust and credentials (unknown or changed host key, refused client key), 1 for a host that
does not answer. Nothing is uploaded or started before trust is established.
"""

from __future__ import annotations

import socket
import time

import pytest

from mlserve import service
from mlserve.errors import EXIT_FAILURE, EXIT_MISSING, MlserveError
from mlserve.report import Reporter
from tests.infra.net import free_port
from tests.ssh_models import edit_target, make, predict, target_for
from tests.ssh_models import undeploy_afterwards  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.slow


def _deploy_error(manifest, state) -> MlserveError:
    with pytest.raises(MlserveError) as caught:
        service.deploy(manifest, "box", state)
    return caught.value


def test_changed_host_key_is_refused(sshd_host, tmp_path):
    remote = tmp_path / "remote"
    manifest = make(tmp_path, target_for(sshd_host, remote, free_port(),
                                         known_hosts=str(sshd_host.wrong_known_hosts),
                                         accept_new_host_keys=True))   # never overrides a change
    error = _deploy_error(manifest, tmp_path / "state")
    assert error.exit_code == EXIT_MISSING
    assert f"root@127.0.0.1:{sshd_host.port}" in error.message or "@127.0.0.1" in error.message
    assert "CHANGED" in error.message and "SHA256:" in error.message
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd_host.port}'" in error.fix
    assert error.where == "targets.box.known_hosts"
    assert not remote.exists()                     # nothing was sent to an untrusted host


def test_unauthorised_client_key_is_refused(sshd_host, tmp_path):
    manifest = make(tmp_path, target_for(sshd_host, tmp_path / "remote", free_port(),
                                         identity_file=str(sshd_host.unauthorized_key_path)))
    error = _deploy_error(manifest, tmp_path / "state")
    assert error.exit_code == EXIT_MISSING
    assert "refused the key" in error.message and "authentication failed" in error.message
    assert "ssh-copy-id" in error.fix


def test_missing_identity_file_is_named(sshd_host, tmp_path):
    manifest = make(tmp_path, target_for(sshd_host, tmp_path / "remote", free_port(),
                                         identity_file=str(tmp_path / "nope")))
    error = _deploy_error(manifest, tmp_path / "state")
    assert error.exit_code == EXIT_MISSING
    assert error.where == "targets.box.identity_file" and "does not exist" in error.message


def test_unknown_host_refused_by_default_then_accepted_with_the_opt_in(sshd_host, tmp_path):
    known = tmp_path / "ssh" / "known_hosts"          # does not exist yet
    manifest = make(tmp_path, target_for(sshd_host, tmp_path / "remote", free_port(),
                                         known_hosts=str(known)))
    state = tmp_path / "state"
    error = _deploy_error(manifest, state)
    assert error.exit_code == EXIT_MISSING
    assert "unknown host" in error.message and "SHA256:" in error.message
    assert f"ssh-keyscan -p {sshd_host.port} 127.0.0.1 >> {known}" in error.fix
    assert "accept_new_host_keys: true" in error.fix
    assert not known.exists()

    edit_target(manifest, accept_new_host_keys=True)
    reporter = Reporter()
    result = service.deploy(manifest, "box", state, reporter)
    assert predict(result.url)["version"] == "v1"
    assert known.read_text().strip() == sshd_host.known_hosts_line
    assert any("trusting [127.0.0.1]:" in line for line in reporter.lines)

    edit_target(manifest, accept_new_host_keys=False)    # now known: strict checking passes
    assert service.status(manifest, "box", state)["status"] == "READY"
    service.delete(manifest, "box", state)


def test_silent_host_times_out_with_one_clear_error(tmp_path):
    with socket.socket() as silent:                  # accepts TCP, never speaks SSH
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        target = {"hosts": [f"root@127.0.0.1:{port}"], "known_hosts": str(tmp_path / "kh"),
                  "base_dir": str(tmp_path / "remote"), "port": free_port(),
                  "connect_timeout": 0.5}
        manifest = make(tmp_path, target)
        started = time.monotonic()
        error = _deploy_error(manifest, tmp_path / "state")
        assert time.monotonic() - started < 10
    assert error.exit_code == EXIT_FAILURE
    assert f"(127.0.0.1:{port}) did not answer within 0.5s" in error.message
    assert "connect_timeout" in error.fix


def test_refused_port_is_exit_1(tmp_path):
    port = free_port()
    manifest = make(tmp_path, {"hosts": [f"root@127.0.0.1:{port}"], "base_dir": str(tmp_path),
                               "port": free_port(), "known_hosts": str(tmp_path / "kh")})
    error = _deploy_error(manifest, tmp_path / "state")
    assert error.exit_code == EXIT_FAILURE and "refused the connection" in error.message
