"""The spool on its own and in the receiver: durable appends with group commit, arrival order,
the size bound, ``spool status``, and a spool left over from before drained on start
exactly as the messages would have been published."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from bridge import cli
from bridge.core.contract import Envelope, quarantine_envelope, webhook_envelope
from bridge.core.settings import SettingsError
from bridge.receiving.spool import Spool, SpoolFull, read_status, record_size
from tests.conftest import API_KEY, BridgeFactory, BrokerProbe, fixture_body
from tests.support.rabbit_node import free_port


def envelope(n: int, size: int = 40) -> Envelope:
    body = orjson.dumps({"ID": n, "OrderNumber": f"SO-{n}", "pad": "x" * size})
    return webhook_envelope("despatched", body, orjson.loads(body), f"req-{n}", 1_700_000_000 + n)


async def test_concurrent_appends_are_all_kept_in_arrival_order_and_survive_reopen(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, 10_000_000)
    await spool.open()
    sent = [envelope(n) for n in range(300)]
    await asyncio.gather(*(spool.append(e) for e in sent))
    assert spool.depth == spool.stored == 300
    await spool.close()

    again = Spool(path, 10_000_000)
    await again.open()
    try:
        assert again.depth == 300
        assert again.bytes == sum(record_size(e, orjson.dumps(e.headers)) for e in sent)
        stored = await again.head(1000)
        assert [s.envelope for s in stored] == sent
        await again.remove(stored[:100])
        assert again.depth == 200
        rest = await again.head(1000)
        assert [s.envelope for s in rest] == sent[100:]
        assert again.oldest_received_at == sent[100].received_at
    finally:
        await again.close()


async def test_group_commit_shares_transactions(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, 10_000_000)
    await spool.open()
    try:
        await asyncio.gather(*(spool.append(envelope(n)) for n in range(200)))
        assert spool.stored == 200
        assert spool.commits < 200  # many appends shared one commit (one fsync)
    finally:
        await spool.close()


async def test_a_full_spool_refuses_whole_messages_and_writes_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "spool.sqlite3")
    one = envelope(0)
    size = record_size(one, orjson.dumps(one.headers))
    spool = Spool(path, size * 3 + size // 2)
    await spool.open()
    try:
        results = await asyncio.gather(
            *(spool.append(envelope(n)) for n in range(6)), return_exceptions=True
        )
        kept = [r for r in results if r is None]
        refused = [r for r in results if isinstance(r, SpoolFull)]
        assert len(kept) == 3 and len(refused) == 3
        assert not spool.has_room or spool.bytes <= spool.max_bytes
    finally:
        await spool.close()
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT body FROM spool ORDER BY seq").fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert [orjson.loads(r[0])["ID"] for r in rows] == [0, 1, 2]


async def test_spool_status_reads_a_spool_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, 10_000_000)
    await spool.open()
    try:
        await asyncio.gather(*(spool.append(envelope(n)) for n in range(5)))
        code = await asyncio.to_thread(
            cli.main, ["spool", "status", "--json", "--spool-path", path]
        )
        status = orjson.loads(capsys.readouterr().out)
        assert code == 0
        assert status["depth"] == 5 and status["bytes"] == spool.bytes
        assert status["oldest_age_seconds"] > 0
        code = await asyncio.to_thread(cli.main, ["spool", "status", "--spool-path", path])
        text = capsys.readouterr().out
        assert code == 0 and "5 messages" in text
    finally:
        await spool.close()


def test_spool_status_of_a_missing_file_says_so_instead_of_depth_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = tmp_path / "absent.sqlite3"
    assert cli.main(["spool", "status", "--spool-path", str(absent)]) == 2
    out, err = capsys.readouterr()
    assert "depth" not in out
    assert err.count("\n") == 1 and "no spool file" in err and "BRIDGE_SPOOL_PATH" in err
    with pytest.raises(SettingsError, match="BRIDGE_SPOOL_PATH"):
        read_status(str(absent))
    assert not absent.exists()


def test_spool_status_of_a_file_that_is_not_a_spool(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    assert cli.main(["spool", "status", "--spool-path", str(path)]) == 1
    err = capsys.readouterr().err
    assert "cannot read the spool" in err and "Traceback" not in err


async def test_broker_unreachable_spools_at_once_and_readyz_metrics_show_it(
    tmp_path: Path, make_bridge: BridgeFactory
) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    bridge = await make_bridge(
        wait_connected=False,
        amqp_urls=(closed,),
        publish_timeout=30.0,
        spool_path=str(tmp_path / "spool.sqlite3"),
    )
    body = fixture_body("despatched")
    started = asyncio.get_running_loop().time()
    response = await bridge.client.post(
        "/webhooks/despatched", params={"APIKEY": API_KEY}, data=body
    )
    # The link is known down: no waiting for the (long) publish timeout.
    assert asyncio.get_running_loop().time() - started < 10
    assert response.status == 200
    assert (await response.json())["status"] == "spooled"

    ready = await bridge.client.get("/readyz")
    assert ready.status == 200
    state = await ready.json()
    assert state["broker"] != "connected" and state["spool_depth"] == 1
    text = await (await bridge.client.get("/metrics")).text()
    assert "bridge_spool_depth 1.0" in text
    for name in ("bridge_spool_bytes", "bridge_spool_oldest_age_seconds"):
        assert name in text
    assert "bridge_spool_drained_total" in text


async def test_leftovers_are_drained_on_start_exactly_as_they_would_have_been_published(
    tmp_path: Path, exchange: str, probe: BrokerProbe, make_bridge: BridgeFactory
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, 10_000_000)
    await spool.open()
    sent = [replace(envelope(n), received_at=1_700_000_000.0 + n) for n in range(50)]
    for e in sent:
        await spool.append(e)
    await spool.close()

    bridge = await make_bridge(spool_path=path)
    messages = await probe.get_all(queue, expected=50, timeout=15)
    assert [m.body for m in messages] == [e.body for e in sent]  # arrival order
    for message, original in zip(messages, sent, strict=True):
        props = message.header.properties
        assert props.message_id == original.message_id
        assert props.timestamp is not None
        assert int(props.timestamp.timestamp()) == int(original.received_at)
        headers = dict(props.headers or {})
        headers.pop("x-delivery-count", None)
        assert headers == original.headers
    for _ in range(100):
        if bridge.delivery.spool is not None and bridge.delivery.spool.depth == 0:
            break
        await asyncio.sleep(0.05)
    assert bridge.delivery.spool is not None and bridge.delivery.spool.depth == 0


async def test_a_read_holds_a_bounded_number_of_bytes_but_at_least_one_message(
    tmp_path: Path,
) -> None:
    spool = Spool(str(tmp_path / "spool.sqlite3"), 10_000_000)
    await spool.open()
    try:
        big = [envelope(n, size=10_000) for n in range(10)]
        await asyncio.gather(*(spool.append(e) for e in big))
        assert len(await spool.head(100, max_bytes=25_000)) == 3
        assert len(await spool.head(100, max_bytes=1)) == 1
        assert len(await spool.head(100)) == 10
    finally:
        await spool.close()


def test_serve_with_an_unwritable_spool_path_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEYS", API_KEY)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = cli.main(
        [
            "serve",
            "--port",
            str(free_port()),
            "--spool-path",
            str(blocker / "spool.sqlite3"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "BRIDGE_SPOOL_PATH" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fault", [RuntimeError("a bug"), asyncio.CancelledError()])
async def test_the_drain_outlives_an_unexpected_error_or_a_stray_cancellation(
    fault: BaseException,
    tmp_path: Path,
    exchange: str,
    probe: BrokerProbe,
    make_bridge: BridgeFactory,
) -> None:
    queue = await probe.bind_queue(exchange, "order.#")
    path = str(tmp_path / "spool.sqlite3")
    spool = Spool(path, 10_000_000)
    await spool.open()
    sent = [envelope(n) for n in range(20)]
    for e in sent:
        await spool.append(e)
    await spool.close()

    bridge = await make_bridge(spool_path=path, start_delivery=False)
    publisher = bridge.delivery.publisher
    real_publish = publisher.publish
    faults = [fault]

    async def publish_with_one_fault(envelope: Envelope, timeout: float | None = None) -> None:
        if faults:
            raise faults.pop()
        await real_publish(envelope, timeout)

    publisher.publish = publish_with_one_fault  # type: ignore[method-assign]
    await bridge.delivery.open()
    messages = await probe.get_all(queue, expected=20, timeout=15)
    assert not faults  # the fault did happen
    # Everything arrives; a message published before the fault may come twice.
    assert {m.body for m in messages} == {e.body for e in sent}


async def test_a_spooled_quarantined_body_keeps_its_content_type(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool.sqlite3"), 10_000_000)
    await spool.open()
    try:
        sent = [
            quarantine_envelope("split", b"<x/>", "r-1", 1_790_000_000.0, "text/xml"),
            envelope(1),
        ]
        for e in sent:
            await spool.append(e)
        stored = [s.envelope for s in await spool.head(10)]
        assert stored == sent
        assert [e.content_type for e in stored] == ["text/xml", "application/json"]
    finally:
        await spool.close()
