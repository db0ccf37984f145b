"""Named operators and ``/audit`` in a real headless Chromium, with a ledger: an operator signs
in by name (the header says who), pauses and resumes a subscriber and discards a dead letter;
``/audit`` then lists those three changes with the operator's name, newest first, and is no
wider than a 390 px phone. With ``BRIDGE_SCREENSHOTS=DIR`` (``make screenshots``:
docs/console) it is saved as ``audit-*.png``."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge import PermanentError
from bridge.amqp.topology import dlq_name
from bridge.console.auth import hash_password
from bridge.console.users import parse_users
from bridge.worker.message import Message
from bridge.worker.subscribers import Subscriber
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

from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

NAME = "olivia.ops"
PASSWORD = "olivia-runs-the-night-shift"


def _until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _gone(element: WebElement) -> bool:
    """Whether ``element``'s page has been replaced. Mid-navigation Chromium may answer
    "node does not belong to the document" (a plain WebDriverException) instead of a stale
    reference; selenium's staleness_of takes only the latter, and failed the test so."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def test_an_operator_signs_in_by_name_and_audit_lists_their_changes(
    exchange: str, tmp_path: Path
) -> None:
    target = os.environ.get("BRIDGE_SCREENSHOTS")
    shots = Path(target) if target else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    sub = Subscriber(
        name=f"erp-{uuid.uuid4().hex[:6]}",
        events=("*",),
        retry_delays_ms=(300_000,),
        prefetch=8,
        timeout=5.0,
        in_process_tries=1,
    )

    async def failing(message: Message) -> None:
        raise PermanentError("ERP answered 422: unknown SKU")

    users = parse_users(f"{NAME}:{hash_password(PASSWORD)}\n", "users")
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    with (
        ConsoleStack(exchange, [sub], {sub.name: failing}, ledger_url=ledger, users=users) as stack,
        new_profile() as profile,
    ):
        message_id = stack.call(
            publish(stack.probe, exchange, "despatched", body_for("despatched", 1))
        )
        _until(lambda: stack.call(stack.probe.count(dlq_name(sub.name))) == 1)
        driver = make_driver(profile)
        try:
            wait = WebDriverWait(driver, 15)

            def open_page(path: str) -> None:
                driver.get(stack.url + path)
                wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
                assert not driver.find_elements(By.CSS_SELECTOR, "[data-error-status]")
                logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert not logs, logs

            def click(selector: str) -> None:
                # Each click here loads a new page: wait for the old one to go first (its
                # readyState is "complete" too, so waiting on that alone can read the old page).
                page = driver.find_element(By.TAG_NAME, "html")
                driver.find_element(By.CSS_SELECTOR, selector).click()
                wait.until(lambda _d: _gone(page))
                wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

            open_page("/")
            assert "/login" in driver.current_url
            # By keyboard: the name has the focus, Tab to the password, Enter signs in.
            assert driver.switch_to.active_element.get_attribute("id") == "name"
            driver.switch_to.active_element.send_keys(NAME + Keys.TAB + PASSWORD + Keys.ENTER)
            wait.until(lambda d: "/login" not in d.current_url)
            assert f"Signed in as {NAME}" in driver.find_element(By.ID, "signed-in-as").text

            open_page(f"/subscribers/{sub.name}")
            click("#pause")
            assert "Paused" in driver.find_element(By.CSS_SELECTOR, ".notice").text
            assert NAME in driver.find_element(By.ID, "state").text
            click("#resume")
            assert "Resumed" in driver.find_element(By.CSS_SELECTOR, ".notice").text

            open_page(f"/subscribers/{sub.name}/dead-letters/{message_id}")
            click("#discard-one")
            assert "Discard 1 dead letter" in driver.find_element(By.ID, "confirm-title").text
            click("#confirm")
            assert "Discarded 1 dead letter" in driver.find_element(By.CSS_SELECTOR, ".notice").text

            def listed() -> list[tuple[str, str]]:
                open_page("/audit")
                rows = driver.find_elements(By.CSS_SELECTOR, "#audit tr.change")
                return [
                    (str(r.get_attribute("data-action")), str(r.get_attribute("data-operator")))
                    for r in rows
                ]

            _until(lambda: len(listed()) == 3, timeout=20)
            assert listed() == [("discard", NAME), ("resume", NAME), ("pause", NAME)]
            first = driver.find_element(By.CSS_SELECTOR, "#audit tr.change")
            assert sub.name in first.text and "selected" in first.text
            nav = driver.find_element(By.CSS_SELECTOR, "nav a[href='/audit']")
            assert nav.get_attribute("aria-current") == "page"
            for viewport in ("laptop", "phone"):
                set_viewport(driver, viewport)
                open_page("/audit")
                width = driver.execute_script("return document.documentElement.scrollWidth")
                assert width <= VIEWPORTS[viewport][0], f"/audit is {width} px wide"
                assert driver.save_screenshot(str(shots / f"audit-{viewport}.png"))
        finally:
            driver.quit()
