"""The aiohttp app: webhook routes, limits, answers, health, readiness and metrics.

A webhook route authenticates before it reads the body (and before it answers ``Expect:
100-continue``: a client without credentials, or declaring too long a body, gets its 401 or
413 instead of an invitation), checks the size, validates the JSON and picks its header
fields without building the document (:mod:`bridge.core.body`; large bodies share a byte
budget, :mod:`.budget`, and are parsed in a thread, one at a time), and hands the
envelope to :class:`~bridge.receiving.delivery.Delivery`; it answers 200 only once the
message is kept (confirmed by the broker, or fsynced in the spool). A client that
disconnects mid-body is counted (``code="client_closed"``) and logged as one access line,
never a 500.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from bridge.core import metrics
from bridge.core.body import NotJson, read_document
from bridge.core.contract import (
    EVENTS,
    HTTP_REQUEST_ID,
    Envelope,
    quarantine_envelope,
    webhook_envelope,
)
from bridge.core.logs import (
    CLIENT_CLOSED,
    CLIENT_CLOSED_STATUS,
    WEBHOOK_EVENT,
    WEBHOOK_LOGGED,
    LoggedWebhook,
)
from bridge.receiving.auth import Authenticator
from bridge.receiving.budget import ByteBudget
from bridge.receiving.delivery import Delivery, Unavailable

BODY_READ_TIMEOUT = 30.0
"""Seconds a client has to send its whole body; slower ones get 408 and are cut off."""

HEADER_TIMEOUT = 30.0
"""Seconds a connection may stay without a complete request (slow headers, or idle between
keep-alive requests) before it is closed."""

LINGERING_TIME = 2.0
"""Seconds an unread body is still swallowed after the answer, so the client can read it."""

RETRY_AFTER_SECONDS = "5"

LARGE_BODY = 1024 * 1024
"""Bodies over this many bytes (or of no declared length) are large: they share a byte
budget, and are parsed (validated, headers picked) in a thread, one at a time; smaller
ones on the event loop, where it is cheaper than a thread hop."""

LARGE_BODIES_BYTES = 40 * 1024 * 1024
"""The bytes of large bodies held at once (or one body of ``BRIDGE_MAX_BODY_BYTES``, if
more); other senders of large bodies wait their turn, then get a 503 after the body
timeout. With the copies made for the broker, this bounds their memory to ~3x as much."""


class LargeBodies:
    """What bounds large bodies: a byte budget for holding them, one parse at a time."""

    def __init__(self, max_body: int) -> None:
        self.budget = ByteBudget(max(LARGE_BODIES_BYTES, max_body))
        self.parses = asyncio.Semaphore(1)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

DELIVERY_KEY = web.AppKey("delivery", Delivery)


def _json(
    status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    # The header as a plain value: aiohttp's content_type= argument parses it per response.
    all_headers = {"Content-Type": "application/json"}
    if headers:
        all_headers.update(headers)
    return web.Response(body=orjson.dumps(payload), status=status, headers=all_headers)


_UNAUTHORIZED: dict[str, Any] = {"error": "unauthorized"}

_JSON_HEADERS: CIMultiDict[str] = CIMultiDict({"Content-Type": "application/json"})


def _kept(event: str, outcome: str, message_id: str, request_id: str) -> web.Response:
    """The 200 of a kept webhook, ``{"status":outcome,"message_id":M}``: the answer of
    nearly every request, built from bytes (the outcome is a word, the id hex digits,
    neither needs escaping) and a copy of prebuilt headers."""
    _webhooks_counter(event, 200).inc()
    headers = _JSON_HEADERS.copy()
    headers[HTTP_REQUEST_ID] = request_id
    body = b'{"status":"%s","message_id":"%s"}' % (outcome.encode(), message_id.encode())
    return web.Response(body=body, status=200, headers=headers)


_REQUEST_ID_PREFIX = os.urandom(4).hex()
_request_numbers = itertools.count(1)


def _request_id(request: web.Request) -> str:
    given = request.headers.get(HTTP_REQUEST_ID)
    if given and len(given) <= 64 and given.isascii() and given.isprintable():
        return given
    # Unique without a system call per request: random per process, then a counter.
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers) & 0xFFFFFFFF:08x}"


def server_options(header_timeout: float = HEADER_TIMEOUT) -> dict[str, Any]:
    """Options of the aiohttp server (``AppRunner``/``TestServer``) that bound slow clients.

    aiohttp's keep-alive timer runs from the moment a connection opens until a whole request
    head has arrived (and again between requests), so it also cuts off a client that sends
    its headers a byte a second. ``lingering_time`` bounds how long an unread body (after a
    408 or 413) is still read and thrown away before the connection is closed.
    """
    return {"keepalive_timeout": header_timeout, "lingering_time": LINGERING_TIME}


def webhook_handlers(
    event: str,
    auth: Authenticator,
    delivery: Delivery,
    max_body: int,
    body_timeout: float = BODY_READ_TIMEOUT,
    large: LargeBodies | None = None,
) -> tuple[Handler, ExpectHandler]:
    """The handler of ``POST /webhooks/<event>`` and its ``Expect: 100-continue`` handler.

    ``large`` is shared by the routes of one app: it bounds the bytes of large bodies held
    at once, and parses them one at a time, across all events.
    """
    large = large or LargeBodies(max_body)

    def refusal(request: web.Request) -> web.Response | None:
        """The answer to give before reading the body (405, 401, 413), if any."""
        request[WEBHOOK_EVENT] = event
        if request.method != "POST":
            return _answer(
                event, 405, {"error": "method_not_allowed", "allow": "POST"}, {"Allow": "POST"}
            )
        if not auth.check(request.query, request.headers):
            return _answer(event, 401, _UNAUTHORIZED)
        length = request.content_length
        if length is not None and length > max_body:
            return _too_large(event, max_body)
        return None

    async def expect(request: web.Request) -> web.StreamResponse | None:
        # aiohttp's default handler invites the body ("100 Continue") before any check:
        # refuse first, and invite only a body that would be read.
        refused = refusal(request)
        if refused is not None:
            refused.force_close()  # the client may still be holding its body back
            return refused
        await _continue(request)
        return None

    async def handle(request: web.Request) -> web.StreamResponse:
        refused = refusal(request)
        if refused is not None:
            return refused
        length = request.content_length
        if length is not None and length <= LARGE_BODY:
            return await receive(request)
        try:
            async with asyncio.timeout(body_timeout):
                held = await large.budget.acquire(max_body if length is None else length)
        except TimeoutError:
            return _unavailable(event, "too many large bodies are being received at once")
        try:
            return await receive(request)
        finally:
            large.budget.release(held)

    async def receive(request: web.Request) -> web.StreamResponse:
        try:
            if request.content.is_eof():
                body = _read_arrived(request, max_body)  # all there already: no awaits
            else:
                async with asyncio.timeout(body_timeout):
                    body = await _read(request, max_body)
        except _TooLarge:
            return _too_large(event, max_body)
        except TimeoutError:
            return _answer(
                event,
                408,
                {"error": "body_timeout", "message": "the body was not sent in time"},
                {"Connection": "close"},
            )
        except ConnectionResetError:
            return _client_closed(request, event)
        received_at = time.time()
        request_id = _request_id(request)
        content_type = request.headers.get("Content-Type")
        if len(body) > LARGE_BODY:
            # Off the event loop, one at a time: /healthz and small webhooks keep being
            # answered while a large body is read, and the CPU it takes is bounded.
            async with large.parses:
                envelope, not_json = await asyncio.to_thread(
                    _envelope, event, body, request_id, received_at, content_type
                )
        else:
            envelope, not_json = _envelope(event, body, request_id, received_at, content_type)
        request[WEBHOOK_LOGGED] = LoggedWebhook(envelope.message_id, envelope.headers)
        outcome = await _keep(delivery, envelope, event)
        if isinstance(outcome, web.Response):
            return outcome
        if not_json is not None:
            return _answer(
                event,
                400,
                {
                    "error": "invalid_json",
                    "message": f"the body is not JSON ({not_json})",
                    "message_id": envelope.message_id,
                    "quarantined": True,
                },
                {HTTP_REQUEST_ID: request_id},
            )
        return _kept(event, outcome, envelope.message_id, request_id)

    return handle, expect


class _TooLarge(Exception):
    """The body passed the limit while it was read (one without a declared length)."""


async def _read(request: web.Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (else :class:`_TooLarge`). Not
    ``request.read()``: that keeps a copy on the request, which an idle keep-alive
    connection holds on to (10 MiB per connection that last sent a large body)."""
    chunks: list[bytes] = []
    size = 0
    # As request.read() does: fewer, larger reads (pausing the socket less often); what a
    # request may buffer is bounded by its body, and large bodies by their budget.
    request.content.set_read_chunk_size(limit)
    while chunk := await request.content.readany():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _read_arrived(request: web.Request, limit: int) -> bytes:
    """The whole body once it has all arrived (the usual case for a webhook: its headers and
    body come in one packet), in one call instead of :func:`_read`'s loop of awaits."""
    body = request.content.read_nowait()
    if len(body) > limit:
        raise _TooLarge
    return body


