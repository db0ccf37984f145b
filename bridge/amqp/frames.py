"""The AMQP frames of one webhook publish, built by hand.

pamqp builds a ``Basic.Publish``, a ``ContentHeader`` with ``Basic.Properties`` and a body
frame through many small Python calls per message; most of it is the same for every
webhook. Here the method frame is built once per routing key, and the content header from
the handful of per-message fields: the bytes are exactly those pamqp would produce
(``tests/test_frames.py`` checks them against pamqp's own marshalling).
"""

from __future__ import annotations

import struct
from typing import Final

from pamqp import frame as pamqp_frame
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from bridge.core.contract import APP_ID, CONTENT_TYPE_JSON, Envelope

_FRAME_END: Final = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_FRAME_HEAD = struct.Struct(">BHI")
_HEADER_HEAD = struct.Struct(">HHQH")
_LONG = struct.Struct(">I")
_TIMESTAMP = struct.Struct(">Q")

# Property flags of the contract's properties, in AMQP 0-9-1 order (most significant first).
_FLAGS: Final = (
    1 << 15  # content_type
    | 1 << 13  # headers
    | 1 << 12  # delivery_mode
    | 1 << 7  # message_id
    | 1 << 6  # timestamp
    | 1 << 5  # type
    | 1 << 3  # app_id
)
_CONTENT_TYPE: Final = b"\x10application/json"
assert _CONTENT_TYPE[1:].decode() == CONTENT_TYPE_JSON
_DELIVERY_MODE: Final = b"\x02"
_APP_ID: Final = bytes([len(APP_ID)]) + APP_ID.encode()
_BASIC_CLASS: Final = 60
CONTENT_FRAME_OVERHEAD: Final = 8
"""Bytes of a frame around its payload: type, channel, size, frame end."""


def _short(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"short string over 255 bytes: {text[:40]!r}...")
    return bytes((len(raw),)) + raw


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEAD.pack(kind, channel, len(payload)) + payload + _FRAME_END


_KEYS: dict[str, bytes] = {}
"""The encoded name and value type of each header name seen (a handful: the contract's)."""
_MAX_KEYS: Final = 256


def _key(name: str) -> bytes:
    raw = name.encode()
    return b"%c%sS" % (len(raw), raw)


_EMPTY_TABLE: Final = b"\x00\x00\x00\x00"


def headers_table(headers: dict[str, str]) -> bytes:
    """An AMQP field table of string values, keys sorted as pamqp sorts them."""
    if not headers:
        return _EMPTY_TABLE
    parts: list[bytes] = []
    add = parts.append
    keys = _KEYS
    pack = _LONG.pack
    for name in sorted(headers):
        key = keys.get(name)
        if key is None:
            key = _key(name)
            if len(keys) < _MAX_KEYS:
                keys[name] = key
        value = headers[name].encode()
        add(key)
        add(pack(len(value)))
        add(value)
    table = b"".join(parts)
    return pack(len(table)) + table


class PublishFrames:
    """Encodes envelopes as the frames of a persistent, mandatory ``basic.publish`` on one
    channel to one exchange; ``max_body_frame`` is the channel's largest body frame payload."""

    def __init__(self, channel: int, exchange: str, max_body_frame: int) -> None:
        self.channel = channel
        self.exchange = exchange
        self.max_body_frame = max_body_frame
        self._methods: dict[str, bytes] = {}
        self._types: dict[str, bytes] = {}

    def _method(self, routing_key: str) -> bytes:
        method = self._methods.get(routing_key)
        if method is None:
            # The constant part: pamqp's own marshalling, done once per routing key.
            publish = Basic.Publish(exchange=self.exchange, routing_key=routing_key, mandatory=True)
            method = pamqp_frame.marshal(publish, self.channel)
            self._methods[routing_key] = method
        return method

    def encode_message(self, routing_key: str, body: bytes, properties: Basic.Properties) -> bytes:
        """The frames of any message (a copy on the ladder, a record, an end marker): the
        content header marshalled by pamqp, the rest as for an envelope."""
        header = pamqp_frame.marshal(ContentHeader(0, len(body), properties), self.channel)
        return b"".join((self._method(routing_key), header, *self._bodies(body)))

    def _bodies(self, body: bytes) -> list[bytes]:
        size = self.max_body_frame
        if len(body) < size:
            return [_frame(_BODY, self.channel, body)] if body else []
        view = memoryview(body)
        return [
            _frame(_BODY, self.channel, bytes(view[start : start + size]))
            for start in range(0, len(body), size)
        ]

    def encode(self, envelope: Envelope) -> bytes:
        """Method, content header and body frames of ``envelope``, as one buffer."""
        return self.encode_fields(
            envelope.routing_key,
            envelope.event,
            envelope.body,
            envelope.message_id,
            envelope.received_at,
            envelope.headers,
            envelope.content_type,
        )

    def encode_fields(
        self,
        routing_key: str,
        event: str,
        body: bytes,
        message_id: str,
        received_at: float,
        headers: dict[str, str],
        content_type: str = CONTENT_TYPE_JSON,
    ) -> bytes:
        """:meth:`encode` of the envelope with these fields, without making one (a
        delivery record per attempt, on the worker's hot path)."""
        kind = self._types.get(event)
        if kind is None:
            kind = self._types[event] = _short(event)
        content = (
            _CONTENT_TYPE
            if content_type == CONTENT_TYPE_JSON
            else _short(content_type)  # a quarantined body keeps the sender's
        )
        properties = (
            content,
            headers_table(headers),
            _DELIVERY_MODE,
            _short(message_id),
            _TIMESTAMP.pack(int(received_at)),
            kind,
            _APP_ID,
        )
        header = _HEADER_HEAD.pack(_BASIC_CLASS, 0, len(body), _FLAGS)
        channel = self.channel
        size = len(header) + sum(map(len, properties))
        # Every part joined once: the header and body frames are not built apart first.
        parts = [self._method(routing_key), _FRAME_HEAD.pack(_HEADER, channel, size)]
        parts += (header, *properties, _FRAME_END)
        size = self.max_body_frame
        if len(body) < size:
            if body:  # the common case: the body copied once, into the one buffer
                parts += (_FRAME_HEAD.pack(_BODY, channel, len(body)), body, _FRAME_END)
        else:
            parts.extend(self._bodies(body))
        return b"".join(parts)
