"""``python -m bench``: every case in one go, against the same broker, with the same load.

Prints a table, writes it as JSON to ``bench/results/`` and plots latency against offered
rate for the bridge and the naive receiver. Loopback only, bounded request counts, a unique
exchange that is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import orjson

from bench import load
from bridge.amqp.topology import Topology, declare, delete, receiver_topology, unrouted_name
from bridge.core.contract import webhook_envelope
from bridge.core.records import deliveries_stream
from tests.support.procstat import proc_status
from tests.support.rabbit_node import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FIXTURE = ROOT / "bridge" / "fixtures" / "order-despatched.json"
API_KEY = "bench-key"
SWEEP_RATES = (250, 500, 1000, 2000, 3000, 4000, 5000)
FIXED_RATE = 1000
E2E_RATE = 500
PREFETCH = 32

Result = dict[str, Any]


class Plan:
    """How long each part runs; ``--quick`` shrinks everything for a smoke run."""

    def __init__(self, quick: bool, body: Path) -> None:
        self.body = body
        scale = 0.25 if quick else 1.0
        self.warmup = 2.0 * scale
        self.saturate = 5.0 * scale
        self.fixed = 4.0 * scale
        self.sweep = 3.0 * scale
        self.rounds = 3
        self.ceiling_messages = int(25_000 * scale)
        self.exchange = ""
        self.consume_messages = int(20_000 * scale)
        self.consume_rounds = 2
        self.e2e_seconds = 10.0 * scale
        self.leak_chunks = 8
        self.leak_chunk = int(25_000 * scale)
        self.leak_warm_chunks = 2


def machine(server_version: str, body: Path) -> Result:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "rabbitmq": server_version,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "body_bytes": body.stat().st_size,
    }


def compact_body(directory: Path) -> Path:
    """The despatched fixture as Mintsoft sends it (compact JSON), order ``ID`` first."""
    path = directory / "body.json"
    path.write_bytes(orjson.dumps(orjson.loads(FIXTURE.read_bytes())))
    return path


class Broker:
    """The orchestrator's own AMQP connection: topology, purges, preloading queues."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: aiormq.abc.AbstractConnection | None = None
        self.channel: aiormq.abc.AbstractChannel | None = None

    async def open(self) -> str:
        self.connection = await aiormq.connect(self.url)
        self.channel = await self.connection.channel()
        version = self.connection.server_properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    @property
    def ch(self) -> aiormq.abc.AbstractChannel:
        assert self.channel is not None
        return self.channel

    async def purge(self, queue: str) -> None:
        await self.ch.queue_purge(queue)

    async def declare_quorum(self, name: str) -> None:
        await self.ch.queue_declare(name, durable=True, arguments={"x-queue-type": "quorum"})

    async def preload(self, queue: str, body: bytes, count: int) -> None:
        """``count`` messages as the bridge publishes them, straight into ``queue``."""
        window = 512
        sent = 0
        while sent < count:
            batch = min(window, count - sent)
            publishes = []
            for i in range(batch):
                envelope = webhook_envelope(
                    "despatched", body, orjson.loads(body), f"preload-{sent + i}", time.time()
                )
                publishes.append(
                    self.ch.basic_publish(body, routing_key=queue, properties=envelope.properties())
                )
            await asyncio.gather(*publishes)
            sent += batch


class Process:
    """A server or consumer process of the benchmark, stopped with SIGTERM."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file = log.open("wb")
        self.popen = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace").strip()[-400:]

    def stop(self) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log_file.close()


async def wait_http(process: Process, url: str, timeout: float = 30.0) -> None:
    """Until ``url`` answers 200 (or, for a POST-only app, anything), or fail with its log."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited: {process.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name} did not come up in {timeout:.0f}s: {process.tail()}")


@contextlib.asynccontextmanager
async def running(
    name: str, command: list[str], env: dict[str, str], probe: str, logs: Path
) -> AsyncIterator[Process]:
    process = Process(name, command, env, logs / f"{name}.log")
    try:
        await wait_http(process, probe)
        yield process
    finally:
        process.stop()


def bridge_env(broker_url: str, exchange: str, port: int, logs: Path) -> dict[str, str]:
    return {
        "BRIDGE_AMQP_URL": broker_url,
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_SPOOL_PATH": str(logs / "spool.sqlite3"),
        # Off, as in the figures before the archive; bench.archive_bench measures its cost.
        "BRIDGE_ARCHIVE": "false",
    }


