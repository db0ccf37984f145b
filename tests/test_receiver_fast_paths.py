"""The receiver's cheaper paths give what the general ones gave: an access line formatted
without a ``LogRecord`` is the line the record would have given (text and JSON), any other
listener still gets records; a message id from the kept hash of its event is the plain
sha256; and start-up's objects leave the garbage collector's scans."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import logging
from collections.abc import Iterator
from hashlib import sha256

import pytest

from bridge.core import heap
from bridge.core.contract import EVENTS, message_id
from bridge.core.logs import (
    JsonFormatter,
    TextFormatter,
    TurnBatchingStreamHandler,
    direct_handler,
    info,
)
from tests.conftest import API_KEY, BridgeFactory, BrokerProbe, fixture_body

FIELDS = {
    "method": "POST",
    "path": "/webhooks/despatched?APIKEY=***",
    "status": 200,
    "latency_ms": 1.25,
    "remote": "127.0.0.1",
    "event": "despatched",
    "request_id": "abc\n2026-01-01 forged",
    "message_id": "0123456789abcdef0123456789abcdef",
    "order_id": "Zoë 20285\x1b[31m",
}
MESSAGE = "%s %s %d %.1fms request_id=%s message_id=%s order_id=%s"
ARGS = (
    "POST",
    FIELDS["path"],
    200,
    1.25,
    FIELDS["request_id"],
    FIELDS["message_id"],
    FIELDS["order_id"],
)


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("created", [1_764_500_000.0, 1_764_500_000.999, 1_764_500_001.0625])
def test_an_access_line_without_a_record_is_the_records_line(
    formatter: TextFormatter | JsonFormatter, created: float
) -> None:
    record = logging.LogRecord(
        "aiohttp.access", logging.INFO, "(access log)", 0, MESSAGE, ARGS, None
    )
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    record.__dict__.update(FIELDS)
    expected = formatter.format(record)
    got = formatter.access_line(created, "aiohttp.access", MESSAGE, ARGS, FIELDS)
    assert got == expected
    assert "\n" not in got and "\x1b" not in got


@contextlib.contextmanager
def configured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The root logger as configure() leaves it (pytest's own capture handlers, which it
    adds around each test, are set aside meanwhile)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    handler = TurnBatchingStreamHandler(stream)
    handler.setFormatter(TextFormatter())
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield logging.getLogger("aiohttp.access"), stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_the_direct_path_is_taken_only_when_the_configured_handler_alone_listens() -> None:
    with configured() as (access, _):
        _only_when_alone(access)


def _only_when_alone(access: logging.Logger) -> None:
    root = logging.getLogger()
    assert direct_handler(access) is root.handlers[0]
    other = logging.StreamHandler(io.StringIO())
    root.addHandler(other)  # e.g. a test's log capture: it must see the records
    assert direct_handler(access) is None
    root.removeHandler(other)
    access.addFilter(logging.Filter("nothing"))
    try:
        assert direct_handler(access) is None
    finally:
        access.filters.clear()
    root.handlers[0].setFormatter(logging.Formatter())  # not one of ours: no access_line
    assert direct_handler(access) is None


async def test_a_direct_line_is_written_with_the_turns_other_lines() -> None:
    with configured() as (access, stream):
        handler = direct_handler(access)
        assert handler is not None
        logging.getLogger("bridge.test").info("before")
        handler.write_line("direct")
        assert stream.getvalue() == ""  # nothing written before the loop turn ends
        await asyncio.sleep(0)
        assert stream.getvalue().endswith(" INFO bridge.test: before\ndirect\n")


def test_settle_freezes_what_start_up_built() -> None:
    kept = [[index] for index in range(1000)]  # objects alive across the settle
    threshold = gc.get_threshold()
    try:
        frozen = heap.settle()
        assert frozen == gc.get_freeze_count() > len(kept)
        scanned = {id(o) for o in gc.get_objects()}
        assert not any(id(o) in scanned for o in kept)  # no collection walks them again
        assert gc.get_threshold() == (heap.GEN0_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.parametrize("size", [100, 70_000], ids=["small, at once", "large, chunked"])
def test_bodies_that_are_not_utf8_are_refused_however_large(size: int) -> None:
    from bridge.core.body import NotJson, read_document

    padding = "é" * size
    assert read_document(f'{{"ID": 1, "a": "{padding}"}}'.encode()) == {"ID": 1}
    bad = f'{{"ID": 1, "a": "{padding}'.encode() + b'\xff"}'
    with pytest.raises(NotJson, match="not valid UTF-8"):
        read_document(bad)


@pytest.mark.parametrize("outcome", ["accepted", "spooled"])
def test_the_prebuilt_200_is_the_contracts_json(outcome: str) -> None:
    import orjson

    from bridge.receiving.receiver import _kept

    answer = _kept("despatched", outcome, "0123456789abcdef0123456789abcdef", "req-1")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert answer.headers["X-Request-Id"] == "req-1"
    assert answer.body == orjson.dumps(
        {"status": outcome, "message_id": "0123456789abcdef0123456789abcdef"}
    )


async def test_a_body_over_the_limit_that_arrived_whole_is_refused(
    make_bridge: BridgeFactory, probe: BrokerProbe, exchange: str
) -> None:
    """Chunked (no declared length) and already complete when the route runs: read in one
    call, still held to the limit."""
    queue = await probe.bind_queue(exchange, "#")
    bridge = await make_bridge(max_body_bytes=1000)
    host, port = bridge.client.host, bridge.client.port
    body = b'{"x":"' + b"a" * 2000 + b'"}'
    request = (
        f"POST /webhooks/despatched?APIKEY={API_KEY} HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)  # headers and the whole body in one write
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.startswith(b"HTTP/1.1 413"), status
    assert await probe.get_all(queue, expected=1, timeout=0.5) == []


WORKER_FIELDS = {
    "subscriber": "erp",
    "event": "despatched",
    "message_id": "0123456789abcdef0123456789abcdef",
    "order_id": "Zoë 20285\x1b[31m",
    "request_id": "abc\n2026-01-01 forged",
    "attempt": 1,
}


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("created", [1_764_500_000.0, 1_764_500_000.999])
def test_a_worker_line_without_a_record_is_the_records_line(
    formatter: TextFormatter | JsonFormatter, created: float
) -> None:
    """The worker's line per handled message (bridge.core.logs.info) carries the message
    fields exactly as the record's line does, in either format."""
    name = "bridge.worker.subscription"
    record = logging.LogRecord(
        name, logging.INFO, "handling.py", 0, "%s webhook handled", ("despatched",), None
    )
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    record.__dict__.update(WORKER_FIELDS)
    expected = formatter.format(record)
    got = formatter.access_line(created, name, "%s webhook handled", ("despatched",), WORKER_FIELDS)
    assert got == expected
    assert "\n" not in got and "\x1b" not in got


