"""Connect actions: the body that registers the bridge's URLs on a Mintsoft order (contract
section 6) or ASN (section 11), the orders file of ``connect-actions --from-file``, and
registering many orders at a bounded concurrency. Bad input raises :class:`SettingsError`
naming the fix."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.core.contract import ASN_BOOKED_IN, ASN_EXTRA_CODE, EXTRA_CODES, ORDER_EVENTS
from bridge.core.settings import Settings, SettingsError
from bridge.errors import CommandError
from bridge.mintsoft.client import MintsoftClient, client_for, rate_limiter
from bridge.mintsoft.urls import check_public_url, mintsoft_credentials, webhook_url

EXTRA_CODE_MAX_CHARS = 255
"""Mintsoft does not document the length of a connect action's ExtraCode fields; 255 is the
usual size of such a column, so longer values are refused rather than silently cut."""

BULK_CONCURRENCY = 4
"""Orders registered at once by ``--from-file``: gentle on Mintsoft's rate limit."""


def parse_events(raw: str) -> tuple[str, ...]:
    """``despatched,split`` -> the events in Mintsoft's field order; a bad name raises."""
    wanted = [part.strip().lower() for part in raw.split(",") if part.strip()]
    unknown = [e for e in wanted if e not in ORDER_EVENTS]
    if unknown or not wanted:
        raise SettingsError(
            f"--events {raw!r} names no known event{'s' if len(unknown) > 1 else ''}"
            f"{' (' + ', '.join(unknown) + ')' if unknown else ''}: use a comma-separated "
            f"list of {', '.join(ORDER_EVENTS)}"
        )
    return tuple(e for e in ORDER_EVENTS if e in wanted)


def connect_action(
    settings: Settings, events: Iterable[str], source_order_id: str | None
) -> dict[str, Any]:
    """The connect-action body of contract section 6: one URL per event, and the bridge's
    credential as ``ExtraCode4`` (an Authorization value) or else ``?APIKEY=`` on each URL."""
    head = {"Type": "API", "SourceOrderId": source_order_id, "Complete": False}
    return head | _callbacks(settings, {EXTRA_CODES[event]: event for event in events})


def asn_connect_action(settings: Settings, source_asn_id: str | None) -> dict[str, Any]:
    """The connect-action body of an ASN (contract section 11): the ``asn-booked-in`` URL as
    ``ExtraCode1`` and the credential as for an order (:func:`connect_action`)."""
    head = {"Type": "API", "SourceASNId": source_asn_id, "Complete": False}
    return head | _callbacks(settings, {ASN_EXTRA_CODE: ASN_BOOKED_IN})


def _callbacks(settings: Settings, fields: dict[str, str]) -> dict[str, Any]:
    """``{ExtraCodeN: URL of its event}`` for ``fields`` (field -> event), plus ``ExtraCode4``
    when the bridge takes an Authorization value; in field order."""
    if settings.public_url is None:
        raise SettingsError(
            "BRIDGE_PUBLIC_URL is not set: set it to the https URL Mintsoft will call, "
            "e.g. https://bridge.example.com"
        )
    check_public_url(settings.public_url)
    if not settings.auth_configured and not settings.allow_unauthenticated:
        raise SettingsError(
            "BRIDGE_AUTH_HEADERS and BRIDGE_API_KEYS are both unset, so the bridge would answer "
            "Mintsoft 401: set one of them to the value the bridge serves with"
        )
    api_key, headers = mintsoft_credentials(settings)
    auth_header = headers.get("Authorization")
    extra = {
        field: _fits(field, webhook_url(settings.public_url, event, api_key))
        for field, event in fields.items()
    }
    if auth_header:
        extra["ExtraCode4"] = _fits("ExtraCode4", auth_header, show=False)
    return dict(sorted(extra.items()))


def _fits(field: str, value: str, show: bool = True) -> str:
    if len(value) > EXTRA_CODE_MAX_CHARS:
        shown = "" if not show or "APIKEY=" in value else f" ({value[:60]}…)"
        raise SettingsError(
            f"{field} would be {len(value)} characters{shown}, more than the "
            f"{EXTRA_CODE_MAX_CHARS} a Mintsoft ExtraCode field holds: shorten "
            "BRIDGE_PUBLIC_URL or the credential (BRIDGE_API_KEYS / BRIDGE_AUTH_HEADERS)"
        )
    return value


@dataclass(frozen=True)
class OrderToConnect:
    order_id: int
    source_order_id: str | None


def order_id(raw: str, where: str, what: str = "order") -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{where}: {raw!r} is not a Mintsoft {what} id: use a whole number")
    return int(text)


async def connect_asn(client: MintsoftClient, asn_id: int, body: dict[str, Any]) -> Any:
    """``PUT /api/ASN/<asn_id>/ConnectActions`` with ``body``."""
    return await client.request("PUT", asn_connect_path(asn_id), body)


def asn_connect_path(asn_id: int) -> str:
    return f"/api/ASN/{asn_id}/ConnectActions"


def read_orders_file(path: str) -> list[OrderToConnect]:
    """Order ids one per line, or CSV lines ``order id,source order id``; blank lines,
    ``#`` comments and a header line (``OrderId,SourceOrderId``) are skipped."""
    import csv

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SettingsError(
            f"--from-file {path!r} cannot be read ({exc.strerror or type(exc).__name__}): "
            "point it at a file of order ids"
        ) from None
    orders: list[OrderToConnect] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if number == 1 and not cells[0].isdigit() and "order" in cells[0].lower():
            continue  # a header line
        source = cells[1] if len(cells) > 1 and cells[1] else None
        orders.append(OrderToConnect(order_id(cells[0], f"{path} line {number}"), source))
    if not orders:
        raise SettingsError(f"--from-file {path!r} holds no order ids: put one per line")
    return orders


def mintsoft_client(settings: Settings) -> MintsoftClient:
    return client_for(settings, limiter=rate_limiter(settings.mintsoft_rate))


async def connect_many(
    client: MintsoftClient,
    bodies: list[tuple[OrderToConnect, dict[str, Any]]],
    on_done: Callable[[bool], None] = lambda ok: None,
) -> list[tuple[int, str]]:
    """PUT each body, ``BULK_CONCURRENCY`` at a time; returns the (order id, reason) of each
    that failed. ``on_done(ok)`` is called after each order (for a progress bar)."""
    failures: list[tuple[int, str]] = []
    limit = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(order: OrderToConnect, body: dict[str, Any]) -> None:
        async with limit:
            try:
                await client.connect_actions(order.order_id, body)
            except CommandError as exc:
                failures.append((order.order_id, str(exc)))
                on_done(False)
            else:
                on_done(True)

    await asyncio.gather(*(one(order, body) for order, body in bodies))
    return sorted(failures)
