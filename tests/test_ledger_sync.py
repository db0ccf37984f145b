"""Sync asks the ledger what arrived when there is one (an indexed query, no archive scan),
and asks the archive instead for a pass the ledger cannot answer: not current through the
window's end (its indexer behind or stopped), or not readable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.core.settings import Settings
from bridge.ledger.database import open_writer
from bridge.ledger.store import Batch, mark_current, write_batch
from bridge.mintsoft.sync.archive import ledger_seen

EXCHANGE = "test.sync.ledger"
ARCHIVE = EXCHANGE + ".archive"


def _webhook(n: int, event: str, order: str | None, at: datetime) -> dict[str, object]:
    return {
        "message_id": f"m-{n}",
        "event": event,
        "order_id": order,
        "order_number": None,
        "client_id": None,
        "warehouse_id": None,
        "received_at": at,
        "source": "webhook",
        "bytes": 10,
        "stream_offset": n,
    }


class Fallback:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, since: datetime, until: datetime) -> set[tuple[str, int]]:
        self.calls += 1
        return {("archive", 1)}


async def test_sync_reads_what_arrived_from_a_current_ledger(ledger_db: str) -> None:
    now = datetime.now(UTC)
    engine = open_writer(ledger_db)
    batch = Batch(
        webhooks=[
            _webhook(0, "despatched", "20285", now - timedelta(hours=2)),
            _webhook(1, "cancelled", "20286", now - timedelta(hours=1)),
            _webhook(2, "invalid", "20287", now - timedelta(hours=1)),  # quarantined
            _webhook(3, "despatched", "20288", now - timedelta(days=3)),  # before the window
            _webhook(4, "despatched", None, now - timedelta(hours=1)),
        ]
    )
    batch.cover(ARCHIVE, 4)
    write_batch(engine, batch, {"webhooks": ARCHIVE, "attempts": EXCHANGE + ".deliveries"})
    fallback = Fallback()
    seen = ledger_seen(Settings(exchange=EXCHANGE), ledger_db, fallback)
    since, until = now - timedelta(days=1), now - timedelta(minutes=15)

    # The indexer has not said it is current: the archive answers.
    assert await seen(since, until) == {("archive", 1)} and fallback.calls == 1
    mark_current(engine, [ARCHIVE], until - timedelta(seconds=1))
    assert await seen(since, until) == {("archive", 1)} and fallback.calls == 2

    mark_current(engine, [ARCHIVE], now)
    assert await seen(since, until) == {("despatched", 20285), ("cancelled", 20286)}
    assert fallback.calls == 2
    engine.dispose()


async def test_a_ledger_that_cannot_be_read_sends_sync_to_the_archive(tmp_path: Path) -> None:
    fallback = Fallback()
    seen = ledger_seen(
        Settings(exchange=EXCHANGE), f"sqlite:///{tmp_path / 'missing.sqlite3'}", fallback
    )
    now = datetime.now(UTC)
    assert await seen(now - timedelta(hours=1), now) == {("archive", 1)}
    assert fallback.calls == 1
