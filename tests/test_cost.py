"""``mlserve cost``: hand-computed figures for each policy and pricing kind, the shipped
catalogue, the output (table, charts, --json against its JSON Schema) and the errors a user meets.

The hand-computed cases run through the real CLI with a catalogue of test rows in
``MLSERVE_PRICES_DIR`` (the directory ``--refresh`` writes to), so loading, selection, the
profile and the policies are all exercised. The figures below were worked out by hand from
policies.py's documented model, not read back from the code.
"""

from __future__ import annotations

import json
import math
import re

import jsonschema
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest
import yaml

from mlserve.cost import catalogue
from tests.helpers import REPO, run_cli
from tests.test_cli_conventions import unsafe_chars

SCHEMA = json.loads((REPO / "mlserve" / "schemas" / "output" / "cost.json").read_text())

#: 8 quiet hours, 8 busy (3,600 requests), 8 mid (360), every day; 2 s per request.
DAY = [0] * 8 + [3600] * 8 + [360] * 8
PROFILE = {"requests_per_hour": DAY, "seconds_per_request": 2, "concurrency": 1,
           "fixed_replicas": 1}
REQUESTS_A_WEEK = 7 * (8 * 3600 + 8 * 360)          # 221,760
MONTH = 730 / 168


def _catalogue(name: str, kind: str, usd: float, **scaling) -> dict:
    return {"catalogue": name, "title": f"test {name}", "layer": "test", "checked": "2026-12-01",
            "scaling": {"autoscale": True, **scaling} if scaling.get("autoscale", True)
            else scaling,
            "rows": [{"id": f"{name}/box", "offering": "box", "hardware": "a test box",
                      "kind": kind, "usd": usd, "date": "2026-12-01",
                      "source": "https://example.com/prices"}]}


@pytest.fixture
def prices(tmp_path, monkeypatch):
    folder = tmp_path / "prices"
    folder.mkdir()
    monkeypatch.setenv("MLSERVE_PRICES_DIR", str(folder))

    def add(data: dict) -> None:
        (folder / f"{data['catalogue']}.yaml").write_text(yaml.safe_dump(data))
    return add


@pytest.fixture
def profile_file(tmp_path):
    def write(data: dict = PROFILE):
        path = tmp_path / "profile.yaml"
        path.write_text(yaml.safe_dump(data))
        return path
    return write


