"""``simulate``: send a realistic Mintsoft webhook (or a burst of them) to a running bridge,
the way Mintsoft would: same body shapes, same credentials, one POST per webhook.

The bodies are the packaged fixtures (``bridge/fixtures``: an order for each order event,
a ``GET /api/ASN/{id}`` for ``asn-booked-in``), renumbered, with fresh timestamps and, on
request, another client or warehouse wherever the body names one."""

from __future__ import annotations

import asyncio
import copy
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bridge.core.contract import ASN_BOOKED_IN, EVENTS
from bridge.core.settings import Settings, SettingsError
from bridge.mintsoft.urls import mintsoft_credentials, webhook_url, without_key

REQUEST_TIMEOUT = 30.0
MAX_IN_FLIGHT = 16

_MINTSOFT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?$")


# --- bodies -----------------------------------------------------------------------------


def fixture_name(event: str) -> str:
    """The file name of ``event``'s example body in ``bridge/fixtures``."""
    return f"{event}.json" if event == ASN_BOOKED_IN else f"order-{event}.json"


def fixture(event: str) -> Any:
    """The packaged example body of ``event``, parsed."""
    path = resources.files("bridge") / "fixtures" / fixture_name(event)
    return orjson.loads(path.read_bytes())


def mintsoft_time(moment: datetime) -> str:
    """``2026-11-27T15:02:10.5``: Mintsoft's format, no offset, no trailing zeros."""
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def _parse_time(text: str) -> datetime:
    base, _, fraction = text.partition(".")
    moment = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    return moment.replace(microsecond=int((fraction + "000000")[:6])) if fraction else moment


def _times(node: Any, found: list[str]) -> None:
    if isinstance(node, dict):
        for value in node.values():
            _times(value, found)
    elif isinstance(node, list):
        for value in node:
            _times(value, found)
    elif isinstance(node, str) and _MINTSOFT_TIME.match(node):
        found.append(node)


def _shift_times(node: Any, delta: timedelta) -> Any:
    if isinstance(node, dict):
        return {key: _shift_times(value, delta) for key, value in node.items()}
    if isinstance(node, list):
        return [_shift_times(value, delta) for value in node]
    if isinstance(node, str) and _MINTSOFT_TIME.match(node):
        return mintsoft_time(_parse_time(node) + delta)
    return node


def refresh_times(document: Any, now: datetime) -> Any:
    """Every Mintsoft timestamp moved by the same amount, so the latest one is ``now`` and
    the others keep their distance to it (ordered, then despatched, then delivered)."""
    found: list[str] = []
    _times(document, found)
    if not found:
        return document
    latest = max(_parse_time(text) for text in found)
    return _shift_times(document, now - latest)


@dataclass(frozen=True)
class _Numbering:
    """How a document is numbered: its ``ID``, a reference made from it, and its items'
    pointer back to it."""

    reference: str
    prefix: str
    items: str
    item_points: str

    def renumber(self, document: Any, new_id: int) -> None:
        if not isinstance(document, dict):
            return
        document["ID"] = new_id
        document[self.reference] = f"{self.prefix}{new_id}"
        for item in document.get(self.items) or ():
            if isinstance(item, dict):
                item[self.item_points] = new_id


_ORDER = _Numbering("OrderNumber", "SO-", "OrderItems", "OrderId")
_ASN = _Numbering("POReference", "PO-", "Items", "ASNId")


def with_order_id(event: str, document: Any, order_id: int) -> Any:
    """``document`` (an example body of ``event``) about order ``order_id``: its id, number
    and items' ids; a split's new part is ``order_id + 1``; a delivery's shipment points at
    it. For ``asn-booked-in``, ``order_id`` is the ASN's id (its items point at it)."""
    document = copy.deepcopy(document)
    if event == ASN_BOOKED_IN:
        _ASN.renumber(document, order_id)
    elif isinstance(document, dict):
        _ORDER.renumber(document, order_id)
    elif isinstance(document, list):
        for entry in document:
            if not isinstance(entry, dict):
                continue
            if event == "split":
                _ORDER.renumber(entry.get("Order"), order_id)
                _ORDER.renumber(entry.get("SplitOrder"), order_id + 1)
                entry["OrderId"] = order_id
                entry["SplitOrderId"] = order_id + 1
            elif isinstance(entry.get("OrderShipment"), dict):
                entry["OrderShipment"]["OrderId"] = order_id
    return document


