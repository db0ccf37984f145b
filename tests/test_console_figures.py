"""The subscriber page's and the overview cards' delivery figures from the ledger: last
delivery, last error (its answer masked), oldest undelivered, the per-minute chart (an
accessible inline SVG with the numbers as a table); a ledger that cannot be read is "could
not look", never "none"; the state line's reasons (failing since, throttled until, target
down since) from the ledger's records."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.amqp.control import ControlState
from bridge.amqp.topology import declare_topology
from bridge.console import sources
from bridge.console.app import build_app
from bridge.console.chart import BAND, MIN_BAR, minute_chart
from bridge.console.queues import QueueStat, SubscriberStat
from bridge.console.subscriber_state import Kind, state_of
from bridge.ledger.database import open_writer
from bridge.ledger.figures import Minute, subscriber_figures
from bridge.ledger.queries import LedgerReader
from bridge.ledger.store import SubscriberSpec, store_subscribers, store_undelivered
from tests.conftest import AMQP_URL, BrokerProbe
from tests.console_helpers import console_state, sign_in
from tests.test_ledger_figures import attempt, write
from tests.worker_helpers import subscriber, track_subscriber

SECRET = "erp-header-s3cret"


def _fill(url: str, name: str) -> None:
    engine = open_writer(url)
    now = datetime.now(UTC)
    store_subscribers(engine, [SubscriberSpec(name, ("despatched",))])
    write(
        engine,
        [
            attempt(name, "delivered", now - timedelta(minutes=7), 200, order_number="SO-20285"),
            attempt(name, "failed", now - timedelta(minutes=2), 500),
            attempt(
                name,
                "failed",
                now - timedelta(seconds=30),
                500,
                answer=f"ERP busy; you sent {SECRET}",
                order_number="SO-20291",
            ),
        ],
    )
    store_undelivered(engine, {name: now - timedelta(minutes=2)}, now)
    engine.dispose()


async def test_the_subscriber_page_and_card_show_the_ledgers_figures(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    sub = subscriber(forward_url="http://erp.internal/in", forward_headers=(("X-Key", SECRET),))
    track_subscriber(probe, exchange, sub)
    await declare_topology((AMQP_URL,), sub.topology(exchange))
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    _fill(url, sub.name)
    reader = LedgerReader(url)
    state = dataclasses.replace(console_state(exchange, [sub]), ledger=reader)
    async with TestClient(TestServer(build_app(state))) as client:
        await sign_in(client)
        page = await (await client.get(f"/subscribers/{sub.name}")).text()
        card = await (await client.get("/overview/live")).text()
    reader.close()
    assert 'data-figure="last-delivery">7 min ago<' in page
    assert 'data-figure="error-status">500<' in page and "ERP busy" in page
    assert SECRET not in page and "***" in page
    assert 'data-figure="undelivered" class="">2 min<' in page
    assert 'data-figure="failed" class="bad">2<' in page
    # The chart: an image with a title and a description, and every minute as text.
    svg = re.search(r'<svg[^>]*role="img"[^>]*aria-labelledby="([^"]+)"', page)
    assert svg is not None
    for label in svg.group(1).split():
        assert f'id="{label}"' in page
    assert page.count('<rect class="failed"') == 2 and page.count('<rect class="delivered"') == 1
    assert len(re.findall(r"<tr><td>\d\d:\d\d</td>", page)) == 60
    # The card: its last delivery and the hour's figures.
    assert f'id="sub-{sub.name}"' in card and "Last delivery" in card
    assert 'data-figure="failed" class="bad">2<' in card


async def test_a_ledger_that_cannot_be_read_is_could_not_look(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    sub = subscriber()
    track_subscriber(probe, exchange, sub)
    await declare_topology((AMQP_URL,), sub.topology(exchange))
    reader = LedgerReader(f"sqlite:///{tmp_path / 'missing.sqlite3'}")
    state = dataclasses.replace(console_state(exchange, [sub]), ledger=reader)
    async with TestClient(TestServer(build_app(state))) as client:
        await sign_in(client)
        page = await (await client.get(f"/subscribers/{sub.name}")).text()
        card = await (await client.get("/overview/live")).text()
    assert "Could not look at the ledger" in page and "does not exist yet" in page
    assert 'data-figure="last-delivery"' not in page and "No delivery" not in page
    assert "Could not look at the ledger" in card and 'data-figure="delivered"' not in card
    assert 'data-state="no-worker"' in page  # the broker's part is still shown


async def test_without_a_ledger_the_page_says_where_the_figures_come_from(
    probe: BrokerProbe, exchange: str
) -> None:
    sub = subscriber()
    track_subscriber(probe, exchange, sub)
    await declare_topology((AMQP_URL,), sub.topology(exchange))
    async with TestClient(TestServer(build_app(console_state(exchange, [sub])))) as client:
        await sign_in(client)
        page = await (await client.get(f"/subscribers/{sub.name}")).text()
    assert "data-no-ledger" in page and "BRIDGE_LEDGER_URL" in page
    assert 'data-figure="last-delivery"' not in page


def _stat(consumers: int, workers: int, forward: bool = True) -> SubscriberStat:
    sub = subscriber(forward_url="http://erp.internal/in" if forward else None)
    main = QueueStat(sub.name, 18, consumers)
    return SubscriberStat(sub, main, (), QueueStat(sub.name + ".dlq", 0, 0), None, workers)


def test_the_state_line_gives_the_ledgers_reasons(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    engine = open_writer(url)
    now = datetime.now(UTC).replace(microsecond=0)
    write(
        engine,
        [
            attempt("down", "delivered", now - timedelta(minutes=9), 200),
            attempt("down", "failed", now - timedelta(minutes=5), 503),
            attempt("down", "failed", now - timedelta(minutes=4), 503),
            attempt("busy", "throttled", now - timedelta(seconds=5), 429, retry_after=60.0),
        ],
    )
    figures = subscriber_figures(engine, ["down", "busy"], "x.deliveries", now)
    engine.dispose()
    down = figures["down"]

    target_down = state_of(_stat(0, 2), down, now)
    assert target_down.kind is Kind.TARGET_DOWN and target_down.bad
    since = (now - timedelta(minutes=5)).strftime("%H:%M:%S")
    assert f"down since {since} UTC (5 min ago)" in target_down.text
    assert "last answer 503" in target_down.text and "2 workers probing" in target_down.text

    failing = state_of(_stat(1, 1), down, now)
    assert failing.kind is Kind.FAILING and failing.text.startswith("Consuming, but failing")

    throttled = state_of(_stat(1, 1), figures["busy"], now)
    until = (now + timedelta(seconds=55)).strftime("%H:%M:%S")
    assert throttled.kind is Kind.THROTTLED
    assert f"Throttled until {until} UTC (in 55 s)" in throttled.text
    assert "429 with Retry-After 60 s" in throttled.text

    # An operator's pause wins over every figure; without figures, the broker's word alone.
    paused = dataclasses.replace(_stat(0, 1), control=ControlState(True, "ana", None))
    assert state_of(paused, down, now).kind is Kind.PAUSED
    assert state_of(_stat(0, 2)).text.startswith("Waiting for its target, which is down;")


def test_a_single_failure_shows_beside_hundreds_of_deliveries() -> None:
    start = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    minutes = [Minute(start + timedelta(minutes=i), delivered=500) for i in range(60)]
    minutes[59] = Minute(minutes[59].start, delivered=500, failed=1)
    chart = minute_chart(minutes)
    (failed,) = [b for b in chart.bars if b.kind == "failed"]
    assert failed.height >= MIN_BAR and chart.failed_max == 1
    assert all(b.height == BAND for b in chart.bars if b.kind == "delivered")
    assert minute_chart([Minute(start)]).bars == ()


async def test_a_ledger_that_does_not_answer_is_could_not_look_in_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Silent(LedgerReader):
        async def figures(self, *args: object, **kwargs: object) -> dict[str, Any]:
            await asyncio.Event().wait()  # hangs until cancelled
            return {}

    monkeypatch.setattr(sources, "LEDGER_WAIT", 0.2)
    started = asyncio.get_running_loop().time()
    looked = await sources.ledger_figures(Silent("sqlite:///unused"), ["erp"], "x")
    assert looked is not None and not looked.looked
    assert "did not answer within 0.2 s" in (looked.reason or "")
    assert asyncio.get_running_loop().time() - started < 5
