"""``/replay``'s list of replays outlasts the console: with a ledger, a replay one console
made is listed by a fresh console over the same ledger (from the audit records the ledger
indexes); a ledger that cannot be read is "could not look", never "no replay"."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from bridge.console.app import build_app
from bridge.ledger.database import open_writer
from bridge.ledger.queries import LedgerReader
from bridge.ledger.schema import audit
from tests.conftest import AMQP_URL, BridgeFactory, BrokerProbe
from tests.console_helpers import console_state, sign_in
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_streams import Streams, stream_names
from tests.test_console_replay_guardrails import (
    _archive,
    _confirm,
    _declared,
    _dry_run,
    _finished,
    _matched,
    _post,
)
from tests.worker_helpers import subscriber


def _done_rows(html: str) -> list[tuple[str, str]]:
    """(subscriber, copied) of each replay the page lists from the ledger."""
    return re.findall(
        r'<tr class="replay-done" data-subscriber="([^"]+)"[^>]*>.*?data-figure="copied">([^<]*)<',
        html,
        flags=re.S,
    )


async def test_a_replay_made_by_one_console_is_listed_by_a_fresh_console_over_the_ledger(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    bridge = await _archive(make_bridge, probe, exchange)
    queues, exchanges = stream_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    await (await Streams(AMQP_URL, exchange).open()).close()  # the deliveries stream
    await _post(bridge, "despatched", 2)
    sub = subscriber()
    await _declared(probe, exchange, sub)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    engine = open_writer(url)
    readers = [LedgerReader(url), LedgerReader(url)]
    first, fresh = (
        dataclasses.replace(console_state(exchange, [sub]), ledger=reader) for reader in readers
    )
    try:
        async with indexing(engine, exchange, url):
            async with TestClient(TestServer(build_app(first))) as client:
                csrf = await sign_in(client)
                page = await _dry_run(client, csrf, to=sub.name)
                assert _matched(page) == 2
                await _finished(await _confirm(client, first, page))
            await wait_for(lambda: count(engine, audit) == 1)
            async with TestClient(TestServer(build_app(fresh))) as client:
                await sign_in(client)
                html = await (await client.get("/replay")).text()
    finally:
        for reader in readers:
            reader.close()
        engine.dispose()
    assert _done_rows(html) == [(sub.name, "2")], html
    assert 'class="replay-row"' not in html  # nothing of it in the fresh console's memory
    assert 'id="no-replays"' not in html


async def test_a_ledger_that_cannot_be_read_is_could_not_look_not_no_replay(
    exchange: str, tmp_path: Path
) -> None:
    missing = LedgerReader(f"sqlite:///{tmp_path / 'none.sqlite3'}")
    state = dataclasses.replace(console_state(exchange, []), ledger=missing)
    try:
        async with TestClient(TestServer(build_app(state))) as client:
            await sign_in(client)
            html = await (await client.get("/replay")).text()
    finally:
        missing.close()
    assert "Could not look at the ledger&#39;s replay history" in html, html
    assert 'id="no-replays"' not in html
