"""``python -m bench.tail``: where the latency tail at a fixed rate comes from.

The naive receiver, the bridge as shipped and the bridge with the archive off run under
:mod:`bench.probe` (event-loop lag, garbage collections, access-log writes) and get the
same open-loop rate (``--rate``, 1,000 requests/s by default) in alternating rounds; every
request's start and latency are kept (``bench.openloop --trace``). For each server it prints:

- p50/p99/max, and of the requests slower than the p99, the share that overlapped a loop
  stall over 2 ms, a garbage collection (any; of generation 2), an access-log write over
  1 ms (events on the same monotonic clock as the requests);
- the loop's stalls (count, worst, total), the collections per generation (count, worst,
  total pause), the log writes (worst, total);
- for the bridges, the broker's confirm latency over the round (``bridge_publish_seconds``
  from ``/metrics``: bucket bounds of its p50 and p99): an archive's stream confirming a
  publish only with its write batch shows here, apart from the HTTP side;
- with ``--profile``, a py-spy profile of each bridge during one round at that rate (not
  saturated): the functions with the most samples, own and inclusive.

Loopback only, bounded, exchanges of its own deleted at the end; about 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import load, shipped
from bench.run import Broker, start_server

Result = dict[str, Any]
NAMES = ("naive", "bridge", "bridge-archive-off")
STALL = 0.002
SLOW_FLUSH = 0.001


def _overlaps(start: float, end: float, events: list[tuple[float, float]]) -> bool:
    """Whether [start, end] meets any (event start, duration), events sorted by start."""
    index = bisect.bisect_right(events, (end, float("inf")))
    for event_start, duration in reversed(events[max(0, index - 50) : index]):
        if event_start + duration >= start:
            return True
    return False


def analyse(trace: list[list[float]], probe: Result) -> Result:
    """The tail of one run against what the probe saw meanwhile."""
    latencies = sorted(latency for _, latency in trace)
    p99 = load.percentile(latencies, 99)
    slow = [(s, s + lat) for s, lat in trace if lat >= p99]
    lag = sorted((s, d) for s, d in probe["lag"])
    gcs = sorted((s, d) for s, d, _ in probe["gc"])
    gen2 = sorted((s, d) for s, d, g in probe["gc"] if g == 2)
    flushes = sorted((s, d) for s, d in probe["flushes"] if d > SLOW_FLUSH)

    def share(events: list[tuple[float, float]]) -> float:
        if not slow:
            return 0.0
        return sum(_overlaps(a, b, events) for a, b in slow) / len(slow)

    by_gen: dict[int, list[float]] = collections.defaultdict(list)
    for _, duration, generation in probe["gc"]:
        by_gen[generation].append(duration)
    all_flushes = [d for _, d in probe["flushes"]]
    return {
        "requests": len(trace),
        "p50_ms": load.percentile(latencies, 50) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else None,
        "slow": len(slow),
        "slow_with_stall": share(lag),
        "slow_with_gc": share(gcs),
        "slow_with_gc2": share(gen2),
        "slow_with_slow_flush": share(flushes),
        "stalls": len(lag),
        "stall_max_ms": max((d for _, d in lag), default=0.0) * 1000,
        "stall_total_ms": sum(d for _, d in lag) * 1000,
        "gc": {
            str(g): {
                "count": len(d),
                "max_ms": max(d) * 1000,
                "total_ms": sum(d) * 1000,
            }
            for g, d in sorted(by_gen.items())
        },
        "flush_max_ms": max(all_flushes, default=0.0) * 1000,
        "flush_total_ms": sum(all_flushes) * 1000,
        "flushes": len(all_flushes),
    }


async def histogram(base: str, name: str = "bridge_publish_seconds") -> dict[float, float]:
    """Cumulative bucket counts of a histogram on ``base``/metrics, by upper bound."""
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        text = await response.text()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_percentile(before: dict[float, float], after: dict[float, float], pct: float) -> Any:
    """The upper bound of the bucket holding the ``pct`` percentile of what was added."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if not total:
        return None
    for bound, count in zip(bounds, counts, strict=True):
        if count >= total * pct / 100:
            return bound * 1000 if bound != float("inf") else "over the last bucket"
    return None


