"""``spool drain``: publish everything a spool file holds (the volume of a scaled-down receiver,
a dead host's disk) and stop.

It runs the receiver's own drain (:class:`~bridge.receiving.drain.Drainer`) over that file, so
the order, the confirms and the delete-after-confirm are the same: oldest first, each message
deleted only once the broker confirmed it. Interrupted or failed, it leaves exactly the
unconfirmed messages in the file, and running it again publishes only those (a message
confirmed but not yet deleted is published again, a duplicate with the same ``message_id``).

Fails with :class:`~bridge.errors.CommandError` naming how many webhooks remain when the
broker cannot be reached or stops confirming (:data:`~bridge.receiving.drain.STALL`
seconds without one) or when a running ``serve`` (or another drain) holds the file's lock
(:class:`~bridge.receiving.spool.SpoolLock`: two drains of one file would publish it twice), and
with :class:`~bridge.core.settings.SettingsError` when the file is not there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bridge.amqp.connection import BrokerUnreachable, close_quietly, connect_once
from bridge.core.settings import Settings, SettingsError
from bridge.errors import CommandError
from bridge.receiving.drain import STALL
from bridge.receiving.serve import build_delivery
from bridge.receiving.spool import SpoolInUse, SpoolLock

LINK_WAIT = 10.0
"""Seconds to wait for the publishing link once a probe connection got through."""


async def drain_spool_file(
    settings: Settings, path: str, progress: Callable[[int], None] | None = None
) -> int:
    """Publish every message of the spool file ``path`` to ``settings.exchange`` on
    ``settings.amqp_urls``, emptying the file; return how many were published.
    ``progress(n)`` is told whenever ``n`` more are published and deleted."""
    if not await asyncio.to_thread(Path(path).is_file):
        raise SettingsError(
            f"no spool file at {path!r}: give --path the receiver's spool.sqlite3 "
            "(its BRIDGE_SPOOL_PATH, e.g. on the volume it left behind)"
        )
    lock = SpoolLock(path)
    try:
        lock.acquire()
    except SpoolInUse:
        raise CommandError(
            f"the spool {path} is in use by a running mintsoft-bridge (serve or spool drain): "
            "stop it first (a stopping serve publishes its spool itself), or drain a copy"
        ) from None
    except OSError as exc:
        raise CommandError(
            f"cannot lock the spool {path} ({exc.strerror}): make its folder writable, "
            "or drain a copy"
        ) from None
    try:
        return await _drain(settings, path, progress)
    finally:
        lock.release()


async def _drain(settings: Settings, path: str, progress: Callable[[int], None] | None) -> int:
    delivery = build_delivery(replace(settings, spool_path=path))
    spool, drainer = delivery.spool, delivery.drainer
    assert spool is not None and drainer is not None
    link = delivery.publisher.link
    try:
        await delivery.open()
        total = spool.depth
        if total == 0:
            return 0
        try:
            # One plain connection first: it names the cause and the fix when it fails.
            probe = await connect_once(settings.amqp_urls)
        except BrokerUnreachable as exc:
            raise CommandError(f"{exc}; all {total} webhooks remain in {path}") from None
        await close_quietly(probe)
        if not await link.start(wait=LINK_WAIT):
            raise CommandError(
                f"the broker did not open a publishing channel within {LINK_WAIT:g} s; "
                f"all {total} webhooks remain in {path}: run it again"
            )
        left = await drainer.until_empty(progress=progress)
        if left:
            raise CommandError(
                f"{left} of {total} webhooks remain in {path}: the broker confirmed none for "
                f"{STALL:g} s (see the log lines above); run it again once it takes them"
            )
        return total
    finally:
        await delivery.close()
        await link.close()
