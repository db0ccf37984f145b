"""The console in a real headless Chromium: sign in, see a subscriber's dead letters after a
failing handler, open one, replay it (the DLQ empties and the handler is called), look an
order up and open its despatched body, replay an archive window after its dry-run count
(only what the target subscriber takes); pause a subscriber on its page, then resume it.

Every page is checked for a server error page and for errors in the browser's console.
With ``BRIDGE_SCREENSHOTS=DIR`` (``make screenshots``: docs/console) the overview, an order,
the dead letters and a paused subscriber are saved at laptop and phone widths.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bridge import PermanentError
from bridge.amqp.topology import dlq_name
from bridge.console.sources import archive_available
from bridge.core.contract import HEADER_REPLAY_ID
from bridge.worker.message import Message
from bridge.worker.subscribers import Subscriber
from tests.console_helpers import PASSWORD
from tests.support.browser import (
    VIEWPORTS,
    ConsoleStack,
    make_driver,
    new_profile,
    require_browser,
    set_viewport,
)
from tests.worker_helpers import body_for, publish

pytestmark = pytest.mark.browser

require_browser()

from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with new_profile() as profile:
        chrome = make_driver(profile)
        try:
            yield chrome
        finally:
            chrome.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    target = os.environ.get("BRIDGE_SCREENSHOTS")
    path = Path(target) if target else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path


class Page:
    """The driver, plus the checks every page gets: no error page, no console error."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base
        self.wait = WebDriverWait(driver, 15)
        driver.get_log("browser")  # start clean

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.check()

    def check(self) -> None:
        self.wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        errors = self.driver.find_elements(By.CSS_SELECTOR, "[data-error-status]")
        assert not errors, f"error page at {self.driver.current_url}: {errors[0].text}"
        logs = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, f"browser console errors: {logs}"

    def click(self, selector: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, selector).click()
        self.check()

    def text(self, selector: str) -> str:
        # Read in one script call: the overview's refresh may swap an element out between a
        # lookup and a read.
        script = "const e = document.querySelector(arguments[0]); return e ? [e.innerText] : null"
        found = self.wait.until(lambda d: d.execute_script(script, selector))
        return str(found[0]).strip()

    def sign_in(self) -> None:
        self.open("/")
        assert "/login" in self.driver.current_url
        # By keyboard: the password field has the focus, Enter submits.
        self.driver.switch_to.active_element.send_keys(PASSWORD + Keys.ENTER)
        self.wait.until(lambda d: "/login" not in d.current_url)
        self.check()
        assert self.driver.current_url.rstrip("/") == self.base

    def shoot(self, folder: Path, name: str) -> None:
        for viewport in ("laptop", "phone"):
            set_viewport(self.driver, viewport)
            self.driver.refresh()
            self.check()
            assert self.driver.save_screenshot(str(folder / f"{name}-{viewport}.png"))
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _sub(prefix: str) -> Subscriber:
    return Subscriber(
        name=f"{prefix}-{uuid.uuid4().hex[:6]}",
        events=("*",),
        retry_delays_ms=(300_000, 3_600_000),
        prefetch=8,
        timeout=5.0,
        in_process_tries=1,
    )


