"""The sync against a hostile or broken Mintsoft (issue 22, points 15-18): what is read is
bounded, an order id that does not fit SQLite is skipped and recorded, a cursor never
moves past now plus a small skew, and paging stops at a repeated page or a page limit."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bridge.mintsoft.client import MAX_ERROR_BYTES, MAX_PAGE_BYTES, MintsoftClient, MintsoftError
from bridge.mintsoft.sync import api as sync_api
from bridge.mintsoft.sync.runner import Sync
from bridge.mintsoft.sync.scan import FUTURE_SKEW
from tests.support.local_app import serve_locally
from tests.support.mintsoft_world import MintsoftWorld, local_now
from tests.support.sync_harness import sync_settings

MiB = 1024 * 1024


class Streamed:
    """A handler answering ``status`` with a body of ``size`` bytes made lazily (no
    Content-Length), counting per request how many bytes it got to send."""

    def __init__(self, status: int, head: bytes, fill: bytes, size: int) -> None:
        self.status, self.head, self.fill, self.size = status, head, fill, size
        self.sent: list[int] = []

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=self.status)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.sent.append(0)
        chunk = self.fill * (256 * 1024 // len(self.fill))
        try:
            await response.write(self.head)
            self.sent[-1] += len(self.head)
            while self.sent[-1] < self.size:
                await response.write(chunk)
                self.sent[-1] += len(chunk)
            await response.write(b"{}]")
        except (ConnectionError, RuntimeError):
            pass
        return response


async def _client_against(handler: Streamed) -> tuple[Any, MintsoftClient]:
    runner, url = await serve_locally(handler.__call__)
    return runner, MintsoftClient(url, api_key="k-1", attempts=2, backoff=0.01)


# 15. Bounded reads


async def test_a_page_above_the_byte_limit_is_refused_without_reading_it_all() -> None:
    assert 32 * MiB == MAX_PAGE_BYTES
    huge = Streamed(200, b"[", b'{"ID":1},', MAX_PAGE_BYTES + 32 * MiB)
    runner, client = await _client_against(huge)
    try:
        async with client:
            with pytest.raises(MintsoftError) as refused:
                await client.request("GET", "/api/Order/List")
        assert "32 MiB" in str(refused.value) and "Order/List" in str(refused.value)
        # The client stopped reading: the server could not send the whole body.
        assert huge.sent[0] < MAX_PAGE_BYTES + 16 * MiB, huge.sent
    finally:
        await runner.cleanup()


async def test_an_error_body_is_read_only_up_to_its_first_kib_on_every_attempt() -> None:
    assert MAX_ERROR_BYTES == 1024
    flood = Streamed(500, b'{"Message": "database busy', b"x", 64 * MiB)
    runner, client = await _client_against(flood)
    try:
        async with client:
            with pytest.raises(MintsoftError) as failed:
                await client.request("GET", "/api/Order/List")
        assert "answered GET /api/Order/List with 500" in str(failed.value)
        assert "database busy" in str(failed.value) and len(str(failed.value)) < 600
        assert len(flood.sent) == 2  # retried once, and each attempt stopped early
        assert all(sent < 16 * MiB for sent in flood.sent), flood.sent
    finally:
        await runner.cleanup()


class Overfull(MintsoftWorld):
    """Answers more rows than the Limit asked for."""

    def _page(self, rows: list[Any], q: Any, largest: int) -> list[Any]:
        return rows


async def test_a_page_with_more_rows_than_its_limit_is_an_error(tmp_path: Path) -> None:
    world = Overfull()
    await world.start()
    try:
        for _ in range(150):
            world.create()
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        async with Sync(settings) as sync:
            report = await sync.run_pass()
        assert not report.ok and "150 rows" in report.errors[0], report.errors
        assert report.enrol.enrolled == 0
    finally:
        await world.close()


# 16. An id that does not fit SQLite


async def test_an_order_id_of_2_to_the_63_is_skipped_recorded_and_the_cursor_moves(
    tmp_path: Path,
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        before = world.create()
        huge = world.create()
        del world.orders[huge.id]
        huge.id = 2**63
        world.orders[huge.id] = huge
        after = world.create()
        after.last_updated = local_now() + timedelta(seconds=1)
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        async with Sync(settings) as sync:
            report = await sync.run_pass()
            assert report.orders.skipped == 1
            assert report.enrol.enrolled == 2
            assert sync.state is not None
            assert str(2**63) in (sync.state.meta("last_skipped") or "")
            cursor = sync.clock.parse(sync.state.cursor("orders") or "")
            assert cursor >= after.last_updated - timedelta(milliseconds=20)  # stamps cut
            again = await sync.run_pass()  # and again: no traceback, nothing stuck
            assert again.ok, again.errors
        assert world.puts[before.id] == 1 and world.puts[after.id] == 1
    finally:
        await world.close()


# 17. A cursor in the future


async def test_a_last_updated_in_year_9999_does_not_move_the_cursor_past_now(
    tmp_path: Path,
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        future = world.create()
        future.last_updated = datetime(9999, 12, 31, 23, 59, 59)
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        async with Sync(settings) as sync:
            assert (await sync.run_pass()).enrol.enrolled == 1
            assert sync.state is not None
            cursor = sync.clock.parse(sync.state.cursor("orders") or "")
            assert cursor <= local_now() + FUTURE_SKEW
            later = world.create()  # updated now: still listed on the next pass
            assert (await sync.run_pass()).enrol.enrolled == 1
        assert world.puts[later.id] == 1
    finally:
        await world.close()


# 18. Paging that never ends


class IgnoresPageNo(MintsoftWorld):
    def _page(self, rows: list[Any], q: Any, largest: int) -> list[Any]:
        return rows[: min(int(q.get("Limit", largest)), largest)]


async def test_an_api_that_ignores_page_no_stops_with_an_error_naming_it(
    tmp_path: Path,
) -> None:
    world = IgnoresPageNo()
    await world.start()
    try:
        for _ in range(120):
            world.create()
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        async with Sync(settings) as sync:
            async with asyncio.timeout(60):
                report = await sync.run_pass()
        assert not report.ok
        assert "Order/List" in report.errors[0] and "PageNo" in report.errors[0], report.errors
        assert world.calls["GET Order/List"] == 2
    finally:
        await world.close()


async def test_paging_stops_at_the_page_limit_and_the_next_pass_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_api, "MAX_PAGES", 2)
    world = MintsoftWorld()
    await world.start()
    try:
        orders = [world.create() for _ in range(250)]
        for n, order in enumerate(orders):  # 10 s apart: the next pass's overlap is 30 rows
            order.last_updated = local_now() - timedelta(minutes=50) + timedelta(seconds=10 * n)
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        async with Sync(settings) as sync:
            first = await sync.run_pass()
            assert not first.ok and "page limit" in first.errors[0], first.errors
            assert world.calls["GET Order/List"] == 2
            second = await sync.run_pass()
            assert second.ok, second.errors
        assert all(world.puts[o.id] == 1 for o in orders)
    finally:
        await world.close()
