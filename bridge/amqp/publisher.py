"""The one confirmed publish: every publish that waits for the broker's confirm goes through
here (the receiver's webhooks, the worker's ladder and DLQ moves and its delivery records,
``dlq replay``, ``archive replay``, the archive's end markers, the sync's reconcile).

:func:`confirms` gives the one :class:`Confirms` of a channel; :meth:`Confirms.publish`
sends a message ``mandatory`` and returns one :class:`Outcome`: ``confirmed`` (the broker's
``basic.ack``), ``returned`` (unroutable), ``nacked``, ``timeout`` (no confirm within the
time given) or ``channel_closed`` (no channel, or it closed before the confirm). It never
raises for a broker's answer and never waits without a bound. :meth:`Confirms.send` starts
a publish without waiting (windows of publishes, records whose outcome is only counted).

Paths: the fast path (:mod:`bridge.amqp.frames` + the checked adapter
:mod:`bridge.amqp.aiormq_internals`: hand-built frames, one socket write per loop turn, about
4x less CPU per publish) is the implementation; when the adapter's check fails on a channel
(another aiormq), or ``BRIDGE_PUBLISH_PATH=public``, aiormq's public ``basic_publish`` is.
One log line says which path runs.

The one twin policy (identical webhooks share a message id, and aiormq matches a
``basic.return`` to its publish by message id alone): a return of a publish always reaches
us before that publish's confirm, so every publish of that message id still unconfirmed
when the return arrives is reported ``returned``, on either path. A twin that was in fact
routed is then reported returned too (the receiver spools it, a replay stops: a duplicate
at worst, never a confirm for a message that went nowhere). Returns are rare (a broken
topology); twins in flight are common (load tests, Mintsoft's retries), so they are never
serialised. (On the public path a confirm is seen one loop turn after aiormq read it; a
twin whose confirm came in a ``multiple`` ack just before the return may then be reported
returned although it was routed: the same conservative side.)

:class:`Publisher` is the receiver's (and the sync's) use of it: envelopes to the webhook
exchange on a :class:`~bridge.amqp.connection.BrokerLink`, any outcome but ``confirmed``
raised as :class:`PublishFailed`, with the publish metrics.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiormq.abc import AbstractChannel, DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError, DeliveryError, PublishError
from pamqp.commands import Basic

from bridge.amqp import aiormq_internals as internals
from bridge.amqp.connection import BrokerLink
from bridge.amqp.frames import PublishFrames
from bridge.core import metrics
from bridge.core.contract import Envelope
from bridge.core.tasks import being_cancelled

log = logging.getLogger("bridge.amqp.publisher")

FAST, PUBLIC = "fast", "public"


class Outcome(enum.StrEnum):
    """How one confirmed publish ended (the values are the publish metric's labels)."""

    CONFIRMED = "confirmed"
    RETURNED = "returned"
    NACKED = "nacked"
    TIMED_OUT = "timeout"
    CLOSED = "channel_closed"


Pending = internals.Pending
"""One publish on its way: give it to :meth:`Confirms.wait` or :meth:`Confirms.when_settled`."""


class Confirms:
    """The confirmed publishes of one channel; get it with :func:`confirms` (the fast path
    must be the channel's only publisher)."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        forced = internals.public_path_reason()
        reason = forced or internals.check(channel)
        self._fast = internals.FastChannel(channel) if reason is None else None
        self.path = FAST if reason is None else PUBLIC
        self._frames: dict[str, PublishFrames] = {}
        self._twins: dict[str, list[Pending]] = {}
        self._counted: dict[int, tuple[internals.Counted, Callable[[Outcome], None]]] = {}
        """The fast path's counted publishes not settled yet, in tag order (= deadline
        order: one timeout for all of them)."""
        self._sweep: asyncio.TimerHandle | None = None
        self._all_counted: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        ch: Any = channel
        # Returns reach _on_return (synchronously, in aiormq's reader, before any later
        # frame is read) instead of failing just the one future aiormq picks by message id.
        ch.on_return_raises = False
        ch.on_return_callbacks.add(self._on_return)
        if reason is None:
            _say(f"publishing on the fast path (aiormq {internals.AIORMQ_VERSION} checked)", 0)
        else:
            _say(f"publishing through aiormq's public API ({reason})", 0 if forced else 1)

    # --- sending ----------------------------------------------------------------------

    def send_envelope(self, envelope: Envelope, exchange: str) -> Pending:
        """Start publishing a webhook's envelope to ``exchange``."""
        fast = self._fast
        if fast is not None and not fast.closed:
            return self._track(
                fast.publish(self._encoder(exchange).encode(envelope), envelope.message_id)
            )
        return self._send_public(
            envelope.body, exchange, envelope.routing_key, envelope.properties()
        )

    def send(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        properties: Basic.Properties,
    ) -> Pending:
        """Start publishing any message (a message id is given to one that has none)."""
        if not properties.message_id:
            properties.message_id = uuid.uuid4().hex
        fast = self._fast
        if fast is not None and not fast.closed:
            frames = self._encoder(exchange).encode_message(routing_key, body, properties)
            return self._track(fast.publish(frames, properties.message_id))
        return self._send_public(body, exchange, routing_key, properties)

    def send_counted(
        self,
        exchange: str,
        routing_key: str,
        event: str,
        body: bytes,
        message_id: str,
        timeout: float,
        failed: Callable[[Outcome], None],
    ) -> None:
        """Start publishing a message whose outcome is only counted (a delivery record):
        the properties of an envelope with no headers, ``message_id`` unique (no twins).
        ``failed(outcome)`` is called for any outcome but ``confirmed`` (within
        ``timeout`` seconds at most); nobody waits for it.

        On the fast path such a publish costs no future, done callback or timer of its own
        (:class:`~bridge.amqp.aiormq_internals.Counted`; one timer watches the deadlines of
        all of them, which come in the order they were sent)."""
        fast = self._fast
        if fast is None or fast.closed:
            envelope = Envelope(event, routing_key, body, message_id, time.time(), {})
            sent = self._send_public(body, exchange, routing_key, envelope.properties())

            def then(outcome: Outcome) -> None:
                if outcome is not Outcome.CONFIRMED:
                    failed(outcome)

            self.when_settled(sent, timeout, then)
            return
        frames = self._encoder(exchange).encode_fields(
            routing_key, event, body, message_id, time.time(), {}
        )
        deadline = self._loop.time() + timeout
        counted = fast.publish_counted(frames, message_id, deadline, self._counted_settled)
        self._counted[counted.tag] = (counted, failed)
        if self._sweep is None:
            self._sweep = self._loop.call_at(deadline, self._expire_counted)

    def _counted_settled(
        self, counted: internals.Counted, result: object, error: BaseException | None
    ) -> None:
        entry = self._counted.pop(counted.tag, None)
        assert self._fast is not None
        self._fast.forget(counted)
        if entry is not None:
            if error is None:
                outcome = Outcome.CONFIRMED if isinstance(result, Basic.Ack) else Outcome.RETURNED
            else:
                outcome = _error_outcome(error)
            if outcome is not Outcome.CONFIRMED:
                entry[1](outcome)
        if not self._counted and self._all_counted is not None:
            if not self._all_counted.done():
                self._all_counted.set_result(None)
            self._all_counted = None

    def _expire_counted(self) -> None:
        self._sweep = None
        now = self._loop.time()
        counted = self._counted
        while counted:
            tag, (entry, failed) = next(iter(counted.items()))
            if entry.deadline > now:
                self._sweep = self._loop.call_at(entry.deadline, self._expire_counted)
                return
            del counted[tag]
            if entry.expire():
                assert self._fast is not None
                self._fast.forget(entry)
                failed(Outcome.TIMED_OUT)
        if self._all_counted is not None:
            if not self._all_counted.done():
                self._all_counted.set_result(None)
            self._all_counted = None

    def _encoder(self, exchange: str) -> PublishFrames:
        frames = self._frames.get(exchange)
        if frames is None:
            assert self._fast is not None
            frames = PublishFrames(self._fast.number, exchange, self._fast.max_body_frame)
            self._frames[exchange] = frames
        return frames

    def _send_public(
        self, body: bytes, exchange: str, routing_key: str, properties: Basic.Properties
    ) -> Pending:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any]
        if self.channel.is_closed or self._fast is not None:  # a closed fast channel
            future = loop.create_future()
            future.set_exception(ChannelInvalidStateError("the channel is closed"))
        else:
            # Tasks take aiormq's publish lock in the order they were made: order is kept.
            future = asyncio.ensure_future(
                self.channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=True,
                )
            )
        return self._track(Pending(0, properties.message_id or "", future, {}))

    def _track(self, pending: Pending) -> Pending:
        twins = self._twins.get(pending.message_id)
        if twins is None:
            self._twins[pending.message_id] = [pending]
        else:
            twins.append(pending)
        return pending

    # --- settling ---------------------------------------------------------------------

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str = "",
        routing_key: str,
        properties: Basic.Properties,
        timeout: float,
    ) -> Outcome:
        """Publish and wait for the confirm, at most ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        sent = self.send(body, exchange=exchange, routing_key=routing_key, properties=properties)
        return await self.wait(sent, deadline)

    async def wait(self, pending: Pending, deadline: float) -> Outcome:
        """The outcome of ``pending``, waiting until ``deadline`` (loop time) at most."""
        # A bare timer that cancels the confirmation is much cheaper per publish than
        # asyncio.timeout() or wait_for(); a CancelledError while our own task is not being
        # cancelled can only come from it.
        timer = asyncio.get_running_loop().call_at(deadline, pending.expire)
        try:
            await pending.future
        except asyncio.CancelledError:
            if being_cancelled():
                self._finish(pending)
                raise
        except Exception:  # read from the future below
            pass
        finally:
            timer.cancel()
        self._finish(pending)
        return _outcome(pending)

    def when_settled(
        self, pending: Pending, timeout: float, then: Callable[[Outcome], None]
    ) -> None:
        """Call ``then`` with the outcome of ``pending`` when it comes (at most ``timeout``
        seconds from now), without a task waiting for it."""
        timer = asyncio.get_running_loop().call_later(timeout, pending.expire)

        def settled(_future: asyncio.Future[Any]) -> None:
            timer.cancel()
            self._finish(pending)
            then(_outcome(pending))

        pending.future.add_done_callback(settled)

    async def settled(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until every publish sent so far on the channel
        was settled (before a command closes it: what it sent last is then not lost)."""
        futures: list[asyncio.Future[Any]] = [
            pending.future for twins in self._twins.values() for pending in twins
        ]
        if self._counted:
            if self._all_counted is None:
                self._all_counted = self._loop.create_future()
            futures.append(self._all_counted)
        if futures:
            await asyncio.wait(futures, timeout=timeout)

    def _finish(self, pending: Pending) -> None:
        twins = self._twins.get(pending.message_id)
        if twins is not None and pending in twins:
            twins.remove(pending)
            if not twins:
                del self._twins[pending.message_id]
        if self._fast is not None:
            self._fast.finish(pending, twins[-1] if twins else None)

    def _on_return(self, message: DeliveredMessage) -> None:
        message_id = message.header.properties.message_id or ""
        if self._fast is not None:
            self._mark_returned(message_id)
        else:
            # On the public path a publish's future is the task awaiting aiormq's
            # confirmation, done one loop turn after the confirm that came before this
            # return: look once that turn has run.
            asyncio.get_running_loop().call_soon(self._mark_returned, message_id)

    def _mark_returned(self, message_id: str) -> None:
        for pending in self._twins.get(message_id, ()):
            if not pending.future.done():
                pending.returned = True

    def discard(self) -> None:
        """The channel is gone: unsent frames are dropped (their confirms fail with it)."""
        if self._fast is not None:
            self._fast.discard()


