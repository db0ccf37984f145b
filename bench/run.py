"""``python -m bench``: the bridge as shipped against the naive receiver (:mod:`bench.shipped`),
and with ``--all`` (or ``--only``) the other cases, against the same broker and load.

Prints a table, writes it as JSON to ``bench/results/`` and plots latency against offered
rate for the bridge and the naive receiver. Loopback only, bounded request counts, unique
exchanges that are deleted at the end. ``--quick`` finishes in about a minute (a smoke run:
its ratios are rough).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import platform
import signal
import socket
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

from bench import load, shipped
from bench.broker_cpu import broker_cpu
from bridge.amqp.topology import (
    ArchiveRetention,
    Topology,
    declare,
    delete,
    receiver_topology,
    unrouted_name,
)
from bridge.core.contract import webhook_envelope
from bridge.core.records import deliveries_stream
from bridge.worker.subscribers import DEFAULT_RETRY_DELAYS, Subscriber, delay_ms
from tests.support.procstat import proc_status
from tests.support.rabbit_node import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FIXTURE = ROOT / "bridge" / "fixtures" / "order-despatched.json"
API_KEY = "bench-key"
E2E_RATE = 500
PREFETCH = 32

Result = dict[str, Any]


class Plan:
    """How long each part runs; ``--quick`` shrinks everything for a smoke run."""

    def __init__(self, quick: bool, body: Path, ascii_body: Path, rate: int = 1000) -> None:
        self.body = body
        self.rate = rate
        self.ascii_body = ascii_body
        scale = 0.25 if quick else 1.0
        self.quick = quick
        self.warmup = 1.0 if quick else 2.0
        self.saturate = 2.0 if quick else 5.0
        self.fixed = 2.0 if quick else 5.0
        self.sweep = 0.0 if quick else 3.0
        self.rounds = 3 if quick else 5
        self.body_pairs = 2 if quick else 6
        self.ceiling_messages = int(25_000 * scale)
        self.exchange = ""
        self.consume_messages = int(20_000 * scale)
        self.consume_rounds = 3 if quick else 5
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

    async def purge(self, *queues: str) -> None:
        for queue in queues:
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


def bridge_env(
    broker_url: str, exchange: str, port: int, logs: Path, archive: bool = True
) -> dict[str, str]:
    """``serve`` as shipped (archive on, spool on, access log on), or the archive off."""
    return {
        "BRIDGE_AMQP_URL": broker_url,
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_API_KEYS": API_KEY,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_SPOOL_PATH": str(logs / f"spool-{port}.sqlite3"),
        "BRIDGE_ARCHIVE": "true" if archive else "false",
    }


def bridge_command() -> list[str]:
    return [sys.executable, "-m", "bridge", "serve"]


SERVER_NAMES = shipped.SERVER_NAMES
HEADLINE = ("naive", "bridge", "bridge-archive-off", "ascii", "consume")
"""The default parts: the servers of the headline, the ASCII twin of the body, and the
worker (records on and off) beside plain aio-pika and FastStream consumers."""


def median_round(rounds: list[Result], key: str) -> Result:
    """The round with the median ``key`` (rounds interleave with the other cases, so one
    disturbed by a neighbour on this shared machine does not decide the figure)."""
    ordered = sorted(rounds, key=lambda r: float(r[key]))
    return {**ordered[len(ordered) // 2], "rounds": [round(r[key], 2) for r in rounds]}


CONSUME_PAIRS = (
    ("records off/raw", "worker-no-records", "raw"),
    ("records on/raw", "worker", "raw"),
    ("records on/off", "worker", "worker-no-records"),
)
"""The consumption comparisons: (what, numerator kind, denominator kind) of messages/s."""


def paired_ratios(rounds: dict[str, list[Result]]) -> Result:
    """Per comparison, the ratio of the two kinds' rates in each round (they ran one after
    the other, under the same load), their median and their range: a round disturbed by a
    neighbour moves one ratio, not the figure."""
    out: Result = {}
    for what, top, bottom in CONSUME_PAIRS:
        pairs = zip(rounds.get(top, []), rounds.get(bottom, []), strict=False)
        ratios = [a["rate"] / b["rate"] for a, b in pairs if b["rate"]]
        if ratios:
            ordered = sorted(ratios)
            middle = len(ordered) // 2
            median = (
                ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
            )
            out[what] = {
                "rounds": [round(r, 3) for r in ratios],
                "median": median,
                "low": ordered[0],
                "high": ordered[-1],
            }
    return out


async def records_per_message(broker: Broker, stream: str, records: int) -> Result:
    """Read the deliveries stream from its start until ``records`` delivery records were
    seen (at most 30 s): how many messages carried them (the worker publishes the records
    of one channel's loop turn as one message)."""
    connection = await aiormq.connect(broker.url)
    seen = {"messages": 0, "records": 0}
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1000)
        done = asyncio.Event()

        async def take(message: aiormq.abc.DeliveredMessage) -> None:
            seen["messages"] += 1
            seen["records"] += message.body.count(b"\n") + 1
            assert message.delivery_tag is not None
            await channel.basic_ack(message.delivery_tag)
            if seen["records"] >= records:
                done.set()

        await channel.basic_consume(stream, take, arguments={"x-stream-offset": "first"})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await done.wait()
    finally:
        await connection.close()
    messages = seen["messages"]
    return {**seen, "per_message": seen["records"] / messages if messages else None}


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the workers' metrics ports)."""
    while True:
        first = free_port()
        with contextlib.ExitStack() as held:
            try:
                for offset in range(1, count):
                    probe = held.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", first + offset))
            except OSError:
                continue
        return first


