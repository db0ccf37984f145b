"""The ledger fed by a real worker (issue 21, tests), on SQLite and PostgreSQL: forward
targets answering 500 then 200 (delivered after two attempts) and 400 (dead), a subscriber
whose worker is stopped (waiting) and one whose client filter leaves the webhook out (not for
it); and a worker SIGKILLed between a delivery's record and its ack: trace shows both
attempts and ends delivered."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from bridge.amqp.topology import declare
from bridge.ledger.database import open_writer
from bridge.ledger.queries import Trace, trace
from bridge.ledger.store import SubscriberSpec, store_subscribers
from bridge.worker.forwarder import Forwarder
from bridge.worker.message import Message
from bridge.worker.subscribers import Subscriber, load_subscribers
from tests.conftest import AMQP_URL, BrokerProbe
from tests.support.ledger_index import indexing, wait_for
from tests.support.ledger_streams import Streams
from tests.test_forwarder import Target
from tests.worker_helpers import (
    body_for,
    publish,
    running_worker,
    subscriber,
    track_subscriber,
)


def spec(sub: Subscriber) -> SubscriberSpec:
    return SubscriberSpec(sub.name, ("despatched",), sub.clients, sub.warehouses)


def states(found: Trace) -> dict[str, tuple[str, list[tuple[str, int | None]]]]:
    (webhook,) = found.webhooks
    return {
        s.name: (str(s.state), [(a.outcome, a.status) for a in s.attempts])
        for s in webhook.subscribers
    }


async def test_the_five_states_from_a_real_worker(
    ledger_db: str, exchange: str, probe: BrokerProbe, streams: Streams
) -> None:
    flaky, refusing = Target(), Target()
    flaky.status_for = lambda message_id, n: 500 if n == 1 else 200
    refusing.status_for = lambda message_id, n: 400
    await flaky.start()
    await refusing.start()
    erp = subscriber(name=None, events=("despatched",), tries=2)
    billing = subscriber(events=("despatched",), tries=3)
    crm = subscriber(events=("despatched",))  # its worker is not running
    wms = subscriber(events=("despatched",), clients=("99",))  # the webhook's client is 12
    engine = open_writer(ledger_db)
    store_subscribers(engine, [spec(s) for s in (erp, billing, crm, wms)])
    track_subscriber(probe, exchange, crm)
    assert probe.channel is not None
    await declare(probe.channel, crm.topology(exchange))
    erp_forward = Forwarder(erp.name, flaky.url, timeout=5)
    billing_forward = Forwarder(billing.name, refusing.url, timeout=5)

    async def fine(message: Message) -> None:
        return None

    handlers = {erp.name: erp_forward, billing.name: billing_forward, wms.name: fine}
    try:
        async with (
            running_worker(probe, exchange, [erp, billing, wms], handlers, archive=True),
            indexing(engine, exchange, ledger_db),
        ):
            sent = await publish(probe, exchange, "despatched", body_for("despatched", 21))

            def settled() -> bool:
                found = trace(engine, sent)
                if len(found.webhooks) != 1:
                    return False
                now = states(found)
                return now[erp.name][0] == "delivered" and now[billing.name][0] == "dead"

            await wait_for(settled, timeout=60)
    finally:
        await erp_forward.close()
        await billing_forward.close()
        await flaky.stop()
        await refusing.stop()
    now = states(trace(engine, sent))
    assert now[erp.name] == ("delivered", [("failed", 500), ("delivered", 200)])
    assert now[billing.name][0] == "dead" and now[billing.name][1][-1] == ("dead", 400)
    assert now[crm.name] == ("waiting", [])
    assert now[wms.name] == ("not for it", [])
    engine.dispose()


class AckCutter:
    """A TCP proxy to the broker that reads the client's AMQP frames: at the first
    ``basic.ack`` it SIGKILLs the process ``pid`` and closes both sides, the ack and all
    after it never forwarded. Everything before it (the delivery record, published just
    before the ack) reached the broker. Later connections pass untouched."""

    HEADER = 8  # b"AMQP\x00\x00\x09\x01"

    def __init__(self) -> None:
        self.pid: int | None = None
        self.cut = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        host, port = AMQP_URL.split("@")[1].strip("/").split(":")
        broker_r, broker_w = await asyncio.open_connection(host, int(port))
        armed = not self.cut.is_set()

        async def back() -> None:
            while data := await broker_r.read(65536):
                client_w.write(data)

        answering = asyncio.create_task(back())
        try:
            broker_w.write(await client_r.readexactly(self.HEADER))
            while True:
                head = await client_r.readexactly(7)
                size = struct.unpack(">I", head[3:7])[0]
                rest = await client_r.readexactly(size + 1)
                if armed and head[0] == 1 and rest[:4] == struct.pack(">HH", 60, 80):
                    await broker_w.drain()
                    assert self.pid is not None
                    os.kill(self.pid, signal.SIGKILL)
                    self.cut.set()
                    return
                broker_w.write(head + rest)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            answering.cancel()
            for writer in (client_w, broker_w):
                writer.close()


@pytest.mark.slow
async def test_a_worker_killed_between_record_and_ack_shows_both_attempts(
    ledger_db: str, exchange: str, probe: BrokerProbe, streams: Streams, tmp_path: Path
) -> None:
    sub = subscriber(events=("despatched",), tries=1)
    config = tmp_path / "subscribers.toml"
    config.write_text(
        f'[[subscriber]]\nname = "{sub.name}"\nevents = ["despatched"]\n'
        'handler = "bridge.examples.log_events:log_event"\n'
    )
    for declared in load_subscribers(str(config)):  # the file's ladder: what the worker declares
        track_subscriber(probe, exchange, declared)
    cutter = AckCutter()
    proxied = await cutter.start()
    engine = open_writer(ledger_db)
    store_subscribers(engine, [spec(sub)])

    def worker(url: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "BRIDGE_AMQP_URL": url, "BRIDGE_EXCHANGE": exchange}
        return subprocess.Popen(
            [sys.executable, "-m", "bridge", "worker", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    first = worker(proxied)
    cutter.pid = first.pid
    second: subprocess.Popen[bytes] | None = None
    try:
        async with indexing(engine, exchange, ledger_db):
            await _consuming(probe, sub.name)
            sent = await publish(probe, exchange, "despatched", body_for("despatched", 77))
            await asyncio.wait_for(cutter.cut.wait(), 60)
            await asyncio.to_thread(first.wait, 30)
            assert first.returncode == -signal.SIGKILL
            second = worker(AMQP_URL)
            await wait_for(lambda: _attempts(engine, sent) >= 2, timeout=60)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
        await cutter.close()
    (webhook,) = trace(engine, sent).webhooks
    (only,) = webhook.subscribers
    assert [a.outcome for a in only.attempts] == ["delivered", "delivered"]
    assert str(only.state) == "delivered"
    engine.dispose()


def _attempts(engine: Engine, message_id: str) -> int:
    found = trace(engine, message_id)
    return sum(len(s.attempts) for w in found.webhooks for s in w.subscribers)


async def _consuming(probe: BrokerProbe, queue: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        channel = await probe._chan()
        try:
            ok = await channel.queue_declare(queue, passive=True)
            if ok.consumer_count:
                return
        except Exception:
            pass  # not declared yet (the failed passive declare closed the channel)
        assert asyncio.get_running_loop().time() < deadline, f"nobody consumes {queue}"
        await asyncio.sleep(0.1)