def _outcome(pending: Pending) -> Outcome:
    future = pending.future
    if future.cancelled():
        return Outcome.TIMED_OUT
    error = future.exception()
    if error is None:
        if pending.returned or not isinstance(future.result(), Basic.Ack):
            return Outcome.RETURNED  # a return's message, or no confirm mode at all
        return Outcome.CONFIRMED
    return _error_outcome(error)


def _error_outcome(error: BaseException) -> Outcome:
    if isinstance(error, PublishError):  # a return, where on_return_raises was set
        return Outcome.RETURNED
    if isinstance(error, DeliveryError):  # how aiormq reports a basic.nack
        return Outcome.NACKED
    if isinstance(error, TimeoutError):
        return Outcome.TIMED_OUT
    return Outcome.CLOSED  # aiormq rejects pending confirms with the close reason


_said: str | None = None


def confirms(channel: AbstractChannel) -> Confirms:
    """The one :class:`Confirms` of ``channel`` (made, and its path chosen, on first use)."""
    return internals.per_channel(channel, "confirms", lambda: Confirms(channel))


def _say(said: str, warn: int) -> None:
    global _said
    if said != _said:  # once, and again only if it changes
        _said = said
        log.log(logging.WARNING if warn else logging.INFO, said)


class PublishFailed(Exception):
    """The broker did not confirm the message; ``reason`` is a short metric-safe word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


_DETAIL = {
    Outcome.RETURNED: "unroutable: the exchange routed it nowhere",
    Outcome.NACKED: "the broker refused the message",
    Outcome.CLOSED: "the channel closed before the confirm",
}


class Publisher:
    """Publishes envelopes persistent and mandatory to the webhook exchange, on whatever
    channel the link has now, and waits for the confirm."""

    def __init__(self, link: BrokerLink, exchange: str, timeout: float) -> None:
        self.link = link
        self.exchange = exchange
        self.timeout = timeout

    @property
    def connected(self) -> bool:
        return self.link.channel is not None

    def path(self) -> str | None:
        """``"fast"`` or ``"public"`` on the link's channel now (None: no channel)."""
        channel = self.link.channel
        return None if channel is None else confirms(channel).path

    async def publish(self, envelope: Envelope, timeout: float | None = None) -> None:
        """Publish and wait for the confirm, at most ``timeout`` seconds in all; raises
        :class:`PublishFailed` unless confirmed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        channel = self.link.channel
        if channel is None:
            _COUNT["no_broker"].inc()
            raise PublishFailed("no_broker", "not connected to the broker")
        started = time.perf_counter()
        channel_confirms = confirms(channel)
        outcome = await channel_confirms.wait(
            channel_confirms.send_envelope(envelope, self.exchange), deadline
        )
        _COUNT[outcome].inc()
        if outcome is Outcome.CONFIRMED:
            self.link.note_confirm()
            _PUBLISHED_BYTES.inc(len(envelope.body))  # the archive's size estimate reads it
            _PUBLISH_SECONDS.observe(time.perf_counter() - started)
            return
        if outcome is Outcome.NACKED:
            self.link.note_nack()  # a channel RabbitMQ keeps nacking is renewed
        if outcome is Outcome.TIMED_OUT:
            waited = time.perf_counter() - started
            raise PublishFailed(outcome.value, f"no confirm within {waited:.1f}s")
        raise PublishFailed(outcome.value, _DETAIL[outcome])


_COUNT = {
    label: metrics.PUBLISH_RESULTS.labels(label)
    for label in ("no_broker", *(outcome.value for outcome in Outcome))
}
_PUBLISH_SECONDS = metrics.PUBLISH_SECONDS
_PUBLISHED_BYTES = metrics.PUBLISHED_BYTES
