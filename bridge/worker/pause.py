"""The operator's pause of one subscriber, as a worker sees it: the state in the broker's
``<name>.control`` queue (:mod:`bridge.amqp.control`), read when a channel opens (so a worker
restarted while paused starts paused) and then every :data:`POLL_INTERVAL` seconds.

Both kinds of subscription use it: the plain one cancels its consumer while paused and
consumes again on resume; the ordered coordinator releases its partitions (each after its
message in hand) and subscribes them again on resume. Listeners are called on every change.

The gate declares ``<name>.control`` itself, on a channel of its own: that queue is classic,
and a cluster node that holds it being down must not stop the worker from consuming. A read
that fails (broker away, that node down) keeps the last known state, says so once, and is
tried again at the next interval: a pause is never lifted because the broker could not be
asked (a worker that starts while it cannot be read starts consuming). Every change is
logged once per worker, with the operator who made it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiormq.abc import AbstractChannel, AbstractConnection

from bridge.amqp.connection import BrokerLink, close_quietly
from bridge.amqp.control import CONSUMING, RPC_TIMEOUT, ControlState, read_state
from bridge.amqp.topology import control_name, control_queue
from bridge.core.tasks import cancel_and_wait

log = logging.getLogger("bridge.worker.pause")

POLL_INTERVAL = 2.0
"""Seconds between two reads of the state: a pause or resume is seen within this (plus one
read), well inside the contract's 5 seconds."""


class PauseGate:
    """Whether the operator paused subscriber ``subscriber`` (its workers read it on
    ``link``'s connection)."""

    def __init__(self, subscriber: str, link: BrokerLink, interval: float = POLL_INTERVAL) -> None:
        self.subscriber = subscriber
        self.link = link
        self.interval = interval
        self.state: ControlState = CONSUMING
        self._listeners: list[Callable[[bool], None]] = []
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._unreadable = False

    @property
    def paused(self) -> bool:
        return self.state.paused

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(paused)`` whenever the state changes."""
        self._listeners.append(listener)

    async def refresh(self, connection: AbstractConnection) -> None:
        """Read the state now, on a channel of the gate's own on ``connection`` (declaring
        ``<name>.control`` first). A failure keeps the last state and says so once."""
        try:
            async with asyncio.timeout(RPC_TIMEOUT * 2):
                channel = self._channel
                if channel is None or channel.is_closed or channel.connection is not connection:
                    channel = await connection.channel(publisher_confirms=False)
                    queue = control_queue(self.subscriber)
                    await channel.queue_declare(queue.name, durable=True, arguments=queue.arguments)
                    self._channel = channel
                state = await read_state(channel, self.subscriber)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._channel = None
            if not self._unreadable:
                self._unreadable = True
                log.warning(
                    "cannot read the pause state in %s (%s): keeping the last one (%s)",
                    control_name(self.subscriber),
                    exc,
                    "paused" if self.paused else "consuming",
                    extra={"subscriber": self.subscriber},
                )
            return
        self._unreadable = False
        self._set(state)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll(), name=f"pause-gate {self.subscriber}")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._channel is not None:
            await close_quietly(self._channel)
            self._channel = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            connection = self.link.connection
            if connection is not None:  # else the link reconnects, and reads it when up
                await self.refresh(connection)

    def _set(self, state: ControlState) -> None:
        changed = state.paused != self.state.paused
        self.state = state
        if not changed:
            return
        fields = {"subscriber": self.subscriber}
        who = state.operator or "an operator"
        if state.paused:
            log.warning("paused by %s at %s: not taking messages", who, state.at, extra=fields)
        else:
            log.info("resumed by %s at %s", who, state.at, extra=fields)
        for listener in self._listeners:
            listener(state.paused)
