"""Headless Chromium for the console's browser tests (Debian's chromium + chromedriver driven
by Selenium; ``.ci/ensure-browser`` installs them), and a console stack (console, worker,
broker probe) served from a background event loop, since Selenium's calls block.

Selenium Manager never runs: the driver's path is given explicitly, and ``SE_OFFLINE`` stops
it downloading anything should it ever be reached.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

os.environ.setdefault("SE_OFFLINE", "true")

import aiormq
import pytest
from aiohttp import web
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from sqlalchemy import Engine

from bridge.amqp.topology import Topology, archive_retention, declare, receiver_topology
from bridge.console.app import build_app
from bridge.console.sources import ArchiveSummaryCache
from bridge.console.users import Users
from bridge.core.contract import subscribed_events
from bridge.core.records import deliveries_stream
from bridge.ledger.database import open_writer
from bridge.ledger.indexer import Indexer
from bridge.ledger.queries import LedgerReader
from bridge.ledger.store import SubscriberSpec, store_subscribers
from bridge.worker.runner import Worker
from bridge.worker.subscribers import Handler, Subscriber
from tests.conftest import AMQP_URL, BrokerProbe, bridge_settings, receiver_names
from tests.console_helpers import console_state
from tests.worker_helpers import track_subscriber

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
CHROMEDRIVER = (
    "/usr/bin/chromedriver"
    if os.path.exists("/usr/bin/chromedriver")
    else shutil.which("chromedriver")
)
FLAGS = (
    "--headless",
    "--no-sandbox",  # needed as root (CI)
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1440,900",
)
VIEWPORTS = {"laptop": (1440, 900, False), "phone": (390, 844, True)}


def browser_installed() -> bool:
    return bool(CHROMIUM and CHROMEDRIVER)


def require_browser() -> None:
    """Called at the top of a browser test module: skips the module when Chromium or its
    driver is missing, except in CI, where that is an error (.ci/ensure-browser installs
    them there)."""
    if browser_installed():  # pragma: no cover - the usual case
        return
    if os.environ.get("CI"):
        raise RuntimeError("chromium/chromedriver missing: run .ci/ensure-browser")
    pytest.skip(
        "chromium or chromedriver is missing: run .ci/ensure-browser", allow_module_level=True
    )


def make_driver(profile: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def set_viewport(driver: webdriver.Chrome, name: str) -> None:
    width, height, mobile = VIEWPORTS[name]
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


class ConsoleStack:
    """Console + worker + broker probe on a private event loop in a thread."""

    def __init__(
        self,
        exchange: str,
        subs: list[Subscriber],
        handlers: Mapping[str, Handler],
        console_urls: tuple[str, ...] | None = None,
        ledger_url: str | None = None,
        users: Users | None = None,
    ) -> None:
        self.console_urls = console_urls
        """The console's broker URLs when not the worker's (a closed port: a broker away)."""
        self.ledger_url = ledger_url
        """A ledger the console reads, with its indexer running in the stack."""
        self.users = users
        """Named operators (``BRIDGE_CONSOLE_USERS_FILE``); ``None``: the shared password."""
        self.exchange = exchange
        self.subs = subs
        self.handlers = handlers
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""
        self.probe = BrokerProbe(AMQP_URL)
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Future[None] | None = None
        self._indexer_task: asyncio.Future[None] | None = None
        self._ledger_engine: Engine | None = None
        self._ledger_reader: LedgerReader | None = None
        self._runner: web.AppRunner | None = None

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        async def run() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def __enter__(self) -> ConsoleStack:
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        await self.probe.open()
        assert self.probe.channel is not None
        await declare(self.probe.channel, _receiver_topology(self.exchange))
        queues, exchanges = receiver_names(self.exchange)
        self.probe.track(queues=(self.exchange + ".archive",))
        self.probe.track(queues=queues, exchanges=exchanges)
        for sub in self.subs:
            track_subscriber(self.probe, self.exchange, sub)  # its queues and exchanges
        worker = Worker(bridge_settings(self.exchange, archive=True), self.subs, self.handlers)
        ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._worker_task = asyncio.ensure_future(worker.run(self._stop, ready, grace=2.0))
        async with asyncio.timeout(15):
            await ready.wait()
        console = console_state(self.exchange, self.subs)
        if self.console_urls is not None:
            console = replace(console, amqp_urls=self.console_urls)
        if self.users is not None:
            console = replace(console, users=self.users)
        if self.ledger_url is not None:
            console = replace(console, ledger=await self._start_ledger(self.ledger_url))
        # The broker's stream count lags a few seconds: a page that waits for it to show
        # must not wait out the overview's 60 s archive cache as well.
        console.archive_cache = ArchiveSummaryCache(ttl=1.0)
        self._runner = web.AppRunner(build_app(console))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    def __exit__(self, *exc: Any) -> None:
        self.call(self._close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start_ledger(self, url: str) -> LedgerReader:
        """The ledger's indexer (it declares the deliveries stream) and a reader of it."""
        self.probe.track(queues=(deliveries_stream(self.exchange),))
        self._ledger_engine = open_writer(url)
        # As `ledger --config` with the workers' file: it knows whom each webhook is for.
        specs = [
            SubscriberSpec(s.name, subscribed_events(s.events), s.clients, s.warehouses)
            for s in self.subs
        ]
        store_subscribers(self._ledger_engine, specs)
        settings = bridge_settings(self.exchange, archive=True, ledger_url=url)
        indexer = Indexer(settings, self._ledger_engine, url, undelivered_interval=1.0)
        self._indexer_task = asyncio.ensure_future(indexer.run(self._stop))
        async with asyncio.timeout(15):  # the indexer has declared the deliveries stream
            while True:
                try:
                    await (await self.probe._chan()).queue_declare(
                        deliveries_stream(self.exchange), passive=True
                    )
                    break
                except aiormq.exceptions.ChannelNotFoundEntity:
                    await asyncio.sleep(0.1)
        self._ledger_reader = LedgerReader(url)
        return self._ledger_reader

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._stop.set()
        if self._worker_task is not None:
            await asyncio.wait_for(self._worker_task, 15)
        if self._indexer_task is not None:
            await asyncio.wait_for(self._indexer_task, 30)
        if self._ledger_reader is not None:
            self._ledger_reader.close()
        if self._ledger_engine is not None:
            self._ledger_engine.dispose()
        await self.probe.cleanup()


def _receiver_topology(exchange: str) -> Topology:
    """The receiver's topology with the archive stream, as the worker declares it (the
    settings' default retention: a redeclare with other arguments is refused)."""
    return receiver_topology(exchange, archive_retention(bridge_settings(exchange, archive=True)))


def new_profile() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="chromium-profile-")
