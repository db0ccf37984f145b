"""``simulate EVENT``: send realistic Mintsoft webhooks to a running bridge and print the
answers."""

from __future__ import annotations

import argparse
import sys
import time

from bridge.cli.common import Parser, add_command, positive_int, run_async, settings_of
from bridge.cli.progress import Progress
from bridge.core.contract import ASN_BOOKED_IN, EVENTS
from bridge.core.settings import SettingsError
from bridge.mintsoft.simulate import Outcome, bridge_base_url, read_body_file, send_many

READS = (
    "BRIDGE_PUBLIC_URL",
    "BRIDGE_HOST",
    "BRIDGE_PORT",
    "BRIDGE_API_KEYS",
    "BRIDGE_AUTH_HEADERS",
)
"""The settings this command reads: its --help offers their flags (secrets excepted)."""


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    sub = add_command(
        commands, "simulate", run, READS, help="send a realistic Mintsoft webhook to a bridge"
    )
    sub.add_argument(
        "event", metavar="EVENT", choices=EVENTS, help=", ".join(EVENTS[:-1]) + " or " + EVENTS[-1]
    )
    sub.add_argument(
        "--url",
        help="the bridge's base URL (default: BRIDGE_PUBLIC_URL, "
        "else http://BRIDGE_HOST:BRIDGE_PORT)",
    )
    sub.add_argument(
        "--order-id",
        type=positive_int,
        metavar="N",
        help="order id to use (the ASN id for asn-booked-in)",
    )
    sub.add_argument(
        "--client-id", type=positive_int, metavar="N", help="the body's ClientId (x-client-id)"
    )
    sub.add_argument(
        "--warehouse-id",
        type=positive_int,
        metavar="N",
        help="the body's WarehouseId (x-warehouse-id)",
    )
    sub.add_argument(
        "--file", metavar="F", help="send this file's bytes as the body instead, unchanged"
    )
    sub.add_argument("--count", type=positive_int, default=1, metavar="N", help="send N webhooks")
    sub.add_argument("--rate", type=float, default=None, metavar="R", help="at most R per second")
    sub.add_argument(
        "--verbose",
        action="store_true",
        help="with --count: a line per webhook too (default: a progress bar on a terminal, "
        "then the summary)",
    )


def _describe(event: str, outcome: Outcome) -> str:
    what = "ASN" if event == ASN_BOOKED_IN else "order"
    who = f"{event} {what} {outcome.order_id}" if outcome.order_id is not None else event
    millis = f"{outcome.seconds * 1000:.0f} ms"
    if outcome.status is None:
        return f"{who}: no answer ({outcome.error}) after {millis}"
    answer = outcome.answer
    what = answer.get("status") or answer.get("error") or ""
    message_id = answer.get("message_id")
    line = f"{who}: {outcome.status} {what}".rstrip()
    if message_id:
        line += f" message_id={message_id}"
    if not outcome.ok and answer.get("message"):
        line += f" ({answer['message']})"
    return f"{line} ({millis})"


def _hint(outcome: Outcome, base: str) -> str | None:
    if outcome.status is None:
        return (
            f"cannot reach the bridge at {base}: start it (mintsoft-bridge serve) or pass "
            "--url (or set BRIDGE_PUBLIC_URL)"
        )
    if outcome.status == 401:
        return (
            "the bridge refused the credentials: set BRIDGE_API_KEYS or BRIDGE_AUTH_HEADERS "
            "here to a value the bridge serves with"
        )
    return None


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    base = bridge_base_url(settings, args.url)
    if args.file and (args.client_id is not None or args.warehouse_id is not None):
        raise SettingsError(
            "--client-id / --warehouse-id change the generated body, and --file is sent "
            "unchanged: drop one of them"
        )
    file_body = read_body_file(args.file) if args.file else None
    started = time.monotonic()
    # One webhook: its answer. A burst: a progress bar (on a terminal) and the summary, the
    # answer of each webhook only with --verbose.
    each = args.count == 1 or args.verbose
    progress = Progress(args.count, "simulate") if not each else None

    def show(outcome: Outcome) -> None:
        if each:
            print(_describe(args.event, outcome), flush=True)
        if progress is not None:
            progress.advance(outcome.ok)

    outcomes: list[Outcome] = run_async(
        send_many(
            settings,
            base,
            args.event,
            args.count,
            order_id=args.order_id,
            file_body=file_body,
            rate=args.rate,
            client_id=args.client_id,
            warehouse_id=args.warehouse_id,
            on_outcome=show,
        )
    )
    elapsed = time.monotonic() - started
    if progress is not None:
        progress.close()
    failed = [o for o in outcomes if not o.ok]
    if args.count > 1:
        print(_summary(outcomes, elapsed))
    if failed:
        hint = _hint(failed[0], base)
        if hint:
            print(f"mintsoft-bridge simulate: {hint}", file=sys.stderr)
        return 1
    return 0


def _summary(outcomes: list[Outcome], elapsed: float) -> str:
    by_answer: dict[str, int] = {}
    for outcome in outcomes:
        key = (
            str(outcome.answer.get("status") or outcome.status)
            if outcome.status is not None
            else "no answer"
        )
        by_answer[key] = by_answer.get(key, 0) + 1
    times = sorted(o.seconds for o in outcomes)
    p50 = times[len(times) // 2] * 1000
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))] * 1000
    ok = sum(1 for o in outcomes if o.ok)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_answer.items()))
    return (
        f"sent {len(outcomes)} in {elapsed:.2f} s ({len(outcomes) / max(elapsed, 1e-9):.1f}/s): "
        f"{ok} answered 200, {len(outcomes) - ok} failed [{kinds}]; "
        f"latency p50 {p50:.0f} ms, p99 {p99:.0f} ms"
    )
