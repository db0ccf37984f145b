"""Throughput of two receivers on a three-node RabbitMQ cluster against one receiver on a
single broker, measured in the same run: ``python -m bench.cluster_bench``.

Both brokers are private nodes started here from the installed rabbitmq-server with the
same settings (the shared broker on 5672 is not touched), so the ratio compares topologies,
not machines. Each request is a unique despatched order; every 200 is a confirmed publish
to a quorum queue (three replicas on the cluster, one on the single node).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load import percentile
from tests.support.ledger import Ledger, ledger_body, send_load
from tests.support.rabbit_cluster import RabbitCluster
from tests.support.rabbit_node import RabbitNode
from tests.support.serve_process import receivers

API_KEY = "bench-cluster-key"
KEY = {"APIKEY": API_KEY}


@dataclass(frozen=True)
class Round:
    requests: int
    ok: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds


async def _load(targets: Sequence[str], requests: int, concurrency: int) -> Round:
    """``requests`` unique webhooks spread evenly over ``targets``, ``concurrency`` in all."""
    books = [Ledger() for _ in targets]
    share = max(1, concurrency // len(targets))
    started = time.monotonic()
    await asyncio.gather(
        *(
            send_load(
                url, count=requests // len(targets), concurrency=share, params=KEY, ledger=book
            )
            for url, book in zip(targets, books, strict=True)
        )
    )
    seconds = time.monotonic() - started
    answers = [a for book in books for a in book.answers.values()]
    ok = [a.seconds for a in answers if a.status == 200]
    return Round(len(answers), len(ok), seconds, ok)


async def _measure(
    setups: Sequence[Sequence[tuple[str, ...]]], args: argparse.Namespace, logs: Path
) -> list[list[Round]]:
    """Rounds of each setup (receivers with their broker URL lists), interleaved round by
    round so that drift on a shared machine hits every setup alike."""
    with contextlib.ExitStack() as running:
        targets = []
        for index, url_lists in enumerate(setups):
            exchange = f"bench.{uuid.uuid4().hex[:8]}"
            folder = logs / f"setup-{index}"
            folder.mkdir()
            targets.append(running.enter_context(receivers(url_lists, exchange, API_KEY, folder)))
        for urls in targets:
            await _load(urls, args.warmup, args.concurrency)
        rounds: list[list[Round]] = [[] for _ in setups]
        for _ in range(args.rounds):
            for urls, done in zip(targets, rounds, strict=True):
                done.append(await _load(urls, args.requests, args.concurrency))
        return rounds


def _line(name: str, rounds: list[Round]) -> tuple[str, float]:
    rate = statistics.median(r.rate for r in rounds)
    latencies = sorted(x for r in rounds for x in r.latencies)
    p50 = percentile(latencies, 50) * 1000
    p99 = percentile(latencies, 99) * 1000
    failed = sum(r.requests - r.ok for r in rounds)
    text = (
        f"{name:<37} {rate:8.0f} req/s (median of {len(rounds)})  "
        f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  non-200 {failed}"
    )
    return text, rate


async def run(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    single = RabbitNode()
    cluster = RabbitCluster(size=3)
    try:
        print("starting a single private RabbitMQ node and a three-node cluster ...", flush=True)
        await asyncio.gather(asyncio.to_thread(single.start), asyncio.to_thread(cluster.start))
        n0, n1, n2 = cluster.urls
        one, two = await _measure([[(single.url,)], [(n0, n1, n2), (n1, n2, n0)]], args, logs)
    except BaseException:
        print(f"cluster_bench failed; the receivers' logs are in {logs}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(logs, ignore_errors=True)
    finally:
        await asyncio.gather(asyncio.to_thread(single.destroy), asyncio.to_thread(cluster.destroy))
    single_text, single_rate = _line("1 receiver, single broker", one)
    cluster_text, cluster_rate = _line("2 receivers, 3-node cluster (quorum)", two)
    print(
        f"cluster_bench: {args.requests} requests x {args.rounds} interleaved rounds, "
        f"{args.concurrency} in flight, {len(ledger_body('x' * 10, 1))}-byte body"
    )
    print(single_text)
    print(cluster_text)
    print(f"ratio cluster/single: {cluster_rate / single_rate:.2f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster_bench",
        description="two receivers on a 3-node RabbitMQ cluster vs one on a single broker",
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
