"""The model's own limit: JSON decode + ``predict_batch`` + JSON encode in a loop, no server.

    python limit.py --batch 32 --seconds 3 BODY_FILE
    python limit.py --serve BODY_FILE     # then one "BATCH SECONDS" line per measurement on stdin

Decodes ``batch`` copies of the request body (``{"input": [1024 floats]}``) one by one, as a
server receives them, runs one ``predict_batch`` over their inputs and encodes one
``{"output": ...}`` answer per request: everything a server must do per request except HTTP.
Prints one JSON line: requests/s, requests per CPU-second (which other processes on the core
do not change), and the median time of one such batch (for ``--batch 1``
through ``predict``, the single-call path a batching server must match at low load).

``--serve`` keeps the model loaded and measures on request, one JSON line per input line: the
benchmark measures the limit right beside each server run with it, so that a ratio compares two
measurements seconds apart (this machine's speed drifts by a third over minutes).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import Model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("body", type=Path)
    args = ap.parse_args()
    body = args.body.read_bytes()
    model = Model()
    model.load()
    if not args.serve:
        print(json.dumps(measure(model, body, args.batch, args.seconds)))
        return
    for line in sys.stdin:
        batch, seconds = line.split()
        print(json.dumps(measure(model, body, int(batch), float(seconds))), flush=True)


def measure(model, body: bytes, batch: int, seconds: float) -> dict:
    single = batch == 1

    def one_batch() -> None:
        inputs = [json.loads(body)["input"] for _ in range(batch)]
        outputs = [model.predict(inputs[0])] if single else model.predict_batch(inputs)
        for output in outputs:
            json.dumps({"output": output}).encode()

    for _ in range(3):
        one_batch()  # warm caches and BLAS buffers
    times = []
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        one_batch()
        times.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    return {"batch": batch, "rps": batch * len(times) / sum(times), "per_cpu_s": batch * len(times) / cpu,
            "batch_ms": 1000 * statistics.median(times), "batches": len(times)}


if __name__ == "__main__":
    main()
