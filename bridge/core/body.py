"""A webhook body's verdict (JSON or not) and its header fields, without building the document.

The receiver parses a body only to decide whether it is JSON and to read the few fields of
:func:`~bridge.core.contract.order_headers`. Building the whole document costs ~90 bytes of
Python objects per ``{}``: a 10 MiB ``[{},{},…]`` would take 300 MB. Here msgspec validates
the whole body while *skipping* every value (nothing is built), keeps the few fields it
needs as raw slices, and only those slices are decoded (by orjson, as before), so memory is
the body plus the header values, whatever the body holds.

Guarantees: for every body orjson accepts, :func:`read_headers` gives exactly
``order_headers(orjson.loads(body))`` (a property test holds it to that). It also checks the
body is UTF-8, as orjson does. Two edges differ from orjson, both documented in the README:
nesting deeper than about 900 levels is refused (orjson's limit is 1024) and a number too
large for a double (``1e999``), which is valid JSON grammar, is accepted.

Fails: raises :class:`NotJson` with a short reason (never the body's bytes).
"""

from __future__ import annotations

import codecs
import re
from typing import Any

import msgspec
import orjson

from bridge.core.contract import scalar_headers

_CHUNK = 1 << 16
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_ABSENT = msgspec.Raw()


class NotJson(Exception):
    """The body is not JSON (malformed, not UTF-8, or nested too deep)."""


class _Fields(msgspec.Struct):
    """The only fields ever read from a JSON object; every other member is skipped."""

    ID: msgspec.Raw = _ABSENT
    OrderId: msgspec.Raw = _ABSENT
    OrderNumber: msgspec.Raw = _ABSENT
    ClientId: msgspec.Raw = _ABSENT
    SplitOrderId: msgspec.Raw = _ABSENT
    Order: msgspec.Raw = _ABSENT
    OrderShipment: msgspec.Raw = _ABSENT


class _First(msgspec.Struct, array_like=True):
    """A JSON array's first element; the rest are skipped."""

    first: msgspec.Raw = _ABSENT


_OBJECT = msgspec.json.Decoder(_Fields)
_ARRAY = msgspec.json.Decoder(_First)
_ANY = msgspec.json.Decoder(msgspec.Raw)


def read_headers(body: bytes) -> dict[str, str]:
    """The ``x-order-id``-style headers of a JSON ``body``; raises :class:`NotJson`."""
    start = _WHITESPACE.match(body)
    opening = body[start.end() : start.end() + 1] if start else b""
    try:
        if opening == b"{":
            headers = _object_headers(_OBJECT.decode(body))
        elif opening == b"[":
            headers = _array_headers(_ARRAY.decode(body))
        else:
            _ANY.decode(body)
            headers = {}
    except RecursionError:
        raise NotJson("nested too deep") from None
    except msgspec.DecodeError as exc:
        raise NotJson(str(exc)) from None
    if not body.isascii():
        _check_utf8(body)
    return headers


def _check_utf8(body: bytes) -> None:
    # msgspec does not check UTF-8 in values it skips; orjson refuses such a body, and so
    # does the contract. Chunked, so a 10 MiB body never becomes a 40 MiB str.
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(body)
    try:
        for offset in range(0, len(view), _CHUNK):
            decoder.decode(view[offset : offset + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise NotJson(f"not valid UTF-8 ({exc.reason})") from None


def _opening(raw: msgspec.Raw) -> bytes:
    return memoryview(raw)[:1].tobytes()


def _value(raw: msgspec.Raw) -> Any:
    """A scalar's value; ``None`` for objects and arrays (never a header) and absent fields."""
    if not raw or _opening(raw) in (b"{", b"["):
        return None
    try:
        return orjson.loads(memoryview(raw))
    except orjson.JSONDecodeError as exc:  # e.g. 1e999: orjson refuses it, so do we here
        raise NotJson(exc.msg) from None


def _fields(raw: msgspec.Raw) -> _Fields | None:
    return _OBJECT.decode(raw) if _opening(raw) == b"{" else None


def _object_headers(fields: _Fields) -> dict[str, str]:
    return scalar_headers(
        order_id=_value(fields.ID if fields.ID else fields.OrderId),
        order_number=_value(fields.OrderNumber),
        client_id=_value(fields.ClientId),
        split_order_id=_value(fields.SplitOrderId),
    )


def _array_headers(array: _First) -> dict[str, str]:
    first = _fields(array.first)
    if first is None:
        return {}
    if first.SplitOrderId or first.Order:
        order = _fields(first.Order) or _Fields()
        return scalar_headers(
            order_id=_value(first.OrderId if first.OrderId else order.ID),
            order_number=_value(order.OrderNumber),
            client_id=_value(order.ClientId),
            split_order_id=_value(first.SplitOrderId),
        )
    shipment = _fields(first.OrderShipment)
    return scalar_headers(order_id=_value(shipment.OrderId) if shipment else None)
