"""``dlq list NAME`` / ``dlq replay NAME``: show or re-queue a subscriber's dead letters."""

from __future__ import annotations

import argparse
import sys

from bridge.cli.common import (
    Parser,
    add_actions,
    add_command,
    cli_operator,
    positive_int,
    run_async,
    settings_of,
)

READS = ("BRIDGE_AMQP_URL",)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    actions = add_actions(commands, "dlq", help="inspect or replay a subscriber's dead letters")
    help = "print one line per dead-lettered message"
    listing = add_command(actions, "list", run_list, READS, help=help)
    help = "move dead letters back to the queue"
    replay = add_command(actions, "replay", run_replay, READS, help=help)
    for sub in (listing, replay):
        sub.add_argument("name", metavar="NAME", help="the subscriber's name")
        sub.add_argument(
            "--limit", type=positive_int, default=None, metavar="N", help="at most N messages"
        )


def run_list(args: argparse.Namespace) -> int:
    from bridge.worker.dlq import describe, list_dead_letters

    listing = run_async(list_dead_letters(settings_of(args).amqp_urls, args.name, args.limit))
    for got in listing.messages:
        print(describe(got))
    print(
        f"{len(listing.messages)} of {listing.depth} dead letters in {listing.queue}",
        file=sys.stderr,
    )
    return 0


def run_replay(args: argparse.Namespace) -> int:
    from bridge.amqp.deliveries import Acting
    from bridge.core.audit import Via
    from bridge.core.records import Source
    from bridge.worker.dlq import replay_dead_letters

    settings = settings_of(args)
    detail = f"--limit {args.limit}" if args.limit is not None else "all"
    # Each message moved leaves a delivery record, the replay an audit record (by the OS user).
    acting = Acting(settings.exchange, Source.DLQ_REPLAY, cli_operator(), Via.CLI, detail)
    moved, queue = run_async(replay_dead_letters(settings.amqp_urls, args.name, args.limit, acting))
    print(f"replayed {moved} message{'' if moved == 1 else 's'} from {queue} to {args.name}")
    return 0
