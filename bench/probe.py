"""Run a server with probes of where its latency tail comes from:
``python -m bench.probe MODULE [ARGS...]`` (``bridge serve``, ``bench.servers naive PORT``).

The probes, all timed on ``time.perf_counter`` (CLOCK_MONOTONIC: the same clock in every
process of this machine, so their events line up with a load generator's requests):

- event-loop lag: a task that asks to wake every millisecond notes each wake-up later than
  :data:`LAG_NOTED` seconds (when the loop was due to wake it, and how late it was);
- garbage collections (``gc.callbacks``): start, duration and generation of each;
- the access log's writes (the bridge's ``TurnBatchingStreamHandler.flush``), when it has
  one: start and duration of each.

``SIGUSR1`` writes what was noted since the last one to ``$BENCH_PROBE_OUT`` (JSON) and
starts afresh. ``$BENCH_GC_GEN0``, when set, replaces the collector's generation-0 threshold
once start-up is done (to measure another one than :mod:`bridge.core.heap`'s). Nothing else
changes in the server (the shipped code, plus a wake-up a millisecond). A bench tool, not
part of the bridge.
"""

from __future__ import annotations

import asyncio
import gc
import os
import runpy
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

import orjson
import uvloop

LAG_INTERVAL = 0.001
LAG_NOTED = 0.002

_lag: list[tuple[float, float]] = []
_gc: list[tuple[float, float, int]] = []
_flushes: list[tuple[float, float]] = []
_gc_started = 0.0
_wakeups = 0


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        _gc.append((_gc_started, time.perf_counter() - _gc_started, info["generation"]))


async def _lag_probe() -> None:
    global _wakeups
    while True:
        due = time.perf_counter() + LAG_INTERVAL
        await asyncio.sleep(LAG_INTERVAL)
        _wakeups += 1
        late = time.perf_counter() - due
        if late > LAG_NOTED:
            _lag.append((due, late))


def _dump(signum: int, frame: Any) -> None:
    global _wakeups
    out = os.environ["BENCH_PROBE_OUT"]
    data = {
        "lag": list(_lag),
        "gc": list(_gc),
        "flushes": list(_flushes),
        "wakeups": _wakeups,
        "at": time.perf_counter(),
    }
    with open(out + ".tmp", "wb") as f:
        f.write(orjson.dumps(data))
    os.replace(out + ".tmp", out)
    _lag.clear()
    _gc.clear()
    _flushes.clear()
    _wakeups = 0


def _probe_flushes() -> None:
    """Time the bridge's access-log writes (one per loop turn with lines to write)."""
    try:
        from bridge.core.logs import TurnBatchingStreamHandler
    except ImportError:
        return
    flush = TurnBatchingStreamHandler.flush

    def timed(self: TurnBatchingStreamHandler) -> None:
        started = time.perf_counter()
        flush(self)
        _flushes.append((started, time.perf_counter() - started))

    TurnBatchingStreamHandler.flush = timed  # type: ignore[method-assign]


def _gen0_after_start_up(gen0: int) -> None:
    from bridge.core import heap

    settle = heap.settle

    def settle_then_set() -> int:
        frozen = settle()
        gc.set_threshold(gen0, *gc.get_threshold()[1:])
        return frozen

    heap.settle = settle_then_set  # type: ignore[assignment]


def main() -> None:
    module, *args = sys.argv[1:]
    run = uvloop.run

    def probed_run(coro: Coroutine[Any, Any, Any], **kwargs: Any) -> Any:
        async def with_probe() -> Any:
            probe = asyncio.create_task(_lag_probe())
            try:
                return await coro
            finally:
                probe.cancel()

        return run(with_probe(), **kwargs)

    uvloop.run = probed_run  # type: ignore[assignment]
    gc.callbacks.append(_on_gc)
    if os.environ.get("BENCH_GC_GEN0"):
        _gen0_after_start_up(int(os.environ["BENCH_GC_GEN0"]))
    signal.signal(signal.SIGUSR1, _dump)
    _probe_flushes()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
