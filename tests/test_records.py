"""The delivery record's body round-trips and a malformed one is refused by name."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from bridge.core.records import (
    ANSWER_LIMIT,
    ERROR_LIMIT,
    RECORD_SEPARATOR,
    DeliveryRecord,
    Outcome,
    RecordBodies,
    RecordError,
    Source,
    cut,
    deliveries_stream,
    new_record_id,
    now_rfc3339,
    record_lines,
)


def record(**changes: object) -> DeliveryRecord:
    fields: dict[str, object] = {
        "record_id": new_record_id(),
        "message_id": "a" * 32,
        "subscriber": "erp",
        "event": "despatched",
        "order_id": "20285",
        "order_number": "SO-1",
        "attempt": 2,
        "outcome": Outcome.FAILED,
        "status": 500,
        "answer": "boom",
        "error": "HTTP 500",
        "duration_ms": 12.5,
        "at": now_rfc3339(),
        "source": Source.WORKER,
        "operator": None,
    }
    fields.update(changes)
    return DeliveryRecord(**fields)  # type: ignore[arg-type]


def test_round_trip() -> None:
    original = record()
    assert DeliveryRecord.from_body(original.to_body()) == original
    assert deliveries_stream("mintsoft.orders") == "mintsoft.orders.deliveries"


def test_answer_is_cut_to_its_limit_on_a_character_boundary() -> None:
    body = record(answer="é" * 300).to_body()
    answer = orjson.loads(body)["answer"]
    assert len(answer.encode()) <= ANSWER_LIMIT
    assert set(answer) == {"é"}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b"[]", "object"),
        (b'{"v": 99}', "version"),
        (orjson.dumps({**orjson.loads(record().to_body()), "outcome": "lost"}), "lost"),
        (orjson.dumps({**orjson.loads(record().to_body()), "attempt": "2"}), "attempt"),
    ],
    ids=["not-json", "not-an-object", "version", "outcome", "attempt"],  # stable under xdist
)
def test_malformed_bodies_are_refused_by_name(body: bytes, words: str) -> None:
    with pytest.raises(RecordError, match=words):
        DeliveryRecord.from_body(body)


def test_a_throttle_carries_its_pause_and_other_records_leave_it_out() -> None:
    throttled = record(outcome=Outcome.THROTTLED, status=429, retry_after=30.0)
    assert orjson.loads(throttled.to_body())["retry_after"] == 30.0
    assert DeliveryRecord.from_body(throttled.to_body()) == throttled
    plain = orjson.loads(record().to_body())
    assert "retry_after" not in plain  # a record without it reads as before
    assert DeliveryRecord.from_body(orjson.dumps(plain)).retry_after is None


def test_a_message_body_holds_one_record_or_several_joined_by_newlines() -> None:
    one, two, three = record(), record(attempt=3, answer="a\nb"), record(status=None)
    assert b"\n" not in two.to_body()  # JSON as written keeps a newline escaped
    assert record_lines(one.to_body()) == [one.to_body()]  # a message of one: as before
    body = RECORD_SEPARATOR.join(r.to_body() for r in (one, two, three))
    lines = record_lines(body)
    assert [DeliveryRecord.from_body(line) for line in lines] == [one, two, three]
    assert record_lines(body + b"\n") == lines  # a trailing newline is no record
    assert record_lines(b"\n\n") == [b"\n\n"]  # nothing but blank lines: one malformed body


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"outcome": Outcome.DELIVERED, "status": None, "answer": None, "error": None},
        {"order_id": None, "order_number": None, "duration_ms": None},
        {"subscriber": 'e"r\\p\n\u00e9', "message_id": "m\x00\u2028\U0001f600", "event": "é"},
        {"answer": '{"ok": "ü"}' * 40, "error": "x\ty" * 600, "status": 429},
        {"outcome": Outcome.THROTTLED, "retry_after": 2.5, "duration_ms": 0.001},
        {"retry_after": 60.0, "duration_ms": 1e16, "attempt": 12},
        {"source": Source.CONSOLE, "operator": "ana@example.com", "outcome": Outcome.DISCARDED},
    ],
)
def test_a_writers_prebuilt_bodies_are_the_records_bytes(changes: dict[str, object]) -> None:
    # RecordBodies writes the writer's own fields once: its bodies must stay byte for byte
    # the documented object, "v" then the record's fields in order (orjson's own writing),
    # retry_after only for a throttle, answer and error cut.
    one = record(**changes)
    reference = {"v": 1, **{f.name: getattr(one, f.name) for f in dataclasses.fields(one)}}
    reference["answer"] = cut(one.answer, ANSWER_LIMIT)
    reference["error"] = cut(one.error, ERROR_LIMIT)
    if one.retry_after is None:
        del reference["retry_after"]
    bodies = RecordBodies(one.subscriber, one.source, one.operator)
    body = bodies.body(
        one.record_id,
        one.message_id,
        one.event,
        one.order_id,
        one.order_number,
        one.attempt,
        one.outcome,
        one.status,
        one.answer,
        one.error,
        one.duration_ms,
        one.at,
        one.retry_after,
    )
    assert body == orjson.dumps(reference)
    assert one.to_body() == body
