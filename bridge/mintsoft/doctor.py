"""The doctor's checks: a deployment end to end, each check with the fix.

Settings, unknown ``BRIDGE_*`` variables, the public URL, the broker, the exchange and
queues (passive declares: nothing is created), the bridge answering ``/healthz`` and
``/readyz``, and two simulated webhooks, each accepted and seen in a temporary queue bound
to its routing key: a despatched order (``order.despatched``) and an ASN booked in
(``asn.booked-in``: a bridge too old to take it answers 404). They are real messages: every
subscriber of those events receives them (the order number, or the ASN's ``POReference``,
starts ``mintsoft-bridge-doctor-``), so use ``--skip-simulate`` where subscribers act on
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import aiormq
import orjson
from aiormq.abc import AbstractChannel, AbstractConnection

from bridge.amqp.connection import CLOSE_TIMEOUT, BrokerUnreachable, close_quietly, connect_once
from bridge.amqp.topology import archive_name, settings_topology, unrouted_name
from bridge.core.contract import ASN_BOOKED_IN, ORDER_EVENTS, routing_key
from bridge.core.settings import SPECS, Settings, SettingsError, redact_url, unknown_variables
from bridge.mintsoft.connect_actions import asn_connect_action, connect_action
from bridge.mintsoft.simulate import bridge_base_url, build_body, post_webhook
from bridge.mintsoft.sync.check import NAME as SYNC_CHECK
from bridge.mintsoft.sync.check import check_sync_access

TIMEOUT = 5.0
"""Seconds each network check may take."""

DOCTOR_EVENT = "despatched"


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` is ``None`` for a check that could not run."""

    name: str
    ok: bool | None
    detail: str = ""
    fix: str = ""


def _unknown_variables() -> list[Check]:
    checks = []
    valid = list(SPECS) + [v + "_FILE" for v in SPECS]
    for name in unknown_variables():
        guess = difflib.get_close_matches(name, valid, n=1)
        fix = f"rename it to {guess[0]}" if guess else "remove it (see docs/configuration.md)"
        checks.append(Check(f"variable {name}", False, "is set but means nothing", fix))
    return checks


def _settings_checks(settings: Settings) -> list[Check]:
    # Settings that do not load never get here: the command line refuses them (exit 2).
    checks = [Check("settings", True, "loaded")]
    checks += _unknown_variables()
    if settings.auth_configured:
        how = "Authorization header" if settings.auth_headers else "APIKEY"
        checks.append(Check("webhook credentials", True, f"Mintsoft authenticates by {how}"))
    elif settings.allow_unauthenticated:
        checks.append(Check("webhook credentials", True, "none: anyone may send webhooks"))
    else:
        checks.append(
            Check(
                "webhook credentials",
                False,
                "BRIDGE_API_KEYS and BRIDGE_AUTH_HEADERS are both unset",
                "set one of them (serve refuses to start without)",
            )
        )
    # What connect-actions would register: set, https, and fitting Mintsoft's fields.
    # (Missing credentials are the check above's failure, not this one's.)
    try:
        registering = replace(settings, allow_unauthenticated=True)
        connect_action(registering, ORDER_EVENTS, None)
        asn_connect_action(registering, None)
    except SettingsError as exc:
        reason, _, fix = str(exc).partition(": ")
        checks.append(Check("public URL", False, reason, fix))
    else:
        checks.append(Check("public URL", True, f"Mintsoft will call {settings.public_url}"))
    return checks


async def _connect(settings: Settings) -> tuple[AbstractConnection | None, Check]:
    # aiormq logs a refused connection itself; the check line already says it.
    logging.getLogger("aiormq").addHandler(logging.NullHandler())
    try:
        connection = await connect_once(settings.amqp_urls, TIMEOUT)
    except BrokerUnreachable as exc:
        return None, Check("broker reachable", False, exc.reasons, exc.fix)
    return connection, Check("broker reachable", True, redact_url(str(connection.url)))


