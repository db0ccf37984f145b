"""Pausing a subscriber in a real headless Chromium: its page says it consumes; Pause, and
the worker stops while the queue grows (the page shows the messages waiting); Resume, and
the queue drains. The subscriber page never gets wider than a 390 px phone. With
``BRIDGE_SCREENSHOTS=DIR`` the paused subscriber page is saved at laptop and phone widths."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bridge.worker.message import Message
from bridge.worker.subscribers import Subscriber
from tests.support.browser import (
    VIEWPORTS,
    ConsoleStack,
    browser_installed,
    make_driver,
    new_profile,
    set_viewport,
)
from tests.worker_helpers import body_for, publish

pytestmark = pytest.mark.browser

if not browser_installed():  # pragma: no cover - CI installs it (.ci/ensure-browser)
    if os.environ.get("CI"):
        raise RuntimeError("chromium/chromedriver missing: run .ci/ensure-browser")
    pytest.skip(
        "chromium or chromedriver is missing: run .ci/ensure-browser", allow_module_level=True
    )

from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402

from tests.test_console_browser import Page  # noqa: E402


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with new_profile() as profile:
        chrome = make_driver(profile)
        try:
            yield chrome
        finally:
            chrome.quit()


def _until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_pause_then_resume_on_the_subscriber_page(
    driver: WebDriver, exchange: str, tmp_path: Path
) -> None:
    sub = Subscriber(
        name=f"erp-{uuid.uuid4().hex[:6]}",
        events=("*",),
        retry_delays_ms=(300_000,),
        prefetch=8,
        timeout=5.0,
        in_process_tries=1,
    )
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
        folder = Path(os.environ.get("BRIDGE_SCREENSHOTS") or tmp_path)
        folder.mkdir(parents=True, exist_ok=True)
        page.shoot(folder, "subscriber-paused")
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