SUBSCRIBER_EVENTS = ("*",)
"""The headline's subscriber takes every order event, as a real one taking all events does."""


def subscriber(exchange: str) -> Subscriber:
    """The one subscriber bound to every headline server's exchange: a plain subscriber
    (quorum queue ``<exchange>.subscriber``, the default retry ladder, its DLQ) as the
    worker declares it, so each server's publish is confirmed by a real subscriber's queue."""
    return Subscriber(
        name=f"{exchange}.subscriber",
        events=SUBSCRIBER_EVENTS,
        retry_delays_ms=tuple(delay_ms(d) for d in DEFAULT_RETRY_DELAYS),
        handler="bench.handlers:noop",
    )


SHIPPED = ("bridge", "bridge-2-workers", "bridge-before")
"""The servers run as shipped: the archive on."""


def server_topology(name: str, exchange: str) -> Topology:
    """What ``name``'s exchange routes to: for every server the same subscriber's quorum
    queue (:func:`subscriber`); for a bridge as shipped also the archive stream; for a
    bridge its delivery records' stream too (``serve`` declares it; listed so it is deleted)."""
    retention = ArchiveRetention() if name in SHIPPED else None
    deliveries = ArchiveRetention() if name.startswith("bridge") else None
    own = subscriber(exchange)
    return receiver_topology(exchange, retention, deliveries) + own.topology(exchange)


def routes(name: str) -> str:
    """Where ``name``'s webhooks go (each must confirm there before the 200), in words."""
    queue = "the subscriber's quorum queue"
    return queue + (" + the archive stream" if name in SHIPPED else "")


def purged(name: str, exchange: str) -> tuple[str, ...]:
    """The queues emptied between rounds (a stream cannot be purged: it keeps its
    retention, as in production)."""
    return (subscriber(exchange).name, unrouted_name(exchange))


async def start_server(
    stack: contextlib.AsyncExitStack,
    name: str,
    broker: Broker,
    logs: Path,
    probe_out: Path | None = None,
    before: Path | None = None,
) -> shipped.Served:
    """``name`` on a free port with an exchange of its own (declared here, deleted on exit);
    with ``probe_out``, under :mod:`bench.probe`, which writes there on SIGUSR1."""
    exchange = f"bench.{uuid.uuid4().hex[:10]}"
    topology = server_topology(name, exchange)
    await declare(broker.ch, topology)

    async def forget() -> None:
        with contextlib.suppress(Exception):
            await delete(broker.ch, topology)

    stack.push_async_callback(forget)
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={API_KEY}"
    if name.startswith("bridge"):
        command = bridge_command()
        env = bridge_env(broker.url, exchange, port, logs, archive=name != "bridge-archive-off")
        probe = f"http://127.0.0.1:{port}/readyz"
        if name == "bridge-2-workers":
            command += ["--workers", "2"]
            env["BRIDGE_METRICS_PORT"] = str(free_ports(2))
        if name == "bridge-before" and before is not None:
            # Another checkout's bridge package first on the path (not this one's).
            code = f"import sys; sys.path.insert(0, {str(before)!r}); from bridge.cli import main; "
            command = [sys.executable, "-c", code + "sys.exit(main(['serve']))"]
    else:
        command = [sys.executable, "-m", "bench.servers", name, str(port)]
        command += ["--url", broker.url, "--exchange", exchange]
        env, probe = {}, url
    if probe_out is not None:
        command = [sys.executable, "-m", "bench.probe", *command[2:]]
        env = {**env, "BENCH_PROBE_OUT": str(probe_out)}
    process = await stack.enter_async_context(running(name, command, env, probe, logs))
    return shipped.Served(name, process.pid, url, purged(name, exchange), routes(name))


