"""One sync pass (scan orders, enrol, scan tracking, reconcile), ``--once``, the loop, and
backfill. A failed step is recorded (``sync status`` shows the last error) and does not stop
the others; whatever it left undone is redone on the next pass. The loop stops on
SIGTERM/SIGINT between two requests, losing nothing: every outcome is already recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, Self

from bridge.amqp.connection import BrokerLink
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import declare, settings_topology
from bridge.core import metrics
from bridge.core.secrets import mask
from bridge.core.settings import Settings
from bridge.core.tasks import within
from bridge.errors import CommandError
from bridge.mintsoft.client import MintsoftClient
from bridge.mintsoft.sync.api import SyncApi, sync_client
from bridge.mintsoft.sync.archive import SeenEvents, default_seen
from bridge.mintsoft.sync.clock import MintsoftClock
from bridge.mintsoft.sync.enrol import EnrolResult, enrol_pending, mintsoft_away
from bridge.mintsoft.sync.reconcile import ReconcileResult, reconcile
from bridge.mintsoft.sync.scan import Scanner, ScanResult, scan_lag
from bridge.mintsoft.sync.state import SyncState

log = logging.getLogger("bridge.mintsoft.sync")

RETENTION = 90 * 86400.0
"""Finished records older than this are forgotten, so the state does not grow without end.
An order listed again later is only read (its connect action already holds the bridge's
URLs: no PUT); an event listed again is checked against the archive again."""


class Bar(Protocol):
    def advance(self, ok: bool) -> None: ...
    def close(self) -> None: ...


class Bars(Protocol):
    def __call__(self, label: str, total: int) -> Bar: ...


@dataclass
class PassReport:
    orders: ScanResult = field(default_factory=ScanResult)
    tracking: ScanResult = field(default_factory=ScanResult)
    enrol: EnrolResult = field(default_factory=EnrolResult)
    reconcile: ReconcileResult = field(default_factory=ReconcileResult)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        recovered = ", ".join(f"{n} {e}" for e, n in sorted(self.reconcile.recovered.items()))
        skipped = self.orders.skipped + self.tracking.skipped
        return (
            f"{self.orders.rows} orders listed ({self.orders.new_orders} new"
            f"{f', {skipped} skipped' if skipped else ''}); "
            f"enrolled {self.enrol.enrolled}, already {self.enrol.already}, "
            f"conflicts {self.enrol.conflicts}, failed {self.enrol.failed}; "
            f"recovered {self.reconcile.total_recovered}{f' ({recovered})' if recovered else ''}"
            f", arrived {self.reconcile.arrived}"
        )


class Sync:
    """``async with Sync(settings) as sync: await sync.run_pass()``."""

    def __init__(
        self,
        settings: Settings,
        *,
        seen: SeenEvents | None = None,
        take_over: bool = False,
        backoff: float = 1.0,
    ) -> None:
        self.settings = settings
        # What arrived: the archive library's reader unless a test gives its own.
        self.seen = seen if seen is not None else default_seen(settings)
        self.take_over = take_over
        self.clock = MintsoftClock(settings.mintsoft_timezone)
        self._backoff = backoff
        self.state: SyncState | None = None
        self.client: MintsoftClient | None = None
        self.link: BrokerLink | None = None
        self.publisher: Publisher | None = None
        self.scanner: Scanner | None = None
        self.api: SyncApi

    async def __aenter__(self) -> Self:
        try:
            return await self._open()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise

    async def _open(self) -> Self:
        settings = self.settings
        if settings.public_url is None:
            raise CommandError(
                "BRIDGE_PUBLIC_URL is not set: sync registers <public URL>/webhooks/<event> "
                "on each order; set it to the URL Mintsoft calls"
            )
        self.state = SyncState(settings.sync_state_path)
        self.client = sync_client(settings, self._backoff)
        await self.client.__aenter__()
        api = SyncApi(self.client)
        self.api = api
        self.scanner = Scanner(settings, api, self.state, self.clock)
        if settings.sync_reconcile != "off":
            topology = settings_topology(settings)

            async def on_channel(channel: object) -> None:
                await declare(channel, topology)  # type: ignore[arg-type]

            self.link = BrokerLink(settings.amqp_urls, on_channel, name="mintsoft-bridge sync")
            self.link.on_state_change(lambda up: metrics.BROKER_CONNECTED.set(1 if up else 0))
            await self.link.start(wait=settings.publish_timeout)
            self.publisher = Publisher(self.link, settings.exchange, settings.publish_timeout)
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        if self.link is not None:
            await self.link.close()
        if self.client is not None:
            await self.client.__aexit__(None, None, None)
        if self.state is not None:
            self.state.close()

    def backfill_from(self, since: datetime) -> None:
        assert self.scanner is not None
        self.scanner.start_cursors(since)

    async def run_pass(self, bars: Bars | None = None) -> PassReport:
        assert self.state is not None and self.scanner is not None
        report = PassReport()
        settings = self.settings
        try:
            report.orders = await self.scanner.scan_orders()
        except CommandError as exc:
            report.errors.append(f"listing orders: {exc}")
            if mintsoft_away(exc):  # every other step needs Mintsoft too: next pass
                self._record(report)
                return report
        bar: Bar | None = None

        def start(label: str) -> Callable[[int], None]:
            def total(n: int) -> None:
                nonlocal bar
                bar = bars(label, n) if bars is not None and n else None

            return total

        def advance(ok: bool) -> None:
            if bar is not None:
                bar.advance(ok)

        try:
            report.enrol = await enrol_pending(
                settings, self.api, self.state, self.take_over, advance, start("enrol")
            )
        finally:
            if bar is not None:
                bar.close()
                bar = None
        report.errors += report.enrol.errors[:5]
        if settings.sync_reconcile != "off":
            assert self.publisher is not None
            try:
                report.tracking = await self.scanner.scan_tracking()
            except CommandError as exc:
                report.errors.append(f"listing tracking events: {exc}")
            try:
                report.reconcile = await reconcile(
                    settings,
                    self.api,
                    self.state,
                    self.publisher,
                    self.seen,
                    advance,
                    start("reconcile"),
                )
            except CommandError as exc:
                report.errors.append(f"reconcile: {exc}")
            finally:
                if bar is not None:
                    bar.close()
            report.errors += report.reconcile.errors[:5]
        self._record(report)
        return report

    def _record(self, report: PassReport) -> None:
        assert self.state is not None
        self.state.prune(time.time() - RETENTION)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self.state.set_meta("last_pass_at", now)
        self.state.set_meta("last_pass", report.summary())
        if report.errors:
            # Mintsoft's words may echo a credential in a form the client did not expect.
            first = mask(report.errors[0], self.settings.secret_values())
            self.state.set_meta("last_error", f"{now} {first}")
            log.warning("sync pass had %d failed step(s): %s", len(report.errors), first)
        metrics.SYNC_PASS_FAILED.set(0 if report.ok else 1)
        now_utc = datetime.now(UTC)
        for name in self.state.cursors():
            metrics.SYNC_CURSOR_LAG.labels(name).set(scan_lag(self.state, name, now_utc))
        log.info("sync pass: %s", report.summary())

    async def run_forever(self, stop: asyncio.Event) -> None:
        """A pass every ``BRIDGE_SYNC_INTERVAL`` until ``stop`` is set."""
        while not stop.is_set():
            started = time.monotonic()
            pass_task = asyncio.ensure_future(self.run_pass())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({pass_task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not pass_task.done():
                pass_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pass_task
                stopper.cancel()
                return
            stopper.cancel()
            pass_task.result()
            wait = max(0.0, self.settings.sync_interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await within(wait, stop.wait())
