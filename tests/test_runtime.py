"""The runtime's HTTP contract, against the real server in a subprocess: routes, errors, dispatch.

Lifecycle (loading, signals, handover, isolation) is in test_runtime_lifecycle.py.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.runtime_models.harness import Runtime, free_port

pytestmark = pytest.mark.slow

ACCESS_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ 127\.0\.0\.1:\d+ (GET|POST) (/\S*) (\d{3}) \d+\.\d\dms$")


@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    """One Echo server for the route tests, started like SageMaker and Vertex start containers."""
    port = free_port()
    env = {
        "AIP_HTTP_PORT": str(port),  # beats MLSERVE_PORT
        "MLSERVE_PORT": str(free_port()),
        "AIP_HEALTH_ROUTE": "/vertex/health",
        "AIP_PREDICT_ROUTE": "/vertex/predict",
        "MLSERVE_NAME": "echo",
        "MLSERVE_RELEASE": "r-1",
        "MLSERVE_MAX_BODY_BYTES": "4096",
    }
    runtime = Runtime(tmp_path_factory.mktemp("echo"), "models.py:Echo", "serve", env=env, port=port)
    runtime.wait_ready()
    yield runtime
    assert runtime.stop() == 0


def test_health_routes(echo):
    ready = {"status": "ready", "name": "echo", "release": "r-1", "loop": "uvloop", "http": "httptools"}
    for path in ("/health", "/ping", "/vertex/health"):
        assert echo.request("GET", path)[:2] == (200, ready), path
    assert echo.request("GET", "/")[:2] == (200, {"status": "alive"})
    assert echo.request("GET", "/v1/models/echo")[:2] == (200, {"name": "echo", "ready": True})


def test_predict(echo):
    status, body, headers = echo.request("POST", "/predict", {"input": {"x": [1, 2, 3]}})
    assert (status, body) == (200, {"output": {"x": [1, 2, 3]}})
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("path", ["/invocations", "/score"])
def test_sagemaker_and_azure_body_rules(echo, path):
    assert echo.request("POST", path, {"instances": [1, {"a": 2}]})[:2] == (200, {"predictions": [1, {"a": 2}]})
    assert echo.request("POST", path, {"input": "x"})[:2] == (200, {"output": "x"})
    assert echo.request("POST", path, {"features": [1, 2]})[:2] == (200, {"features": [1, 2]})
    assert echo.request("POST", path, [3, 4])[:2] == (200, [3, 4])


@pytest.mark.parametrize("path", ["/vertex/predict", "/v1/models/echo:predict"])
def test_vertex_and_kserve_instances(echo, path):
    body = {"instances": [{"a": 1}, [2], "three"], "parameters": {"t": 1}}
    assert echo.request("POST", path, body)[:2] == (200, {"predictions": [{"a": 1}, [2], "three"]})
    assert echo.request("POST", path, {"instances": []})[:2] == (200, {"predictions": []})
    status, body, _ = echo.request("POST", path, {"input": 1})
    assert status == 400 and "instances" in body["error"]
    assert echo.request("POST", path, {"instances": 5})[0] == 400


def test_client_errors(echo):
    status, body, _ = echo.request("POST", "/predict", b'{"input": ')
    assert status == 400 and body["error"].startswith("request body is not valid JSON")
    status, body, _ = echo.request("POST", "/predict", {"inputs": 1})
    assert status == 400 and '"input"' in body["error"]
    status, body, _ = echo.request("GET", "/nope")
    assert status == 404 and body == {"error": "no route /nope"}
    assert echo.request("GET", "/v1/models/other")[0] == 404
    status, body, headers = echo.request("GET", "/predict")
    assert status == 405 and headers["allow"] == "POST" and "error" in body
    assert echo.request("POST", "/health")[0] == 405


def test_body_too_large_by_content_length(echo):
    status, body, _ = echo.request("POST", "/predict", json.dumps({"input": "x" * 5000}))
    assert status == 413 and "4096" in body["error"]
    assert echo.request("POST", "/predict", {"input": "x" * 3000})[0] == 200


def test_body_too_large_while_reading_chunks(echo):
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    chunks = [b'{"input": "'] + [b"y" * 1000] * 6 + [b'"}']
    conn.request("POST", "/predict", body=iter(chunks), headers={"Content-Type": "application/json"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and "4096" in json.loads(response.read())["error"]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", echo.port, timeout=10)
    conn.request("POST", "/predict", body=iter([b'{"input"', b': "ok"}']), encode_chunked=True)
    response = conn.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"output": "ok"})
    conn.close()


def test_user_error_is_500_and_server_keeps_serving(echo):
    status, body, _ = echo.request("POST", "/predict", {"input": {"raise": "bad shape (3, 4)"}})
    assert (status, body) == (500, {"error": "ValueError: bad shape (3, 4)"})
    status, body, _ = echo.request("POST", "/predict", {"input": "not-json"})
    assert status == 500 and body["error"].startswith("TypeError: Object of type object is not JSON serializable")
    assert echo.request("POST", "/invocations", {"instances": [1, {"raise": "second"}]})[:2] == (500, {"error": "ValueError: second"})
    assert echo.request("POST", "/predict", {"input": 7})[:2] == (200, {"output": 7})
    log = echo.wait_log("ValueError: bad shape (3, 4)")
    assert "Traceback (most recent call last)" in log and "predict failed for POST /predict" in log


def test_access_log_lines(echo):
    echo.request("POST", "/predict", {"input": "logged"})
    echo.request("GET", "/nope-logged")
    out = echo.wait_log("/nope-logged 404", stream="stdout")
    lines = out.splitlines()
    assert lines and all(ACCESS_LINE.match(line) for line in lines), [x for x in lines if not ACCESS_LINE.match(x)][:3]
    assert any(" POST /predict 200 " in line for line in lines)


def test_access_log_can_be_turned_off(tmp_path):
    flag = Runtime(tmp_path, "models.py:Echo", "--no-access-log")
    env = Runtime(tmp_path, "models.py:Echo", env={"MLSERVE_ACCESS_LOG": "0"})
    try:
        for runtime in (flag, env):
            runtime.wait_ready()
            assert runtime.request("POST", "/predict", {"input": 1})[0] == 200
        time.sleep(0.3)  # more than one flush interval
        assert flag.stdout == "" and env.stdout == ""
    finally:
        assert flag.stop() == 0 and env.stop() == 0


def test_concurrency_is_bounded_and_overlapping(tmp_path):
    runtime = Runtime(tmp_path, "models.py:Slow", "--concurrency", "4")
    try:
        runtime.wait_ready()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: runtime.request("POST", "/predict", {"input": {"sleep": 0.2}}), range(8)))
        elapsed = time.monotonic() - started
        assert all(status == 200 for status, _, _ in results)
        most = max(body["output"]["max_in_flight"] for _, body, _ in results)
        assert 2 <= most <= 4, most
        assert elapsed < 1.2, f"8 x 0.2 s with concurrency 4 took {elapsed:.2f}s"
    finally:
        assert runtime.stop() == 0


def test_predict_batch_gets_dynamic_batches(tmp_path):
    runtime = Runtime(tmp_path, "models.py:Batch", "--concurrency", "1", "--max-batch-size", "8")
    try:
        runtime.wait_ready()
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: runtime.request("POST", "/predict", {"input": i}), range(16)))
        outputs = [body["output"] for _, body, _ in results]
        assert [o["doubled"] for o in outputs] == [i * 2 for i in range(16)]
        sizes = [o["batch_size"] for o in outputs]
        assert max(sizes) > 1 and max(sizes) <= 8, sizes
        status, body, _ = runtime.request("POST", "/v1/models/model:predict", {"instances": [1, 2, 3]})
        assert status == 200 and [p["doubled"] for p in body["predictions"]] == [2, 4, 6]
        assert body["predictions"][0]["batch_size"] == 3  # one request's instances travel together
    finally:
        assert runtime.stop() == 0


def test_async_predict_runs_on_the_loop_bounded(tmp_path):
    runtime = Runtime(tmp_path, "models.py:AsyncSlow", "--concurrency", "2")
    try:
        runtime.wait_ready()
        assert "async predict" in runtime.stderr
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda i: runtime.request("POST", "/predict", {"input": i}), range(6)))
        elapsed = time.monotonic() - started
        assert [body["output"]["echo"] for _, body, _ in results] == list(range(6))
        assert max(body["output"]["max_in_flight"] for _, body, _ in results) == 2
        assert 0.55 < elapsed < 1.5, elapsed
    finally:
        assert runtime.stop() == 0


def test_secrets_are_masked_in_errors_and_logs(tmp_path):
    secret = "tok-9f8e7d6c5b4a"
    env = {"MODEL_TOKEN": secret, "MLSERVE_SECRET_NAMES": "OTHER, MODEL_TOKEN"}
    runtime = Runtime(tmp_path, "models.py:Echo", env=env)
    try:
        runtime.wait_ready()
        status, body, _ = runtime.request("POST", "/predict", {"input": "leak"})
        assert (status, body) == (500, {"error": "RuntimeError: upstream refused token ***"})
        status, body, _ = runtime.request("POST", "/predict", {"input": {"raise": f"echo {secret}"}})
        assert status == 500 and secret not in json.dumps(body)
        runtime.request("GET", f"/{secret}")
        runtime.wait_log("upstream refused token ***")
        runtime.wait_log("404", stream="stdout")
    finally:
        assert runtime.stop() == 0
    assert secret not in runtime.stderr and secret not in runtime.stdout
    assert "GET /*** 404" in runtime.stdout
