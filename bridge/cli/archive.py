"""``archive find`` / ``archive replay`` / ``archive status``: look webhooks up in the
archive stream, copy a window of them to a subscriber, or describe the archive."""

from __future__ import annotations

import argparse
import base64
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.cli.common import (
    TOPOLOGY_READS,
    Parser,
    UsageError,
    add_actions,
    add_command,
    cli_operator,
    run_async,
    settings_of,
)
from bridge.core.contract import EVENTS

READS = TOPOLOGY_READS
"""The settings these commands read: their --help offers their flags (secrets excepted)."""

EVENT_CHOICES = (*EVENTS, "invalid")


def _events(raw: str) -> list[str]:
    events = [part.strip() for part in raw.split(",") if part.strip()]
    for event in events:
        if event not in EVENT_CHOICES:
            raise argparse.ArgumentTypeError(
                f"{event!r} is not an event: use {', '.join(EVENT_CHOICES)}"
            )
    return events


def _filters(sub: Parser, *, since_required: bool) -> None:
    sub.add_argument(
        "--since",
        metavar="T",
        required=since_required,
        help="window start, inclusive: RFC 3339 (2026-11-30T10:00:00Z) or an age (90m, 2h, 7d)"
        + ("" if since_required else "; default: 24 hours before --until"),
    )
    sub.add_argument("--until", metavar="T", help="window end, exclusive; default: now")
    sub.add_argument("--order", metavar="ID", help="only this order id (x-order-id)")
    sub.add_argument("--order-number", metavar="N", help="only this order number")
    sub.add_argument(
        "--event",
        metavar="E",
        type=_events,
        nargs="+",
        action="extend",
        help=f"only these events ({', '.join(EVENT_CHOICES)}): several after one --event, "
        "repeated, or comma-separated",
    )
    sub.add_argument("--message-id", metavar="M", help="only this message id")


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    help = "find, replay or describe the webhooks kept in the archive stream"
    actions = add_actions(commands, "archive", help=help)
    find = add_command(
        actions, "find", run_find, READS, help="print one line per archived webhook in a window"
    )
    _filters(find, since_required=False)
    find.add_argument("--json", action="store_true", help="one JSON object per line")
    find.add_argument("--body", action="store_true", help="with --json: include the body")

    help = "copy a window of archived webhooks to a subscriber"
    replay = add_command(actions, "replay", run_replay, READS, help=help)
    _filters(replay, since_required=True)
    replay.add_argument("--to", metavar="SUBSCRIBER", required=True, help="the subscriber's name")
    replay.add_argument("--dry-run", action="store_true", help="count the matches, send nothing")

    help = "size, oldest and newest webhook, and retention"
    add_command(actions, "status", run_status, READS, help=help)


def _query(args: argparse.Namespace) -> Any:
    from bridge.archive.reader import ArchiveQuery
    from bridge.archive.window import window

    since, until = window(args.since, args.until, datetime.now(UTC))
    events = tuple(dict.fromkeys(e for group in args.event or () for e in group))
    return ArchiveQuery(
        since=since,
        until=until,
        order_id=args.order,
        order_number=args.order_number,
        events=events,
        message_id=args.message_id,
    )


def _stamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_line(webhook: Any, body: bool) -> bytes:
    document: dict[str, Any] = {
        "offset": webhook.offset,
        "received_at": _stamp(webhook.received_at),
        "event": webhook.event,
        "routing_key": webhook.routing_key,
        "order_id": webhook.order_id,
        "order_number": webhook.order_number,
        "message_id": webhook.message_id,
        "source": webhook.source,
        "bytes": webhook.size,
        "headers": {
            k: v if isinstance(v, str | int) else str(v) for k, v in webhook.headers.items()
        },
    }
    if body:
        try:
            document["body"] = webhook.body.decode("utf-8")
        except UnicodeDecodeError:
            document["body_base64"] = base64.b64encode(webhook.body).decode()
    return orjson.dumps(document)


def run_find(args: argparse.Namespace) -> int:
    from bridge.archive.reader import find

    settings = settings_of(args)
    query = _query(args)
    if args.body and not args.json:
        raise UsageError("--body needs --json: add --json")
    out = sys.stdout

    async def work() -> int:
        count = 0
        async for webhook in find(settings.amqp_urls, settings.exchange, query):
            count += 1
            if args.json:
                out.write(_json_line(webhook, args.body).decode() + "\n")
            else:
                fields = (
                    _stamp(webhook.received_at),
                    webhook.event if not webhook.quarantined else webhook.routing_key,
                    webhook.order_id or "-",
                    webhook.order_number or "-",
                    webhook.message_id or "-",
                    webhook.size,
                )
                out.write("\t".join(str(f) for f in fields) + "\n")
        return count

    count = run_async(work())
    print(
        f"{count} webhook{'' if count == 1 else 's'} received from {_stamp(query.since)} "
        f"until {_stamp(query.until)}",
        file=sys.stderr,
    )
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from bridge.archive.replay import replay
    from bridge.cli.progress import Progress

    settings = settings_of(args)
    query = _query(args)
    verb = "counting for" if args.dry_run else "replaying to"
    bar = Progress(None, f"{verb} {args.to}")

    def progress(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done)

    try:
        result = run_async(
            replay(
                settings.amqp_urls,
                settings.exchange,
                query,
                args.to,
                dry_run=args.dry_run,
                on_progress=progress,
                operator=cli_operator(),
            )
        )
    finally:
        bar.close()
    window = f"received from {_stamp(query.since)} until {_stamp(query.until)}"
    if args.dry_run:
        print(f"dry run: would replay {result.matched} webhooks {window} to {args.to}")
    else:
        print(
            f"replayed {result.sent} of {result.matched} webhooks {window} to {args.to} "
            f"(x-replay-id {result.replay_id})"
        )
    return 0


def run_status(args: argparse.Namespace) -> int:
    from bridge.amqp.topology import archive_name, archive_retention
    from bridge.archive.status import archive_status

    settings = settings_of(args)
    name = archive_name(settings.exchange)
    status = run_async(
        archive_status(settings.amqp_urls, settings.exchange, archive_retention(settings))
    )
    if not status.enabled:
        if not settings.archive:
            print(f"archive {name}: off (BRIDGE_ARCHIVE=false)")
            return 0
        print(
            f"archive {name} does not exist: run `mintsoft-bridge topology` "
            "(serve declares it too when it starts)",
            file=sys.stderr,
        )
        return 1
    print(f"archive    {name}")
    print(f"messages   {status.messages} (the broker's count, refreshed every few seconds)")
    print(f"oldest     {_stamp(status.oldest) if status.oldest else '-'}")
    print(f"newest     {_stamp(status.newest) if status.newest else '-'}")
    if status.max_age is not None:
        print(f"retention  {status.max_age}, {status.max_bytes} bytes")
    elif status.retention_note:
        print(f"retention  differs from BRIDGE_ARCHIVE_MAX_AGE/_BYTES: {status.retention_note}")
    return 0
