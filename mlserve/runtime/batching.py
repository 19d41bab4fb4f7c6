"""Dynamic batching for models with ``predict_batch``: full batches under load, no wait when idle.

``Batcher`` has the runner interface of ``dispatch`` (``submit``, ``submit_many``, ``stop``;
awaiting gives ``(True, output)`` or ``(False, exception)`` per payload). Payloads arrive decoded
(the event loop parses JSON while the model computes: numpy releases the GIL in BLAS) and wait in
one queue. Worker threads take batches of at most ``max_batch_size``; there are ``concurrency``
of them, but never more than the CPUs this process may run on (``usable_cpus``): a batch is
CPU-bound work, and two batches sharing one core each take twice as long, so that would only
add latency. Which batch goes when:

- **A full batch goes at once**, to any idle worker.
- **A partial batch waits only for requests that are coming.** A client answered usually sends
  its next request at once, so the batcher counts the requests answered since (``returning``:
  each answer adds one, each arrival takes one away). When none is due, a partial batch goes at
  once: one connection sees the latency of one ``predict``. When some are due it waits for them,
  until the batch is full, no request has arrived for a quiet spell since the last arrival or
  answer (four times the recent gap between arrivals, or a quarter of the last batch's time if
  longer: those clients are not coming back soon), or ``max_batch_wait_ms`` have passed (Triton's ``max_queue_delay``, paid
  only when waiting pays off). That budget counts from when the model is free to run the batch:
  the time a request queued behind a running batch is not spent waiting for company. So under
  a steady load of N connections batches settle at N (up to ``max_batch_size``), and cohorts
  that drift apart merge again: after a batch, the next one waits for the clients it answered.
- **One client alone is served on the event loop.** Handing a request to a worker thread and
  the answer back costs about 0.1 ms each way on a VM (each side waits to be scheduled), which
  is 5% of a 4 ms model. So when nothing runs or waits, one client alone is sending predictions
  (``Clients``: no other connection sent one for a second, so nothing can arrive unseen
  while the loop is busy) and the model's last batch of one took under ``INLINE_MAX`` (10 ms: the
  most a health check then waits), the batch of one runs right there. A second client, or a
  slower call, and batches go to the workers again.
- **While a batch runs, a partial batch waits for it** (requests arriving meanwhile join it) or
  for its deadline: two half batches on one core cost more than one full one.

The gap between arrivals is a moving average that skips the time a batch kept every client
waiting (it is measured from the later of the last arrival and the last answer), and an idle
gap (half a second) resets it and the count of clients due. Results go back to the loop once per batch (one ``call_soon_threadsafe``).
A ``predict_batch`` that raises, or returns the wrong number of outputs, fails the requests of
that batch only; a request body that is not JSON never reaches a batch, and each output is
encoded on its own, so neither spoils a neighbour.

``stats`` (a ``BatchStats``) counts batch sizes and queue waits as histograms for ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .dispatch import _no_wakeup_preemption, _resolve
from .metrics import BatchStats

_IDLE_GAP = 0.5        # seconds without a request after which the arrival rate starts afresh
_RATE_WEIGHT = 0.125   # weight of the newest gap in the moving average
_QUIET_GAPS = 4        # a quiet spell: this many average gaps without an arrival, or ...
_QUIET_SHARE = 0.25    # ... this share of the last batch's time, whichever is longer
INLINE_MAX = 0.010     # seconds: a batch of one this fast may run on the event loop when one client is alone


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class Clients:
    """Whether one client alone is sending requests: what lets ``Batcher`` run a batch of one on
    the event loop instead of handing it to a thread and back (about 0.1 ms each way on a VM).

    ``http11.HttpProtocol`` reports each arrival. A client is a connection that sent a ``POST``
    (a prediction; health checks are ``GET``): while
    no connection other than the latest one has sent one for ``WINDOW`` seconds, the latest is
    alone, and no request can arrive unseen while the loop is busy predicting for it. With two or
    more such clients the batcher sees every arrival and batches as usual. Until the protocol has
    seen a request (or under uvicorn's h11 fallback, which does not track clients) nobody is alone.
    """

    WINDOW = 1.0

    __slots__ = ("_latest", "_latest_at", "_other_at")

    def __init__(self) -> None:
        self._latest = None
        self._latest_at = 0.0
        self._other_at = float("-inf")

    def arrived(self, connection, now: float) -> None:
        if connection is not self._latest:
            self._other_at = self._latest_at if self._latest is not None else float("-inf")
            self._latest = connection
        self._latest_at = now

    def alone(self) -> bool:
        return self._latest is not None and perf_counter() - self._other_at > self.WINDOW


class Batcher:
    def __init__(self, loop: asyncio.AbstractEventLoop, predict_batch: Callable[[list], list],
                 concurrency: int, max_batch_size: int, max_batch_wait_ms: int,
                 alone: Callable[[], bool] = lambda: False) -> None:
        self._loop = loop
        self._alone = alone            # True while one client alone sends requests (``Clients.alone``)
        self._inline_ok = False        # the last batch of one took less than INLINE_MAX
        self._predict_batch = predict_batch
        self._max = max_batch_size
        self._max_wait = max_batch_wait_ms / 1000.0
        self._queue: deque = deque()   # (payload, future, arrived)
        self._cond = threading.Condition(threading.Lock())
        self._running = 0              # batches in predict_batch now
        self._idle = 0                 # workers waiting for a first request
        self._filling = 0              # workers waiting for a partial batch to fill
        self._returning = 0            # requests answered that no arrival has followed yet
        self._stopping = False
        self._last_arrival = 0.0
        self._last_answer = 0.0
        self._gap = _IDLE_GAP          # moving average of the gap between arrivals, seconds
        self._quiet_floor = 0.0        # _QUIET_SHARE of the last batch's time, seconds
        self.stats = BatchStats()
        for index in range(min(concurrency, usable_cpus())):
            threading.Thread(target=self._work, name=f"mlserve-batch-{index}", daemon=True).start()

    # -- event loop side -----------------------------------------------------------------------

    def submit(self, payload: Any) -> asyncio.Future:
        future = self._loop.create_future()
        now = perf_counter()
        with self._cond:
            gap = now - max(self._last_arrival, self._last_answer)
            self._last_arrival = now
            if gap >= _IDLE_GAP:  # after a pause the rate starts afresh, and nobody answered before it is due
                self._gap = _IDLE_GAP
                self._returning = 0
            else:
                self._gap += _RATE_WEIGHT * (gap - self._gap)
                if self._returning:
                    self._returning -= 1
            if not self._queue and not self._running and self._inline_ok and self._alone():
                self._running += 1
                inline = True
            else:
                inline = False
                self._queue.append((payload, future, now))
            # Wake a worker only when one is idle, a batch just filled, or the last request a
            # filling batch waited for came: a waiting worker wakes on its own deadline
            # otherwise, and every wake-up costs a switch.
            if not inline and (self._idle or len(self._queue) == self._max or (self._filling and not self._returning)):
                self._cond.notify()
        if inline:
            self._run_inline(payload, future, now)
        return future

    def _run_inline(self, payload: Any, future: asyncio.Future, arrived: float) -> None:
        """A batch of one on the event loop: no thread hand-off each way (~0.1 ms each on a VM)."""
        batch = [(payload, future, arrived)]
        started = perf_counter()
        results = self._run(batch)
        self._finished(batch, started)
        _resolve(results)

    async def submit_many(self, payloads: list) -> list:
        return [await future for future in [self.submit(p) for p in payloads]]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # -- worker side ---------------------------------------------------------------------------

    def _wait_for_batch(self) -> list | None:
        """Under the lock: the next batch to run, by the policy in the module docstring; None to stop."""
        queue = self._queue
        while not self._stopping:
            count = len(queue)
            if count >= self._max:
                break
            if not count:
                self._idle += 1
                self._cond.wait()
                self._idle -= 1
                continue
            now = perf_counter()
            left = max(queue[0][2], self._last_answer) + self._max_wait - now
            if left <= 0:
                break
            if not self._running:
                if not self._returning:
                    break
                quiet = (max(self._last_arrival, self._last_answer)
                         + max(self._quiet_floor, _QUIET_GAPS * self._gap) - now)
                if quiet <= 0:
                    self._returning = 0  # those clients are not coming back soon
                    break
                left = min(left, quiet)
            self._filling += 1
            self._cond.wait(max(left, 0.0002))
            self._filling -= 1
        if self._stopping:
            return None
        take = min(len(queue), self._max)
        self._running += 1
        return [queue.popleft() for _ in range(take)]

    def _work(self) -> None:
        _no_wakeup_preemption()
        while True:
            with self._cond:
                batch = self._wait_for_batch()
            if batch is None:
                return
            started = perf_counter()
            results = self._run(batch)
            self._finished(batch, started)
            try:
                self._loop.call_soon_threadsafe(_resolve, results)
            except RuntimeError:
                return  # the loop is closed: the process is exiting and nobody waits for these

    def _finished(self, batch: list, started: float) -> None:
        with self._cond:
            self._running -= 1
            self._returning = min(self._max, self._returning + len(batch))
            self._last_answer = now = perf_counter()
            self._quiet_floor = _QUIET_SHARE * (now - started)
            if len(batch) == 1:
                self._inline_ok = now - started < INLINE_MAX
            if self._queue:
                self._cond.notify()  # a partial batch may have been waiting for this one
        self.stats.record(len(batch), [started - arrived for _, _, arrived in batch])

    def _run(self, batch: list) -> list:
        try:
            outputs = self._predict_batch([payload for payload, _, _ in batch])
            if not isinstance(outputs, (list, tuple)) or len(outputs) != len(batch):
                count = len(outputs) if isinstance(outputs, (list, tuple)) else type(outputs).__name__
                raise ValueError(f"predict_batch returned {count} outputs for {len(batch)} inputs")
        except BaseException as exc:  # noqa: BLE001 - user code; reported as a 500, never fatal
            return [(future, (False, exc)) for _, future, _ in batch]
        return [(future, (True, output)) for (_, future, _), output in zip(batch, outputs)]