async def profile(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        _py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        "400",
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def _py_spy() -> str:
    return str(Path(sys.executable).with_name("py-spy"))


def summarise_profile(path: Path, top: int = 15) -> Result:
    """Own and inclusive sample shares of the functions in a py-spy raw (collapsed) file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [f.split(" (", 1)[0] + " " + _where(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "samples": total,
        "own": [(f, round(n / total, 3)) for f, n in own.most_common(top)] if total else [],
        "inclusive": [(f, round(n / total, 3)) for f, n in inclusive.most_common(top * 3)]
        if total
        else [],
    }


def _where(frame: str) -> str:
    # "name (path/to/file.py:123)" -> "file.py"
    inside = frame.rsplit(" (", 1)[-1].rstrip(")")
    return "(" + inside.split(":")[0].rsplit("/", 1)[-1] + ")"


async def run(rate: int, seconds: float, rounds: int, with_profile: bool) -> Result:
    logs = Path(tempfile.mkdtemp(prefix="mintsoft-bench-tail-"))
    from bench.bodies import non_ascii_body

    body = non_ascii_body(logs)
    broker = Broker(os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    await broker.open()
    results: Result = {
        "rate": rate,
        "seconds": seconds,
        "load_average_at_start": shipped.load_average(),
    }
    runs: dict[str, list[Result]] = {name: [] for name in NAMES}
    profiles: Result = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            servers = {}
            for name in NAMES:
                out = logs / f"probe-{name}.json"
                servers[name] = (
                    await start_server(stack, name, broker, logs, probe_out=out),
                    out,
                )
            for server, _ in servers.values():
                await load.saturate(server.url, body, 1)
                await broker.purge(*server.purge)
            order = list(servers.values())
            for index in range(rounds):
                print(f"tail: round {index + 1}/{rounds} at {rate}/s", flush=True)
                for server, out in order if index % 2 == 0 else order[::-1]:
                    base = server.url.split("/webhooks", 1)[0]
                    bridge = server.name.startswith("bridge")
                    before = await histogram(base) if bridge else {}
                    os.kill(server.pid, signal.SIGUSR1)  # start afresh
                    spy = None
                    if with_profile and bridge and index == 0:
                        spy = await profile(server.pid, seconds, logs / f"{server.name}.spy")
                    trace = logs / f"trace-{server.name}-{index}.json"
                    await load.fixed_rate(server.url, body, rate, seconds, trace)
                    out.unlink(missing_ok=True)
                    os.kill(server.pid, signal.SIGUSR1)
                    probed = await _written(out)
                    result = analyse(orjson.loads(trace.read_bytes()), probed)
                    result["load_average"] = shipped.load_average()
                    if bridge:
                        after = await histogram(base)
                        result["confirm_p50_ms_bucket"] = bucket_percentile(before, after, 50)
                        result["confirm_p99_ms_bucket"] = bucket_percentile(before, after, 99)
                    runs[server.name].append(result)
                    if spy is not None:
                        await spy.wait()
                        spyfile = logs / f"{server.name}.spy"
                        if spyfile.exists():
                            profiles[server.name] = summarise_profile(spyfile)
                    await broker.purge(*server.purge)
    finally:
        await broker.close()
    results["runs"] = runs
    results["profiles"] = profiles
    results["logs"] = str(logs)
    return results


async def _written(path: Path, timeout: float = 10.0) -> Result:
    """What the probe wrote to ``path`` on SIGUSR1 (it writes between two bytecodes)."""
    deadline = time.monotonic() + timeout
    # Another process writes it: there is nothing to await but its appearance.
    while not path.exists():  # noqa: ASYNC240
        if time.monotonic() > deadline:
            raise RuntimeError(f"the probe wrote nothing to {path}")
        await asyncio.sleep(0.05)
    written: Result = orjson.loads(path.read_bytes())  # noqa: ASYNC240
    return written


def table(results: Result) -> str:
    lines = [
        f"open loop at {results['rate']}/s, {results['seconds']:g} s a round; load average "
        f"{results['load_average_at_start']:.1f} at the start",
        "",
        "| server, round | load | p50 ms | p99 ms | max ms | slow: with a stall | with a GC "
        "| with a gen-2 GC | with a log write >1 ms | stalls >2 ms (max, total ms) "
        "| GC gen0/1/2 count (max ms) | confirm p50/p99 ms (bucket) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for name, rounds in results["runs"].items():
        for index, r in enumerate(rounds):
            gc = "/".join(
                f"{r['gc'].get(g, {}).get('count', 0)} ({r['gc'].get(g, {}).get('max_ms', 0):.1f})"
                for g in ("0", "1", "2")
            )
            confirm = (
                f"{r.get('confirm_p50_ms_bucket')}/{r.get('confirm_p99_ms_bucket')}"
                if "confirm_p50_ms_bucket" in r
                else "-"
            )
            lines.append(
                f"| {name} {index + 1} | {r['load_average']:.1f} | {r['p50_ms']:.2f} "
                f"| {r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['slow_with_stall']:.0%} "
                f"| {r['slow_with_gc']:.0%} | {r['slow_with_gc2']:.0%} "
                f"| {r['slow_with_slow_flush']:.0%} "
                f"| {r['stalls']} ({r['stall_max_ms']:.1f}, {r['stall_total_ms']:.0f}) "
                f"| {gc} | {confirm} |"
            )
    for name, prof in results.get("profiles", {}).items():
        lines += ["", f"py-spy, {name} at {results['rate']}/s: {prof['samples']} samples; own:"]
        lines += [f"  {share:6.1%} {frame}" for frame, share in prof["own"]]
        lines.append("  inclusive (bridge and aiohttp frames):")
        lines += [
            f"  {share:6.1%} {frame}"
            for frame, share in prof["inclusive"]
            if "bridge" in frame or "web_" in frame or "logs" in frame or "pipeline" in frame
        ][:20]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tail", description=__doc__)
    parser.add_argument("--rate", type=int, default=shipped.FIXED_RATE)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="py-spy each bridge, round 1")
    args = parser.parse_args(argv)
    import uvloop

    results = uvloop.run(run(args.rate, args.seconds, args.rounds, args.profile))
    print(table(results))
    out = Path(results["logs"]) / "tail.json"
    out.write_bytes(orjson.dumps(results))
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
