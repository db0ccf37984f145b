"""Handlers the benchmark gives ``mintsoft-bridge worker``.

``noop`` does nothing but note the time (and the process's CPU time) of the first and the
``BENCH_COUNT``-th call (then writes them to ``BENCH_OUT``); ``latency`` notes, per message,
the time from the bridge receiving the POST (``x-received-at``) to the handler being called.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from datetime import datetime
from typing import Any

import orjson

_count = int(os.environ.get("BENCH_COUNT", "0"))
_out = os.environ.get("BENCH_OUT", "")
_seen = 0
_first = 0.0
_cpu_first = 0.0
_sys_first = 0.0
_latencies: list[float] = []


def _finish(result: dict[str, Any]) -> None:
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(_out + ".tmp", "wb") as f:
        f.write(orjson.dumps(result))
    os.replace(_out + ".tmp", _out)


async def noop(message: Any) -> None:
    global _seen, _first, _cpu_first, _sys_first
    now = time.perf_counter()
    if _seen == 0:
        _first = now
        _cpu_first = time.process_time()
        _sys_first = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    _seen += 1
    if _seen == _count:
        seconds = now - _first
        cpu = time.process_time() - _cpu_first
        kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - _sys_first
        _finish(
            {
                "messages": _seen,
                "seconds": seconds,
                "rate": (_seen - 1) / seconds,
                "cpu_us_per_message": cpu / (_seen - 1) * 1e6,
                "kernel_share": kernel / cpu if cpu > 0 else 0.0,
            }
        )


def _headers(message: Any) -> dict[str, Any]:
    headers = getattr(message, "headers", None)
    return headers if isinstance(headers, dict) else {}


async def latency(message: Any) -> None:
    now = time.time()
    stamp = _headers(message).get("x-received-at")
    if isinstance(stamp, bytes):
        stamp = stamp.decode()
    if isinstance(stamp, str):
        received = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        _latencies.append(now - received)
    if len(_latencies) == _count:
        _finish({"latencies": _latencies})


async def noop_any(message: Any) -> None:
    """Nothing at all (the rate is measured by the orchestrator, from the queues)."""


async def sleep5ms_any(message: Any) -> None:
    """About the time of a quick call to an ERP on the same network."""
    await asyncio.sleep(0.005)
