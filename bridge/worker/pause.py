"""The operator's pause of one subscriber, as a worker sees it: the state in the broker's
``<name>.control`` queue (:mod:`bridge.amqp.control`), read when a channel opens (so a worker
restarted while paused starts paused) and then every :data:`POLL_INTERVAL` seconds.

Both kinds of subscription use it: the plain one cancels its consumer while paused and
consumes again on resume; the ordered coordinator releases its partitions (each after its
message in hand) and subscribes them again on resume. Listeners are called on every change.

A poll that fails (broker away, queue not declared yet) keeps the last known state and is
tried again at the next interval: a pause is never lifted because the broker could not be
asked. Every change is logged once per worker, with the operator who made it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiormq.abc import AbstractChannel

from bridge.amqp.connection import BrokerLink, close_quietly
from bridge.amqp.control import CONSUMING, ControlState, read_state
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

    @property
    def paused(self) -> bool:
        return self.state.paused

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(paused)`` whenever the state changes."""
        self._listeners.append(listener)

    async def refresh(self, channel: AbstractChannel) -> None:
        """Read the state on ``channel`` now (raises the channel's errors)."""
        self._set(await read_state(channel, self.subscriber))

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
            try:
                if self._channel is None or self._channel.is_closed:
                    connection = self.link.connection
                    if connection is None:
                        continue  # the link reconnects, and reads the state when it is up
                    self._channel = await connection.channel(publisher_confirms=False)
                await self.refresh(self._channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last state; try again at the next interval
                log.debug("could not read the pause state (%s)", exc)
                self._channel = None

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
