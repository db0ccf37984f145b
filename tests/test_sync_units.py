"""sync's pieces without a broker: Mintsoft's clock across the October change, the
settings, what counts as the bridge's connect action, recovery ids, backfill and the
command line."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.archive.window import parse_time
from bridge.cli import main
from bridge.core.settings import SettingsError, load_settings
from bridge.mintsoft.sandbox.world import local_now
from bridge.mintsoft.sync.clock import OVERLAP, MintsoftClock
from bridge.mintsoft.sync.enrol import classify
from bridge.mintsoft.sync.runner import Sync
from bridge.mintsoft.sync.scan import recovery_id
from tests.support.mintsoft_world import MintsoftWorld
from tests.support.sync_harness import MS_KEY, sync_settings

LONDON = MintsoftClock("Europe/London")


def test_mintsoft_times_parse_with_any_fraction_and_no_offset() -> None:
    assert LONDON.parse("2012-06-19T20:26:50.663") == datetime(2012, 6, 19, 20, 26, 50, 663000)
    assert LONDON.parse("2023-05-05T15:24:49.1270561") == datetime(2023, 5, 5, 15, 24, 49, 127056)
    assert LONDON.parse("2012-09-04T00:00:00") == datetime(2012, 9, 4)
    # Summer: London is UTC+1.
    assert LONDON.to_utc(datetime(2026, 7, 1, 12, 0)) == datetime(2026, 7, 1, 11, 0, tzinfo=UTC)
    assert LONDON.format(datetime(2026, 7, 1, 12, 0)) == "2026-07-01T12:00:00.000"


def test_the_query_window_covers_the_repeated_hour_after_the_clocks_go_back() -> None:
    # 2026-10-25 01:59:50 BST is 00:59:50 UTC; ten minutes later it is 01:09:50 GMT.
    cursor = datetime(2026, 10, 25, 1, 59, 50)  # the newest LastUpdated seen, in BST
    now = datetime(2026, 10, 25, 1, 9, 50, tzinfo=UTC)
    since = LONDON.since(cursor, now)
    # An order updated at 01:05 GMT (local 01:05, below the cursor) is still listed.
    assert since <= datetime(2026, 10, 25, 1, 5) - timedelta(minutes=0)
    assert since == datetime(2026, 10, 25, 1, 9, 50) - OVERLAP
    # The ambiguous local time is read as the later instant: grace is never cut short.
    assert LONDON.to_utc(datetime(2026, 10, 25, 1, 30)) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def parse_since(text: str, now: datetime) -> datetime:
    return parse_time(text, now, offset_required=True)  # as `sync --since` reads it


def test_since_accepts_rfc3339_and_ages_and_refuses_the_rest() -> None:
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-11-30T09:00:00Z", now) == datetime(2026, 11, 30, 9, tzinfo=UTC)
    for bad in ("yesterday", "2026-11-30T09:00:00"):
        with pytest.raises(SettingsError):
            parse_since(bad, now)


def test_sync_settings_parse_and_refuse() -> None:
    settings = load_settings(
        {
            "BRIDGE_SYNC_INTERVAL": "30s",
            "BRIDGE_SYNC_GRACE": "15m",
            "BRIDGE_SYNC_RECONCILE": "ALL",
            "BRIDGE_SYNC_CLIENT_IDS": "12, 14",
            "BRIDGE_MINTSOFT_RATE": "0.5",
        }
    )
    assert settings.sync_interval == 30
    assert settings.sync_grace == 900
    assert settings.sync_reconcile == "all"
    assert settings.sync_client_ids == (12, 14)
    assert settings.mintsoft_rate == 0.5
    defaults = load_settings({})
    assert (defaults.sync_interval, defaults.sync_grace, defaults.mintsoft_rate) == (60, 900, 2)
    assert defaults.mintsoft_timezone == "Europe/London"
    for name, bad in (
        ("BRIDGE_SYNC_INTERVAL", "soon"),
        ("BRIDGE_SYNC_RECONCILE", "some"),
        ("BRIDGE_SYNC_WAREHOUSE_IDS", "main"),
        ("BRIDGE_MINTSOFT_RATE", "0"),
        ("BRIDGE_MINTSOFT_TIMEZONE", "Mars/Olympus"),
    ):
        with pytest.raises(SettingsError, match=name):
            load_settings({name: bad})


OURS = {
    "https://bridge.example.com/webhooks/despatched",
    "https://bridge.example.com/webhooks/cancelled",
}


def test_only_the_bridges_urls_count_as_enrolled_and_anything_else_is_a_conflict() -> None:
    ours = {
        "ExtraCode1": "https://bridge.example.com/webhooks/despatched?APIKEY=old-key",
        "ExtraCode2": "https://BRIDGE.example.com/webhooks/cancelled",
    }
    assert classify([], OURS) == ("free", "")
    assert classify([ours], OURS) == ("already", "")
    other = {"ExtraCode1": "https://erp.example.net/hook"}
    assert classify([other], OURS)[0] == "conflict"
    assert "erp.example.net" in classify([ours, other], OURS)[1]
    secret = {"ExtraCode1": "https://user:hunter2@erp.example.net:8443/hook?APIKEY=k3y"}
    assert classify([secret], OURS) == ("conflict", "erp.example.net:8443")
    mixed = {"ExtraCode1": ours["ExtraCode1"], "ExtraCode3": "https://tracker.example.org/x"}
    assert classify([mixed], OURS)[0] == "conflict"
    # An action of another kind, without URLs (a marketplace link): never replaced either.
    assert classify([{"Type": "Shopify", "SourceOrderId": "1"}], OURS)[0] == "conflict"


def test_the_same_event_of_the_same_order_always_gets_the_same_message_id() -> None:
    assert recovery_id("despatched", 42) == recovery_id("despatched", 42)
    assert len(recovery_id("despatched", 42)) == 32
    assert recovery_id("despatched", 42) != recovery_id("cancelled", 42)
    assert recovery_id("delivered", 42, "9001") != recovery_id("delivered", 42, "9002")


async def test_backfill_enrols_history_a_first_run_leaves_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        old = [world.create() for _ in range(30)]
        for n, order in enumerate(old):
            order.last_updated = order.order_date = local_now() - timedelta(days=3, minutes=n)
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        async with Sync(settings) as sync:
            first = await sync.run_pass()
            assert first.ok and first.enrol.enrolled == 0  # history is backfill's job
            sync.backfill_from(datetime.now(UTC) - timedelta(days=7))
            report = await sync.run_pass()
        assert report.ok and report.enrol.enrolled == 30
        assert all(world.puts[o.id] == 1 for o in old)
        # sync status reads the same file: cursors, counts, no error.
        monkeypatch.setenv("BRIDGE_SYNC_STATE_PATH", settings.sync_state_path)
        assert main(["sync", "status"]) == 0
        out = capsys.readouterr().out
        assert "cursor orders:" in out and "enrolled 30" in out and "last error: none" in out
    finally:
        await world.close()


def test_sync_command_line_refuses_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_SYNC_STATE_PATH", str(tmp_path / "none.sqlite3"))
    monkeypatch.setenv("BRIDGE_MINTSOFT_API_KEY", MS_KEY)
    assert main(["sync", "--backfill"]) == 2
    assert "--since" in capsys.readouterr().err
    assert main(["sync", "--backfill", "--since", "someday"]) == 2
    assert "someday" in capsys.readouterr().err
    assert main(["sync", "status"]) == 1
    err = capsys.readouterr().err
    assert "no sync state" in err and len(err.strip().splitlines()) == 1


async def test_doctor_checks_the_key_sync_needs(tmp_path: Path) -> None:
    from dataclasses import replace

    from bridge.core.settings import Settings
    from bridge.mintsoft.sync.check import check_sync_access

    world = MintsoftWorld()
    await world.start()
    try:
        settings = Settings(mintsoft_url=world.url, mintsoft_api_key=MS_KEY)
        assert (await check_sync_access(replace(settings, mintsoft_api_key=None), 5))[0] is None
        ok, detail, _ = await check_sync_access(settings, 5)
        assert ok is True and "none yet" in detail
        world.create()
        ok, detail, _ = await check_sync_access(settings, 5)
        assert ok is True and "connect actions" in detail
        assert world.calls["GET Order/{id}/ConnectActions"] == 1
        ok, detail, fix = await check_sync_access(replace(settings, mintsoft_api_key="bad"), 5)
        assert ok is False and "401" in detail and "AdminEditOrder" in fix
        assert "bad" not in detail
    finally:
        await world.close()


async def test_take_over_replaces_a_foreign_connect_action_only_when_asked(
    tmp_path: Path,
) -> None:
    world = MintsoftWorld()
    await world.start()
    try:
        settings = sync_settings(
            "unused", tmp_path, world.url, "http://127.0.0.1:9", sync_reconcile="off"
        )
        order = world.create()
        order.actions = [{"Type": "API", "ExtraCode1": "https://erp.example.net/hook"}]
        async with Sync(settings) as sync:
            assert (await sync.run_pass()).enrol.conflicts == 1
            assert (await sync.run_pass()).enrol.conflicts == 0  # decided: not asked again
        assert world.puts[order.id] == 0
        async with Sync(settings, take_over=True) as sync:
            assert (await sync.run_pass()).enrol.enrolled == 1
        assert world.puts[order.id] == 1
        assert "127.0.0.1:9/webhooks/despatched" in order.actions[0]["ExtraCode1"]
    finally:
        await world.close()


async def test_the_rate_limit_holds_below_one_request_a_second() -> None:
    import asyncio

    from bridge.mintsoft.client import rate_limiter

    loop = asyncio.get_running_loop()
    limiter = rate_limiter(4.0)
    started = loop.time()
    for _ in range(10):
        async with limiter:
            pass
    assert loop.time() - started >= 1.0  # 10 at 4/s: the first 4 at once, then 4 a second
    slow = rate_limiter(0.5)
    async with slow:  # a rate below 1/s is accepted (one request per 2 s)
        pass


async def test_a_time_zone_wrong_by_an_hour_misses_no_order_and_idle_passes_keep_the_cursor(
    tmp_path: Path,
) -> None:
    world = MintsoftWorld()  # stamps Europe/London
    await world.start()
    try:
        settings = sync_settings(
            "unused",
            tmp_path,
            world.url,
            "http://127.0.0.1:9",
            sync_reconcile="off",
            mintsoft_timezone="Europe/Berlin",  # an hour ahead of London all year
        )
        orders = [world.create() for _ in range(5)]
        async with Sync(settings) as sync:
            assert (await sync.run_pass()).enrol.enrolled == 5
            assert sync.state is not None
            cursor = sync.state.cursor("orders")
            assert (await sync.run_pass()).orders.new_orders == 0  # idle
            assert sync.state.cursor("orders") == cursor  # never moved by our own clock
            orders += [world.create() for _ in range(5)]
            assert (await sync.run_pass()).enrol.enrolled == 5
        assert all(world.puts[o.id] == 1 for o in orders)
    finally:
        await world.close()


@pytest.mark.parametrize(
    "args",
    [["sync", "--backfill", "--since", "99999999d"], ["archive", "find", "--since", "99999999d"]],
)
def test_a_since_too_far_back_is_one_line_and_exit_2(tmp_path: Path, args: list[str]) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "BRIDGE_SYNC_STATE_PATH": str(tmp_path / "none.sqlite3"),
        "BRIDGE_MINTSOFT_API_KEY": MS_KEY,
    }
    result = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "99999999d" in result.stderr and "Traceback" not in result.stderr
