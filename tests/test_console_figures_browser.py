"""The console in an outage, in a real headless Chromium, fed by a real worker and the
ledger's indexer: a subscriber whose target answers 500 (its page: failed per minute, the
last error with its status, "failing since" in its state line), one whose target is down
(its breaker: waiting, since when), one throttled by a ``Retry-After``, one whose target
refuses (dead letters) and a healthy one (its last delivery). And no console page is wider
than a 390 x 844 phone.

With ``BRIDGE_SCREENSHOTS=DIR`` (``make screenshots``: docs/console) the outage overview and
the failing subscriber's page are saved at laptop and phone widths.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from bridge.amqp.topology import dlq_name
from bridge.ledger.database import open_writer
from bridge.ledger.store import Batch, write_batch
from bridge.worker.subscribers import Subscriber
from tests.support.browser import (
    VIEWPORTS,
    ConsoleStack,
    require_browser,
    set_viewport,
)
from tests.support.rabbit_node import free_port
from tests.test_console_browser import driver, shots
from tests.test_forwarder import Target
from tests.test_ledger_figures import attempt
from tests.worker_helpers import body_for, publish

pytestmark = pytest.mark.browser
__all__ = ["driver", "shots"]  # the fixtures, shared with the other browser tests

require_browser()

from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from tests.test_console_browser import Page, _until  # noqa: E402

WEBHOOKS = 6
"""Each subscriber takes every one: enough for the down target's breaker (5 in a row)."""


class Throttling(Target):
    """Answers every POST 429 with ``Retry-After: 300``."""

    async def _post(self, request: web.Request) -> web.Response:
        await super()._post(request)
        return web.json_response({}, status=429, headers={"Retry-After": "300"})


@dataclass
class Outage:
    stack: ConsoleStack
    erp: Subscriber  # its target answers 500
    carrier: Subscriber  # its target's port is closed
    billing: Subscriber  # its target answers 400: dead letters
    ops: Subscriber  # its target answers 429 with Retry-After
    wms: Subscriber  # healthy


def _sub(prefix: str, url: str) -> Subscriber:
    return Subscriber(
        name=f"{prefix}-{uuid.uuid4().hex[:6]}",
        events=("*",),
        retry_delays_ms=(600_000, 3_600_000),
        prefetch=8,
        timeout=5.0,
        in_process_tries=1,
        forward_url=url,
    )


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    failing, refusing, healthy, throttling = Target(), Target(), Target(), Throttling()
    failing.status_for = lambda message_id, n: 500
    refusing.status_for = lambda message_id, n: 400
    subs = Outage(
        stack=None,  # type: ignore[arg-type]
        erp=_sub("erp", failing.url),
        carrier=_sub("carrier", f"http://127.0.0.1:{free_port()}/in"),
        billing=_sub("billing", refusing.url),
        ops=_sub("ops", throttling.url),
        wms=_sub("wms", healthy.url),
    )
    everyone = [subs.erp, subs.carrier, subs.billing, subs.ops, subs.wms]
    ledger = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.sqlite3'}"
    _history(ledger, subs)
    exchange = f"figures-{uuid.uuid4().hex[:8]}"
    with ConsoleStack(exchange, everyone, {}, ledger_url=ledger) as stack:
        for target in (failing, refusing, healthy, throttling):
            stack.call(target.start())
        try:
            for n in range(WEBHOOKS):
                stack.call(publish(stack.probe, exchange, "despatched", body_for("despatched", n)))
            billing_dlq = dlq_name(subs.billing.name)
            _until(lambda: stack.call(stack.probe.count(billing_dlq)) == WEBHOOKS, timeout=30)
            subs.stack = stack
            yield subs
        finally:
            for target in (failing, refusing, healthy, throttling):
                stack.call(target.stop())


HISTORY_MINUTES = range(58, 12, -1)
"""Whole minutes ago with deliveries in the history (within the page's hour)."""


def _per_minute(ago: int) -> int:
    return 6 + (ago * 5) % 7


HISTORY = sum(_per_minute(ago) for ago in HISTORY_MINUTES)
"""Deliveries the history gives each subscriber."""


def _history(url: str, outage: Outage) -> None:
    """The hour before the outage, written straight into the ledger (as the order timeline's
    test does): deliveries every minute until 13 minutes ago, and a short burst of 503s half
    an hour ago that recovered. Its own stream name: the indexer's offsets are untouched.
    Every figure the tests check comes from the worker (the 500s are newer, the healthy
    one's deliveries are counted from now)."""
    now = datetime.now(UTC)
    rows = []
    for sub in (outage.erp, outage.carrier, outage.billing, outage.ops, outage.wms):
        for ago in HISTORY_MINUTES:
            at = now - timedelta(minutes=ago)
            rows += [attempt(sub.name, "delivered", at, 200) for _ in range(_per_minute(ago))]
    rows += [
        attempt(outage.erp.name, "failed", now - timedelta(minutes=m), 503) for m in (31, 31, 30)
    ]
    engine = open_writer(url)
    batch = Batch(attempts=rows)
    batch.cover("history.deliveries", len(rows))
    write_batch(engine, batch, {"webhooks": "history.archive", "attempts": "history.deliveries"})
    engine.dispose()


def _signed_in(driver: WebDriver, base: str) -> Page:
    page = Page(driver, base)
    driver.get(base + "/")
    if "/login" in driver.current_url:
        page.sign_in()
    return page


