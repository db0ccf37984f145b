"""The dead-letters page in headless Chromium, as an operator uses it in an outage: the same
rows in the same order over reloads and pages, grouped by error, select all, an action bar
that stays in view, "discard all matching" confirmed with the exact count (Cancel focused,
Esc cancels), no page wider than a phone; and a console whose broker cannot be reached
saying "could not look" on the overview, an order and the dead letters.

With ``BRIDGE_SCREENSHOTS=DIR`` the grouped dead letters, the confirmation and the
could-not-look overview are saved at laptop and phone widths.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge import PermanentError
from bridge.amqp.topology import dlq_name
from bridge.console import broker, dead_letters
from bridge.worker.message import Message
from tests.support.browser import ConsoleStack, set_viewport
from tests.support.rabbit_node import free_port
from tests.test_console_browser import Page, _sub, _until, driver, shots
from tests.worker_helpers import body_for, publish

pytestmark = pytest.mark.browser
__all__ = ["driver", "shots"]  # the fixtures, shared with the other browser tests

from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402


def _row_ids(page: Page) -> list[str]:
    rows = page.driver.find_elements(By.CSS_SELECTOR, "table.letters tbody tr")
    return [str(row.get_attribute("data-id")) for row in rows]


def _every_page(page: Page, path: str) -> list[str]:
    page.open(path)
    seen = _row_ids(page)
    while page.driver.find_elements(By.CSS_SELECTOR, "a[rel=next]"):
        page.click("a[rel=next]")
        seen += _row_ids(page)
    return seen


def _fits_the_phone(page: Page) -> None:
    wide = page.driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert wide[0] <= wide[1], f"{page.driver.current_url} is {wide[0]} px in {wide[1]}"


def test_dead_letters_stable_grouped_and_discard_all_matching(
    driver: WebDriver, exchange: str, shots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dead_letters, "PAGE_SIZE", 8)
    erp = _sub("erp")

    async def failing(message: Message) -> None:
        if message.event == "despatched":
            raise PermanentError("ERP answered 500: internal error")
        raise PermanentError("ERP answered 422: unknown SKU " + "X" * 60)

    with ConsoleStack(exchange, [erp], {erp.name: failing}) as stack:
        for i in range(14):
            stack.call(publish(stack.probe, exchange, "despatched", body_for("despatched", i)))
        for i in range(4):
            stack.call(publish(stack.probe, exchange, "cancelled", body_for("cancelled", i)))
        _until(lambda: stack.call(stack.probe.count(dlq_name(erp.name))) == 18)
        page = Page(driver, stack.url)
        page.sign_in()
        path = f"/subscribers/{erp.name}/dead-letters"

        first = _every_page(page, path)
        assert len(first) == 18 and len(set(first)) == 18  # 3 pages, each row once
        assert _every_page(page, path) == first
        page.driver.refresh()
        page.check()
        assert _row_ids(page) == first[16:]  # the last page, after a reload: the same rows

        page.open(path)
        groups = page.text("#groups")
        assert "14 × PermanentError: ERP answered 500" in groups
        assert "4 × PermanentError: ERP answered 422" in groups
        page.shoot(shots, "dead-letters-grouped")

        # Select all ticks every row of the page; the action bar stays in view at the bottom.
        page.click("#select-all")
        boxes = driver.find_elements(By.CSS_SELECTOR, "input.pick-box")
        assert len(boxes) == 8 and all(box.is_selected() for box in boxes)
        set_viewport(driver, "phone")
        page.open(path)
        _fits_the_phone(page)
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        top, bottom, height = driver.execute_script(
            "const r = document.getElementById('action-bar').getBoundingClientRect();"
            "return [r.top, r.bottom, window.innerHeight]"
        )
        assert driver.execute_script("return window.scrollY") > 0, "the list did not scroll"
        assert top >= 0 and bottom <= height, (top, bottom, height)

        # Discard all that match the 422 group: the exact count, Cancel focused, Esc cancels.
        driver.find_element(By.PARTIAL_LINK_TEXT, "ERP answered 422").click()
        page.check()
        _fits_the_phone(page)
        page.click("#discard-all")
        assert page.text("#confirm-title").startswith("Discard 4 dead letters of")
        assert page.text("#confirm-named").count("cancelled") == 4
        _fits_the_phone(page)
        assert driver.switch_to.active_element.get_attribute("id") == "cancel"
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)
        page.wait.until(lambda d: "confirm-title" not in d.page_source)
        page.check()
        assert stack.call(stack.probe.count(dlq_name(erp.name))) == 18
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

        page.open(path)
        driver.find_element(By.PARTIAL_LINK_TEXT, "ERP answered 422").click()
        page.check()
        page.click("#discard-all")
        page.shoot(shots, "dead-letters-confirm")
        page.click("#confirm")
        assert "Discarded 4 dead letters" in page.text(".notice")
        _until(lambda: stack.call(stack.probe.count(dlq_name(erp.name))) == 14)
        left = _every_page(page, path)
        assert left == [i for i in first if i in set(left)] and len(left) == 14


def test_a_broker_away_is_could_not_look_on_the_overview_an_order_and_dead_letters(
    driver: WebDriver, exchange: str, shots: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker, "WAIT_SECONDS", 0.5)
    erp = _sub("erp")

    async def fine(message: Message) -> None:
        return None

    closed = (f"amqp://guest:guest@127.0.0.1:{free_port()}/",)
    with ConsoleStack(exchange, [erp], {erp.name: fine}, console_urls=closed) as stack:
        page = Page(driver, stack.url)
        page.sign_in()
        for path in ("/", "/orders?q=20291", f"/subscribers/{erp.name}/dead-letters"):
            for viewport in ("laptop", "phone"):
                set_viewport(driver, viewport)
                page.open(path)
                assert "Could not look" in page.text("[data-could-not-look]"), path
                assert "No subscribers" not in driver.page_source
                assert "Nothing for 20291 in any" not in driver.page_source
                assert "No dead letters" not in driver.page_source
                if viewport == "phone":
                    _fits_the_phone(page)
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        page.open("/")
        page.shoot(shots, "overview-could-not-look")