async def _passive(connection: AbstractConnection, kind: str, name: str) -> int | None:
    """Message count of queue ``name`` (0 for an exchange); ``None`` if it does not exist."""
    channel = await connection.channel()
    try:
        if kind == "exchange":
            await channel.exchange_declare(name, passive=True)
            return 0
        ok = await channel.queue_declare(name, passive=True)
        return int(ok.message_count or 0)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    finally:
        await close_quietly(channel)


async def _topology(connection: AbstractConnection, settings: Settings) -> Check:
    exchange = settings.exchange
    topology = settings_topology(settings)
    missing: list[str] = []
    depths: list[str] = []
    for ex in topology.exchanges:
        if await _passive(connection, "exchange", ex.name) is None:
            missing.append(ex.name)
    for queue in topology.queues:
        count = await _passive(connection, "queue", queue.name)
        if count is None:
            missing.append(queue.name)
        elif count and queue.name != archive_name(exchange):
            depths.append(f"{queue.name} holds {count}")
    if missing:
        return Check(
            "exchange and queues",
            False,
            "missing " + ", ".join(missing),
            "run mintsoft-bridge topology (serve also declares them when it starts)",
        )
    leftover = await _passive(connection, "queue", archive_name(exchange))
    if not settings.archive and leftover is not None:
        # Still bound, it routes every webhook: the alternate exchange never fires.
        return Check(
            "exchange and queues",
            False,
            f"BRIDGE_ARCHIVE is false but {archive_name(exchange)} exists: webhooks no "
            f"subscriber wants go there, not to {unrouted_name(exchange)}",
            f"set BRIDGE_ARCHIVE=true, or delete it (rabbitmqctl delete_queue "
            f"{archive_name(exchange)}) to use {unrouted_name(exchange)} again",
        )
    if settings.archive:
        detail = (
            f"{exchange}, its invalid queue and its archive exist; webhooks no subscriber "
            f"wants are kept in {archive_name(exchange)} ({unrouted_name(exchange)} stays empty)"
        )
    else:
        detail = f"{exchange} and its unrouted and invalid queues exist (archive off)"
    if depths:
        detail += " (" + "; ".join(depths) + ")"
    return Check("exchange and queues", True, detail)


async def _bridge_answers(session: aiohttp.ClientSession, base: str) -> Check:
    try:
        async with session.get(base + "/healthz") as health:
            healthy = health.status
        async with session.get(base + "/readyz") as ready:
            readiness = ready.status
            text = await ready.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(
            "bridge answers",
            False,
            f"{base}/healthz: {str(exc) or type(exc).__name__}",
            "start mintsoft-bridge serve, and make BRIDGE_PUBLIC_URL reach it",
        )
    if healthy != 200:
        return Check(
            "bridge answers",
            False,
            f"{base}/healthz answered {healthy}",
            "make BRIDGE_PUBLIC_URL point at mintsoft-bridge serve, not another service",
        )
    if readiness != 200:
        return Check(
            "bridge answers",
            False,
            f"{base}/readyz answered {readiness} ({' '.join(text.split())[:200]})",
            "the bridge cannot reach its broker: check the bridge's BRIDGE_AMQP_URL",
        )
    return Check("bridge answers", True, f"{base}/healthz and /readyz answer 200")


ROUNDTRIPS = (
    (DOCTOR_EVENT, "webhook accepted and queued"),
    (ASN_BOOKED_IN, "ASN webhook accepted and queued"),
)
"""The simulated webhooks: (event, check name)."""


def _doctor_body(event: str, order_id: int) -> bytes:
    document = orjson.loads(build_body(event, order_id))
    marker = f"mintsoft-bridge-doctor-{os.urandom(4).hex()}"
    if event == ASN_BOOKED_IN:
        document["POReference"] = marker
    else:
        document["OrderNumber"] = marker
        document["ExternalOrderReference"] = marker
    return orjson.dumps(document)