def with_owner(document: Any, client_id: int | None = None, warehouse_id: int | None = None) -> Any:
    """``document`` with every ``ClientId`` / ``WarehouseId`` it holds (the order's, a split's
    two parts', a channel's ...) set to ``client_id`` / ``warehouse_id`` where given, so the
    receiver's ``x-client-id`` / ``x-warehouse-id`` and a subscriber's filters see them."""
    wanted: dict[str, int] = {}
    if client_id is not None:
        wanted["ClientId"] = client_id
    if warehouse_id is not None:
        wanted["WarehouseId"] = warehouse_id
    if not wanted:
        return document

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: wanted[k] if k in wanted else visit(v) for k, v in node.items()}
        if isinstance(node, list):
            return [visit(v) for v in node]
        return node

    return visit(document)


def build_body(
    event: str,
    order_id: int,
    now: datetime | None = None,
    *,
    client_id: int | None = None,
    warehouse_id: int | None = None,
) -> bytes:
    """A realistic body of ``event`` for ``order_id`` (an ASN id for ``asn-booked-in``) with
    fresh timestamps, of ``client_id`` / ``warehouse_id`` when given."""
    document = with_order_id(event, fixture(event), order_id)
    document = with_owner(document, client_id, warehouse_id)
    document = refresh_times(document, now or datetime.now())
    return orjson.dumps(document)


# --- sending ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    order_id: int | None
    status: int | None
    answer: dict[str, Any]
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def bridge_base_url(settings: Settings, url: str | None) -> str:
    """Where to send: ``--url``, else ``BRIDGE_PUBLIC_URL``, else the local ``serve``."""
    if url:
        return url.rstrip("/")
    if settings.public_url:
        return settings.public_url
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


async def post_webhook(
    session: aiohttp.ClientSession,
    settings: Settings,
    base: str,
    event: str,
    body: bytes,
    order_id: int | None,
) -> Outcome:
    """POST one webhook as Mintsoft would; never raises for an HTTP or network failure."""
    api_key, headers = mintsoft_credentials(settings)
    url = webhook_url(base, event, api_key)
    started = time.monotonic()
    try:
        async with session.post(
            url, data=body, headers={**headers, "Content-Type": "application/json"}
        ) as response:
            text = await response.text(errors="replace")
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        # aiohttp's errors can quote the request URL, and with it ?APIKEY=.
        reason = without_key(str(exc) or type(exc).__name__, api_key)
        return Outcome(order_id, None, {}, time.monotonic() - started, reason)
    try:
        answer = orjson.loads(text)
    except orjson.JSONDecodeError:
        answer = {"message": text[:200]}
    if not isinstance(answer, dict):
        answer = {"message": str(answer)[:200]}
    return Outcome(order_id, status, answer, time.monotonic() - started)


def read_body_file(path: str) -> bytes:
    """The bytes of ``--file``; an unreadable file raises :class:`SettingsError`."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"--file {path!r} cannot be read ({exc.strerror or type(exc).__name__}): "
            "point it at a webhook body"
        ) from None


async def send_many(
    settings: Settings,
    base: str,
    event: str,
    count: int,
    *,
    order_id: int | None = None,
    file_body: bytes | None = None,
    rate: float | None = None,
    client_id: int | None = None,
    warehouse_id: int | None = None,
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """POST ``count`` webhooks of ``event`` (``MAX_IN_FLIGHT`` at once, at most ``rate`` a
    second), each a fresh realistic body (of ``client_id`` / ``warehouse_id`` when given) or
    ``file_body``; ``on_outcome`` sees each answer."""
    if event not in EVENTS:
        raise SettingsError(f"unknown event {event!r}: use one of {', '.join(EVENTS)}")
    if rate is not None and rate <= 0:
        raise SettingsError(f"--rate {rate} must be above 0 (webhooks per second)")
    if order_id is not None:
        order_ids = [order_id] * count
    else:
        # Ids far above a real warehouse's, spaced by two so a split's new part is free too.
        first = random.randrange(900_000_000, 999_000_000)
        order_ids = [first + 2 * i for i in range(count)]

    limit = asyncio.Semaphore(MAX_IN_FLIGHT)
    started = time.monotonic()
    outcomes: list[Outcome] = []

    async def send(index: int, session: aiohttp.ClientSession) -> None:
        if rate:
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        async with limit:
            shown_id = None if file_body is not None else order_ids[index]
            body = (
                file_body
                if file_body is not None
                else build_body(
                    event, order_ids[index], client_id=client_id, warehouse_id=warehouse_id
                )
            )
            outcome = await post_webhook(session, settings, base, event, body, shown_id)
        outcomes.append(outcome)
        on_outcome(outcome)

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(send(i, session) for i in range(count)))
    return outcomes
