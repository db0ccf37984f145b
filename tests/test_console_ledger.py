"""The console's order lookup reading the ledger: per webhook a row per subscriber with its
state and attempts; a ledger that cannot be read is said so; without a ledger the page
scans the archive and says so."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from bridge.console.app import build_app
from bridge.ledger.database import open_writer
from bridge.ledger.queries import LedgerReader
from tests.console_helpers import console_state, sign_in
from tests.support.ledger_streams import Streams
from tests.test_ledger_trace import FIVE_STATES, _five_states

_STATES = re.compile(r'data-subscriber="([^"]+)" data-state="([^"]+)"')


async def test_the_order_page_shows_each_subscriber_state_and_attempts(
    ledger_db: str, exchange: str, streams: Streams
) -> None:
    engine = open_writer(ledger_db)
    order = await _five_states(engine, exchange, ledger_db, streams)
    engine.dispose()
    reader = LedgerReader(ledger_db)
    state = dataclasses.replace(console_state(exchange, []), ledger=reader)
    async with TestClient(TestServer(build_app(state))) as client:
        await sign_in(client)
        page = await (await client.get(f"/orders?q=SO-{order}")).text()
        missing = await (await client.get("/orders?q=no-such-order")).text()
        # The webhook's link opens it from the archive (offset and time from the ledger).
        (link,) = re.findall(r'href="(/orders/webhooks/[^"]+)"', page)
        opened = await client.get(link.replace("&amp;", "&"))
        assert opened.status == 200 and "x-order-id" in await opened.text()
    reader.close()
    assert dict(_STATES.findall(page)) == FIVE_STATES
    assert "HTTPError: 500" in page and "#2 <b>delivered</b> 200" in page
    assert f"/subscribers/billing/dead-letters/msg-{order}" in page
    assert 'id="archive-scan-note"' not in page
    assert 'id="not-in-ledger"' in missing
    # Where it looked: what the ledger holds, and how far it has read the archive.
    assert "The ledger holds the webhooks received from" in missing
    assert "has read the archive up to" in missing or "has not read the archive yet" in missing
    assert 'id="replay-to"' in page and 'id="replay-to"' not in missing


async def test_a_ledger_that_cannot_be_read_is_said_so(exchange: str, tmp_path: Path) -> None:
    reader = LedgerReader(f"sqlite:///{tmp_path / 'missing.sqlite3'}")
    state = dataclasses.replace(console_state(exchange, []), ledger=reader)
    async with TestClient(TestServer(build_app(state))) as client:
        await sign_in(client)
        answer = await client.get("/orders?q=20285")
        page = await answer.text()
    assert answer.status == 200
    assert 'id="ledger-note"' in page and "does not exist yet" in page
    assert 'id="not-in-ledger"' not in page


async def test_without_a_ledger_the_page_scans_the_archive_and_says_so(exchange: str) -> None:
    async with TestClient(TestServer(build_app(console_state(exchange, [])))) as client:
        await sign_in(client)
        page = await (await client.get("/orders?q=20285&since=1h")).text()
    assert 'id="archive-scan-note"' in page and "BRIDGE_LEDGER_URL" in page
