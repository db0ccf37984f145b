"""What the sync tests share: a real-broker stand-in for the archive (a queue bound to every
``order.*`` webhook of the test's exchange; its ``seen`` reads and remembers them), a
subscriber queue read into (event, order id, source) rows, and the sync's settings."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pamqp.commands import Basic

from bridge.core.contract import HEADER_SOURCE
from bridge.core.settings import Settings
from tests.conftest import BrokerProbe, bridge_settings

MS_KEY = "ms-key-1"


class ArchiveStandIn:
    """Implements sync's ``SeenEvents`` from a real queue on the real broker (the archive
    library is written in parallel; its reader answers the same question)."""

    def __init__(self, probe: BrokerProbe, exchange: str) -> None:
        self.probe = probe
        self.exchange = exchange
        self.queue = ""
        self.held: set[tuple[str, int]] = set()
        self.asked = 0

    async def open(self) -> None:
        self.queue = await self.probe.bind_queue(self.exchange, "order.#")

    async def seen(self, since: datetime, until: datetime) -> set[tuple[str, int]]:
        self.asked += 1
        for event, order_id, _ in await read_queue(self.probe, self.queue):
            self.held.add((event, order_id))
        return set(self.held)


async def subscriber(probe: BrokerProbe, exchange: str, events: tuple[str, ...]) -> str:
    name = f"sub-{uuid.uuid4().hex[:8]}"
    for event in events:
        await probe.bind_queue(exchange, f"order.{event}", name)
    return name


async def read_queue(probe: BrokerProbe, queue: str) -> list[tuple[str, int, str]]:
    """Every message now in ``queue`` (taken): (x-event, x-order-id, x-source or webhook)."""
    channel = await probe._chan()
    rows = []
    while True:
        message = await channel.basic_get(queue, no_ack=True)
        if isinstance(message.delivery, Basic.GetEmpty):
            return rows
        headers: dict[str, Any] = message.header.properties.headers or {}
        rows.append(
            (
                str(headers["x-event"]),
                int(str(headers["x-order-id"])),
                str(headers.get(HEADER_SOURCE, "webhook")),
            )
        )


def sync_settings(
    exchange: str, tmp: Path, mintsoft_url: str, public_url: str, **over: Any
) -> Settings:
    base = bridge_settings(
        exchange,
        mintsoft_url=mintsoft_url,
        mintsoft_api_key=MS_KEY,
        public_url=public_url.rstrip("/"),
        sync_state_path=str(tmp / "sync" / "state.sqlite3"),
        sync_interval=0.2,
        sync_grace=0.3,
        mintsoft_rate=1000.0,
    )
    return replace(base, **over)


def counts(rows: list[tuple[str, int, str]]) -> Counter[str]:
    return Counter(source for _, _, source in rows)
