"""The model's own limit: JSON decode + ``predict_batch`` + JSON encode in a loop, no server.

    python limit.py --batch 32 --seconds 3 BODY_FILE

Decodes ``batch`` copies of the request body (``{"input": [1024 floats]}``) one by one, as a
server receives them, runs one ``predict_batch`` over their inputs and encodes one
``{"output": ...}`` answer per request: everything a server must do per request except HTTP.
Prints one JSON line: requests/s, requests per CPU-second (which other processes on the core
do not change), and the median time of one such batch (for ``--batch 1``
through ``predict``, the single-call path a batching server must match at low load).
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
    ap.add_argument("body", type=Path)
    args = ap.parse_args()
    body = args.body.read_bytes()
    model = Model()
    model.load()
    single = args.batch == 1

    def one_batch() -> None:
        inputs = [json.loads(body)["input"] for _ in range(args.batch)]
        outputs = [model.predict(inputs[0])] if single else model.predict_batch(inputs)
        for output in outputs:
            json.dumps({"output": output}).encode()

    for _ in range(3):
        one_batch()  # warm caches and BLAS buffers
    times = []
    cpu = time.process_time()
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        one_batch()
        times.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    print(json.dumps({"batch": args.batch, "rps": args.batch * len(times) / sum(times),
                      "per_cpu_s": args.batch * len(times) / cpu,
                      "batch_ms": 1000 * statistics.median(times), "batches": len(times)}))


if __name__ == "__main__":
    main()