async def http_cases(
    servers: dict[str, shipped.Served], broker: Broker, plan: Plan, ascii: bool
) -> Result:
    """Saturation and the fixed rate, in rounds whose server order alternates."""

    async def purge() -> None:
        for server in servers.values():
            await broker.purge(*server.purge)

    for server in servers.values():
        await load.saturate(server.url, plan.body, plan.warmup)
    await purge()
    ascii_rounds: list[Result] = []
    loads: list[float] = []
    order = list(servers.values())
    bridge = servers.get("bridge")
    for index in range(plan.rounds):
        turn = order if index % 2 == 0 else order[::-1]
        print(f"bench: round {index + 1}/{plan.rounds}, saturated", flush=True)
        for server in turn:
            server.saturated.append(await shipped.saturate(server, plan.body, plan.saturate))
            loads.append(server.saturated[-1]["load_average"])
            await purge()
        if ascii and bridge is not None:
            ascii_rounds.append(
                await shipped.paired_bodies(bridge, plan.body, plan.ascii_body, plan.body_pairs)
            )
            loads.append(ascii_rounds[-1]["load_average"])
            await purge()
        print(f"bench: round {index + 1}/{plan.rounds}, {plan.rate}/s", flush=True)
        for server in turn:
            server.fixed.append(await shipped.fixed(server, plan.body, plan.fixed, plan.rate))
            loads.append(server.fixed[-1]["load_average"])
            await purge()
    if plan.sweep:
        print(f"bench: latency sweep {shipped.SWEEP_RATES}", flush=True)
        for rate in shipped.SWEEP_RATES:
            for server in order:
                if server.name in ("naive", "bridge"):
                    server.sweep.append(await shipped.fixed(server, plan.body, plan.sweep, rate))
                    await purge()
    headline: Result = {
        "cases": shipped.collect(servers, ascii_rounds),
        "ratios": shipped.ratios(servers, ascii_rounds),
        "load_averages": loads,
        "fixed_rate": plan.rate,
    }
    return headline


async def leak_check(server: shipped.Served, broker: Broker, plan: Plan) -> Result:
    """RSS after each chunk of webhooks: none of it may grow once warmed up."""
    print(f"bench: bridge: leak check, {plan.leak_chunks * plan.leak_chunk} webhooks", flush=True)
    samples = []
    ok = 0
    for _ in range(plan.leak_chunks):
        burst = await load.burst(server.url, plan.body, plan.leak_chunk)
        ok += burst["ok"]
        await broker.purge(*server.purge)
        samples.append(round(proc_status(server.pid)["VmRSS"], 1))
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
    broker_before = broker_cpu()
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        broker_after = broker_cpu()
        await broker.ch.queue_delete(queue)
    result: Result = orjson.loads(out.splitlines()[-1])
    result["broker_us_per_message"] = _per_message(broker_before, broker_after, count)
    return result


def _per_message(before: float | None, after: float | None, count: int) -> float | None:
    """Microseconds of the broker's CPU per message over a consumer's run (its start and
    stop included; on a shared broker, other clients' work too)."""
    if before is None or after is None or not count:
        return None
    return (after - before) / count * 1e6


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
        broker_before = broker_cpu()
        process = Process("worker-consume", command, env, logs / f"{name}.log")
        try:
            result = await wait_file(out, process, 120)
        finally:
            process.stop()
        result["broker_us_per_message"] = _per_message(broker_before, broker_cpu(), count)
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