async def test_the_worker_line_goes_the_direct_way_only_when_alone() -> None:
    with configured() as (_access, stream):
        worker = logging.getLogger("bridge.worker.subscription")
        info(worker, "%s webhook handled", ("despatched",), WORKER_FIELDS)
        await asyncio.sleep(0)
        [line] = stream.getvalue().splitlines()
        assert line.endswith(
            "INFO bridge.worker.subscription: despatched webhook handled subscriber=erp "
            "event=despatched message_id=0123456789abcdef0123456789abcdef "
            "order_id=Zoë 20285\\x1b[31m request_id=abc\\x0a2026-01-01 forged attempt=1"
        ), line
        captured: list[logging.LogRecord] = []
        other = logging.Handler()
        other.emit = captured.append  # type: ignore[method-assign]
        logging.getLogger().addHandler(other)
        try:
            info(worker, "%s webhook handled", ("despatched",), WORKER_FIELDS)
        finally:
            logging.getLogger().removeHandler(other)
        [record] = captured  # a capture sees a record, with the fields and the caller
        assert record.subscriber == "erp" and record.funcName == (  # type: ignore[attr-defined]
            "test_the_worker_line_goes_the_direct_way_only_when_alone"
        )


@pytest.mark.parametrize("event", [*EVENTS, "x" * 300, "zoë"])
def test_the_message_id_from_a_kept_event_hash_is_the_plain_sha256(event: str) -> None:
    bodies = [b"", b"{}", fixture_body("despatched"), "Zoë 20285 中文".encode()]
    for body in bodies * 2:  # the second time from the kept hash of "<event>\n"
        plain = sha256(event.encode() + b"\n" + body).hexdigest()[:32]
        assert message_id(event, body) == plain