def bridge_command() -> list[str]:
    return [sys.executable, "-m", "bridge", "serve"]


class Server:
    """One HTTP case under test: its process and the URL webhooks are POSTed to."""

    def __init__(self, name: str, process: Process, url: str) -> None:
        self.name = name
        self.process = process
        self.url = url
        self.saturated: list[Result] = []
        self.fixed: list[Result] = []
        self.sweep: list[Result] = []


def median_round(rounds: list[Result], key: str) -> Result:
    """The round with the median ``key`` (rounds interleave with the other cases, so one
    disturbed by a neighbour on this shared machine does not decide the figure)."""
    ordered = sorted(rounds, key=lambda r: float(r[key]))
    return {**ordered[len(ordered) // 2], "rounds": [round(r[key], 2) for r in rounds]}


async def http_cases(
    servers: list[Server], broker: Broker, unrouted: str, plan: Plan, ceiling: bool
) -> dict[str, Result]:
    """Saturation, latency at the fixed rate, and the sweep, in interleaved rounds."""
    for server in servers:
        await load.saturate(server.url, plan.body, plan.warmup)
    await broker.purge(unrouted)
    ceilings: list[Result] = []
    for index in range(plan.rounds):
        print(f"bench: saturation round {index + 1}/{plan.rounds}", flush=True)
        for server in servers:
            before = proc_status(server.process.pid)
            result = await load.saturate(server.url, plan.body, plan.saturate)
            after = proc_status(server.process.pid)
            result["cpu_us_per_request"] = (
                (after["cpu_s"] - before["cpu_s"]) / max(result["requests"], 1) * 1e6
            )
            server.saturated.append(result)
            await broker.purge(unrouted)
        if ceiling:
            ceilings.append(await run_ceiling(broker.url, plan.exchange, plan))
            await broker.purge(unrouted)
    for index in range(plan.rounds):
        print(f"bench: {FIXED_RATE} requests/s round {index + 1}/{plan.rounds}", flush=True)
        for server in servers:
            server.fixed.append(
                await load.fixed_rate(server.url, plan.body, FIXED_RATE, plan.fixed)
            )
            await broker.purge(unrouted)
    print(f"bench: latency sweep {SWEEP_RATES}", flush=True)
    for rate in SWEEP_RATES:
        for server in servers:
            if server.name != "bare":
                server.sweep.append(await load.fixed_rate(server.url, plan.body, rate, plan.sweep))
                await broker.purge(unrouted)
    cases: dict[str, Result] = {}
    for server in servers:
        cases[server.name] = {
            "saturated": median_round(server.saturated, "rps"),
            "fixed": median_round(server.fixed, "p99_ms"),
            "sweep": server.sweep,
            "peak_rss_mb": proc_status(server.process.pid)["VmHWM"],
        }
    if ceilings:
        cases["ceiling"] = median_round(ceilings, "rate")
    return cases


async def leak_check(
    process: Process, url: str, broker: Broker, unrouted: str, plan: Plan
) -> Result:
    """RSS after each chunk of webhooks: none of it may grow once warmed up."""
    print(f"bench: bridge: leak check, {plan.leak_chunks * plan.leak_chunk} webhooks", flush=True)
    samples = []
    ok = 0
    for _ in range(plan.leak_chunks):
        burst = await load.burst(url, plan.body, plan.leak_chunk)
        ok += burst["ok"]
        await broker.purge(unrouted)
        samples.append(round(proc_status(process.pid)["VmRSS"], 1))
    warm = samples[plan.leak_warm_chunks - 1]
    growth = max(samples[plan.leak_warm_chunks :]) - warm
    return {
        "webhooks": plan.leak_chunks * plan.leak_chunk,
        "accepted": ok,
        "rss_mb_after_each_chunk": samples,
        "rss_mb_after_warmup": warm,
        "rss_mb_final": samples[-1],
        "growth_after_warmup_mb": round(growth, 1),
    }


async def run_ceiling(broker_url: str, exchange: str, plan: Plan) -> Result:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.ceiling",
        broker_url,
        exchange,
        str(plan.body),
        str(plan.ceiling_messages),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, _ = await process.communicate()
    result: Result = orjson.loads(out.splitlines()[-1])
    return result


async def run_consumer(kind: str, broker: Broker, queue: str, count: int, plan: Plan) -> Result:
    await broker.declare_quorum(queue)
    await broker.preload(queue, plan.body.read_bytes(), count)
    print(f"bench: consume: {kind}, {count} messages, prefetch {PREFETCH}", flush=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.consumers",
        kind,
        broker.url,
        queue,
        str(count),
        str(PREFETCH),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        await broker.ch.queue_delete(queue)
    result: Result = orjson.loads(out.splitlines()[-1])
    return result


def worker_config(path: Path, name: str, handler: str) -> Path:
    path.write_text(
        "[[subscriber]]\n"
        f'name = "{name}"\n'
        'events = ["despatched"]\n'
        f'handler = "{handler}"\n'
        'retry_delays = ["1s"]\n'
        f"prefetch = {PREFETCH}\n"
    )
    return path


def _read_result(path: Path) -> Result | None:
    if not path.exists():
        return None
    result: Result = orjson.loads(path.read_bytes())
    return result


async def wait_file(path: Path, process: Process, timeout: float) -> Result:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _read_result(path)
        if result is not None:
            return result
        if not process.alive():
            raise RuntimeError(f"{process.name} exited: {process.tail()}")
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{process.name}: no result in {timeout:.0f}s: {process.tail()}")


async def run_worker_consume(
    broker: Broker,
    exchange: str,
    name: str,
    count: int,
    logs: Path,
    plan: Plan,
    records: bool = True,
) -> Result:
    from bridge.amqp.topology import subscriber_topology

    topology = subscriber_topology(exchange, name, ("despatched",), (1000,))
    await declare(broker.ch, topology)
    try:
        await broker.preload(name, plan.body.read_bytes(), count)
        said = "" if records else ", delivery records off"
        print(f"bench: consume: worker, {count} messages, prefetch {PREFETCH}{said}", flush=True)
        out = logs / f"{name}.json"
        config = worker_config(logs / f"{name}.toml", name, "bench.handlers:noop")
        env = {
            "BRIDGE_AMQP_URL": broker.url,
            "BRIDGE_EXCHANGE": exchange,
            "BENCH_COUNT": str(count),
            "BENCH_OUT": str(out),
            "BRIDGE_RECORDS": "on" if records else "off",
        }
        command = [sys.executable, "-m", "bridge", "worker", "--config", str(config)]
        process = Process("worker-consume", command, env, logs / f"{name}.log")
        try:
            result = await wait_file(out, process, 120)
        finally:
            process.stop()
        return result
    finally:
        await delete(broker.ch, topology)


async def run_e2e(broker: Broker, broker_url: str, exchange: str, plan: Plan, logs: Path) -> Result:
    from bridge.amqp.topology import subscriber_topology

    name = f"{exchange}.e2e"
    topology = subscriber_topology(exchange, name, ("despatched",), (1000,))
    count = int(E2E_RATE * plan.e2e_seconds)
    out = logs / "e2e.json"
    config = worker_config(logs / "e2e.toml", name, "bench.handlers:latency")
    port = free_port()
    env = {
        "BRIDGE_AMQP_URL": broker_url,
        "BRIDGE_EXCHANGE": exchange,
        "BENCH_COUNT": str(count),
        "BENCH_OUT": str(out),
    }
    worker_command = [sys.executable, "-m", "bridge", "worker", "--config", str(config)]
    print(f"bench: end to end at {E2E_RATE} requests/s", flush=True)
    try:
        async with running(
            "bridge-e2e",
            bridge_command(),
            bridge_env(broker_url, exchange, port, logs),
            f"http://127.0.0.1:{port}/readyz",
            logs,
        ):
            worker = Process("worker-e2e", worker_command, env, logs / "worker-e2e.log")
            try:
                # The worker declares and binds its queue; wait for it before sending.
                deadline = time.monotonic() + 30
                while True:
                    try:
                        await broker.ch.queue_declare(name, passive=True)
                        break
                    except aiormq.exceptions.ChannelNotFoundEntity:
                        broker.channel = await broker.connection.channel()  # type: ignore[union-attr]
                        if time.monotonic() > deadline or not worker.alive():
                            raise RuntimeError(
                                f"worker never declared {name}: {worker.tail()}"
                            ) from None
                        await asyncio.sleep(0.2)
                url = f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={API_KEY}"
                sent = await load.fixed_rate(url, plan.body, E2E_RATE, plan.e2e_seconds)
                result = await wait_file(out, worker, 60)
            finally:
                worker.stop()
    finally:
        await delete(broker.ch, topology)
    latencies = sorted(result["latencies"])
    return {
        "rate": E2E_RATE,
        "messages": len(latencies),
        "http_p99_ms": sent["p99_ms"],
        "p50_ms": load.percentile(latencies, 50) * 1000,
        "p99_ms": load.percentile(latencies, 99) * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else float("nan"),
    }


async def bench(args: argparse.Namespace) -> Result:
    logs = Path(tempfile.mkdtemp(prefix="mintsoft-bench-"))
    plan = Plan(args.quick, compact_body(logs))
    broker_url = os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    broker = Broker(broker_url)
    try:
        version = await broker.open()
    except Exception as exc:
        sys.exit(f"bench: cannot reach RabbitMQ at 127.0.0.1:5672 ({exc}); run `make broker`")
    exchange = plan.exchange = f"bench.{uuid.uuid4().hex[:10]}"
    topology: Topology = receiver_topology(exchange)
    await declare(broker.ch, topology)
    unrouted = unrouted_name(exchange)
    results: Result = {"machine": machine(version, plan.body), "started": time.time(), "cases": {}}
    cases = results["cases"]
    results["logs"] = str(logs)
    only = set(args.only.split(",")) if args.only else None

    def wanted(part: str) -> bool:
        return only is None or part in only

    try:
        async with contextlib.AsyncExitStack() as stack:
            servers = []
            for name in ("bare", "naive", "bridge"):
                if not wanted(name):
                    continue
                port = free_port()
                url = f"http://127.0.0.1:{port}/webhooks/despatched"
                if name == "bridge":
                    command = bridge_command()
                    env = bridge_env(broker_url, exchange, port, logs)
                    url += f"?APIKEY={API_KEY}"
                    probe = f"http://127.0.0.1:{port}/readyz"
                else:
                    command = [sys.executable, "-m", "bench.servers", name, str(port)]
                    command += ["--url", broker_url, "--exchange", exchange]
                    env, probe = {}, url
                process = await stack.enter_async_context(running(name, command, env, probe, logs))
                servers.append(Server(name, process, url))
            if servers or wanted("ceiling"):
                cases.update(await http_cases(servers, broker, unrouted, plan, wanted("ceiling")))
            bridge = next((s for s in servers if s.name == "bridge"), None)
            if bridge is not None and wanted("leak"):
                results["leak"] = await leak_check(
                    bridge.process, bridge.url, broker, unrouted, plan
                )
        if wanted("consume"):
            kinds = ["raw", "faststream", "worker", "worker-no-records"]
            if importlib.util.find_spec("faststream") is None:
                kinds.remove("faststream")  # make install-bench adds it
            rounds: dict[str, list[Result]] = {kind: [] for kind in kinds}
            # Rounds interleave the kinds: on a shared, loaded machine each side of the
            # comparison sees the same load.
            for index in range(plan.consume_rounds):
                for kind in rounds:
                    queue = f"{exchange}.consume.{kind}.{index}"
                    if not kind.startswith("worker"):
                        result = await run_consumer(
                            kind, broker, queue, plan.consume_messages, plan
                        )
                    else:
                        result = await run_worker_consume(
                            broker,
                            exchange,
                            queue,
                            plan.consume_messages,
                            logs,
                            plan,
                            records=kind == "worker",
                        )
                    rounds[kind].append(result)
            consume: Result = {
                kind: median_round(done, "rate") for kind, done in rounds.items() if done
            }
            results["consume"] = consume
        if wanted("bodies"):
            from bench import bodies

            results["bodies"] = await bodies.compare(broker, logs, args.quick)
        if wanted("e2e"):
            results["e2e"] = await run_e2e(broker, broker_url, exchange, plan, logs)
    finally:
        with contextlib.suppress(Exception):
            await delete(broker.ch, topology)
        with contextlib.suppress(Exception):  # the workers declared it
            await broker.ch.queue_delete(deliveries_stream(exchange))
        await broker.close()
    results["seconds"] = time.time() - results["started"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (numbers rough)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated parts: bare,naive,ceiling,bridge,leak,consume,bodies,e2e",
    )
    args = parser.parse_args(argv)
    load.ensure_tools()
    import uvloop

    results = uvloop.run(bench(args))
    from bench import report

    report.publish(results, RESULTS)
    return 0
