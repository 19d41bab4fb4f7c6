"""Hostile and broken traffic profiles (``mlserve cost --profile FILE``): one readable message,
located at file:line:col when the file says where, with the fix, and exit 2; never a traceback.
A table per input class, then generated profiles (hypothesis) of any shape.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.helpers import REPO, run_cli

SCHEMA = json.loads((REPO / "mlserve" / "schemas" / "output" / "cost.json").read_text())
DAY = "[" + ", ".join(["10"] * 24) + "]"
GOOD = f"requests_per_hour: {DAY}\nseconds_per_request: 0.5\n"

#: (case, file text or bytes, what the message must say)
BROKEN = [
    ("empty", "", "a traffic profile is a mapping"),
    ("a list", "- 1\n- 2\n", "a traffic profile is a mapping"),
    ("a scalar", "hello\n", "a traffic profile is a mapping"),
    ("23 hours", "requests_per_hour: [" + ", ".join(["1"] * 23) + "]\nseconds_per_request: 1\n",
     "has 23 values; give 24 (a day) or 168 (a week)"),
    ("negative", GOOD.replace("[10,", "[-1,"), "is not a number from 0 to 1e9"),
    ("nan", GOOD.replace("[10,", "[.nan,"), "is not a number from 0 to 1e9"),
    ("inf", GOOD.replace("[10,", "[.inf,"), "is not a number from 0 to 1e9"),
    ("huge", GOOD.replace("[10,", "[1.0e+12,"), "is not a number from 0 to 1e9"),
    ("text", GOOD.replace("[10,", "[lots,"), "expected a number"),
    ("bool", GOOD.replace("[10,", "[true,"), "expected a number"),
    ("hours not a list", "requests_per_hour: 10\nseconds_per_request: 1\n", "requests_per_hour"),
    ("seconds zero", GOOD.replace("0.5", "0"), "must be above 0 and at most 3600"),
    ("seconds negative", GOOD.replace("0.5", "-2"), "is not a number from 0 to 1e9"),
    ("seconds too long", GOOD.replace("0.5", "7200"), "must be above 0 and at most 3600"),
    ("seconds a word", GOOD.replace("0.5", "fast"), "expected a number"),
    ("missing seconds", f"requests_per_hour: {DAY}\n", "seconds_per_request"),
    ("misspelt key", GOOD + "fixed_replica: 2\n", "did you mean 'fixed_replicas'"),
    ("concurrency 0", GOOD + "concurrency: 0\n", "concurrency"),
    ("factors with a week", "requests_per_hour: [" + ", ".join(["1"] * 168)
     + "]\nweekday_factors: [1, 1, 1, 1, 1, 1, 1]\nseconds_per_request: 1\n",
     "weekday_factors takes 7 values, with 24 hourly ones"),
    ("six factors", GOOD + "weekday_factors: [1, 1, 1, 1, 1, 1]\n", "weekday_factors takes 7"),
    ("negative price", GOOD + "prices: {local: -1}\n", "is not a number from 0 to 1e9"),
    ("zero price", GOOD + "prices: {local: 0}\n", "must be above 0"),
    ("price a word", GOOD + "prices: {local: cheap}\n", "expected a number"),
    ("price of nothing", GOOD + "prices: {lokal: 0.1}\n",
     "prices names 'lokal', which is no catalogued row or catalogue"),
    ("yaml syntax", "requests_per_hour: [1, 2\n", "profile.yaml:"),
    ("python tag", "requests_per_hour: !!python/object:os.system [ls]\n", "profile.yaml:"),
    ("duplicate key", GOOD + "seconds_per_request: 2\n", "profile.yaml:"),
    ("alias bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, "
     "*a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c,"
     " *c, *c, *c]\ne: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n", "profile.yaml"),
    ("not utf-8", b"requests_per_hour: [\xff]\n", "not UTF-8"),
    ("too large", "# " + "x" * (1024 * 1024 + 10) + "\n", "at most"),
]


@pytest.mark.parametrize("case,text,says", BROKEN, ids=[c[0] for c in BROKEN])
def test_a_broken_profile_is_one_clear_message_and_exit_2(capsys, tmp_path, case, text, says):
    path = tmp_path / "profile.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result = run_cli(capsys, "cost", "aws-ec2", "--profile", str(path))
    err = " ".join(result.err.split())
    assert result.code == 2, (case, result.err)
    assert says in err, (case, result.err)
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert "fix" in err.lower(), result.err
    assert result.out == ""


def test_problems_are_located_at_their_line_and_column(capsys, tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text(GOOD.replace("[10, 10,", "[10, -4,") + "concurrency: 0\n")
    result = run_cli(capsys, "cost", "--profile", str(path))
    err = " ".join(result.err.split())
    assert result.code == 2
    assert re.search(r"profile\.yaml:1:\d+: requests_per_hour\.1: -4\.0? is not a number", err) \
        or "profile.yaml:1:" in err, err
    assert "profile.yaml:3:14: concurrency" in err, err
    assert "mlserve cost --help" in err and "mlserve schema" not in err


def test_a_missing_profile_file_says_so(capsys, tmp_path):
    result = run_cli(capsys, "cost", "--profile", str(tmp_path / "nope.yaml"))
    assert result.code == 2 and "no traffic profile at" in result.err


def test_a_directory_as_profile_is_refused(capsys, tmp_path):
    result = run_cli(capsys, "cost", "--profile", str(tmp_path))
    assert result.code == 2 and "Traceback" not in result.err


def test_measured_without_smoke_cases_says_how_to_fix(capsys, tmp_path):
    (tmp_path / "model.py").write_text("class Model:\n    def predict(self, payload):\n"
                                       "        return payload\n")
    (tmp_path / "mlserve.yaml").write_text("name: m\nmodel: {entrypoint: model.py:Model}\n"
                                          "targets: {local: {provider: local}}\n")
    path = tmp_path / "profile.yaml"
    path.write_text(f"requests_per_hour: {DAY}\nseconds_per_request: measured\n")
    result = run_cli(capsys, "cost", "aws-ec2", "--profile", str(path), "-f",
                     str(tmp_path / "mlserve.yaml"))
    assert result.code == 2 and "needs smoke cases" in result.err


# --- generated ---------------------------------------------------------------------------------

NUMBER = st.one_of(st.integers(-5, 10**10), st.floats(allow_nan=True, allow_infinity=True),
                   st.booleans(), st.none(), st.text(max_size=5))
VALUE = st.recursive(NUMBER, lambda inner: st.lists(inner, max_size=30)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=40)
KEYS = st.sampled_from(["requests_per_hour", "weekday_factors", "seconds_per_request",
                        "concurrency", "fixed_replicas", "measure", "prices", "other"])
HOURS = st.lists(st.one_of(st.integers(0, 10**6), st.floats(0, 1e6)), min_size=24, max_size=24)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(KEYS, VALUE | HOURS, max_size=6))
def test_any_profile_is_either_estimated_or_refused_with_exit_2(capsys, tmp_path, data):
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run_cli(capsys, "cost", "modal/T4", "--profile", str(path), "--json")
    assert result.code in (0, 2), result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    if result.code == 0:
        jsonschema.validate(json.loads(result.out), SCHEMA)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(HOURS, st.floats(0.001, 60), st.integers(1, 8), st.integers(1, 50))
def test_valid_profiles_give_consistent_figures(capsys, tmp_path, hours, seconds, concurrency,
                                                fixed):
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({"requests_per_hour": hours, "seconds_per_request": seconds,
                                    "concurrency": concurrency, "fixed_replicas": fixed}))
    result = run_cli(capsys, "cost", "aws-ec2/g5.xlarge/us-east-1", "runpod-serverless",
                     "--profile", str(path), "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    jsonschema.validate(data, SCHEMA)
    for target in data["targets"]:
        got = {f["policy"]: f for f in target["policies"]}
        peak = got["always_on"]["replicas"]
        # always on for the peak serves everything; fixed capacity fails requests only below it
        assert got["always_on"]["unserved_share"] == 0
        assert (got["fixed"]["unserved_share"] == 0) == (fixed >= peak or max(hours) == 0) \
            or got["fixed"]["unserved_share"] < 1e-6
        assert got["fixed"]["weekly_usd"] * peak == pytest.approx(
            got["always_on"]["weekly_usd"] * fixed)