def _until(predicate: object, timeout: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_sign_in_see_open_and_replay_a_dead_letter(
    driver: WebDriver, exchange: str, shots: Path
) -> None:
    erp, wms = _sub("erp"), _sub("warehouse")
    state = {"healthy": False}
    handled: list[str] = []

    async def failing(message: Message) -> None:
        if not state["healthy"]:
            raise PermanentError("ERP answered 422: unknown SKU")
        handled.append(message.message_id)

    async def fine(message: Message) -> None:
        return None

    with ConsoleStack(exchange, [erp, wms], {erp.name: failing, wms.name: fine}) as stack:
        ids = [
            stack.call(publish(stack.probe, exchange, event, body_for(event, 0)))
            for event in ("despatched", "cancelled", "split")
        ]
        _until(lambda: stack.call(stack.probe.count(dlq_name(erp.name))) == 3)
        page = Page(driver, stack.url)
        page.sign_in()
        assert page.text(f"#sub-{erp.name} [data-figure=dead]") == "3"
        # The broker counts a stream's messages every few seconds; the page refreshes itself.
        _until(lambda: page.text("[data-figure=archived]") != "0", timeout=30)
        page.shoot(shots, "overview")

        page.click(f"#sub-{erp.name} [data-figure=dead] a")
        assert page.text("[data-figure=depth]") == "3"
        page.shoot(shots, "dead-letters")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.letters tbody tr")
        assert len(rows) == 3 and "unknown SKU" in rows[0].text

        # Open the despatched one: its pretty-printed body and headers.
        driver.find_element(By.CSS_SELECTOR, f"a.open[href$='{ids[0]}']").click()
        page.check()
        assert '"OrderNumber"' in page.text("#body") and "x-error" in page.text("#headers")
        page.shoot(shots, "dead-letter")

        state["healthy"] = True
        page.click("#replay-one")
        assert "Replay 1 dead letter" in page.text("#confirm-title")
        # The safe button (Cancel) has the focus: Enter twice never acts by mistake.
        assert driver.switch_to.active_element.get_attribute("id") == "cancel"
        page.click("#confirm")
        assert "Replayed 1 dead letter" in page.text(".notice")
        _until(lambda: handled == [ids[0]])

        # The other two: "replay all", confirmed with the count.
        page.click("#replay-all")
        assert "Replay 2 dead letters" in page.text("#confirm-title")
        page.click("#confirm")
        assert "Replayed 2 dead letters" in page.text(".notice")
        _until(lambda: sorted(handled) == sorted(ids))
        assert page.text("#dlq-empty").startswith("No dead letters")
        assert stack.call(stack.probe.count(dlq_name(erp.name))) == 0

        # The overview refreshes itself (htmx) without a reload.
        page.open("/")
        driver.execute_script("document.body.dataset.marker = 'same-page'")
        _until(lambda: page.text(f"#sub-{erp.name} [data-figure=dead]") == "0", timeout=15)
        assert driver.execute_script("return document.body.dataset.marker") == "same-page"
        page.check()


needs_archive = pytest.mark.skipif(
    not archive_available(), reason="the archive (bridge.archive) is not part of this build"
)


@needs_archive
def test_look_an_order_up_and_replay_an_archive_window(
    driver: WebDriver, exchange: str, shots: Path
) -> None:
    erp = _sub("erp")
    handled: list[str] = []

    async def record(message: Message) -> None:
        handled.append(message.event)

    with ConsoleStack(exchange, [erp], {erp.name: record}) as stack:
        for event in ("despatched", "delivered"):
            stack.call(publish(stack.probe, exchange, event, body_for(event, 0)))
        _until(lambda: len(handled) == 2)
        page = Page(driver, stack.url)
        page.sign_in()
        # While a lookup runs, its form says so (the request is held back here, so the
        # page stays to be read; a real one is replaced by the answer).
        page.open("/orders")
        driver.execute_script(
            "document.querySelectorAll('form').forEach("
            "f => f.addEventListener('submit', e => e.preventDefault()))"
        )
        assert not driver.find_element(By.ID, "order-searching").is_displayed()
        driver.find_element(By.ID, "order-q").send_keys("20285")
        page.click("#order-find")
        assert driver.find_element(By.ID, "order-searching").is_displayed()
        assert "Searching the archive" in page.text("#order-searching")
        page.open("/orders?q=20285&since=1h")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.hooks tbody tr")
        assert any("despatched" in row.text for row in rows), [r.text for r in rows]
        page.shoot(shots, "order")
        rows = driver.find_elements(By.CSS_SELECTOR, "table.hooks tbody tr")
        link = next(r for r in rows if "despatched" in r.text)
        link.find_element(By.CSS_SELECTOR, "a.open").click()
        page.check()
        assert '"OrderNumber"' in page.text("#body")

        page.open("/replay")
        driver.find_element(By.ID, "replay-since").clear()
        driver.find_element(By.ID, "replay-since").send_keys("1h")
        driver.find_element(By.CSS_SELECTOR, "input[name=event][value=despatched]").click()
        driver.find_element(By.CSS_SELECTOR, f"#replay-to option[value='{erp.name}']").click()
        page.click("#replay-count")
        assert page.text("[data-figure=matched]") == "1"
        handled.clear()
        page.click("#replay-send")
        page.wait.until(ec.presence_of_element_located((By.ID, "replay-done")))
        assert "Sent 1 of 1" in page.text("#replay-done")
        page.check()
        _until(lambda: handled == ["despatched"])


@needs_archive
def test_a_replay_of_all_events_copies_only_what_the_subscriber_takes(
    driver: WebDriver, exchange: str, shots: Path
) -> None:
    """A subscriber that takes only cancelled and split, paused: a replay of "all events"
    counts those two, says what it left out and why and that the subscriber is paused, and
    sends them; resumed, the subscriber gets exactly those two copies. The list of replays
    shows it done, and no replay page is wider than a phone."""
    sub = replace(_sub("returns"), events=("cancelled", "split"))
    handled: list[tuple[str, bool]] = []

    async def record(message: Message) -> None:
        handled.append((message.event, HEADER_REPLAY_ID in message.headers))

    with ConsoleStack(exchange, [sub], {sub.name: record}) as stack:
        for n, event in enumerate(("despatched", "cancelled", "split", "delivered", "despatched")):
            stack.call(publish(stack.probe, exchange, event, body_for(event, n)))
        _until(lambda: sorted(handled) == [("cancelled", False), ("split", False)])
        page = Page(driver, stack.url)
        page.sign_in()
        page.open(f"/subscribers/{sub.name}")
        page.click("#pause")

        def stopped() -> bool:  # its worker stopped taking messages
            page.open(f"/subscribers/{sub.name}")
            return page.text("[data-figure=consumers]") == "0"

        _until(stopped, timeout=10)
        handled.clear()

        page.open("/replay")
        driver.find_element(By.ID, "replay-since").clear()
        driver.find_element(By.ID, "replay-since").send_keys("1h")
        driver.find_element(By.CSS_SELECTOR, f"#replay-to option[value='{sub.name}']").click()
        page.click("#replay-count")
        assert page.text("[data-figure=matched]") == "2"
        left_out = page.text("#replay-left-out")
        assert f"1 delivered, 2 despatched: {sub.name} takes only cancelled, split" in left_out
        assert " to " in page.text("#replay-window") and "UTC" in page.text("#replay-window")
        assert "At most 100/s" in page.text("#replay-pace")
        assert f"{sub.name} is paused" in page.text("#target-warning")
        page.shoot(shots, "replay")
        page.click("#replay-send")
        page.wait.until(ec.presence_of_element_located((By.ID, "replay-done")))
        assert "Sent 2 of 2" in page.text("#replay-done")
        assert handled == []  # paused: the copies wait in its queue

        page.open(f"/subscribers/{sub.name}")
        page.click("#resume")
        _until(lambda: sorted(handled) == [("cancelled", True), ("split", True)])
        page.open("/replay#replays")
        assert page.text("tr.replay-row [data-figure=copied]") == "2 of 2"
        assert page.text("tr.replay-row .tag") == "done"
        page.shoot(shots, "replay-history")
        job = driver.find_element(By.CSS_SELECTOR, "tr.replay-row").get_attribute("data-job")
        set_viewport(driver, "phone")
        for path in ("/replay", f"/replay/jobs/{job}"):
            page.open(path)
            width = driver.execute_script("return document.documentElement.scrollWidth")
            assert width <= VIEWPORTS["phone"][0], f"{path} is {width} px wide"
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_pause_then_resume_on_the_subscriber_page(
    driver: WebDriver, exchange: str, shots: Path
) -> None:
    """Pause, and the worker stops while the queue grows (the page shows the messages
    waiting); Resume, and the queue drains. The page never gets wider than a 390 px phone."""
    sub = _sub("erp")
    handled: list[str] = []

    async def handler(message: Message) -> None:
        handled.append(message.message_id)

    with ConsoleStack(exchange, [sub], {sub.name: handler}) as stack:
        page = Page(driver, stack.url)
        page.sign_in()
        assert page.text(f"#sub-{sub.name} .state").startswith("Consuming")
        page.click(f"#sub-{sub.name} h2 a")
        assert page.text("#state").startswith("Consuming")

        page.click("#pause")
        assert "Paused" in page.text(".notice")
        assert page.text("#state").startswith("Paused by")

        def consumers() -> int:
            page.open(f"/subscribers/{sub.name}")
            return int(page.text("[data-figure=consumers]"))

        _until(lambda: consumers() == 0, timeout=10)
        for n in range(6):
            stack.call(publish(stack.probe, exchange, "despatched", body_for("despatched", n)))

        def ready() -> int:
            page.open(f"/subscribers/{sub.name}")
            return int(page.text("[data-figure=ready]"))

        _until(lambda: ready() == 6)
        assert handled == []
        page.shoot(shots, "subscriber-paused")
        set_viewport(driver, "phone")
        page.open(f"/subscribers/{sub.name}")
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= VIEWPORTS["phone"][0], f"the subscriber page is {width} px wide"
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        page.open(f"/subscribers/{sub.name}")
        page.click("#resume")
        assert "Resumed" in page.text(".notice")
        _until(lambda: len(handled) == 6, timeout=15)
        _until(lambda: ready() == 0)
        assert page.text("#state").startswith("Consuming")
