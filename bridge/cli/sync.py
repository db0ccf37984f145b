"""``sync [--once] [--backfill --since T] [--take-over]`` and ``sync status``: enrol new
Mintsoft orders and recover missed webhooks (contract section 8)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from bridge.archive.window import parse_time
from bridge.cli.common import TOPOLOGY_READS, Parser, add_command, run_async, settings_of
from bridge.cli.progress import Progress
from bridge.core import logs
from bridge.core.listeners import serving_metrics
from bridge.core.settings import Settings, SettingsError
from bridge.core.tasks import stop_on_signals
from bridge.mintsoft.sync.runner import Sync
from bridge.mintsoft.sync.state import OrderState
from bridge.mintsoft.sync.status import SyncStatus, sync_status

READS = (
    *TOPOLOGY_READS,
    "BRIDGE_HOST",
    "BRIDGE_PUBLISH_TIMEOUT",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_API_KEYS",
    "BRIDGE_AUTH_HEADERS",
    "BRIDGE_ALLOW_UNAUTHENTICATED",
    "BRIDGE_PUBLIC_URL",
    "BRIDGE_MINTSOFT_URL",
    "BRIDGE_MINTSOFT_API_KEY",
    "BRIDGE_MINTSOFT_USERNAME",
    "BRIDGE_MINTSOFT_PASSWORD",
    "BRIDGE_MINTSOFT_RATE",
    "BRIDGE_MINTSOFT_TIMEZONE",
    "BRIDGE_SYNC_STATE_PATH",
    "BRIDGE_SYNC_INTERVAL",
    "BRIDGE_SYNC_GRACE",
    "BRIDGE_SYNC_RECONCILE",
    "BRIDGE_SYNC_CLIENT_IDS",
    "BRIDGE_SYNC_WAREHOUSE_IDS",
    "BRIDGE_METRICS_HOST",
    "BRIDGE_METRICS_PORT",
    "BRIDGE_LEDGER_URL",
)
"""The settings this command reads: its --help offers their flags (secrets excepted);
``--metrics-port`` (BRIDGE_METRICS_PORT) serves /metrics while it runs."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands,
        "sync",
        run,
        READS,
        help="enrol new Mintsoft orders and recover webhooks Mintsoft failed to deliver",
    )
    sub.add_argument(
        "action", nargs="?", choices=["status"], help="status: print cursors, counts, errors"
    )
    sub.add_argument("--once", action="store_true", help="one pass, then exit (for cron)")
    sub.add_argument(
        "--backfill", action="store_true", help="also cover history from --since (then exit)"
    )
    sub.add_argument("--since", metavar="T", help="RFC 3339 time or age (90m, 2h, 7d)")
    sub.add_argument(
        "--take-over",
        action="store_true",
        help="replace connect actions that point at another system (normally left alone)",
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.action == "status":
        print_status(sync_status(settings))
        return 0
    if args.backfill and not args.since:
        raise SettingsError("--backfill needs --since T (e.g. --since 7d)")
    if args.since and not args.backfill:
        raise SettingsError("--since goes with --backfill")
    since = None
    if args.since:
        since = parse_time(args.since, datetime.now(UTC), offset_required=True, flag="--since")
    logs.configure(settings.log_format)
    code: int = run_async(_run(settings, args, since))
    return code


def _bar(label: str, total: int) -> Progress:
    return Progress(total, f"sync {label}")


async def _run(settings: Settings, args: argparse.Namespace, since: datetime | None) -> int:
    async with Sync(settings, take_over=args.take_over) as sync:
        if since is not None or args.once:
            if since is not None:
                sync.backfill_from(since)
            report = await sync.run_pass(_bar if since is not None else None)
            print(f"sync: {report.summary()}")
            for error in report.errors:
                print(f"  failed: {error}")
            return 0 if report.ok else 1
        async with serving_metrics(settings, process="sync"):
            with stop_on_signals() as stop:
                await sync.run_forever(stop)
    return 0


def print_status(status: SyncStatus) -> None:
    print(f"state: {status.path}")
    for cursor in status.cursors:
        print(f"cursor {cursor.name}: {cursor.value} (lag {cursor.lag_seconds:.0f} s)")
    orders = status.orders
    print(
        f"orders: enrolled {orders.get(OrderState.ENROLLED, 0)}, already registered "
        f"{orders.get(OrderState.ALREADY, 0)}, conflicts {orders.get(OrderState.CONFLICT, 0)}, "
        f"pending {orders.get(OrderState.PENDING, 0)} ({status.retrying} retrying after a "
        "failure)"
    )
    recovered = ", ".join(f"{e} {n}" for e, n in sorted(status.recovered.items())) or "none"
    print(f"recovered webhooks: {recovered}")
    print(f"webhooks that arrived: {status.arrived}; events waiting: {status.pending_events}")
    for order_id, where in status.conflicts:
        print(f"conflict: order {order_id}: connect action points at {where}")
    print(f"last pass: {status.last_pass_at or 'never'} {status.last_pass or ''}".rstrip())
    print(f"last error: {status.last_error or 'none'}")