def _estimate(capsys, target: str, profile) -> dict:
    result = run_cli(capsys, "cost", target, "--profile", str(profile), "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    jsonschema.validate(data, SCHEMA)
    (only,) = data["targets"]
    return {f["policy"]: f for f in only["policies"]}


# --- hand-computed: per-hour rows ------------------------------------------------------------

def test_per_hour_always_on_and_fixed(capsys, prices, profile_file):
    prices(_catalogue("hourly", "hour", 1.0, scale_to_zero=False, cold_start_seconds=360))
    got = _estimate(capsys, "hourly", profile_file())
    # busy hours need 7,200 replica-seconds: 2 replicas at the peak, all week = 336 h at $1
    assert got["always_on"]["replicas"] == 2
    assert got["always_on"]["weekly_usd"] == pytest.approx(336.0)
    assert got["always_on"]["monthly_usd"] == pytest.approx(1460.0)
    assert got["always_on"]["unserved_share"] == 0
    # one replica serves 1,800 requests an hour: 8 busy hours a day leave 1,800 each unserved
    assert got["fixed"]["weekly_usd"] == pytest.approx(168.0)
    assert got["fixed"]["unserved_share"] == pytest.approx(14400 / 31680, abs=1e-6)


def test_per_hour_autoscale_keeps_one_replica_and_counts_scale_ups(capsys, prices, profile_file):
    prices(_catalogue("hourly", "hour", 1.0, scale_to_zero=False, cold_start_seconds=360))
    auto = _estimate(capsys, "hourly", profile_file())["autoscale"]
    # replicas 1 (quiet), 2 (busy), 1 (mid): 32 replica-hours a day = 224 a week;
    # one scale-up a day (1 -> 2 at 08:00) = 7 cold starts of 360 s = 0.7 h
    assert auto["cold_starts"] == 7
    assert auto["billed_hours"] == pytest.approx(224.7)
    assert auto["weekly_usd"] == pytest.approx(224.7)
    assert auto["replicas"] == 2


def test_per_hour_scale_to_zero_counts_every_start_from_zero(capsys, prices, profile_file):
    prices(_catalogue("hourly0", "hour", 1.0, scale_to_zero=True, cold_start_seconds=360))
    auto = _estimate(capsys, "hourly0", profile_file())["autoscale"]
    # replicas 0, 2, 1: 24 replica-hours a day; 0 -> 2 each morning = 2 starts a day, 14 a week
    assert auto["cold_starts"] == 14
    assert auto["weekly_usd"] == pytest.approx(168 + 14 * 360 / 3600)


# --- hand-computed: per-second rows ----------------------------------------------------------

def test_per_second_always_on_is_the_hourly_price_times_3600(capsys, prices, profile_file):
    prices(_catalogue("persec", "second", 0.001, scale_to_zero=False, cold_start_seconds=360))
    got = _estimate(capsys, "persec", profile_file())
    assert got["always_on"]["weekly_usd"] == pytest.approx(336 * 3.6)
    assert got["fixed"]["weekly_usd"] == pytest.approx(168 * 3.6)


def test_per_second_autoscale_bills_the_work_or_the_floor(capsys, prices, profile_file):
    prices(_catalogue("persec", "second", 0.001, scale_to_zero=False, cold_start_seconds=360))
    auto = _estimate(capsys, "persec", profile_file())["autoscale"]
    # a day: 8 h at the floor (3,600 s), 8 h of 7,200 s work, 8 h at the floor (720 s < 3,600)
    seconds = 7 * (8 * 3600 + 8 * 7200 + 8 * 3600) + 7 * 360
    assert auto["weekly_usd"] == pytest.approx(seconds * 0.001)
    assert auto["cold_starts"] == 7


def test_per_second_scale_to_zero_counts_cold_starts_from_poisson_arrivals(
        capsys, prices, profile_file):
    prices(_catalogue("serverless", "second", 0.001, scale_to_zero=True, cold_start_seconds=5,
                      idle_timeout_seconds=10))
    auto = _estimate(capsys, "serverless", profile_file())["autoscale"]
    # busy hour: rate 1/s, rate*T = 10: warm 3600(1-e^-10) < work 7,200 s; 3600 e^-10 cold
    # mid hour: rate 0.1/s, rate*T = 1: warm 3600(1-e^-1) = 2,275.8 s > work 720 s; 360 e^-1 cold
    busy = 7200 + 3600 * math.exp(-10) * 5
    mid = 3600 * (1 - math.exp(-1)) + 360 * math.exp(-1) * 5
    assert auto["weekly_usd"] == pytest.approx(7 * 8 * (busy + mid) * 0.001, rel=1e-6)
    assert auto["cold_starts"] == pytest.approx(7 * 8 * (3600 * math.exp(-10)
                                                         + 360 * math.exp(-1)), rel=1e-6)
    assert auto["unserved_share"] == 0


def test_idle_timeout_zero_makes_every_request_a_cold_start(capsys, prices, profile_file):
    prices(_catalogue("coldall", "second", 0.001, scale_to_zero=True, cold_start_seconds=5))
    auto = _estimate(capsys, "coldall", profile_file())["autoscale"]
    assert auto["cold_starts"] == pytest.approx(REQUESTS_A_WEEK)
    # no warm time: the work (2 s each) plus 5 s of start for every request
    assert auto["weekly_usd"] == pytest.approx(REQUESTS_A_WEEK * 7 * 0.001)


# --- hand-computed: per-request rows ---------------------------------------------------------

def test_per_request_bills_requests_and_has_no_capacity_policies(capsys, prices, profile_file):
    prices(_catalogue("perreq", "request", 0.01, scale_to_zero=True))
    got = _estimate(capsys, "perreq", profile_file())
    assert got["autoscale"]["weekly_usd"] == pytest.approx(REQUESTS_A_WEEK * 0.01)
    assert got["autoscale"]["monthly_usd"] == pytest.approx(REQUESTS_A_WEEK * 0.01 * MONTH)
    for policy in ("always_on", "fixed"):
        assert not got[policy]["available"] and "per request" in got[policy]["reason"]
        assert got[policy]["weekly_usd"] is None


def test_a_provider_that_cannot_autoscale_says_why(capsys, prices, profile_file):
    prices(_catalogue("boxes", "hour", 2.0, autoscale=False, why_not="one box at a time"))
    got = _estimate(capsys, "boxes", profile_file())
    assert got["autoscale"] == {**got["autoscale"], "available": False,
                                "reason": "one box at a time", "weekly_usd": None}
    assert got["always_on"]["weekly_usd"] == pytest.approx(336 * 2.0)


def test_weekday_factors_and_168_hours_are_the_same_week(capsys, prices, profile_file):
    prices(_catalogue("hourly", "hour", 1.0, scale_to_zero=True))
    factors = [1, 1, 1, 1, 1, 0.5, 0]
    by_factor = _estimate(capsys, "hourly", profile_file({**PROFILE, "weekday_factors": factors}))
    week = [r * f for f in factors for r in DAY]
    by_hours = _estimate(capsys, "hourly", profile_file({**PROFILE, "requests_per_hour": week}))
    assert by_factor == by_hours
    # weekend: Saturday's busy hours need 1 replica (3,600 s), Sunday none
    assert by_factor["autoscale"]["weekly_usd"] == pytest.approx(5 * 24 + 16 + 0, abs=0.01)


def test_concurrency_divides_the_work(capsys, prices, profile_file):
    prices(_catalogue("hourly", "hour", 1.0, scale_to_zero=False))
    got = _estimate(capsys, "hourly", profile_file({**PROFILE, "concurrency": 2}))
    assert got["always_on"]["replicas"] == 1 and got["fixed"]["unserved_share"] == 0


# --- prices from the profile: your own hardware ----------------------------------------------

def test_own_hardware_needs_a_price_from_the_profile(capsys, profile_file):
    got = _estimate(capsys, "local", profile_file())
    assert all(not f["available"] and "prices:" in f["reason"] for f in got.values())
    priced = _estimate(capsys, "local", profile_file({**PROFILE,
                                                      "prices": {"local/this-machine": 0.05}}))
    assert priced["always_on"]["weekly_usd"] == pytest.approx(336 * 0.05)
    assert not priced["autoscale"]["available"]


def test_a_profile_price_overrides_the_catalogue_and_says_so(capsys, profile_file):
    result = run_cli(capsys, "cost", "aws-ec2/g5.xlarge/us-east-1", "--profile",
                     str(profile_file({**PROFILE, "prices": {"aws-ec2": 0.5}})), "--json")
    (target,) = json.loads(result.out)["targets"]
    assert target["price"]["usd"] == 0.5 and target["price"]["from"] == "profile"


# --- the shipped catalogue -------------------------------------------------------------------

def test_every_shipped_catalogue_file_loads_and_every_row_is_traceable():
    files = {p.stem: catalogue.read_file(p) for p in (REPO / "providers" / "prices").glob("*.yaml")}
    assert {"local", "ssh", "aws-ec2", "aws-sagemaker", "gcp-compute", "gcp-vertex", "azure-vm",
            "azure-ml", "replicate", "baseten", "runpod-serverless", "runpod-pods", "lambda",
            "modal", "coreweave"} <= set(files)
    ids = [r.id for f in files.values() for r in f.rows]
    assert len(ids) == len(set(ids))
    from mlserve.providers import REGISTRY
    for name, file in files.items():
        assert file.provider is None or file.provider in REGISTRY, name
        for row in file.rows:
            assert row.id.split("/")[0] == name
            assert row.user_price or (row.source.startswith("https://") and row.date), row.id
    assert {"aws", "azure", "runpod", "lambda"} == {f.refresh for f in files.values()} - {None}


def test_no_target_means_every_catalogued_row(capsys):
    result = run_cli(capsys, "cost", "--json")
    data = json.loads(result.out)
    jsonschema.validate(data, SCHEMA)
    shipped = sum(len(catalogue.read_file(p).rows)
                  for p in (REPO / "providers" / "prices").glob("*.yaml"))
    assert len(data["targets"]) == shipped
    assert data["profile"]["source"].startswith("default")
    for target in data["targets"]:
        assert target["price"]["id"] == target["id"]
        assert {f["policy"] for f in target["policies"]} == {"always_on", "fixed", "autoscale"}


def test_a_provider_name_selects_the_catalogues_it_serves(capsys):
    data = json.loads(run_cli(capsys, "cost", "vm", "--json").out)
    assert {t["catalogue"] for t in data["targets"]} == {"aws-ec2", "gcp-compute", "azure-vm"}


# --- what users see --------------------------------------------------------------------------

def test_table_and_one_chart_per_policy(capsys, prices, profile_file):
    prices(_catalogue("hourly", "hour", 1.0, scale_to_zero=True))
    prices(_catalogue("perreq", "request", 0.01, scale_to_zero=True))
    result = run_cli(capsys, "cost", "hourly", "perreq", "--profile", str(profile_file()))
    assert result.code == 0, result.err
    text = " ".join(result.out.split())
    for policy in ("always_on", "fixed", "autoscale"):
        assert policy in text
    for title in ("always on, sized for the peak", "fixed conservative capacity",
                  "autoscaling / scale to zero"):
        assert title in text
    # the dearest bar under autoscale is the per-request row ($2,217.60 x 730/168)
    bars = re.findall(r"^(\S+) +(█+▌?|▏) ([\d,.]+)", result.out, re.M)
    widths = {name: len(bar) for name, bar, _ in bars[-2:]}
    assert widths["perreq/box"] == 40 and widths["hourly/box"] < 40
    assert "45% unserved" in result.out


def test_unknown_target_is_exit_2_with_suggestions(capsys):
    result = run_cli(capsys, "cost", "aws-ec3", "--json")
    assert result.code == 2
    assert "no catalogued target 'aws-ec3'" in result.err and "did you mean aws-ec2" in result.err
    assert "Traceback" not in result.err
    assert json.loads(result.out)["exit_code"] == 2


def test_a_broken_catalogue_file_is_located(capsys, prices):
    bad = _catalogue("broken", "hour", 1.0)
    bad["rows"][0]["usd"] = -3
    prices(bad)
    result = run_cli(capsys, "cost", "broken")
    assert result.code == 2
    assert re.search(r"broken\.yaml:\d+:\d+: rows\.0\.usd", result.err), result.err


def test_a_refreshed_copy_replaces_the_shipped_file_only_when_newer(capsys, prices):
    shipped = catalogue.read_file(REPO / "providers" / "prices" / "lambda.yaml")
    older = shipped.model_dump(mode="json", exclude_none=True)
    older["checked"] = "2000-01-01"
    older["rows"][0]["usd"] = 99.0
    prices(older)
    assert catalogue.load()["lambda"].rows[0].usd == shipped.rows[0].usd
    newer = {**older, "checked": "2999-01-01"}
    prices(newer)
    assert catalogue.load()["lambda"].rows[0].usd == 99.0


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=30).filter(lambda t: not t.startswith("-")))
def test_any_target_name_is_found_or_refused_terminal_safe(capsys, name):
    result = run_cli(capsys, "cost", name, "--json")
    assert result.code in (0, 2), result.err
    assert not unsafe_chars(result.err + result.out)
    if result.code == 2:
        assert json.loads(result.out)["error"] == "NotFound"


