"""The order page's per-subscriber timeline in a real headless Chromium, from a ledger: each
subscriber's state and attempts, at laptop and phone widths. With ``BRIDGE_SCREENSHOTS=DIR``
(``make screenshots``: docs/console) it is saved as ``order-timeline-*.png``."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.console.app import build_app
from bridge.ledger.database import open_writer
from bridge.ledger.queries import LedgerReader
from bridge.ledger.store import Batch, SubscriberSpec, store_subscribers, write_batch
from tests.console_helpers import PASSWORD, console_state
from tests.support.browser import (
    make_driver,
    new_profile,
    require_browser,
    set_viewport,
)

pytestmark = pytest.mark.browser

require_browser()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _attempt(
    n: int, subscriber: str, outcome: str, status: int | None, at: datetime, **more: Any
) -> dict[str, Any]:
    return {
        "record_id": f"r-{subscriber}-{n}",
        "message_id": "5c1f0e9a7b2d4e6f8a9b0c1d2e3f4a5b",
        "subscriber": subscriber,
        "event": "despatched",
        "order_id": "20285",
        "order_number": "SO-20285",
        "attempt": n,
        "outcome": outcome,
        "status": status,
        "answer": more.get("answer"),
        "error": more.get("error"),
        "duration_ms": more.get("duration_ms", 42.0),
        "at": at,
        "source": "worker",
        "operator": None,
        "stream_offset": n,
    }


def fill(url: str) -> None:
    """One despatched webhook and its deliveries to five subscribers, written directly."""
    engine = open_writer(url)
    store_subscribers(
        engine,
        [
            SubscriberSpec("erp", ("despatched",)),
            SubscriberSpec("billing", ("despatched",)),
            SubscriberSpec("carrier", ("despatched",)),
            SubscriberSpec("crm", ("despatched",)),
            SubscriberSpec("wms-north", ("despatched",), warehouses=("9",)),
        ],
    )
    t = datetime.now(UTC) - timedelta(minutes=3)
    batch = Batch(
        webhooks=[
            {
                "message_id": "5c1f0e9a7b2d4e6f8a9b0c1d2e3f4a5b",
                "event": "despatched",
                "order_id": "20285",
                "order_number": "SO-20285",
                "client_id": "12",
                "warehouse_id": "3",
                "received_at": t,
                "source": "webhook",
                "bytes": 1834,
                "stream_offset": 0,
            }
        ],
        attempts=[
            _attempt(1, "erp", "failed", 500, t + timedelta(seconds=1), error="HTTP 500: ERP busy"),
            _attempt(2, "erp", "delivered", 200, t + timedelta(seconds=31), answer='{"ok":true}'),
            _attempt(
                1, "billing", "failed", 400, t + timedelta(seconds=1), error="HTTP 400: unknown SKU"
            ),
            _attempt(
                2, "billing", "dead", 400, t + timedelta(seconds=2), error="HTTP 400: unknown SKU"
            ),
            _attempt(1, "carrier", "throttled", 429, t + timedelta(seconds=1), answer="slow down"),
        ],
    )
    batch.cover("x.archive", 0)
    batch.cover("x.deliveries", 4)
    write_batch(engine, batch, {"webhooks": "x.archive", "attempts": "x.deliveries"})
    engine.dispose()


@pytest.fixture
def console_url(exchange: str, tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    fill(url)
    reader = LedgerReader(url)
    state = dataclasses.replace(console_state(exchange, []), ledger=reader)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(build_app(state))

    async def start() -> str:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        reader.close()


def test_the_order_timeline_per_subscriber(console_url: str, tmp_path: Path) -> None:
    target = os.environ.get("BRIDGE_SCREENSHOTS")
    shots = Path(target) if target else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    with new_profile() as profile:
        driver = make_driver(profile)
        try:
            wait = WebDriverWait(driver, 15)
            driver.get(console_url + "/")
            driver.switch_to.active_element.send_keys(PASSWORD + Keys.ENTER)
            wait.until(lambda d: "/login" not in d.current_url)
            driver.get(console_url + "/orders?q=SO-20285")
            rows = driver.find_elements(By.CSS_SELECTOR, "tr.subscriber-state")
            states = {
                r.get_attribute("data-subscriber"): r.get_attribute("data-state") for r in rows
            }
            assert states == {
                "erp": "delivered",
                "billing": "dead",
                "carrier": "retrying",
                "crm": "waiting",
                "wms-north": "not for it",
            }
            erp = next(r for r in rows if r.get_attribute("data-subscriber") == "erp")
            assert "HTTP 500: ERP busy" in erp.text and "#2 delivered 200" in erp.text
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, errors
            for viewport in ("laptop", "phone"):
                set_viewport(driver, viewport)
                driver.refresh()
                assert driver.save_screenshot(str(shots / f"order-timeline-{viewport}.png"))
        finally:
            driver.quit()
