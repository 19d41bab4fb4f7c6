"""``seconds_per_request: measured``: the smoke cases timed against a real local deployment
(the bundled example, deployed by the real CLI, real processes on loopback), then deleted."""

from __future__ import annotations

import json
import shutil

import jsonschema
import pytest

from tests.helpers import EXAMPLES, REPO, run_cli, run_process
from tests.infra.net import free_port

pytestmark = pytest.mark.slow
SCHEMA = json.loads((REPO / "mlserve" / "schemas" / "output" / "cost.json").read_text())


def test_measured_seconds_come_from_the_deployed_models_smoke_cases(capsys, tmp_path):
    project, state = tmp_path / "proj", tmp_path / "state"
    shutil.copytree(EXAMPLES / "hello", project)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace("port: 8480", f"port: {free_port()}"))
    profile = tmp_path / "profile.yaml"
    profile.write_text("requests_per_hour: [" + ", ".join(["100"] * 24) + "]\n"
                       "seconds_per_request: measured\nmeasure: {target: local, repeat: 5}\n"
                       "prices: {local: 0.05}\n")
    not_yet = run_cli(capsys, "cost", "local", "--profile", str(profile), "-f", str(manifest),
                      "--state", str(state))
    assert not_yet.code == 2 and "Traceback" not in not_yet.err      # nothing deployed yet
    deployed = run_process("deploy", "-f", str(manifest), "--state", str(state))
    assert deployed.code == 0, deployed.err
    try:
        result = run_cli(capsys, "cost", "local", "--profile", str(profile), "-f", str(manifest),
                         "--state", str(state), "--json")
        assert result.code == 0, result.err
        data = json.loads(result.out)
        jsonschema.validate(data, SCHEMA)
        seconds = data["profile"]["seconds_per_request"]
        # one smoke case, 5 calls over loopback to a trivial model: well under a second each
        assert 0 < seconds < 1
        assert data["profile"]["seconds_from"] == "measured: median of 5 smoke calls to local"
        (target,) = data["targets"]
        always_on = target["policies"][0]
        assert always_on["replicas"] == 1 and always_on["weekly_usd"] == pytest.approx(168 * 0.05)
    finally:
        run_process("delete", "-f", str(manifest), "--state", str(state), "--yes")