async def _continue(request: web.Request) -> None:
    """``100 Continue`` when the client asked for it (other expectations are ignored, as
    RFC 9110 allows, so that every answer stays one of the contract's)."""
    expectation = request.headers.get("Expect", "")
    if request.version == HttpVersion11 and expectation.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer proper has not started


async def _no_continue(request: web.Request) -> None:
    """Routes that never read a body never invite one."""


def _client_closed(request: web.Request, event: str) -> web.Response:
    # Nobody is left to answer: count it, mark the access log line (the one line logged
    # for it, without a traceback), and hand aiohttp an answer it will fail to send quietly.
    _webhooks_counter(event, "client_closed").inc()
    request[CLIENT_CLOSED] = True
    return _json(CLIENT_CLOSED_STATUS, {"error": "client_closed"})


def _envelope(
    event: str, body: bytes, request_id: str, received_at: float, content_type: str | None
) -> tuple[Envelope, str | None]:
    """The envelope to keep, and why the body is not JSON (``None`` when it is); a body that
    is not JSON keeps the sender's ``content_type``."""
    try:
        document = read_document(body)
    except NotJson as exc:
        envelope = quarantine_envelope(event, body, request_id, received_at, content_type)
        return envelope, str(exc)
    return webhook_envelope(event, body, document, request_id, received_at), None


