"""A bounded concurrent webhook load that records every answer: which receiver, which
message id, what status. Requests go round-robin over the receivers; each body is a unique
order, so each 200 names one message that must reach the consumers."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from bridge.events import message_id

REQUEST_TIMEOUT = 30.0
"""Far above any publish timeout: a request still open this long counts as a hang."""


@dataclass(frozen=True)
class Answer:
    """One request and what came back; ``status`` 0 means no HTTP answer at all."""

    target: str
    message_id: str
    status: int
    outcome: str
    started: float
    seconds: float


def order_body(template: bytes, order_id: int) -> bytes:
    """``template`` (a Mintsoft order body) as order ``order_id``."""
    document = orjson.loads(template)
    document["ID"] = order_id
    document["OrderNumber"] = f"LOAD-{order_id}"
    return orjson.dumps(document)


@dataclass
class WebhookLoad:
    """POSTs webhooks to ``targets`` (receiver base URLs) with ``concurrency`` requests in
    flight, until :meth:`stop` or ``limit`` requests, and keeps every :class:`Answer`."""

    targets: tuple[str, ...]
    api_key: str
    template: bytes
    event: str = "despatched"
    concurrency: int = 16
    limit: int = 20_000
    first_order_id: int = 1
    answers: list[Answer] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> list[Answer]:
        numbers = itertools.count(self.first_order_id)
        last = self.first_order_id + self.limit
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

            async def one_worker() -> None:
                while not self._stop.is_set():
                    number = next(numbers)
                    if number >= last:
                        return
                    target = self.targets[number % len(self.targets)]
                    await self._post(session, target, order_body(self.template, number))

            await asyncio.gather(*(one_worker() for _ in range(self.concurrency)))
        return self.answers

    async def _post(self, session: aiohttp.ClientSession, target: str, body: bytes) -> None:
        expected = message_id(self.event, body)
        started = time.monotonic()
        status, outcome = 0, ""
        try:
            async with session.post(
                f"{target}/webhooks/{self.event}",
                params={"APIKEY": self.api_key},
                data=body,
                headers={"Content-Type": "application/json"},
            ) as response:
                status = response.status
                payload = orjson.loads(await response.read())
                outcome = str(payload.get("status") or payload.get("error") or "")
                if status == 200 and payload.get("message_id") != expected:
                    outcome = "wrong_message_id"
        except TimeoutError:
            outcome = "hung"
        except (aiohttp.ClientError, orjson.JSONDecodeError) as exc:
            outcome = type(exc).__name__
        self.answers.append(
            Answer(target, expected, status, outcome, started, time.monotonic() - started)
        )

    def acknowledged(self) -> set[str]:
        """Message ids answered 200: the ones the bridge promised to keep."""
        return {a.message_id for a in self.answers if a.status == 200}

    def summary(self) -> dict[str, int]:
        """Answers counted by ``status/outcome``."""
        return dict(Counter(f"{a.status}/{a.outcome}" for a in self.answers))
