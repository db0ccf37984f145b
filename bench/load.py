"""The load generators: wrk from Debian (saturation) and bench.openloop (fixed rate)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

LUA = Path(__file__).with_name("post.lua")
WRK_CONNECTIONS = 32


def ensure_tools() -> None:
    """Install wrk with apt when missing, saying so; exit with the fix if we can't."""
    missing = [tool for tool in ("wrk",) if shutil.which(tool) is None]
    if not missing:
        return
    command = ["apt-get", "install", "-y", "-q", *missing]
    if os.geteuid() != 0:
        command.insert(0, "sudo")
    print(f"bench: {' and '.join(missing)} not found; installing: {' '.join(command)}", flush=True)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0 or any(shutil.which(tool) is None for tool in missing):
        sys.exit(
            f"bench: could not install {' '.join(missing)} ({done.stderr.strip()[-200:]}); "
            f"run: sudo apt-get update && sudo apt-get install -y {' '.join(missing)}"
        )


async def _run(*command: str, env: dict[str, str] | None = None) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {err.decode().strip()[-300:]}")
    return out.decode()


async def saturate(url: str, body: Path, seconds: float, identical: bool = False) -> dict[str, Any]:
    """Requests/s with wrk, 32 connections on one thread, for ``seconds``; every request
    with its own order ID, or with ``identical`` the very same bytes each time."""
    out = await _run(
        "wrk",
        "-t1",
        f"-c{WRK_CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        env={"BENCH_BODY": str(body), "BENCH_IDENTICAL": "1" if identical else "0"},
    )
    line = next(line for line in out.splitlines() if line.startswith("{"))
    data: dict[str, Any] = orjson.loads(line)
    return {
        "requests": data["requests"],
        "rps": data["requests"] / (data["duration_us"] / 1e6),
        "p50_ms": data["p50_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "errors": data["socket_errors"] + data["non2xx"],
    }


async def fixed_rate(
    url: str, body: Path, rate: int, seconds: float, trace: Path | None = None
) -> dict[str, Any]:
    """Latency at ``rate`` requests/s offered open-loop (bench.openloop), p50/p99 in ms;
    ``trace`` receives every request's start and latency."""
    extra = ("--trace", str(trace)) if trace is not None else ()
    out = await _run(
        sys.executable, "-m", "bench.openloop", url, str(body), str(rate), f"{seconds:g}", *extra
    )
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return result


async def burst(url: str, body: Path, count: int) -> dict[str, Any]:
    """``count`` requests back to back on 64 connections (for the leak check)."""
    out = await _run(sys.executable, "-m", "bench.openloop", url, str(body), "0", str(count))
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    return {"requests": count, "ok": count - result["errors"]}


def percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]