async def _webhook_roundtrip(
    settings: Settings,
    session: aiohttp.ClientSession,
    connection: AbstractConnection,
    base: str,
    event: str,
    name: str,
) -> Check:
    channel = await connection.channel()
    declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
    queue = declared.queue
    assert queue is not None
    try:
        await channel.queue_bind(queue, settings.exchange, routing_key=routing_key(event))
        outcome = await post_webhook(session, settings, base, event, _doctor_body(event, 0), 0)
        status = outcome.status
        if status is None:
            return Check(name, False, f"no answer from {base}: {outcome.error}", "start serve")
        if status == 401:
            return Check(
                name,
                False,
                "the bridge answered 401: it does not accept these credentials",
                "set BRIDGE_API_KEYS / BRIDGE_AUTH_HEADERS here to a value the running "
                "bridge serves with (the value Mintsoft was given)",
            )
        if status == 404:
            return Check(
                name,
                False,
                f"the bridge answered 404 for /webhooks/{event}",
                "run a mintsoft-bridge serve that takes it (upgrade it), and check "
                "BRIDGE_PUBLIC_URL points at serve",
            )
        if status == 200 and outcome.answer.get("status") == "spooled":
            return Check(
                name,
                False,
                "the bridge spooled it: it is not connected to its broker",
                "check the running bridge's BRIDGE_AMQP_URL and that RabbitMQ is up; the spool "
                "publishes what it holds once the broker is back",
            )
        if status != 200 or outcome.answer.get("status") != "accepted":
            said = outcome.answer.get("message") or outcome.answer.get("status") or ""
            return Check(
                name,
                False,
                f"the bridge answered {status} {said}".rstrip(),
                "see mintsoft-bridge serve's log, and check /readyz",
            )
        message_id = outcome.answer.get("message_id")
        if await _arrives(channel, queue, message_id):
            return Check(name, True, f"message {message_id} reached {settings.exchange}")
        return Check(
            name,
            False,
            f"the bridge accepted message {message_id} but it did not reach {settings.exchange} "
            "on this broker",
            "give doctor the same BRIDGE_AMQP_URL and BRIDGE_EXCHANGE as the running bridge",
        )
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await channel.queue_delete(queue)
        await close_quietly(channel)


async def _arrives(channel: AbstractChannel, queue: str, message_id: Any) -> bool:
    from pamqp.commands import Basic

    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while loop.time() < deadline:
        message = await channel.basic_get(queue, no_ack=True)
        if isinstance(message.delivery, Basic.GetEmpty):
            await asyncio.sleep(0.05)
            continue
        if message.header.properties.message_id == message_id:
            return True
    return False


async def _bounded(name: str, check: Coroutine[Any, Any, Check], seconds: float) -> Check:
    """``check``, or a failed check if the broker has not answered within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await check
    except TimeoutError:
        return Check(
            name,
            False,
            f"the broker did not answer within {seconds:.0f} s",
            "check its health (rabbitmqctl status) and its memory and disk alarms",
        )


async def run_checks(
    settings: Settings, skip_simulate: bool, report: Callable[[Check], None]
) -> None:
    """Run every check in turn, handing each to ``report`` as it completes (so a slow one
    shows what passed before it)."""
    for check in _settings_checks(settings):
        report(check)
    ok, detail, fix = await check_sync_access(settings, TIMEOUT)
    report(Check(SYNC_CHECK, ok, detail, fix))
    base = bridge_base_url(settings, None)
    connection, broker = await _connect(settings)
    report(broker)
    topology_ok = False
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            if connection is not None:
                topology = await _bounded(
                    "exchange and queues", _topology(connection, settings), TIMEOUT
                )
                topology_ok = bool(topology.ok)
                report(topology)
            else:
                report(Check("exchange and queues", None, "skipped: no broker"))
            answers = await _bridge_answers(session, base)
            report(answers)
            for event, name in ROUNDTRIPS:
                if skip_simulate:
                    report(Check(name, None, "skipped (--skip-simulate)"))
                elif connection is None or not topology_ok or not answers.ok:
                    report(Check(name, None, "skipped: fix the checks above"))
                else:
                    # Posting, then waiting up to TIMEOUT for the message: bounded as a whole.
                    trip = _webhook_roundtrip(settings, session, connection, base, event, name)
                    report(await _bounded(name, trip, 3 * TIMEOUT))
        finally:
            if connection is not None:
                await close_quietly(connection)
