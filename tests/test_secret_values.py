"""Secret values a deploy is given: missing ones exit 3, ones too short to mask exit 2; the value
itself is never printed (the runtime masks values of 4+ characters, so a shorter one would leak)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from mlserve.runtime.config import MIN_SECRET_CHARS
from tests.helpers import run_cli

MANIFEST = """\
name: secretive
model: {entrypoint: model.py:Model}
secrets: [API_TOKEN, DB_PASSWORD]
targets:
  local: {provider: local, port: 1}
"""

# Environment values: no NUL (the OS cannot hold it) and no surrogates (not encodable).
VALUE_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mlserve.yaml").write_text(MANIFEST)
    (tmp_path / "model.py").write_text("class Model:\n    def predict(self, payload):\n"
                                       "        return payload\n")
    return tmp_path


# The fixtures are safe to share between examples: every example sets both variables itself and
# reads (so empties) what it captured; the project directory is never written to.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(short=st.text(VALUE_CHARS, min_size=1, max_size=MIN_SECRET_CHARS - 1),
       as_json=st.booleans())
def test_a_secret_too_short_to_mask_is_refused_without_showing_it(project, capsys, monkeypatch,
                                                                   short, as_json):
    monkeypatch.setenv("API_TOKEN", short)
    monkeypatch.setenv("DB_PASSWORD", "a-long-enough-password")
    args = ["deploy", "-f", str(project)] + (["--json"] if as_json else [])
    result = run_cli(capsys, *args)
    assert result.code == 2
    assert "API_TOKEN" in result.err and "DB_PASSWORD" not in result.err
    assert f"shorter than {MIN_SECRET_CHARS} characters" in result.err
    if as_json:
        assert json.loads(result.out)["exit_code"] == 2
    # Nothing was started or written: the refusal comes before the journal or a release.
    assert not (project / ".mlserve").exists()
    # The value never appears as itself (a value like "a" is in every word: check the quoted form).
    assert repr(short) not in result.err + result.out
    assert f"={short}" not in result.err + result.out


def test_a_missing_secret_is_exit_3_naming_every_missing_one(project, capsys, monkeypatch):
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setenv("DB_PASSWORD", "")
    result = run_cli(capsys, "deploy", "-f", str(project))
    assert result.code == 3
    assert "API_TOKEN, DB_PASSWORD are not set" in result.err
    assert "export API_TOKEN=... DB_PASSWORD=..." in result.err
    assert not (project / ".mlserve").exists()
