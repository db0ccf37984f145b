"""``read_headers`` (the receiver's body check, which builds no document) agrees with
``order_headers(orjson.loads(body))`` on every body orjson accepts, refuses what orjson
refuses, and holds no more memory than the body whatever it contains. No broker."""

from __future__ import annotations

import gc
import json
import tracemalloc
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.body import NotJson, read_document, read_headers
from bridge.core.contract import ASN_BOOKED_IN, EVENTS, asn_headers, order_headers
from tests.conftest import fixture_body

_FIELDS = ["ID", "OrderId", "OrderNumber", "ClientId", "SplitOrderId", "Order", "OrderShipment"]
_FIELDS += ["WarehouseId", "SplitOrder"]  # not read today: a field read later shows up here
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=250)
)
_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=12,
)
_orders = st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=6), _values, max_size=8)
_documents = _values | _orders | st.lists(_orders | _values, max_size=3)


@settings(max_examples=400, deadline=None, database=None)
@given(document=_documents, indent=st.booleans())
def test_headers_match_order_headers_of_the_parsed_document(document: Any, indent: bool) -> None:
    body = json.dumps(document, indent=2 if indent else None, ensure_ascii=False).encode()
    assert read_headers(body) == order_headers(orjson.loads(body))


@pytest.mark.parametrize("event", EVENTS)
def test_headers_of_the_fixtures(event: str) -> None:
    body = fixture_body(event)
    assert read_headers(body) == order_headers(orjson.loads(body))
    assert "x-order-id" in read_headers(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{",
        b'{"ID": 1,}',
        b"[1, 2",
        b"{'ID': 1}",
        b'{"a": NaN}',
        b'{"ID": 1e999}',
        b'{"a": "\xff"}',
        b'{"a": "\xed\xa0\x80"}',  # a UTF-8-encoded surrogate
        b'{"a": "\\ud800"}',
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"{} {}",
        b"[" * 5000 + b"]" * 5000,
        b"[" * 200_000 + b"]" * 200_000,
    ],
)
def test_what_orjson_refuses_is_not_json(body: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    with pytest.raises(NotJson):
        read_headers(body)


def test_duplicate_keys_keep_the_last_like_orjson() -> None:
    body = b'{"ID": 1, "ID": 2, "OrderNumber": "a", "OrderNumber": null}'
    assert read_headers(body) == order_headers(orjson.loads(body)) == {"x-order-id": "2"}


def test_ten_mib_of_empty_objects_builds_nothing() -> None:
    body = b"[" + b"{}," * 3_495_000 + b"{}]"
    gc.collect()
    tracemalloc.start()
    try:
        assert read_headers(body) == {}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, peak  # orjson.loads would take ~300 MB


def test_asn_headers_come_from_the_stand_in_as_from_the_document() -> None:
    body = fixture_body(ASN_BOOKED_IN)
    expected = {"x-asn-id": "3107", "x-client-id": "12", "x-warehouse-id": "3"}
    assert asn_headers(read_document(body)) == asn_headers(orjson.loads(body)) == expected