async def _keep(delivery: Delivery, envelope: Envelope, event: str) -> str | web.Response:
    try:
        return await delivery.keep(envelope)
    except Unavailable as exc:
        return _unavailable(event, f"the message could not be kept ({exc})")


def _unavailable(event: str, why: str) -> web.Response:
    return _answer(
        event,
        503,
        {"error": "unavailable", "message": f"{why}; send it again later"},
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def _answer(
    event: str, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    _webhooks_counter(event, status).inc()
    return _json(status, payload, headers)


@functools.cache
def _webhooks_counter(event: str, status: int | str) -> Any:
    # One labelled child per (event, code), looked up once rather than per request.
    return metrics.WEBHOOKS.labels(event, str(status))


def _too_large(event: str, max_body: int) -> web.Response:
    return _answer(
        event,
        413,
        {
            "error": "too_large",
            "message": f"the body is over {max_body} bytes",
        },
        {"Connection": "close"},
    )


async def _not_found(request: web.Request) -> web.Response:
    known = ", ".join(f"/webhooks/{e}" for e in EVENTS)
    return _json(404, {"error": "not_found", "message": f"no such path; webhooks go to {known}"})


def _get_only(handler: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method_not_allowed", "allow": "GET"}, {"Allow": "GET"})
        return await handler(request)

    return handle


async def _healthz(request: web.Request) -> web.Response:
    return _json(200, {"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    delivery = request.app[DELIVERY_KEY]
    ready = delivery.ready
    return _json(200 if ready else 503, {"ready": ready, **delivery.status()})


def create_app(
    auth: Authenticator,
    delivery: Delivery,
    max_body_bytes: int,
    body_timeout: float = BODY_READ_TIMEOUT,
    metrics_route: bool = True,
) -> web.Application:
    """The receiver's aiohttp application; ``body_timeout`` bounds the body read.
    ``metrics_route=False`` leaves ``/metrics`` to a separate listener (a 404 here)."""
    app = web.Application(client_max_size=max_body_bytes)
    app[DELIVERY_KEY] = delivery
    large = LargeBodies(max_body_bytes)
    for event in EVENTS:
        handler, expect = webhook_handlers(
            event, auth, delivery, max_body_bytes, body_timeout, large
        )
        for path in (f"/webhooks/{event}", f"/webhooks/{event}/"):
            app.router.add_route("*", path, handler, expect_handler=expect)
    app.router.add_route("*", "/healthz", _get_only(_healthz), expect_handler=_no_continue)
    app.router.add_route("*", "/readyz", _get_only(_readyz), expect_handler=_no_continue)
    if metrics_route:
        app.router.add_route(
            "*", "/metrics", _get_only(metrics.scrape), expect_handler=_no_continue
        )
    app.router.add_route("*", "/{tail:.*}", _not_found, expect_handler=_no_continue)
    return app
