"""``worker --config FILE``: run the subscribers that FILE declares, until SIGTERM."""

from __future__ import annotations

import argparse

from bridge.cli.common import TOPOLOGY_READS, Parser, add_command, run_async, settings_of

READS = (
    *TOPOLOGY_READS,
    "BRIDGE_HOST",
    "BRIDGE_LOG_FORMAT",
    "BRIDGE_METRICS_HOST",
    "BRIDGE_METRICS_PORT",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands, "worker", run, READS, help="run the subscribers that a TOML file declares"
    )
    sub.add_argument("--config", required=True, metavar="FILE", help="subscribers file")
    # --metrics-port N is the BRIDGE_METRICS_PORT setting's flag: /metrics and /healthz on
    # BRIDGE_METRICS_HOST (default: BRIDGE_HOST, as before) port N; 0 or unset: none.


def run(args: argparse.Namespace) -> int:
    from bridge.core import logs
    from bridge.worker.runner import run_worker

    settings = settings_of(args)
    logs.configure(settings.log_format)
    run_async(run_worker(settings, args.config))
    return 0
