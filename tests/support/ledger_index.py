"""The indexer run for a test (:func:`indexing`) and what a test asks the ledger it fills:
row counts, how current a stream is, and a condition waited for without stalling the
indexer running in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from bridge.ledger.indexer import Indexer
from bridge.ledger.store import current_at
from tests.conftest import AMQP_URL
from tests.support.ledger_streams import settings_for
from tests.worker_helpers import wait_until


def current(engine: Engine, stream: str) -> datetime | None:
    with engine.connect() as connection:
        return current_at(connection, stream)


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar() or 0)


async def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``condition`` (a database query) holds, asking it in a thread: the
    indexer under test runs in this loop and must go on meanwhile."""
    await wait_until(lambda: asyncio.to_thread(condition), timeout)


@contextlib.asynccontextmanager
async def indexing(
    engine: Engine, exchange: str, url: str, amqp_url: str = AMQP_URL, **options: Any
) -> AsyncIterator[Indexer]:
    """An indexer of ``exchange``'s streams into ``url`` (``engine``), running until the
    block ends."""
    indexer = Indexer(settings_for(exchange, amqp_url, url), engine, url, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(indexer.run(stop))
    try:
        yield indexer
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
