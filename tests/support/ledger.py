"""A loss ledger, Jepsen-style: send webhooks with unique ids, record every answer, then drain
the queues and compare.

- acknowledged-but-missing: answered 200 but never delivered (must be 0: a loss);
- duplicates: delivered more than once (allowed: at-least-once; counted);
- unexpected: delivered but never sent (must be 0);
- unacknowledged-delivered: delivered although the answer was not 200 (allowed: the client
  retries and gets a duplicate).

Used by the fault tests and by ``bench/spool_bench.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import aiormq
import orjson
from pamqp.commands import Basic

from bridge.core.contract import message_id

EVENT = "despatched"


def ledger_body(run: str, n: int) -> bytes:
    """A despatched-order body that no other run or request sends."""
    return orjson.dumps(
        {
            "ID": n,
            "OrderNumber": f"LEDGER-{run}-{n}",
            "ClientId": 12,
            "OrderStatus": "DESPATCHED",
            "Ledger": run,
        }
    )


@dataclass
class Answer:
    """What one request got: HTTP status (0 when no answer came) and latency in seconds."""

    message_id: str
    status: int
    outcome: str
    seconds: float


@dataclass
class Ledger:
    """Every request sent in one run and its answer, by message id."""

    run: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    answers: dict[str, Answer] = field(default_factory=dict)

    @property
    def acknowledged(self) -> set[str]:
        return {m for m, a in self.answers.items() if a.status == 200}

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.answers.values() if a.outcome == outcome)

    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers.values())

    def latencies(self) -> list[float]:
        return sorted(a.seconds for a in self.answers.values())


async def send_load(
    base_url: str,
    *,
    count: int,
    concurrency: int = 16,
    rate: float | None = None,
    params: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    ledger: Ledger | None = None,
    stop: asyncio.Event | None = None,
    timeout: float = 60.0,
) -> Ledger:
    """POST up to ``count`` unique webhooks, ``concurrency`` at a time, at most ``rate`` per
    second, until done or ``stop`` is set; record every answer in the ledger."""
    ledger = ledger or Ledger()
    numbers = itertools.count()
    started = time.monotonic()
    url = base_url.rstrip("/") + f"/webhooks/{EVENT}"
    limits = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            n = next(numbers)
            if n >= count or (stop is not None and stop.is_set()):
                return
            if rate:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            body = ledger_body(ledger.run, n)
            mid = message_id(EVENT, body)
            sent_at = time.monotonic()
            try:
                async with session.post(
                    url,
                    data=body,
                    params=params,
                    headers={"Content-Type": "application/json", **(headers or {})},
                ) as response:
                    payload = await response.read()
                    status = response.status
                    try:
                        answer = orjson.loads(payload)
                        outcome = str(answer.get("status") or answer.get("error") or status)
                    except (orjson.JSONDecodeError, AttributeError):
                        outcome = f"non-json {status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                status, outcome = 0, type(exc).__name__
            ledger.answers[mid] = Answer(mid, status, outcome, time.monotonic() - sent_at)

    async with aiohttp.ClientSession(connector=limits, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ledger


@dataclass
class Report:
    """The ledger check's result."""

    sent: int
    acknowledged: int
    delivered: int
    missing: list[str]
    duplicates: int
    unexpected: list[str]
    unacknowledged_delivered: int

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def __str__(self) -> str:
        return (
            f"sent {self.sent}, acknowledged {self.acknowledged}, delivered {self.delivered}: "
            f"acknowledged-but-missing {len(self.missing)}, duplicates {self.duplicates}, "
            f"unexpected {len(self.unexpected)}, "
            f"delivered-without-200 {self.unacknowledged_delivered}"
        )


async def _drain_queues(channel: aiormq.abc.AbstractChannel, queues: list[str]) -> list[str]:
    ids: list[str] = []
    for queue in queues:
        while True:
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, Basic.GetEmpty):
                break
            ids.append(str(message.header.properties.message_id))
    return ids


async def check(
    ledger: Ledger,
    amqp_url: str,
    queues: list[str],
    *,
    timeout: float = 30.0,
    settle: float = 0.5,
) -> Report:
    """Drain ``queues`` until every acknowledged message arrived (or ``timeout``), then wait
    ``settle`` seconds more for late duplicates, and compare with the ledger."""
    seen: Counter[str] = Counter()
    acknowledged = ledger.acknowledged
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + timeout
        while True:
            seen.update(await _drain_queues(channel, queues))
            if acknowledged <= set(seen) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(settle)
        seen.update(await _drain_queues(channel, queues))
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return compare(ledger, seen)


def compare(ledger: Ledger, seen: Counter[str]) -> Report:
    """Compare the ledger with the message ids delivered (``seen``, with repeats), wherever
    they were read: drained queues, or what a worker's handler noted."""
    sent = set(ledger.answers)
    acknowledged = ledger.acknowledged
    return Report(
        sent=len(sent),
        acknowledged=len(acknowledged),
        delivered=len(seen),
        missing=sorted(acknowledged - set(seen)),
        duplicates=sum(n - 1 for n in seen.values()),
        unexpected=sorted(set(seen) - sent),
        unacknowledged_delivered=len((set(seen) & sent) - acknowledged),
    )