ALL_PARTS = (*HEADLINE, "bare", "bridge-2-workers", "ceiling", "leak", "consume", "bodies", "e2e")


async def bench(args: argparse.Namespace) -> Result:
    from bench.bodies import ascii_twin, non_ascii_body

    logs = Path(tempfile.mkdtemp(prefix="mintsoft-bench-"))
    body = non_ascii_body(logs)
    plan = Plan(args.quick, body, ascii_twin(body), args.rate)
    broker_url = os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    broker = Broker(broker_url)
    try:
        version = await broker.open()
    except Exception as exc:
        sys.exit(f"bench: cannot reach RabbitMQ at 127.0.0.1:5672 ({exc}); run `make broker`")
    exchange = plan.exchange = f"bench.{uuid.uuid4().hex[:10]}"
    topology: Topology = receiver_topology(exchange)
    await declare(broker.ch, topology)
    results: Result = {
        "machine": machine(version, plan.body),
        "started": time.time(),
        "load_average_at_start": shipped.load_average(),
        "cases": {},
    }
    results["logs"] = str(logs)
    parts = set(ALL_PARTS if args.all else HEADLINE)
    if args.only:
        parts = set(args.only.split(","))

    def wanted(part: str) -> bool:
        return part in parts

    try:
        async with contextlib.AsyncExitStack() as stack:
            servers: dict[str, shipped.Served] = {}
            if args.before:
                parts.add("bridge-before")
            for name in SERVER_NAMES:
                if wanted(name):
                    servers[name] = await start_server(
                        stack, name, broker, logs, before=args.before
                    )
            if servers:
                headline = await http_cases(servers, broker, plan, wanted("ascii"))
                results["cases"] = headline.pop("cases")
                results.update(headline)
            if wanted("ceiling"):
                rounds_ = []
                for _ in range(plan.rounds):
                    rounds_.append(await run_ceiling(broker.url, exchange, plan))
                    await broker.purge(unrouted_name(exchange))
                results["cases"]["ceiling"] = median_round(rounds_, "rate")
            if "bridge" in servers and wanted("leak"):
                results["leak"] = await leak_check(servers["bridge"], broker, plan)
        if wanted("consume"):
            kinds = ["raw", "faststream", "worker", "worker-no-records"]
            if importlib.util.find_spec("faststream") is None:
                kinds.remove("faststream")  # make install-bench adds it
            rounds: dict[str, list[Result]] = {kind: [] for kind in kinds}
            # Rounds interleave the kinds: on a shared, loaded machine each side of the
            # comparison sees the same load.
            for index in range(plan.consume_rounds):
                # The two workers swap places every round: neither side of records on/off
                # always runs second (after the other's stream writes and queue deletes).
                order = list(rounds)
                if index % 2 and "worker" in order:
                    at = order.index("worker")
                    order[at], order[at + 1] = order[at + 1], order[at]
                for kind in order:
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
            consume["ratios"] = paired_ratios(rounds)
            if rounds.get("worker"):
                stream = deliveries_stream(exchange)
                records = plan.consume_messages * len(rounds["worker"])
                consume["records_per_message"] = await records_per_message(broker, stream, records)
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
    results["load_average_at_end"] = shipped.load_average()
    results["seconds"] = time.time() - results["started"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run of about a minute (ratios rough)"
    )
    parser.add_argument("--all", action="store_true", help="every part, not only the headline")
    parser.add_argument(
        "--rate",
        type=int,
        default=shipped.FIXED_RATE,
        help="the open-loop rate of the latency rounds (default 1000 requests/s; on a loaded "
        "machine where that saturates a server, its p99 is queueing: try a lower one too)",
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated parts: {','.join(ALL_PARTS)} (default: {','.join(HEADLINE)})",
    )
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a directory holding an earlier bridge/ package (e.g. `git archive main bridge`): "
        "run it as shipped beside this one, for what the changes bought",
    )
    args = parser.parse_args(argv)
    load.ensure_tools()
    import uvloop

    results = uvloop.run(bench(args))
    from bench import report

    report.publish(results, RESULTS)
    return 0
