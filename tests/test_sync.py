"""``sync`` end to end: a fake Mintsoft whose orders change over time and whose webhooks
(20% dropped) reach a running receiver; sync enrols every order and recovers what was lost."""

from __future__ import annotations

import asyncio
import os
import stat
from collections import Counter
from pathlib import Path

import pytest

from bridge.core.contract import ORDER_EVENTS
from bridge.mintsoft.connect_actions import connect_action
from bridge.mintsoft.sync.runner import Sync
from bridge.mintsoft.sync.status import sync_status
from tests.conftest import BridgeFactory, BrokerProbe
from tests.support.mintsoft_world import MintsoftWorld
from tests.support.sync_harness import ArchiveStandIn, read_queue, subscriber, sync_settings

FOREIGN = {
    "Type": "API",
    "SourceOrderId": "X-1",
    "Complete": False,
    "ExtraCode1": "https://erp.other.example/mintsoft/despatched",
    "ExtraCode2": "https://erp.other.example/mintsoft/cancelled",
}


@pytest.mark.slow
async def test_500_orders_20_percent_dropped_all_reach_a_subscriber(
    make_bridge: BridgeFactory, probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    world = MintsoftWorld(drop=0.2, seed=14)
    await world.start()
    try:
        bridge = await make_bridge()
        settings = sync_settings(exchange, tmp_path, world.url, bridge.url)
        archive = ArchiveStandIn(probe, exchange)
        await archive.open()
        erp = await subscriber(probe, exchange, ("despatched", "cancelled", "delivered", "split"))

        # Before sync's first pass: 200 orders; 10 already hold the bridge's URLs (someone
        # ran connect-actions), 10 feed another system.
        first = [world.create(client_id=12 + i % 3) for i in range(200)]
        ours_before = first[:10]
        for order in ours_before:
            order.actions = [connect_action(settings, ORDER_EVENTS, None)]
        foreign = first[10:20]
        for order in foreign:
            order.actions = [dict(FOREIGN)]
        async with Sync(settings, seen=archive.seen, backoff=0.05) as sync:
            report = await sync.run_pass()
        assert report.ok, report.errors
        assert report.enrol.enrolled == 180
        assert report.enrol.already == 10
        assert report.enrol.conflicts == 10

        # While sync is down: 300 more orders, 40 of them despatched or cancelled before
        # anyone could enrol them (no webhook can have been sent for those).
        second = [world.create(client_id=12, warehouse_id=2) for _ in range(300)]
        for order in second[:30]:
            await world.despatch(order, status=5)  # INVOICED is despatched too
        for order in second[30:40]:
            await world.cancel(order)
        async with Sync(settings, seen=archive.seen, backoff=0.05) as sync:
            report = await sync.run_pass()
            assert report.ok, report.errors
            assert report.enrol.enrolled == 300

            # Orders move on: despatched, cancelled, delivered; 20% of webhooks dropped.
            live = first[:10] + first[20:] + second[40:]
            children = []
            for n, order in enumerate(live):
                if n % 10 == 9:
                    children.append(await world.split(order))
                if n % 5 < 3:
                    await world.despatch(order)
                    if n % 2 == 0:
                        await world.deliver(order)
                elif n % 5 == 3:
                    await world.cancel(order)
            for order in foreign[:5]:
                await world.despatch(order)  # feeds the other system, never the bridge
            dropped = [s for s in world.sent if s.dropped]
            assert len(dropped) > 50
            assert "split" in {s.event for s in dropped}
            await asyncio.sleep(settings.sync_grace + 0.2)
            report = await sync.run_pass()
            assert report.ok, report.errors
            again = await sync.run_pass()
            assert again.ok, again.errors
            assert again.reconcile.total_recovered == 0

        rows = await read_queue(probe, erp)
        reached = {(event, order_id) for event, order_id, _ in rows}
        expected = set()
        for order in world.orders.values():
            if order in foreign:
                continue
            if order.status in (4, 5, 6):
                expected.add(("despatched", order.id))
            elif order.status == 3:
                expected.add(("cancelled", order.id))
        expected |= {("delivered", e["OrderShipment"]["OrderId"]) for e in world.tracking}
        expected |= {("split", order_id) for order_id in world.splits}
        missing = expected - reached
        assert not missing, f"{len(missing)} events never reached the subscriber"
        assert not {(e, o) for e, o in reached if world.orders[o] in foreign}
        sources = Counter(source for _, _, source in rows)
        # Every dropped webhook, plus the 40 orders that changed before enrolment.
        assert sources["reconcile"] == len(dropped) + 40
        status = sync_status(settings)
        assert sum(status.recovered.values()) == len(dropped) + 40
        # A second pass published nothing (nothing new in the subscriber's queue).
        assert not await read_queue(probe, erp)

        # Each order enrolled exactly once; never the foreign ones or those already ours.
        assert all(world.puts[o.id] == 1 for o in first[20:] + second)
        assert not any(world.puts[o.id] for o in foreign + ours_before)
        # The split-off orders were new orders too: enrolled on the pass after their split.
        assert all(world.puts[o.id] == 1 for o in children)
        assert status.orders == {"enrolled": 480 + len(children), "already": 10, "conflict": 10}
        assert [order_id for order_id, _ in status.conflicts] == [o.id for o in foreign]
        assert "erp.other.example" in status.conflicts[0][1]
        assert set(status.recovered) == {"despatched", "cancelled", "delivered", "split"}
        state_file = Path(settings.sync_state_path)
        assert stat.S_IMODE(os.stat(state_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(state_file.parent).st_mode) == 0o700

        calls = sum(world.calls.values())
        enrol_calls = (
            world.calls["GET Order/{id}/ConnectActions"]
            + world.calls["PUT Order/{id}/ConnectActions"]
        )
        recovered_total = sum(status.recovered.values())
        n = len(world.orders)  # the 500 and the orders split off them
        reads = world.calls["GET Order/{id}"] + world.calls["GET Order/{id}/Splits"]
        print(
            f"\nMintsoft calls: {calls} for {n} orders = {calls / n:.2f} per order; enrol "
            f"{enrol_calls / n:.2f} per order; reconcile {world.calls['GET Order/{id}']} order "
            f"and {world.calls['GET Order/{id}/Splits']} split reads for {recovered_total} "
            "recovered webhooks; listing "
            f"{calls - enrol_calls - reads} calls; by route: "
            f"{dict(world.calls)}"
        )
        assert enrol_calls <= 2 * n  # one read, at most one PUT
        assert reads <= recovered_total  # delivered bodies come with the tracking list
        assert calls / n < 3.0
    finally:
        await world.close()


async def test_reconcile_all_covers_orders_registered_elsewhere_enrolled_does_not(
    probe: BrokerProbe, exchange: str, tmp_path: Path
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        archive = ArchiveStandIn(probe, exchange)
        await archive.open()
        erp = await subscriber(probe, exchange, ("despatched",))
        elsewhere = world.create()
        elsewhere.actions = [dict(FOREIGN)]
        for mode, state_dir in (("enrolled", "a"), ("all", "b")):
            settings = sync_settings(
                exchange, tmp_path / state_dir, world.url, "http://127.0.0.1:9", sync_reconcile=mode
            )
            async with Sync(settings, seen=archive.seen, backoff=0.05) as sync:
                first = await sync.run_pass()
                assert first.enrol.conflicts == 1
                if mode == "enrolled":
                    await world.despatch(elsewhere)  # its webhook goes to the other system
                await asyncio.sleep(settings.sync_grace + 0.1)
                report = await sync.run_pass()
            assert report.ok, report.errors
            got = await read_queue(probe, erp)
            recovered = first.reconcile.total_recovered + report.reconcile.total_recovered
            if mode == "enrolled":
                assert recovered == 0 and not got
            else:
                assert recovered == 1
                assert got == [("despatched", elsewhere.id, "reconcile")]
        assert world.puts[elsewhere.id] == 0
    finally:
        await world.close()
