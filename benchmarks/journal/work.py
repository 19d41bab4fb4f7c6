"""The journal work the benchmark times (imported by run.py, and by its new processes: nothing
heavier than mlserve.journal here)."""

from __future__ import annotations

import time


def deploy_work(where) -> float:
    """What a deploy does to the journal around the adapter's steps: open for writing, lock the
    target, add the release, record adapter data, finish it as serving, unlock."""
    from mlserve.journal import open_state
    started = time.perf_counter()
    state = open_state(where)
    with state.lock("bench"):
        seq = state.add_release("bench", "r-x", "local", "h", {"name": "bench"}, "http://x")
        state.update_extra(seq, {"pid": 1})
        state.finish_release(seq, "serving")
    state.close()
    return time.perf_counter() - started


def read_work(where) -> float:
    """What status and plan read: open read-only, the current release, the history."""
    from mlserve.journal import open_state
    started = time.perf_counter()
    state = open_state(where, read_only=True)
    state.current("bench")
    state.releases("bench")
    state.close()
    return time.perf_counter() - started
