"""``simulate``: send a realistic Mintsoft webhook (or a burst of them) to a running bridge,
the way Mintsoft would: same body shapes, same credentials, one POST per webhook."""

from __future__ import annotations

import asyncio
import copy
import random
import re
import sys
import time
from argparse import Namespace
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bridge.core.contract import EVENTS
from bridge.core.settings import Settings, SettingsError
from bridge.mintsoft.urls import mintsoft_credentials, webhook_url, without_key

REQUEST_TIMEOUT = 30.0
MAX_IN_FLIGHT = 16

_MINTSOFT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?$")


# --- bodies -----------------------------------------------------------------------------


def fixture(event: str) -> Any:
    """The packaged example body of ``event``, parsed."""
    path = resources.files("bridge") / "fixtures" / f"order-{event}.json"
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


def _renumber_order(order: Any, order_id: int) -> None:
    if not isinstance(order, dict):
        return
    order["ID"] = order_id
    order["OrderNumber"] = f"SO-{order_id}"
    for item in order.get("OrderItems") or ():
        if isinstance(item, dict):
            item["OrderId"] = order_id


def with_order_id(event: str, document: Any, order_id: int) -> Any:
    """``document`` (an example body of ``event``) about order ``order_id``: its id, number
    and items' ids; a split's new part is ``order_id + 1``; a delivery's shipment points at
    it."""
    document = copy.deepcopy(document)
    if isinstance(document, dict):
        _renumber_order(document, order_id)
    elif isinstance(document, list):
        for entry in document:
            if not isinstance(entry, dict):
                continue
            if event == "split":
                _renumber_order(entry.get("Order"), order_id)
                _renumber_order(entry.get("SplitOrder"), order_id + 1)
                entry["OrderId"] = order_id
                entry["SplitOrderId"] = order_id + 1
            elif isinstance(entry.get("OrderShipment"), dict):
                entry["OrderShipment"]["OrderId"] = order_id
    return document


def build_body(event: str, order_id: int, now: datetime | None = None) -> bytes:
    """A realistic body of ``event`` for ``order_id`` with fresh timestamps."""
    document = with_order_id(event, fixture(event), order_id)
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


def _describe(event: str, outcome: Outcome) -> str:
    who = f"{event} order {outcome.order_id}" if outcome.order_id is not None else event
    millis = f"{outcome.seconds * 1000:.0f} ms"
    if outcome.status is None:
        return f"{who}: no answer ({outcome.error}) after {millis}"
    answer = outcome.answer
    what = answer.get("status") or answer.get("error") or ""
    message_id = answer.get("message_id")
    line = f"{who}: {outcome.status} {what}".rstrip()
    if message_id:
        line += f" message_id={message_id}"
    if not outcome.ok and answer.get("message"):
        line += f" ({answer['message']})"
    return f"{line} ({millis})"


def _hint(outcome: Outcome, base: str) -> str | None:
    if outcome.status is None:
        return (
            f"cannot reach the bridge at {base}: start it (mintsoft-bridge serve) or pass "
            "--url (or set BRIDGE_PUBLIC_URL)"
        )
    if outcome.status == 401:
        return (
            "the bridge refused the credentials: set BRIDGE_API_KEYS or BRIDGE_AUTH_HEADERS "
            "here to a value the bridge serves with"
        )
    return None


def _read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"--file {path!r} cannot be read ({exc.strerror or type(exc).__name__}): "
            "point it at a webhook body"
        ) from None


async def simulate_command(settings: Settings, args: Namespace) -> int:
    """``simulate EVENT [--url URL] [--order-id N] [--file F] [--count N --rate R]``."""
    event = args.event
    if event not in EVENTS:
        raise SettingsError(f"unknown event {event!r}: use one of {', '.join(EVENTS)}")
    if args.rate is not None and args.rate <= 0:
        raise SettingsError(f"--rate {args.rate} must be above 0 (webhooks per second)")
    count: int = args.count
    base = bridge_base_url(settings, args.url)
    file_body = _read_file(args.file) if args.file else None
    if args.order_id is not None:
        order_ids = [args.order_id] * count
    else:
        # Ids far above a real warehouse's, spaced by two so a split's new part is free too.
        first = random.randrange(900_000_000, 999_000_000)
        order_ids = [first + 2 * i for i in range(count)]

    limit = asyncio.Semaphore(MAX_IN_FLIGHT)
    started = time.monotonic()
    outcomes: list[Outcome] = []

    async def send(index: int, session: aiohttp.ClientSession) -> None:
        if args.rate:
            delay = started + index / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        async with limit:
            order_id = None if file_body is not None else order_ids[index]
            body = file_body if file_body is not None else build_body(event, order_ids[index])
            outcome = await post_webhook(session, settings, base, event, body, order_id)
        outcomes.append(outcome)
        print(_describe(event, outcome), flush=True)

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(send(i, session) for i in range(count)))
    elapsed = time.monotonic() - started
    failed = [o for o in outcomes if not o.ok]
    if count > 1:
        print(_summary(outcomes, elapsed))
    if failed:
        hint = _hint(failed[0], base)
        if hint:
            print(f"mintsoft-bridge simulate: {hint}", file=sys.stderr)
        return 1
    return 0


def _summary(outcomes: list[Outcome], elapsed: float) -> str:
    by_answer: dict[str, int] = {}
    for outcome in outcomes:
        key = (
            str(outcome.answer.get("status") or outcome.status)
            if outcome.status is not None
            else "no answer"
        )
        by_answer[key] = by_answer.get(key, 0) + 1
    times = sorted(o.seconds for o in outcomes)
    p50 = times[len(times) // 2] * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    ok = sum(1 for o in outcomes if o.ok)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_answer.items()))
    return (
        f"sent {len(outcomes)} in {elapsed:.2f} s ({len(outcomes) / max(elapsed, 1e-9):.1f}/s): "
        f"{ok} answered 200, {len(outcomes) - ok} failed [{kinds}]; "
        f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
