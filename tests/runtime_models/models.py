"""Test models for tests/test_runtime*.py, served by the real runtime as ``models.py:<Class>``.

Each class records what the runtime did to it (calls in flight, batch sizes) and returns it, so
the tests observe the runtime from outside, over HTTP.
"""

import asyncio
import os
import threading
import time


class Echo:
    """Returns its payload; raises on request; reads secrets from the environment like real models."""

    def load(self):
        self.loaded = True

    def predict(self, payload):
        if isinstance(payload, dict) and "raise" in payload:
            raise ValueError(payload["raise"])
        if payload == "leak":
            raise RuntimeError(f"upstream refused token {os.environ.get('MODEL_TOKEN', '')}")
        if payload == "not-json":
            return object()
        return payload


class InFlight:
    """Counts concurrent calls; the maximum seen is returned with every answer."""

    def __init__(self):
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0

    def enter(self):
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)

    def leave(self):
        with self._lock:
            self._now -= 1


class Slow:
    """predict sleeps payload["sleep"] seconds (default 0.2)."""

    def load(self):
        self.in_flight = InFlight()

    def predict(self, payload):
        self.in_flight.enter()
        try:
            time.sleep(payload.get("sleep", 0.2) if isinstance(payload, dict) else 0.2)
        finally:
            self.in_flight.leave()
        return {"max_in_flight": self.in_flight.most}


class SlowLoad(Echo):
    """load() takes LOAD_SECONDS (default 1.5)."""

    def load(self):
        time.sleep(float(os.environ.get("LOAD_SECONDS", "1.5")))


class Batch:
    """Only predict_batch: doubles numbers and reports the size of the batch each came in."""

    def predict_batch(self, payloads):
        time.sleep(0.05)  # long enough for later requests to queue behind this batch
        return [{"doubled": p * 2, "batch_size": len(payloads)} for p in payloads]


class AsyncSlow:
    """async predict sleeping 0.2 s on the loop."""

    def load(self):
        self.now = 0
        self.most = 0

    async def predict(self, payload):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(0.2)
        finally:
            self.now -= 1
        return {"max_in_flight": self.most, "echo": payload}


class BrokenLoad:
    def load(self):
        raise RuntimeError("weights file missing: /models/w.bin")

    def predict(self, payload):
        return payload


class PickyBatch:
    """predict_batch for the batching tests: each output says its batch's size, how long the
    call took and on which thread (``MainThread`` is the event loop's); a payload may ask for an output JSON cannot carry (NaN), to sleep, or to fail the
    whole call (``{"fail": ...}``) or to make it return one output too few (``"short"``)."""

    def predict_batch(self, payloads):
        started = time.monotonic()
        delay = max((p.get("sleep", 0) for p in payloads if isinstance(p, dict)), default=0)
        time.sleep(delay or 0.01)
        for p in payloads:
            if isinstance(p, dict) and "fail" in p:
                raise ValueError(f"refused {p['fail']}")
        thread = threading.current_thread().name
        outputs = [{"echo": p, "batch_size": len(payloads), "took": time.monotonic() - started, "thread": thread}
                   if p != "nan" else float("nan") for p in payloads]
        return outputs[:-1] if "short" in payloads else outputs
