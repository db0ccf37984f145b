"""``connect-actions ORDER_ID ...`` / ``connect-actions --asn ASN_ID``: register the bridge's
URLs on Mintsoft orders, or its ``asn-booked-in`` URL on an ASN (or print what would be
sent)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from bridge.cli.common import Parser, add_command, run_async, settings_of
from bridge.cli.progress import Progress
from bridge.core.settings import Settings, SettingsError
from bridge.mintsoft.connect_actions import (
    OrderToConnect,
    asn_connect_action,
    asn_connect_path,
    connect_action,
    connect_asn,
    connect_many,
    mintsoft_client,
    order_id,
    parse_events,
    read_orders_file,
)

READS = (
    "BRIDGE_PUBLIC_URL",
    "BRIDGE_API_KEYS",
    "BRIDGE_AUTH_HEADERS",
    "BRIDGE_MINTSOFT_URL",
    "BRIDGE_MINTSOFT_API_KEY",
    "BRIDGE_MINTSOFT_USERNAME",
    "BRIDGE_MINTSOFT_PASSWORD",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands,
        "connect-actions",
        run,
        READS,
        help="register the bridge's URLs on a Mintsoft order (PUT ConnectActions)",
    )
    sub.add_argument("order_ids", metavar="ORDER_ID", nargs="*", help="Mintsoft order id(s)")
    sub.add_argument("--source-order-id", metavar="S", help="SourceOrderId to send")
    sub.add_argument(
        "--events",
        default=None,
        help="which webhooks to register (default: all four, despatched,cancelled,delivered,split)",
    )
    sub.add_argument(
        "--asn",
        metavar="ASN_ID",
        help="register the asn-booked-in URL on this ASN instead (PUT /api/ASN/ASN_ID/"
        "ConnectActions)",
    )
    sub.add_argument("--source-asn-id", metavar="S", help="with --asn: SourceASNId to send")
    sub.add_argument("--dry-run", action="store_true", help="print the JSON, send nothing")
    sub.add_argument(
        "--from-file",
        metavar="FILE",
        help="order ids, one per line, or a CSV of order id,source order id",
    )
    sub.add_argument(
        "--print-create-order",
        action="store_true",
        help="print the ConnectAction block for a create-order call",
    )


def _orders(args: argparse.Namespace) -> list[OrderToConnect]:
    orders = [
        OrderToConnect(order_id(raw, "ORDER_ID"), args.source_order_id) for raw in args.order_ids
    ]
    if args.from_file:
        orders += read_orders_file(args.from_file)
    if not orders:
        raise SettingsError(
            "no order given: pass ORDER_ID (the id PUT /api/Order answered) or --from-file FILE"
        )
    return orders


def _dumps(document: Any) -> str:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    if args.asn is not None:
        return _run_asn(args, settings)
    if args.source_asn_id is not None:
        raise SettingsError("--source-asn-id goes with --asn ASN_ID: add --asn, or drop it")
    events = parse_events(args.events or "despatched,cancelled,delivered,split")
    if args.print_create_order:
        block = connect_action(settings, events, args.source_order_id)
        print(_dumps({"ConnectAction": block}))
        print(
            "# add this block to the body of your create-order call (PUT /api/Order)",
            file=sys.stderr,
        )
        return 0
    orders = _orders(args)
    bodies = [(o, connect_action(settings, events, o.source_order_id)) for o in orders]
    if args.dry_run:
        for order, body in bodies:
            print(
                f"# would PUT {settings.mintsoft_url}/api/Order/{order.order_id}/ConnectActions",
                file=sys.stderr,
            )
            print(_dumps(body))
        return 0
    code: int = run_async(_register(settings, bodies, events))
    return code


def _run_asn(args: argparse.Namespace, settings: Settings) -> int:
    """``--asn ASN_ID``: one ASN, its booked-in URL; the order-only options do not apply."""
    extra = [
        flag
        for flag, given in (
            ("ORDER_ID", args.order_ids),
            ("--events", args.events is not None),
            ("--source-order-id", args.source_order_id is not None),
            ("--from-file", args.from_file),
            ("--print-create-order", args.print_create_order),
        )
        if given
    ]
    if extra:
        raise SettingsError(
            f"--asn registers one ASN's booked-in URL: drop {extra[0]} (orders are "
            "registered in a separate call)"
        )
    asn_id = order_id(args.asn, "--asn", "ASN")
    body = asn_connect_action(settings, args.source_asn_id)
    if args.dry_run:
        print(f"# would PUT {settings.mintsoft_url}{asn_connect_path(asn_id)}", file=sys.stderr)
        print(_dumps(body))
        return 0
    run_async(_register_asn(settings, asn_id, body))
    print(f"ASN {asn_id}: connect action registered (asn-booked-in)")
    return 0


async def _register_asn(settings: Settings, asn_id: int, body: dict[str, Any]) -> None:
    async with mintsoft_client(settings) as client:
        await connect_asn(client, asn_id, body)


async def _register(
    settings: Settings,
    bodies: list[tuple[OrderToConnect, dict[str, Any]]],
    events: tuple[str, ...],
) -> int:
    async with mintsoft_client(settings) as client:
        if len(bodies) == 1:
            order, body = bodies[0]
            await client.connect_actions(order.order_id, body)
            print(f"order {order.order_id}: connect action registered ({', '.join(events)})")
            return 0
        progress = Progress(len(bodies), "connect-actions")
        failures = await connect_many(client, bodies, progress.advance)
        progress.close()
    done = len(bodies) - len(failures)
    print(
        f"connect actions registered on {done} of {len(bodies)} orders "
        f"({', '.join(events)}); {len(failures)} failed"
    )
    for failed_id, reason in failures:
        print(f"  order {failed_id}: {reason}")
    return 1 if failures else 0
