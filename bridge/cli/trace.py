"""``trace ORDER [--json]``: an order's webhooks and, per subscriber, every delivery attempt
and its state now, from the ledger (contract section 10). Exit 0 when found, 1 when the
ledger holds nothing for ORDER, 2 for bad input (no ledger configured)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

import orjson

from bridge.cli.common import Parser, UsageError, add_command, settings_of

READS = ("BRIDGE_LEDGER_URL",)
"""The settings this command reads (BRIDGE_LEDGER_URL is a secret: environment only)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands,
        "trace",
        run,
        READS,
        help="show an order's webhooks and every delivery attempt per subscriber",
    )
    sub.add_argument("order", metavar="ORDER", help="an order id, order number or message id")
    sub.add_argument("--json", action="store_true", help="one JSON document (a stable shape)")


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def render(found: object) -> str:
    """The human form of a :class:`bridge.ledger.queries.Trace`."""
    from bridge.ledger.queries import Trace

    assert isinstance(found, Trace)
    count = len(found.webhooks)
    lines = [f"{found.query}: {count} webhook{'s' if count != 1 else ''}"]
    for webhook in found.webhooks:
        order = " / ".join(v for v in (webhook.order_id, webhook.order_number) if v) or "-"
        lines.append("")
        lines.append(
            f"{_time(webhook.received_at)}  {webhook.event:<10}  {webhook.source or '-':<9}  "
            f"order {order}  message {webhook.message_id}"
        )
        width = max((len(s.name) for s in webhook.subscribers), default=0)
        if not webhook.subscribers:
            lines.append("  (no subscriber known: run `ledger --config FILE`)")
        for subscriber in webhook.subscribers:
            tries = len(subscriber.attempts)
            tried = f"  {tries} attempt{'s' if tries != 1 else ''}" if tries else ""
            lines.append(f"  {subscriber.name:<{width}}  {subscriber.state}{tried}")
            for attempt in subscriber.attempts:
                status = "-" if attempt.status is None else str(attempt.status)
                took = "-" if attempt.duration_ms is None else f"{attempt.duration_ms:.1f} ms"
                said = attempt.error or attempt.answer or ""
                who = f" by {attempt.operator}" if attempt.operator else ""
                lines.append(
                    f"    {_time(attempt.at)}  #{attempt.attempt:<2} {attempt.outcome:<9} "
                    f"{status:>3}  {took:>9}  {attempt.source}{who}  {said}".rstrip()
                )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bridge.ledger.database import ledger_url
    from bridge.ledger.queries import trace_order

    query = args.order.strip()
    if not query:
        raise UsageError("ORDER is empty: give an order id, an order number or a message id")
    found = trace_order(ledger_url(settings_of(args)), query)
    if args.json:
        sys.stdout.write(orjson.dumps(found.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(render(found) if found.webhooks else f"{query}: nothing in the ledger")
    return 0 if found.webhooks else 1
