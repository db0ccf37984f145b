"""``/audit`` and the audit records of console changes, against the real broker and a ledger:
a pause, a resume and a discard by a named operator become rows the page lists newest first
with the operator's name; an audit record the broker refuses fails no change (it is
counted); a ledger that cannot be read is "could not look", no ledger is a note, a bad
``before`` is a 400."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from pamqp.commands import Basic

from bridge.amqp.topology import declare_topology, dlq_name
from bridge.console.app import build_app
from bridge.console.auth import hash_password
from bridge.console.users import parse_users
from bridge.core import metrics
from bridge.ledger.database import open_writer
from bridge.ledger.queries import LedgerReader
from bridge.ledger.schema import audit
from tests.conftest import AMQP_URL, BrokerProbe
from tests.console_helpers import console_state, csrf_of, sign_in
from tests.support.ledger_index import count, indexing, wait_for
from tests.support.ledger_streams import Streams, stream_names
from tests.test_console_users import _sign_in
from tests.worker_helpers import body_for, subscriber, track_subscriber

PASSWORD = "erin-pauses-things-3"


def _rows(html: str) -> list[str]:
    """The data-action of each row of the audit table, in page order."""
    import re

    return re.findall(r'<tr class="change" data-action="([a-z-]+)" data-operator="erin"', html)


async def test_console_changes_by_a_named_operator_are_listed_newest_first(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    # A name of its own: queues are named after the subscriber, not the exchange, and
    # another test process may declare and delete its own "erp" meanwhile.
    sub = subscriber(name=f"erp-{uuid.uuid4().hex[:8]}")
    track_subscriber(probe, exchange, sub)
    queues, exchanges = stream_names(exchange)
    probe.track(queues=queues, exchanges=exchanges)
    streams = await Streams(AMQP_URL, exchange).open()  # the deliveries stream, as topology
    await streams.close()
    await declare_topology((AMQP_URL,), sub.topology(exchange))
    channel = await probe._chan()
    await channel.basic_publish(
        body_for("despatched", 1),
        routing_key=dlq_name(sub.name),
        properties=Basic.Properties(message_id="dead-1", headers={"x-attempt": 3}),
    )
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    engine = open_writer(url)
    reader = LedgerReader(url)
    state = dataclasses.replace(console_state(exchange, [sub]), ledger=reader)
    state.users = parse_users(f"erin:{hash_password(PASSWORD)}\n", "users")
    try:
        async with (
            indexing(engine, exchange, url),
            TestClient(TestServer(build_app(state))) as client,
        ):
            assert (await _sign_in(client, "erin", PASSWORD)).status == 303
            csrf = csrf_of(await (await client.get("/replay")).text())
            for change in ("pause", "resume"):
                answer: Any = await client.post(
                    f"/subscribers/{sub.name}/{change}", data={"csrf": csrf}, allow_redirects=False
                )
                assert answer.status == 303, await answer.text()
            answer = await client.post(
                f"/subscribers/{sub.name}/dead-letters/discard",
                data={"csrf": csrf, "id": "dead-1", "confirmed": "1"},
                allow_redirects=False,
            )
            assert answer.status == 303, await answer.text()
            await wait_for(lambda: count(engine, audit) == 3)
            page = await client.get("/audit")
            html = await page.text()
    finally:
        reader.close()
        engine.dispose()
    assert page.status == 200
    assert _rows(html) == ["discard", "resume", "pause"]
    assert '<td class="num" data-label="How many">1</td>' in html
    assert "selected" in html and 'href="/audit"' in html


async def test_a_refused_audit_record_fails_no_change_and_is_counted(
    probe: BrokerProbe, exchange: str
) -> None:
    # No deliveries stream on this exchange: every audit record comes back unroutable.
    # A name of its own: queues are named after the subscriber, not the exchange, and
    # another test process may declare and delete its own "erp" meanwhile.
    sub = subscriber(name=f"erp-{uuid.uuid4().hex[:8]}")
    track_subscriber(probe, exchange, sub)
    await declare_topology((AMQP_URL,), sub.topology(exchange))
    returned = metrics.LEDGER_RECORDS_FAILED.labels("returned")
    before = returned._value.get()
    async with TestClient(TestServer(build_app(console_state(exchange, [sub])))) as client:
        csrf = await sign_in(client)
        answer: Any = await client.post(
            f"/subscribers/{sub.name}/pause", data={"csrf": csrf}, allow_redirects=False
        )
        assert answer.status == 303, await answer.text()
        assert "Paused by" in await (await client.get(f"/subscribers/{sub.name}")).text()
    assert returned._value.get() == before + 1


async def test_without_a_ledger_or_when_it_cannot_be_read_the_page_says_so(
    exchange: str, tmp_path: Path
) -> None:
    async with TestClient(TestServer(build_app(console_state(exchange, [])))) as client:
        await sign_in(client)
        html = await (await client.get("/audit")).text()
        assert 'id="no-ledger"' in html and "data-could-not-look" not in html
        assert 'href="/audit" aria-current="page"' in html
        bad = await client.get("/audit?before=x1")
        assert bad.status == 400 and "not a row number" in await bad.text()
    missing = LedgerReader(f"sqlite:///{tmp_path / 'none.sqlite3'}")
    state = dataclasses.replace(console_state(exchange, []), ledger=missing)
    async with TestClient(TestServer(build_app(state))) as client:
        await sign_in(client)
        html = await (await client.get("/audit")).text()
        assert "data-could-not-look" in html and "Could not look at the ledger" in html
        assert 'id="audit-empty"' not in html
    missing.close()