def _reloaded(page: Page, path: str, selector: str) -> str:
    page.open(path)
    return page.text(selector)


def test_the_subscriber_pages_say_why_each_one_fails(
    driver: WebDriver, outage: Outage, shots: Path
) -> None:
    page = _signed_in(driver, outage.stack.url)
    erp = f"/subscribers/{outage.erp.name}"
    _until(lambda: int(_reloaded(page, erp, "#deliveries [data-figure=failed]")) > 0, 30)
    assert "500" in page.text("#last-error [data-figure=error-status]")
    assert page.text("#state").startswith("Consuming, but failing since")
    assert "last answer 500" in page.text("#state")
    chart = driver.find_element(By.CSS_SELECTOR, "#per-minute svg[role=img]")
    assert chart.find_elements(By.CSS_SELECTOR, "rect.failed")
    page.shoot(shots, "subscriber-failing")

    wms = f"/subscribers/{outage.wms.name}"
    recent = re.compile(r"^(just now|\d+ s ago)$")  # the worker's, not the history's
    _until(lambda: bool(recent.match(_reloaded(page, wms, "[data-figure=last-delivery]"))), 30)
    assert page.text("#last-delivery").startswith("Last delivery")
    assert page.text("#state").startswith("Consuming (")
    delivered = HISTORY + WEBHOOKS
    _until(lambda: _reloaded(page, wms, "#deliveries [data-figure=delivered]") == str(delivered))

    carrier = f"/subscribers/{outage.carrier.name}"
    _until(lambda: "down since" in _reloaded(page, carrier, "#state"), 30)
    assert "probing" in page.text("#state")

    ops = f"/subscribers/{outage.ops.name}"
    _until(lambda: _reloaded(page, ops, "#state").startswith("Throttled until"), 30)
    assert "Retry-After 300 s" in page.text("#state")

    page.open("/")
    script = "const e = document.querySelector(arguments[0]); return e && e.dataset.state"
    expected = {
        outage.erp.name: "failing",
        outage.carrier.name: "target-down",
        outage.ops.name: "throttled",
        outage.wms.name: "consuming",
    }

    def states() -> dict[str, str]:
        return {n: driver.execute_script(script, f"#sub-{n} .state") for n in expected}

    _until(lambda: states() == expected, 30)
    assert page.text(f"#sub-{outage.wms.name} [data-ledger]").startswith("Last delivery")
    page.shoot(shots, "overview-outage")


PHONE = VIEWPORTS["phone"][0]


def _too_wide(driver: WebDriver) -> tuple[int, int] | None:
    """(scroll width, inner width) when the page is wider than the phone: its content
    scrolls sideways, or (a mobile viewport widens itself to fit wide content) the window's
    inner width grew past the device's 390 px."""
    script = "return [document.documentElement.scrollWidth, window.innerWidth]"
    scroll, inner = (int(n) for n in driver.execute_script(script))
    return (scroll, inner) if scroll > inner or inner > PHONE else None


_WIDEST = """
const found = [];
for (const e of document.querySelectorAll('body *')) {
  const r = e.getBoundingClientRect();
  if (r.right > arguments[0] + 1 && !e.closest('.table-wrap')) {
    found.push(e.tagName.toLowerCase() + '.' + e.className + ' ' + Math.round(r.right));
  }
}
return found.slice(-5);
"""


def _widest(driver: WebDriver) -> list[str]:
    """The last few elements reaching past the phone's edge (what to fix)."""
    return list(driver.execute_script(_WIDEST, PHONE))


def test_no_page_is_wider_than_a_phone(driver: WebDriver, outage: Outage) -> None:
    base = outage.stack.url
    set_viewport(driver, "phone")
    try:
        driver.delete_all_cookies()
        page = Page(driver, base)
        page.open("/login")
        wide: dict[str, tuple[int, int] | None] = {"/login": _too_wide(driver)}
        page = _signed_in(driver, base)
        billing = outage.billing.name
        paths = [
            "/",
            f"/subscribers/{outage.erp.name}",
            f"/subscribers/{outage.carrier.name}",
            f"/subscribers/{billing}/dead-letters",
            "/orders?q=20285",
            "/replay",
        ]
        page.open(f"/subscribers/{billing}/dead-letters")
        paths.append(_href(driver, f"a[href^='/subscribers/{billing}/dead-letters/']"))
        page.open("/orders?q=20285")
        paths.append(_href(driver, "a[href^='/orders/webhooks/']"))
        culprits: dict[str, list[str]] = {}
        for path in paths:
            page.open(path)
            wide[path] = _too_wide(driver)
            if wide[path] is not None:
                culprits[path] = _widest(driver)
        driver.get(base + "/audit")  # the operators' page, where this build has it
        if not driver.find_elements(By.CSS_SELECTOR, "[data-error-status='404']"):
            page.check()
            wide["/audit"] = _too_wide(driver)
        found = {path: size for path, size in wide.items() if size is not None}
        assert found == {}, (
            f"wider than a {PHONE} px phone (scroll, inner width): {found} {culprits}"
        )
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _href(driver: WebDriver, selector: str) -> str:
    link = driver.find_element(By.CSS_SELECTOR, selector).get_attribute("href")
    assert link is not None
    parts = urlsplit(link)
    return parts.path + (f"?{parts.query}" if parts.query else "")
