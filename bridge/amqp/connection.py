"""One AMQP connection kept up in the background, with failover across a list of brokers;
and a connection for one operation (:func:`borrow`), either fresh or a kept link's.

Callers never wait on a reconnect: they read :attr:`BrokerLink.channel` (``None`` while down)
and fail fast, so a request is never held hostage by a broker that is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Protocol

import aiormq
from aiormq.abc import AbstractBase, AbstractChannel, AbstractConnection
from aiormq.connection import TransportFactory

from bridge.core.settings import redact_url
from bridge.core.tasks import cancel_and_wait
from bridge.errors import CommandError

log = logging.getLogger("bridge.amqp.connection")


class _ReportedByBrokerLink(logging.Filter):
    """Drops aiormq's own records of a failed connect and of a lost connection (the latter
    with a traceback): :class:`BrokerLink` reports both, in one line each."""

    TEMPLATES = ("error when creating transport", "Cancelling cause reader exited abnormally")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.TEMPLATES))


logging.getLogger("aiormq.connection").addFilter(_ReportedByBrokerLink())

OnChannel = Callable[[AbstractChannel], Awaitable[None]]

CONNECT_TIMEOUT = 10.0
MAX_BACKOFF = 5.0

CLOSE_TIMEOUT = 2.0
"""Seconds a close may take: a broker that stops answering must not hold a command open."""

NACKS_BEFORE_RENEW = 3
"""Nacks in a row, with no confirm between, after which the link gets a fresh connection."""

RENEW_INTERVAL = 1.0
"""Seconds between two such renewals at most, so refusals that last never cause a storm."""


@dataclass(eq=False, repr=False)  # repr=False: its URLs hold the broker's password
class BrokerLink:
    """Keeps a connection and a publisher-confirm channel open, reconnecting on loss.

    ``urls`` are tried in turn (a cluster); ``on_channel`` runs on every new channel before
    it is handed out (declaring the topology), so a restarted broker gets it back.
    ``transport_factory`` is aiormq's, for every connection (the ledger's splits its
    deliveries off: :mod:`bridge.ledger.consumer`); one connection is opened at a time.
    """

    urls: tuple[str, ...]
    on_channel: OnChannel | None = None
    _: KW_ONLY
    confirms: bool = True
    name: str = "mintsoft-bridge"
    transport_factory: TransportFactory | None = None
    channel: AbstractChannel | None = field(default=None, init=False)
    state: str = field(default="connecting", init=False)
    connected_url: str | None = field(default=None, init=False)
    reconnects: int = field(default=0, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _connection: AbstractConnection | None = field(default=None, init=False)
    _up: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _listeners: list[Callable[[bool], None]] = field(default_factory=list, init=False)
    _renewing: asyncio.Task[None] | None = field(default=None, init=False)
    _nacks_in_row: int = field(default=0, init=False)
    _renewed_at: float = field(default=-RENEW_INTERVAL, init=False)

    def on_state_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(connected)`` whenever the link goes up or down."""
        self._listeners.append(listener)

    async def start(self, wait: float = 0.0) -> bool:
        """Start keeping the link; wait up to ``wait`` seconds for it to come up."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name="broker-link")
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._up.wait()
        return self._up.is_set()

    @property
    def connection(self) -> AbstractConnection | None:
        """The connection while the link is up (``None`` while down), for a caller that
        opens channels of its own on it (the console's pages)."""
        return self._connection if self.channel is not None else None

    async def wait_up(self, timeout: float) -> AbstractChannel | None:
        """The channel, waiting up to ``timeout`` for one; ``None`` if still down."""
        if self.channel is not None:
            return self.channel
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._up.wait()
        return self.channel

    def note_confirm(self) -> None:
        """A publish on this link was confirmed: the channel is healthy."""
        self._nacks_in_row = 0

    def note_nack(self) -> None:
        """A publish on this link was nacked; renew the link when nacks keep coming.

        A quorum queue nacks while it has no leader (its node just died). RabbitMQ 3.10 goes
        on nacking every later publish of a channel whose first publish to the queue came
        in that moment, even once a new leader is elected; a new channel is accepted.
        """
        self._nacks_in_row += 1
        now = time.monotonic()
        if self._nacks_in_row >= NACKS_BEFORE_RENEW and now - self._renewed_at >= RENEW_INTERVAL:
            self._nacks_in_row = 0
            self._renewed_at = now
            log.warning("the broker keeps refusing messages; reconnecting for a fresh channel")
            self.renew()

    def renew(self) -> None:
        """Drop the current connection: the link connects again, to the next broker of the
        list, with a fresh channel. Publishes still waiting on the old one fail."""
        connection = self._connection
        if connection is None or self.channel is None or self._renewing is not None:
            return
        self.channel = None  # callers fail fast until the new channel is up

        async def close() -> None:
            # With a reason, publishes waiting on this connection fail with it; without
            # one aiormq cancels them, and a CancelledError would end their callers.
            reason = ConnectionError("connection renewed by the bridge")
            await close_quietly(connection, reason=reason)
            self._renewing = None

        self._renewing = asyncio.create_task(close(), name="broker-link-renew")

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._drop()
        self.state = "closed"

    def _set(self, up: bool) -> None:
        if up:
            self._up.set()
        else:
            self._up.clear()
        for listener in self._listeners:
            listener(up)

    async def _drop(self) -> None:
        self.channel = None
        connection, self._connection = self._connection, None
        if connection is not None:
            await close_quietly(connection)

    async def _keep(self) -> None:
        backoff = 0.2
        index = 0
        failures = 0
        while True:
            url = self.urls[index % len(self.urls)]
            index += 1
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    connection = await aiormq.connect(
                        url,
                        client_properties={"connection_name": self.name},
                        transport_factory=self.transport_factory,
                    )
                    self._connection = connection
                    channel = await connection.channel(
                        publisher_confirms=self.confirms, on_return_raises=True
                    )
                    if self.on_channel is not None:
                        await self.on_channel(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._drop()
                self.state = "down"
                failures += 1
                # Wait only once every broker of the list has failed in a row: a cluster
                # fails over to the next node at once, a lone broker is not hammered.
                wait = backoff if failures % len(self.urls) == 0 else 0.0
                log.warning(
                    "broker %s unreachable (%s); %s",
                    redact_url(url),
                    _reason(exc),
                    f"retrying in {wait:.1f}s" if wait else "trying the next one",
                )
                if wait:
                    await asyncio.sleep(wait)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.2
            failures = 0
            self.channel = channel
            self.connected_url = url
            self.state = "connected"
            self._set(True)
            log.info("connected to broker %s", redact_url(url))
            # The futures belong to aiormq: wait on them, never cancel them.
            await asyncio.wait(
                {connection.closing, channel.closing}, return_when=asyncio.FIRST_COMPLETED
            )
            self.state = "down"
            self._set(False)
            self.reconnects += 1
            log.warning(
                "lost broker %s (%s); reconnecting",
                redact_url(url),
                _closed_reason(connection.closing, channel.closing),
            )
            await self._drop()
            # Go on to the next broker of the list: any node of a cluster serves every
            # queue, and the one just lost is the likeliest to be dead.


async def close_quietly(
    connection: AbstractBase,
    seconds: float = CLOSE_TIMEOUT,
    *,
    reason: BaseException | None = None,
) -> None:
    """Close a connection (or channel) within ``seconds``, never raising: whatever it held
    unacked goes back to its queue on the broker either way. A close that gets no answer is
    abandoned when the time is up (the socket goes with the process or the next close)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            if reason is None:
                await connection.close()
            else:
                await connection.close(reason)


def _closed_reason(*futures: asyncio.Future[object]) -> str:
    for future in futures:
        if future.done() and not future.cancelled():
            exc = future.exception()
            if exc is not None:
                return _reason(exc)
    return "closed"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200] if text else type(exc).__name__


class BrokerUnreachable(CommandError):
    """No broker of the list accepted a connection; ``reasons`` says why for each one and
    ``fix`` what to do."""

    def __init__(self, reasons: str, fix: str) -> None:
        super().__init__(f"cannot reach the broker ({reasons}): {fix}")
        self.reasons = reasons
        self.fix = fix


async def connect_once(urls: Sequence[str], timeout: float = CONNECT_TIMEOUT) -> AbstractConnection:
    """A plain connection for a one-shot command, trying each broker in turn; raises
    :class:`BrokerUnreachable` naming the cause and the fix."""
    reasons = []
    auth_refused = False
    for url in urls:
        try:
            async with asyncio.timeout(timeout):
                return await aiormq.connect(url)
        except Exception as exc:
            auth_refused |= isinstance(exc, aiormq.exceptions.ProbableAuthenticationError)
            reasons.append(f"{redact_url(url)}: {_reason(exc)}")
    fix = (
        "check the user and password in BRIDGE_AMQP_URL"
        if auth_refused
        else "start RabbitMQ (rabbitmq-server -detached, or docker compose up rabbitmq) "
        "or point BRIDGE_AMQP_URL at it"
    )
    raise BrokerUnreachable("; ".join(reasons), fix)


class SharedConnection(Protocol):
    """A connection kept by someone else (the console's one link), lent per operation."""

    async def connection(self) -> AbstractConnection:
        """The kept connection; raises :class:`CommandError` when the broker is away."""
        ...

    def renew(self) -> None:
        """Drop the kept connection (a channel that would not close holds messages)."""
        ...


Brokers = Sequence[str] | SharedConnection
"""Where an operation gets its connection: broker URLs (a command: a connection of its own,
closed at the end) or a :class:`SharedConnection` (the console: borrowed, left open)."""


class Borrowed:
    """A connection for one operation (from :func:`borrow`), and the channels it opened
    with :meth:`channel`. :meth:`release` closes those channels, and the connection when it
    is the operation's own: a channel closed puts back every message it took unacked, so a
    lent connection gives back exactly what a closed one would. A channel that does not
    close in time has the lent connection renewed, for the same reason."""

    def __init__(self, connection: AbstractConnection, lent: SharedConnection | None) -> None:
        self.connection = connection
        self._lent = lent
        self._channels: list[AbstractChannel] = []

    async def channel(self, **options: Any) -> AbstractChannel:
        channel = await self.connection.channel(**options)
        self._channels.append(channel)
        return channel

    async def release(self) -> None:
        if self._lent is None:
            await close_quietly(self.connection)
            return
        for channel in self._channels:
            await close_quietly(channel)
            if not channel.is_closed and not self.connection.is_closed:
                self._lent.renew()
                break


async def borrow(broker: Brokers) -> Borrowed:
    """A connection for one operation: a fresh one (:func:`connect_once`) for broker URLs,
    the kept one for a :class:`SharedConnection`. Always :meth:`Borrowed.release` it."""
    if isinstance(broker, str | Sequence):
        return Borrowed(await connect_once(broker), None)
    return Borrowed(await broker.connection(), broker)
