"""Histograms of batching for ``GET /metrics``, in the Prometheus text format (version 0.0.4).

``BatchStats.record(size, waits)`` is called by a batch worker once per ``predict_batch`` call
(its size, and how long each request in it waited in the queue, in seconds); ``render()`` gives
the exposition text any Prometheus-compatible scraper reads:

- ``mlserve_batch_size``: requests per ``predict_batch`` call (buckets 1, 2, 4, ... 4096);
- ``mlserve_batch_queue_wait_seconds``: time from a request's arrival to its batch's start.

Counts are cumulative per bucket, as Prometheus histograms are. Written by hand (about forty
lines) rather than with ``prometheus_client``: the runtime ships to every host and image with
only uvicorn beside it.
"""

from __future__ import annotations

import threading
from bisect import bisect_left

SIZE_BUCKETS = tuple(2 ** i for i in range(13))  # 1 .. 4096, the manifest's largest batch
WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple) -> None:
        self.name, self.help, self.buckets = name, help_text, buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts):
            total += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {total}')
        lines += [f"{self.name}_sum {self.sum:.6g}", f"{self.name}_count {total}"]
        return lines


class BatchStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.size = Histogram("mlserve_batch_size", "Requests per predict_batch call.", SIZE_BUCKETS)
        self.wait = Histogram("mlserve_batch_queue_wait_seconds",
                              "Time from a request's arrival to the start of its batch.", WAIT_BUCKETS)

    def record(self, size: int, waits: list[float]) -> None:
        with self._lock:
            self.size.observe(size)
            for wait in waits:
                self.wait.observe(wait)

    def render(self) -> str:
        with self._lock:
            return "\n".join(self.size.render() + self.wait.render()) + "\n"
