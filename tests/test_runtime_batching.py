"""Dynamic batching (``mlserve.runtime.batching``) against the real runtime over real HTTP, and
the manifest settings that drive it (``scaling.max_batch_size``, ``scaling.max_batch_wait_ms``)
on their way to every format the runtime serves in.

The model (``runtime_models/models.py:PickyBatch``) reports the size of the batch each output
came in, so batching is observed from outside; ``GET /metrics`` must agree with it.
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime_models.harness import Runtime

PICKY = "models.py:PickyBatch"


def metric(text: str, name: str, le: str | None = None) -> float:
    """One sample of the Prometheus text ``GET /metrics`` returned."""
    label = "" if le is None else re.escape(f'{{le="{le}"}}')
    found = re.search(rf"^{re.escape(name)}{label} (\S+)$", text, re.M)
    assert found, f"{name} {le or ''} not in:\n{text}"
    return float(found.group(1))


def flood(runtime: Runtime, bodies: list, workers: int = 32) -> list:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: runtime.request("POST", "/predict", b, timeout=30), bodies))


@pytest.fixture
def picky(tmp_path, request):
    args = getattr(request, "param", ("--max-batch-size", "8", "--max-batch-wait-ms", "10"))
    runtime = Runtime(tmp_path, PICKY, *args)
    runtime.wait_ready()
    yield runtime
    assert runtime.stop() == 0


# -- the policy -------------------------------------------------------------------------------

@pytest.mark.parametrize("picky", [("--max-batch-size", "8", "--max-batch-wait-ms", "1000")], indirect=True)
def test_one_request_at_a_time_never_waits_for_a_batch(picky):
    """At one request in flight the arrival rate says no batch will fill: nothing waits, even
    with a wait budget of a whole second."""
    started = time.monotonic()
    for i in range(10):
        status, body, _ = picky.request("POST", "/predict", {"input": i})
        assert status == 200 and body["output"]["echo"] == i and body["output"]["batch_size"] == 1
    assert time.monotonic() - started < 5, "ten sequential requests waited for batches that could not fill"
    _, text, headers = picky.request("GET", "/metrics")
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert metric(text, "mlserve_batch_size_count") == 10
    assert metric(text, "mlserve_batch_size_bucket", "1") == 10
    assert metric(text, "mlserve_batch_queue_wait_seconds_bucket", "0.5") == 10


def _on_one_connection(port: int, payloads: list) -> list:
    """POST each payload in turn on one kept-alive connection: one client, as the runtime sees it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        outputs = []
        for payload in payloads:
            conn.request("POST", "/predict", body=json.dumps({"input": payload}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200
            outputs.append(json.loads(response.read())["output"])
        return outputs
    finally:
        conn.close()


def test_one_client_alone_with_a_fast_model_is_served_on_the_event_loop(picky):
    """No thread hand-off when nothing could join a batch: the first call is measured in a worker
    thread; once it is known to take under ``INLINE_MAX`` the rest run on the event loop."""
    outputs = _on_one_connection(picky.port, [{"sleep": 0.001, "n": i} for i in range(8)])
    assert [o["echo"]["n"] for o in outputs] == list(range(8))
    assert outputs[0]["thread"].startswith("mlserve-batch-"), outputs[0]
    assert {o["thread"] for o in outputs[1:]} == {"MainThread"}, outputs
    assert {o["batch_size"] for o in outputs} == {1}


def test_a_slow_model_is_never_run_on_the_event_loop(picky):
    """A call over ``INLINE_MAX`` (10 ms) would hold up every other connection: it stays in a worker."""
    outputs = _on_one_connection(picky.port, [{"sleep": 0.02, "n": i} for i in range(4)])
    assert all(o["thread"].startswith("mlserve-batch-") for o in outputs), outputs


def test_two_clients_at_once_are_batched_in_a_worker_not_served_inline(picky):
    """While another connection sends predictions too, a request may arrive during a call; only a
    worker thread leaves the loop free to see it and batch it."""
    _on_one_connection(picky.port, [{"sleep": 0.001}] * 3)  # the model is known to be fast

    def client(k: int) -> list:
        return _on_one_connection(picky.port, [{"sleep": 0.001, "client": k, "n": i} for i in range(20)])

    with ThreadPoolExecutor(2) as pool:
        outputs = [o for run in pool.map(client, (1, 2)) for o in run]
    inline = [o for o in outputs if o["thread"] == "MainThread"]
    # The first request of the second client may come while the first is still alone.
    assert len(inline) <= 2, inline
    assert max(o["batch_size"] for o in outputs) == 2


def test_under_load_batches_fill_to_the_limit_and_metrics_agree(picky):
    results = flood(picky, [{"input": i} for i in range(96)])
    assert all(status == 200 for status, _, _ in results)
    assert [body["output"]["echo"] for _, body, _ in results] == list(range(96))
    sizes = [body["output"]["batch_size"] for _, body, _ in results]
    assert max(sizes) == 8, sizes                   # full batches formed, none above the limit
    _, text, _ = picky.request("GET", "/metrics")
    assert metric(text, "mlserve_batch_size_sum") == 96
    assert metric(text, "mlserve_batch_queue_wait_seconds_count") == 96
    assert metric(text, "mlserve_batch_size_bucket", "+Inf") == metric(text, "mlserve_batch_size_count")
    assert metric(text, "mlserve_batch_size_bucket", "4") < metric(text, "mlserve_batch_size_count")


@pytest.mark.parametrize("picky", [("--max-batch-size", "4", "--max-batch-wait-ms", "0",
                                    "--concurrency", "1")], indirect=True)
def test_wait_zero_still_batches_what_queued_behind_a_running_batch(picky):
    results = flood(picky, [{"input": i, "sleep": 0.05} for i in range(24)])
    sizes = [body["output"]["batch_size"] for _, body, _ in results]
    assert all(status == 200 for status, _, _ in results) and max(sizes) == 4 and min(sizes) >= 1


def closed_loop(runtime: Runtime, clients: int, rounds: int, payload) -> list[int]:
    """``clients`` threads, each sending its next request as soon as its last is answered (how
    a load generator with N connections behaves); the batch size of every answer, in order."""
    sizes: list[int] = []
    with ThreadPoolExecutor(clients) as pool:
        def client(_):
            for _ in range(rounds):
                status, body, _ = runtime.request("POST", "/predict", {"input": payload}, timeout=30)
                assert status == 200, body
                sizes.append(body["output"]["batch_size"])
        list(pool.map(client, range(clients)))
    return sizes


@pytest.mark.parametrize("picky", [("--max-batch-size", "8", "--max-batch-wait-ms", "50",
                                    "--concurrency", "1")], indirect=True)
def test_steady_connections_settle_into_full_batches(picky):
    """Eight connections that each send again when answered, a batch taking 0.2 s: a batch waits
    for the clients the last one answered, so batches hold all eight. (A policy that judges by
    the arrival rate alone counts the 0.2 s without arrivals while a batch ran, expects the next
    seven to take longer than the 50 ms budget, goes with the first request, and splits the
    clients into cohorts for good.)"""
    sizes = closed_loop(picky, 8, 10, {"sleep": 0.2})
    settled = sizes[len(sizes) // 4:]
    assert sorted(settled)[len(settled) // 2] == 8, sizes    # the median request rode a full batch
    assert sum(s == 8 for s in settled) >= len(settled) * 0.6, sizes


@pytest.mark.parametrize("picky", [("--max-batch-size", "8", "--max-batch-wait-ms", "2000")], indirect=True)
def test_clients_that_do_not_come_back_are_waited_for_only_a_quiet_spell(picky):
    """After a batch of eight, one request alone: the batcher expects the eight back, but when
    none comes for a quiet spell it goes, long before its two-second wait budget."""
    flood(picky, [{"input": i} for i in range(8)], workers=8)
    time.sleep(0.2)
    for _ in range(3):
        started = time.monotonic()
        status, body, _ = picky.request("POST", "/predict", {"input": 1})
        assert status == 200 and body["output"]["batch_size"] == 1
        assert time.monotonic() - started < 1.0, "a lone request waited for clients that were gone"


@pytest.mark.parametrize("picky", [("--max-batch-size", "8", "--max-batch-wait-ms", "2000")], indirect=True)
def test_after_a_pause_nobody_answered_before_it_is_waited_for(picky):
    """Clients answered before an idle half second are not due: the first request after the pause
    goes at once, without the quiet spell (which starts afresh, long, after a pause) or the budget."""
    flood(picky, [{"input": i} for i in range(8)], workers=8)
    time.sleep(0.7)
    _, before, _ = picky.request("GET", "/metrics")
    status, body, _ = picky.request("POST", "/predict", {"input": 1})
    assert status == 200 and body["output"]["batch_size"] == 1
    _, after, _ = picky.request("GET", "/metrics")
    waited = (metric(after, "mlserve_batch_queue_wait_seconds_sum")
              - metric(before, "mlserve_batch_queue_wait_seconds_sum"))
    assert waited < 0.05, f"the request after a pause waited {waited:.3f} s for clients that were gone"


# -- hostile batch inputs: one bad request spoils no other ---------------------------------------

BAD = [
    (b'{"input": [1, 2', 400, "not valid JSON"),
    (b'{"inpt": 1}', 400, '"input" key'),
    (b'{"input": NaN}', 400, "NaN"),
    (b'\xff\xfe', 400, "not UTF-8"),
    ({"input": "nan"}, 500, "NaN"),               # the model's output cannot be JSON
]


def test_bad_requests_and_outputs_fail_alone_in_mixed_batches(picky):
    good = [{"input": x} for x in (1, "text", [1, [2, [3]]], {"k": None}, [0.5] * 500, "", -1e300)]
    bodies = [item for _ in range(4) for item in good + [bad for bad, _, _ in BAD]]
    results = flood(picky, bodies)
    for body, (status, answer, _) in zip(bodies, results):
        expected = next(((code, text) for bad, code, text in BAD if bad == body), None)
        if expected is None:
            assert status == 200 and answer["output"]["echo"] == body["input"], (body, answer)
        else:
            assert status == expected[0] and expected[1] in answer["error"], (body, answer)
    assert max(a["output"]["batch_size"] for s, a, _ in results if s == 200) > 1


def test_a_failing_or_short_batch_fails_its_own_requests_only_and_the_server_goes_on(picky):
    status, body, _ = picky.request("POST", "/predict", {"input": {"fail": "x"}})
    assert status == 500 and body["error"] == "ValueError: refused x"
    status, body, _ = picky.request("POST", "/predict", {"input": "short"})
    assert status == 500 and "predict_batch returned 0 outputs for 1 inputs" in body["error"]
    results = flood(picky, [{"input": i} for i in range(40)])
    assert [s for s, _, _ in results] == [200] * 40


def test_clients_that_time_out_or_vanish_mid_batch_do_not_hurt_the_rest(picky):
    """Requests whose clients give up while their batch runs are answered into closed sockets;
    requests after them and beside them succeed."""
    gone = []
    for _ in range(6):
        sock = socket.create_connection(("127.0.0.1", picky.port))
        body = b'{"input": {"sleep": 0.3}}'
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        gone.append(sock)
    with ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(picky.request, "POST", "/predict", {"input": {"sleep": 0.3}}, timeout=0.05)
                for _ in range(4)]
        for future in slow:
            with pytest.raises(OSError):          # socket.timeout is an OSError
                future.result()
    for sock in gone:
        sock.close()
    results = flood(picky, [{"input": i} for i in range(24)])
    assert [s for s, _, _ in results] == [200] * 24
    assert picky.proc.poll() is None


def test_instances_of_one_request_travel_in_one_batch(picky):
    status, body, _ = picky.request("POST", "/v1/models/model:predict", {"instances": [1, 2, 3]})
    assert status == 200 and [p["echo"] for p in body["predictions"]] == [1, 2, 3]
    assert {p["batch_size"] for p in body["predictions"]} == {3}


def test_metrics_of_a_model_without_predict_batch_say_so(tmp_path):
    runtime = Runtime(tmp_path, "models.py:Echo")
    try:
        runtime.wait_ready()
        status, text, _ = runtime.request("GET", "/metrics")
        assert status == 200 and text.startswith("# no batching")
    finally:
        assert runtime.stop() == 0


# -- runtime settings: flags and environment -----------------------------------------------------

@pytest.mark.parametrize("argv, env, expected", [
    ([], {}, (32, 10)),
    (["--max-batch-size", "64", "--max-batch-wait-ms", "0"], {}, (64, 0)),
    ([], {"MLSERVE_MAX_BATCH_SIZE": "16", "MLSERVE_MAX_BATCH_WAIT_MS": "25"}, (16, 25)),
    (["--max-batch-wait-ms", "5"], {"MLSERVE_MAX_BATCH_WAIT_MS": "25"}, (32, 5)),
])
def test_runtime_settings_from_flags_then_environment(argv, env, expected):
    from mlserve.runtime.config import parse
    s = parse(argv, env)
    assert (s.max_batch_size, s.max_batch_wait_ms) == expected


@pytest.mark.parametrize("argv, env", [
    (["--max-batch-wait-ms", "-1"], {}),
    (["--max-batch-size", "0"], {}),
    ([], {"MLSERVE_MAX_BATCH_WAIT_MS": "soon"}),
])
def test_bad_runtime_settings_exit_with_a_message(argv, env, capsys):
    from mlserve.runtime.config import parse
    with pytest.raises(SystemExit) as exc:
        parse(argv, env)
    assert exc.value.code not in (0, None)
    out = capsys.readouterr().err + str(exc.value.code)
    assert "max-batch" in out.lower() or "MAX_BATCH" in out


# -- the manifest ---------------------------------------------------------------------------------

GOOD = ("name: m\nmodel: {entrypoint: model.py:Model}\n"
        "targets: {local: {provider: local, port: 8480}, vm: {provider: vm}, img: {provider: docker, image: acme/m}}\n")
MODEL = "class Model:\n    def predict_batch(self, payloads):\n        return payloads\n"


def _load(tmp_path, text: str):
    from mlserve.manifest import load_project
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "mlserve.yaml").write_text(text)
    return load_project(tmp_path / "mlserve.yaml")


@pytest.mark.parametrize("field, value, words", [
    ("max_batch_size", "0", "greater than or equal to 1"),
    ("max_batch_size", "-3", "greater than or equal to 1"),
    ("max_batch_size", "4097", "less than or equal to 4096"),
    ("max_batch_size", "1.5", "integer"),
    ("max_batch_size", "[32]", "integer"),
    ("max_batch_size", "null", "integer"),
    ("max_batch_wait_ms", "-1", "greater than or equal to 0"),
    ("max_batch_wait_ms", "1001", "less than or equal to 1000"),
    ("max_batch_wait_ms", "2.5", "integer"),
    ("max_batch_wait_ms", "'10ms'", ""),
    ("max_batch_wait_ms", "{a: 1}", "integer"),
    ("max_batch_wiat_ms", "5", "did you mean 'max_batch_wait_ms'"),
])
def test_bad_batching_settings_are_refused_naming_the_field(tmp_path, field, value, words):
    from mlserve.errors import ManifestError
    with pytest.raises(ManifestError) as exc:
        _load(tmp_path, GOOD + f"scaling: {{{field}: {value}}}\n")
    text = str(exc.value)
    assert f"scaling.{field}" in text and "mlserve.yaml:4" in text and words in text, text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(-10_000, 10_000), wait=st.integers(-10_000, 10_000))
def test_generated_batching_settings_are_accepted_exactly_within_bounds(tmp_path, size, wait):
    from mlserve.errors import ManifestError
    ok = 1 <= size <= 4096 and 0 <= wait <= 1000
    try:
        project = _load(tmp_path, GOOD + f"scaling: {{max_batch_size: {size}, max_batch_wait_ms: {wait}}}\n")
    except ManifestError as exc:
        assert not ok, exc
        assert ("max_batch_size" in str(exc)) == (not 1 <= size <= 4096)
        assert ("max_batch_wait_ms" in str(exc)) == (not 0 <= wait <= 1000)
    else:
        assert ok and (project.manifest.scaling.max_batch_size, project.manifest.scaling.max_batch_wait_ms) == (size, wait)


# -- release ids: the new fields at their defaults rename nothing --------------------------------

#: The id main gave this manifest before the batching fields existed (mlserve 2026-12-01).
ID_BEFORE_BATCHING_FIELDS = "r-70cd430b29d3"


def _relid(tmp_path, manifest_text: str) -> str:
    from mlserve.bundle import collect
    from mlserve.release import release_id
    project = _load(tmp_path, manifest_text)
    return release_id(project, collect(project.root))


def test_defaults_keep_the_release_ids_given_before_the_fields_existed(tmp_path):
    base = GOOD + "scaling: {concurrency: 2}\n"
    assert _relid(tmp_path, base) == ID_BEFORE_BATCHING_FIELDS
    explicit = GOOD + "scaling: {concurrency: 2, max_batch_size: 32, max_batch_wait_ms: 10}\n"
    assert _relid(tmp_path, explicit) == ID_BEFORE_BATCHING_FIELDS


@pytest.mark.parametrize("extra", ["max_batch_size: 64", "max_batch_wait_ms: 0", "max_batch_size: 31"])
def test_other_batching_settings_are_a_new_release(tmp_path, extra):
    assert _relid(tmp_path, GOOD + f"scaling: {{concurrency: 2, {extra}}}\n") != ID_BEFORE_BATCHING_FIELDS


# -- the settings reach every format the runtime serves in ----------------------------------------

def test_settings_reach_the_local_and_ssh_runtime_command_line():
    from mlserve.adapters.procs import runtime_args
    args = runtime_args(app_dir="/a", entrypoint="model.py:Model", name="m", host="h", port=1,
                        scaling={"concurrency": 2, "max_batch_size": 64, "max_batch_wait_ms": 0}, release="r-1")
    assert args[args.index("--max-batch-size") + 1] == "64" and args[args.index("--max-batch-wait-ms") + 1] == "0"
    old = runtime_args(app_dir="/a", entrypoint="model.py:Model", name="m", host="h", port=1,
                       scaling={"concurrency": 2}, release="r-1")       # a snapshot journaled before the fields
    assert "--max-batch-size" not in old and old[old.index("--concurrency") + 1] == "2"
    from mlserve.runtime.config import parse
    s = parse(args)
    assert (s.max_batch_size, s.max_batch_wait_ms, s.concurrency) == (64, 0, 2)


def test_mlserve_serve_passes_the_manifest_settings(tmp_path):
    from mlserve.cli.serve import runtime_arguments
    from mlserve.runtime.config import parse
    _load(tmp_path, GOOD + "scaling: {max_batch_size: 48, max_batch_wait_ms: 3}\n")
    s = parse(runtime_arguments(tmp_path / "mlserve.yaml", port=None, host=None, concurrency=None,
                                app_dir=None, entrypoint=None), {})
    assert (s.max_batch_size, s.max_batch_wait_ms) == (48, 3)


@pytest.mark.parametrize("fmt, file, expected", [
    ("docker", "Dockerfile", ["MLSERVE_MAX_BATCH_SIZE=48", "MLSERVE_MAX_BATCH_WAIT_MS=3"]),
    ("cloud-init", "run.sh", ["--max-batch-size 48", "--max-batch-wait-ms 3"]),
])
def test_image_and_vm_builds_carry_the_settings(tmp_path, fmt, file, expected):
    from mlserve.packaging import build_project
    (tmp_path / "p").mkdir()
    project = _load(tmp_path / "p", GOOD + "scaling: {max_batch_size: 48, max_batch_wait_ms: 3}\n")
    target = "img" if fmt == "docker" else "vm"
    build_project(project, target, fmt, tmp_path / "out")
    text = "\n".join(p.read_text() for p in (tmp_path / "out").rglob(file) if p.is_file()) \
        or "\n".join(p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file())
    for needle in expected:
        assert needle in text, (needle, text[:2000])


# -- the fast JSON path for tensors decides exactly as the exact decoder --------------------------

NUMBER_TEXT = st.from_regex(r"-?(0|[1-9][0-9]{0,400})(\.[0-9]{1,6})?([eE][+-]?[0-9]{1,4})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(NUMBER_TEXT, st.floats(allow_nan=False, allow_infinity=False).map(repr),
                          st.text(max_size=8).map(lambda s: __import__("json").dumps(s))), max_size=12))