def test_manifest_target_names_are_priced_by_their_provider(capsys, tmp_path):
    (tmp_path / "model.py").write_text("class Model:\n    def predict(self, payload):\n"
                                       "        return payload\n")
    (tmp_path / "mlserve.yaml").write_text(
        "name: m\nmodel: {entrypoint: model.py:Model}\ntargets:\n"
        "  gpu-box: {provider: ssh, hosts: [u@h.example]}\n  cloud: {provider: vm}\n")
    result = run_cli(capsys, "cost", "gpu-box", "cloud", "-f", str(tmp_path / "mlserve.yaml"),
                     "--json")
    assert result.code == 0, result.err
    assert {t["catalogue"] for t in json.loads(result.out)["targets"]} == {
        "ssh", "aws-ec2", "gcp-compute", "azure-vm"}
    unknown = run_cli(capsys, "cost", "nope", "-f", str(tmp_path / "mlserve.yaml"))
    assert unknown.code == 2 and "no catalogued target 'nope'" in unknown.err
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [\n")
    assert run_cli(capsys, "cost", "gpu-box", "-f", str(broken)).code == 2


def test_the_example_profile_prices_every_catalogued_target(capsys):
    result = run_cli(capsys, "cost", "--profile", str(REPO / "examples" / "cost" / "profile.yaml"),
                     "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    jsonschema.validate(data, SCHEMA)
    # every row has a price now (the example prices your own hardware), so always_on is known
    assert all(t["policies"][0]["available"] for t in data["targets"])


# --- properties of the policies over any week ------------------------------------------------

WEEK = st.lists(st.floats(0, 1e5, allow_nan=False), min_size=168, max_size=168)


@settings(max_examples=150, deadline=None)
@given(WEEK, st.floats(0.001, 30), st.integers(1, 16), st.integers(1, 20), st.floats(0, 900),
       st.floats(0, 900), st.booleans())
def test_policies_never_bill_less_than_the_work_and_always_on_serves_all(
        week, seconds, concurrency, fixed_n, cold, idle, to_zero):
    from mlserve.cost.catalogue import Kind, Scaling
    from mlserve.cost.policies import Load, always_on, autoscale, fixed
    load = Load(tuple(week), seconds, concurrency, fixed_n)
    scaling = Scaling(autoscale=True, scale_to_zero=to_zero, cold_start_seconds=cold,
                      idle_timeout_seconds=idle)
    work_hours = sum(load.busy(d) for d in week) / 3600
    for kind in (Kind.HOUR, Kind.SECOND):
        on, fix, auto = always_on(load, kind, 1.0), fixed(load, kind, 1.0), autoscale(
            load, kind, 1.0, scaling)
        assert on.unserved_share == 0 and on.billed_hours >= work_hours - 1e-6
        assert auto.billed_hours >= work_hours - 1e-6          # nobody works for free
        assert 0 <= fix.unserved_share <= 1
        if fixed_n >= max(load.need(d) for d in week):      # enough for every hour
            assert fix.unserved_share == 0
        if kind is Kind.HOUR:   # hour by hour, autoscaling runs at most the peak's replicas
            starts = auto.cold_starts * cold / 3600
            assert auto.billed_hours - starts <= on.billed_hours + 1e-6
