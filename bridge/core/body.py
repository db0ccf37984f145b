"""A webhook body's verdict (JSON or not) and a stand-in for its document that holds only
what :func:`~bridge.core.contract.order_headers` reads, without building the document.

The receiver parses a body only to decide whether it is JSON and to derive a few headers.
Building the whole document costs ~90 bytes of Python objects per ``{}``: a 10 MiB
``[{},{},…]`` would take 300 MB. Here msgspec validates the whole body while *skipping*
every value (nothing is built) and keeps the few members ``order_headers`` reads as raw
slices; only those are decoded (scalars by orjson, as before), into a stand-in with the
same shape: the object with just those members, or a list of just its first element.
Memory is the body plus those values, whatever the body holds, and the headers come from
the contract's own ``order_headers``.

Guarantees: ``order_headers(read_document(body)) == order_headers(orjson.loads(body))`` for
every body orjson accepts (a property test holds it to that; :class:`_Fields` must name
every member ``order_headers`` reads). ``asn_headers`` reads top-level members that are a
subset of those (``ID``, ``ClientId``, ``WarehouseId``), so the same holds for it. It also
checks the body is UTF-8, as orjson does.
Two edges differ from orjson, both in docs/security.md: nesting deeper than about 900 levels is
refused (orjson's limit is 1024), and a number too large for a double (``1e999``) outside
those members, valid JSON grammar, is accepted.

Fails: raises :class:`NotJson` with a short reason (never the body's bytes).
"""

from __future__ import annotations

import codecs
import re
from typing import Any, Final

import msgspec
import orjson

from bridge.core.contract import order_headers

_CHUNK = 1 << 16
_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_ABSENT = msgspec.Raw()


class NotJson(Exception):
    """The body is not JSON (malformed, not UTF-8, or nested too deep)."""


class _Fields(msgspec.Struct):
    """The members ``order_headers`` reads from an object (at the top, in a list's first
    element, in its ``Order`` or ``OrderShipment``); every other member is skipped."""

    ID: msgspec.Raw = _ABSENT
    OrderId: msgspec.Raw = _ABSENT
    OrderNumber: msgspec.Raw = _ABSENT
    ClientId: msgspec.Raw = _ABSENT
    WarehouseId: msgspec.Raw = _ABSENT
    SplitOrderId: msgspec.Raw = _ABSENT
    Order: msgspec.Raw = _ABSENT
    OrderShipment: msgspec.Raw = _ABSENT


class _First(msgspec.Struct, array_like=True):
    """A JSON array's first element; the rest are skipped."""

    first: msgspec.Raw = _ABSENT


_OBJECT = msgspec.json.Decoder(_Fields)
_ARRAY = msgspec.json.Decoder(_First)
_ANY = msgspec.json.Decoder(msgspec.Raw)


def read_document(body: bytes) -> Any:
    """A stand-in for the JSON ``body``'s document, enough for ``order_headers``; raises
    :class:`NotJson`."""
    start = _WHITESPACE.match(body)
    opening = body[start.end() : start.end() + 1] if start else b""
    try:
        if opening == b"{":
            document: Any = _object(_OBJECT.decode(body))
        elif opening == b"[":
            first = _ARRAY.decode(body).first
            if not first:
                document = []
            elif _opening(first) == _OBJECT_OPENING:
                document = [_object(_OBJECT.decode(first), _NESTED)]
            else:
                document = [_stand_in(first)]
        else:
            _ANY.decode(body)
            document = None  # a bare scalar: no headers
    except RecursionError:
        raise NotJson("nested too deep") from None
    except msgspec.DecodeError as exc:
        raise NotJson(str(exc)) from None
    if not body.isascii():
        _check_utf8(body)
    return document


def read_headers(body: bytes) -> dict[str, str]:
    """``order_headers`` of the JSON ``body``; raises :class:`NotJson`."""
    return order_headers(read_document(body))


def _check_utf8(body: bytes) -> None:
    # msgspec does not check UTF-8 in values it skips; orjson refuses such a body, and so
    # does the contract. Chunked, so a 10 MiB body never becomes a 40 MiB str.
    try:
        if len(body) <= _CHUNK:
            body.decode()  # a small body at once: a third of the incremental decoder's cost
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        view = memoryview(body)
        for offset in range(0, len(view), _CHUNK):
            decoder.decode(view[offset : offset + _CHUNK])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise NotJson(f"not valid UTF-8 ({exc.reason})") from None


_OBJECT_OPENING: Final = ord("{")
_ARRAY_OPENING: Final = ord("[")


def _opening(raw: msgspec.Raw) -> int:
    """The first byte of a present member's value (a :class:`msgspec.Raw` is exactly the
    value's bytes, never empty, never led by whitespace)."""
    return memoryview(raw)[0]


_NOT_SCALAR: Final[tuple[()]] = ()
"""Stands in for an array, or an object that is not one ``order_headers`` looks into: it is
neither a dict nor a scalar, so it gives no header, as the real value would not."""


def _stand_in(raw: msgspec.Raw, inside: bool = False) -> Any:
    """A member's stand-in: a scalar's value; an object's :func:`_object` when ``inside``
    (``order_headers`` looks into it), else :data:`_NOT_SCALAR`, as for an array."""
    view = memoryview(raw)
    opening = view[0]
    if opening == _OBJECT_OPENING:
        return _object(_OBJECT.decode(raw)) if inside else _NOT_SCALAR
    if opening == _ARRAY_OPENING:
        return _NOT_SCALAR
    try:
        return orjson.loads(view)
    except orjson.JSONDecodeError as exc:  # e.g. 1e999: orjson refuses it, so do we here
        raise NotJson(exc.msg) from None


_NAMES: Final = _Fields.__struct_fields__
_astuple = msgspec.structs.astuple


def _object(fields: _Fields, nested: frozenset[str] = frozenset()) -> dict[str, Any]:
    """An object's stand-in: the members ``order_headers`` reads, those present; it looks
    into the objects of the ``nested`` members only (one level: never a rescan per level)."""
    # Per webhook: the members in one C call rather than a getattr each (with the
    # first-byte test below, about a tenth of the body check of a small order).
    found: dict[str, Any] = {}
    for name, raw in zip(_NAMES, _astuple(fields), strict=True):
        if raw:
            found[name] = _stand_in(raw, name in nested)
    return found


_NESTED: Final = frozenset({"Order", "OrderShipment"})
"""The members of a list's first element whose objects ``order_headers`` looks into."""
