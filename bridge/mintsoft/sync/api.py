"""The Mintsoft calls sync makes, throttled to ``BRIDGE_MINTSOFT_RATE`` requests a second
(retries included), each answer counted in ``bridge_mintsoft_requests_total``.

Lists are read page by page (``PageNo`` from 1; a page shorter than ``Limit`` is the last:
Mintsoft sends bare arrays, no totals). A broken or hostile API cannot keep a pass paging
for ever: a page with more rows than ``Limit``, a page that repeats the one before (an API
that ignores ``PageNo``) and more than :data:`MAX_PAGES` pages each end the listing with a
:class:`~bridge.mintsoft.client.MintsoftError` naming the list (:class:`PageLimit` for the
last, after which the caller keeps what it read and goes on from there next pass).

429 and 5xx are retried by :class:`~bridge.mintsoft.client.MintsoftClient`, waiting what
``Retry-After`` asks; an answer that still fails raises
:class:`~bridge.mintsoft.client.MintsoftError`, which the caller records and retries on a
later pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import orjson

from bridge.core import metrics
from bridge.core.settings import Settings
from bridge.mintsoft.client import MintsoftClient, MintsoftError, client_for, rate_limiter

ORDER_PAGE = 100
"""Mintsoft's largest ``Limit`` for ``Order/List`` (integrations all use 100)."""
TRACKING_PAGE = 500
"""``TrackingEvents/List``: "Default 500 - Max 500" in Mintsoft's Swagger."""

ATTEMPTS = 8
"""Attempts per call: with backoff up to 10 s and ``Retry-After`` up to ``MAX_WAIT``, a call
rides out a Mintsoft that throttles or fails for a minute or two before the pass gives up."""
MAX_WAIT = 120.0
MAX_PAGES = 1000
"""Pages of one list in one pass (100,000 orders): a backfill longer than that goes on over
several passes."""


class PageLimit(MintsoftError):
    """A listing stopped at :data:`MAX_PAGES`; what was read is good."""


def _count(answer: str) -> None:
    metrics.MINTSOFT_REQUESTS.labels(answer).inc()


def sync_client(settings: Settings, backoff: float = 1.0) -> MintsoftClient:
    return client_for(
        settings,
        attempts=ATTEMPTS,
        backoff=backoff,
        limiter=rate_limiter(settings.mintsoft_rate),
        on_answer=_count,
        max_retry_after=MAX_WAIT,
    )


def _array(answer: Any, what: str) -> list[dict[str, Any]]:
    if answer is None:
        return []
    if not isinstance(answer, list) or not all(isinstance(i, dict) for i in answer):
        raise MintsoftError(f"Mintsoft answered {what} with something other than a list")
    return answer


class SyncApi:
    """The read calls of sync, and the connect-action PUT."""

    def __init__(self, client: MintsoftClient) -> None:
        self.client = client

    async def _get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return await self.client.request("GET", path)

    async def order_pages(
        self, since: str, client_id: int | None = None, warehouse_id: int | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """``Order/List`` updated since ``since`` (Mintsoft local time), oldest first."""
        query = {
            "SinceLastUpdated": since,
            "SortOldestFirst": "true",
            "Limit": ORDER_PAGE,
            "ClientId": client_id,
            "WarehouseId": warehouse_id,
        }
        async for rows in self._pages("/api/Order/List", "Order/List", query, ORDER_PAGE):
            yield rows

    async def tracking_pages(self, since: str) -> AsyncIterator[list[dict[str, Any]]]:
        query = {"SinceLastUpdated": since, "Limit": TRACKING_PAGE}
        path = "/api/Order/Shipments/TrackingEvents/List"
        async for rows in self._pages(path, "TrackingEvents/List", query, TRACKING_PAGE):
            yield rows

    async def _pages(
        self, path: str, what: str, query: dict[str, Any], limit: int
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Each non-empty page of ``path``, until one is short (see the module's bounds)."""
        previous: list[dict[str, Any]] | None = None
        for page in range(1, MAX_PAGES + 1):
            rows = _array(await self._get(path, {**query, "PageNo": page}), what)
            if len(rows) > limit:
                raise MintsoftError(
                    f"Mintsoft answered {what} page {page} with {len(rows)} rows, more than "
                    f"the Limit of {limit} asked for: stopped (is BRIDGE_MINTSOFT_URL the "
                    "Mintsoft API?)"
                )
            if rows and rows == previous:
                raise MintsoftError(
                    f"Mintsoft answered {what} page {page} with the same rows as page "
                    f"{page - 1}: it ignores PageNo; stopped rather than page for ever"
                )
            if rows:
                yield rows
            if len(rows) < limit:
                return
            previous = rows
        raise PageLimit(
            f"{what} still had rows after {MAX_PAGES} pages (the page limit of one pass): "
            "the next pass goes on from there"
        )

    async def tracking_statuses(self) -> list[dict[str, Any]]:
        path = "/api/Order/Shipments/TrackingEvents/Statuses"
        return _array(await self._get(path), "TrackingEvents/Statuses")

    async def order(self, order_id: int) -> bytes:
        """``GET /api/Order/{id}`` as bytes: the body a despatched or cancelled webhook has."""
        answer = await self.client.request("GET", f"/api/Order/{order_id}")
        if not isinstance(answer, dict):
            raise MintsoftError(f"Mintsoft answered GET /api/Order/{order_id} without an order")
        return orjson.dumps(answer)

    async def splits(self, order_id: int) -> list[dict[str, Any]]:
        """``GET /api/Order/{id}/Splits``: the split webhook's body (a list)."""
        return _array(await self._get(f"/api/Order/{order_id}/Splits"), "Splits")

    async def connect_actions(self, order_id: int) -> list[dict[str, Any]]:
        answer = await self._get(f"/api/Order/{order_id}/ConnectActions")
        if isinstance(answer, dict):  # one action, in case some version answers an object
            return [answer]
        return _array(answer, f"GET /api/Order/{order_id}/ConnectActions")

    async def put_connect_action(self, order_id: int, body: dict[str, Any]) -> None:
        await self.client.connect_actions(order_id, body)
