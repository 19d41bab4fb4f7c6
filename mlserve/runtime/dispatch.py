"""Run the user's ``predict`` off the event loop, at most ``concurrency`` calls at once.

Every runner offers ``submit(payload)`` and ``submit_many(payloads)``; awaiting them gives
``(True, output)`` or ``(False, exception)`` per payload, so user errors never unwind the loop.

``ThreadDispatcher`` (plain ``def predict``) is built to make the
thread hand-off cheap, because ``run_in_executor`` per request (a Future pair and a wake-up each
way) costs more than a small model's whole prediction:

- Requests go into one deque. ``concurrency`` worker threads drain it; a parked worker sleeps on
  its own lock and is woken by a single ``release`` only when nobody awake will get to the item.
- A worker finishes many items per hand-back: results collect in a list and return to the loop
  with one ``call_soon_threadsafe`` when the deque runs dry, after ``_FLUSH_AFTER`` seconds or
  ``_FLUSH_COUNT`` results, or at once when the last call was slow (then one hand-back is cheap
  next to the call, and holding a finished result back would only add latency).
- While calls are slow (or not yet measured) every submit wakes another parked worker, so
  ``concurrency`` calls overlap; while they are fast one worker usually does everything, which
  keeps threads from fighting over the GIL.

Models with ``predict_batch`` are served by ``batching.Batcher`` instead.

``AsyncRunner`` (``async def predict``) awaits on the loop, bounded by a semaphore.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

_SLOW_CALL = 0.0005  # seconds; a call this long is worth its own hand-back
_FLUSH_AFTER = 0.002  # seconds a finished result may wait for company
_FLUSH_COUNT = 256


def _no_wakeup_preemption() -> None:
    """Run this worker thread as SCHED_BATCH (Linux): same CPU share, but waking it does not
    preempt the event loop. Otherwise every wake-up on a busy core switches to a worker that
    then has to wait for the GIL the loop still holds, and back: two context switches for nothing.
    """
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass  # not Linux, or forbidden by a seccomp profile: slower hand-offs, same results


def _resolve(results: list) -> None:
    for future, outcome in results:
        if not future.done():
            future.set_result(outcome)


class ThreadDispatcher:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        predict: Callable[[Any], Any],
        concurrency: int,
    ) -> None:
        self._loop = loop
        self._items: deque = deque()
        self._mutex = threading.Lock()
        self._parked: list = []  # wake locks of sleeping workers
        self._awake = concurrency
        self._slow = True  # until a call is measured, assume it is slow: overlap eagerly
        self._stopping = False
        self._predict = predict
        for index in range(concurrency):
            wake = threading.Lock()
            wake.acquire()
            threading.Thread(target=self._work, args=(wake,), name=f"mlserve-predict-{index}", daemon=True).start()

    def submit(self, payload: Any) -> asyncio.Future:
        future = self._loop.create_future()
        with self._mutex:
            self._items.append((payload, future))
            if self._parked and (self._awake == 0 or self._slow):
                self._awake += 1
                self._parked.pop().release()
        return future

    async def submit_many(self, payloads: list) -> list:
        return [await future for future in [self.submit(p) for p in payloads]]

    def stop(self) -> None:
        with self._mutex:
            self._stopping = True
            while self._parked:
                self._parked.pop().release()

    # -- worker side ---------------------------------------------------------------------------

    def _park(self, wake) -> bool:
        """Sleep until woken; False when the dispatcher is stopping."""
        with self._mutex:
            if self._items:
                return True
            if self._stopping:
                return False
            self._awake -= 1
            self._parked.append(wake)
        wake.acquire()
        return not self._stopping

    def _hand_back(self, results: list) -> None:
        try:
            self._loop.call_soon_threadsafe(_resolve, results)
        except RuntimeError:
            pass  # the loop is closed: the process is exiting and nobody waits for these

    def _wake_helper(self) -> None:
        with self._mutex:
            if self._parked and self._items:
                self._awake += 1
                self._parked.pop().release()

    def _work(self, wake) -> None:
        _no_wakeup_preemption()
        run = self._run_one
        items = self._items
        done: list = []
        first_done = 0.0
        while True:
            if not items:
                if done:
                    self._hand_back(done)
                    done = []
                if not self._park(wake):
                    return
                continue
            started = perf_counter()
            finished = run(items)
            if not finished:  # another worker took the item first
                continue
            now = perf_counter()
            slow = now - started > _SLOW_CALL
            self._slow = slow
            if not done:
                first_done = now
            done.extend(finished)
            if slow or now - first_done > _FLUSH_AFTER or len(done) >= _FLUSH_COUNT:
                self._hand_back(done)
                done = []
            if slow and items and self._parked:
                self._wake_helper()

    def _run_one(self, items: deque) -> list:
        try:
            payload, future = items.popleft()
        except IndexError:  # another worker took it
            return []
        try:
            return [(future, (True, self._predict(payload)))]
        except BaseException as exc:  # noqa: BLE001 - user code; reported as a 500, never fatal
            return [(future, (False, exc))]


class AsyncRunner:
    needs_task = True  # user code on the loop may ask for its task (asyncio.timeout, current_task)

    def __init__(self, predict: Callable[[Any], Any], concurrency: int) -> None:
        self._predict = predict
        self._slots = asyncio.Semaphore(concurrency)

    async def submit(self, payload: Any) -> tuple:
        async with self._slots:
            try:
                return True, await self._predict(payload)
            except asyncio.CancelledError:
                raise  # the server is stopping or the client left: not the model's error
            except BaseException as exc:  # noqa: BLE001 - user code, even SystemExit: a 500, never fatal
                return False, exc

    async def submit_many(self, payloads: list) -> list:
        return list(await asyncio.gather(*(self.submit(p) for p in payloads)))

    def stop(self) -> None:
        pass