def test_the_fast_decode_path_accepts_and_refuses_exactly_what_the_exact_one_does(items):
    from mlserve.runtime.app import HTTPError, _decode, parse_body
    text = "[" + ",".join(items) + "]"
    try:
        expected = _decode(text)
    except ValueError:
        expected = HTTPError
    try:
        got = parse_body(text.encode())
    except HTTPError as exc:
        assert exc.status == 400
        got = HTTPError
    assert got == expected or (got is not HTTPError and repr(got) == repr(expected)), text[:300]


# -- batches in parallel: never more than the CPUs the process may use ----------------------------

@pytest.mark.parametrize("cpus, concurrency, workers", [({0}, 4, 1), ({0, 1}, 4, 2), ({0, 1}, 1, 1)])
def test_batch_workers_are_bounded_by_the_usable_cpus(cpus, concurrency, workers):
    """Two batches sharing one core each take twice as long: more workers than CPUs only adds latency."""
    import asyncio
    import os
    import threading

    from mlserve.runtime.batching import Batcher
    if not set(cpus) <= os.sched_getaffinity(0):
        pytest.skip(f"this machine lets the test use CPUs {sorted(os.sched_getaffinity(0))} only")
    made = {}

    def build():  # affinity is per thread on Linux: restrict only this one (the workers inherit it)
        os.sched_setaffinity(0, cpus)
        loop = asyncio.new_event_loop()
        before = {t.ident for t in threading.enumerate()}
        made["batcher"] = Batcher(loop, lambda payloads: payloads, concurrency, 8, 10)
        made["threads"] = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("mlserve-batch-")]
        made["loop"] = loop

    thread = threading.Thread(target=build)
    thread.start()
    thread.join()
    try:
        assert len(made["threads"]) == workers
    finally:
        made["batcher"].stop()
        for t in made["threads"]:
            t.join(5)
        made["loop"].close()
