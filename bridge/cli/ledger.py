"""``ledger [--config FILE]``: index the archive and every delivery attempt into the ledger
database (contract section 10), until SIGTERM."""

from __future__ import annotations

import argparse

from bridge.cli.common import TOPOLOGY_READS, Parser, add_command, run_async, settings_of

READS = (
    *TOPOLOGY_READS,
    "BRIDGE_LEDGER_URL",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_METRICS_HOST",
    "BRIDGE_METRICS_PORT",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands,
        "ledger",
        run,
        READS,
        help="index every webhook and every delivery attempt into the ledger database",
    )
    sub.add_argument(
        "--config",
        metavar="FILE",
        action="append",
        help="a subscribers file (as for worker; repeat it for each worker's file): the "
        "ledger then knows which subscribers each webhook is for (waiting / not for it)",
    )


def run(args: argparse.Namespace) -> int:
    from bridge.core import logs
    from bridge.core.contract import subscribed_events
    from bridge.ledger.database import ledger_url
    from bridge.ledger.indexer import run_ledger
    from bridge.ledger.store import SubscriberSpec
    from bridge.worker.subscribers import load_subscribers

    settings = settings_of(args)
    logs.configure(settings.log_format)
    ledger_url(settings)  # no ledger configured: exit 2 before anything starts
    specs = None
    if args.config is not None:
        specs = [
            SubscriberSpec(s.name, subscribed_events(s.events), s.clients, s.warehouses)
            for path in args.config
            for s in load_subscribers(path)
        ]
    run_async(run_ledger(settings, specs))
    return 0
