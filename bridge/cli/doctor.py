"""``doctor``: check settings, broker, topology and the public URL; print each check with
the fix, exit 1 if any failed."""

from __future__ import annotations

import argparse
import sys

from bridge.cli.common import Parser, add_command, run_async, settings_of
from bridge.mintsoft.doctor import Check, run_checks

READS = None
"""Every setting: the doctor checks them all."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands, "doctor", run, READS, help="check settings, broker, topology and the public URL"
    )
    sub.add_argument(
        "--skip-simulate",
        action="store_true",
        help="do not send a test webhook (it reaches every subscriber of order.despatched)",
    )


class Report:
    """Prints each check as it completes: ✓/✗ on a terminal, OK/FAIL otherwise."""

    def __init__(self) -> None:
        self.failed = 0
        self._tty = sys.stdout.isatty()

    def add(self, check: Check) -> None:
        if check.ok is False:
            self.failed += 1
        marks = ("✓", "✗", "-") if self._tty else ("OK  ", "FAIL", "SKIP")
        mark = marks[0] if check.ok else marks[1] if check.ok is False else marks[2]
        line = f"{mark} {check.name}"
        if check.detail:
            line += f": {check.detail}"
        if check.ok is False and check.fix:
            line += f" — fix: {check.fix}"
        print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    report = Report()
    run_async(run_checks(settings_of(args), args.skip_simulate, report.add))
    if report.failed:
        print(f"{report.failed} check{'s' if report.failed > 1 else ''} failed")
        return 1
    print("all checks passed")
    return 0
