"""``sandbox [--port P] [--orders N] [--drop F]``: a local stand-in for Mintsoft's API that
moves its orders through their statuses and calls their connect-action URLs (contract
section 11), with a line on stdout for each move and each call."""

from __future__ import annotations

import argparse
import time
from collections import Counter

from bridge.cli.common import Parser, add_command, run_async, settings_of
from bridge.core.durations import parse_duration, parse_rate
from bridge.core.settings import SettingsError
from bridge.core.values import parse_int

READS = ("BRIDGE_MINTSOFT_API_KEY", "BRIDGE_MINTSOFT_USERNAME", "BRIDGE_MINTSOFT_PASSWORD")


def register(commands: argparse._SubParsersAction[Parser], _all: Parser) -> None:
    from bridge.mintsoft.sandbox import DEFAULT_PORT

    help = "serve a local stand-in for Mintsoft's API, with orders that move"
    sub = add_command(
        commands,
        "sandbox",
        run,
        READS,
        help=help,
        description=help + ": it despatches its orders (some are then delivered or "
        "cancelled) and calls each order's registered connect-action URLs as Mintsoft "
        "would, dropping a fraction of the calls. Point BRIDGE_MINTSOFT_URL at it to try "
        "connect-actions, sync and doctor without a Mintsoft account. It accepts the "
        "ms-apikey in BRIDGE_MINTSOFT_API_KEY (any key when unset) and POST /api/Auth with "
        "BRIDGE_MINTSOFT_USERNAME / BRIDGE_MINTSOFT_PASSWORD (any login when unset).",
    )
    sub.add_argument(
        "--port",
        default=str(DEFAULT_PORT),
        metavar="P",
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)",
    )
    sub.add_argument("--orders", default="10", metavar="N", help="orders to create (default 10)")
    sub.add_argument(
        "--asns",
        default="0",
        metavar="N",
        help="ASNs to create and book in, calling their asn-booked-in URL (default 0)",
    )
    sub.add_argument(
        "--drop",
        default="0.2",
        metavar="F",
        help="fraction of webhook calls dropped, never retried, as Mintsoft does (0 to 1; "
        "default 0.2): sync recovers them",
    )
    sub.add_argument(
        "--step",
        default="30s",
        metavar="DURATION",
        help="time between an order's moves (default 30s: every order despatched within a "
        "minute or two)",
    )
    sub.add_argument(
        "--rate",
        default="10",
        metavar="N",
        help="requests it takes before it answers 429: a number a second, or a rate such as "
        "600/m (default 10)",
    )
    sub.add_argument("--seed", default="7", metavar="N", help="the story's random seed")
    sub.add_argument(
        "--first-id",
        default=None,
        metavar="N",
        help="order ids start after N (default: from the clock, so each run's are new)",
    )


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise SettingsError(f"--drop {raw!r} is not a fraction: use a number from 0 to 1, e.g. 0.2")
    return value


def _line(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    from bridge.core.tasks import stop_on_signals
    from bridge.mintsoft.sandbox import (
        ASN_BOOKED_IN,
        Asn,
        Listeners,
        Order,
        SandboxOptions,
        Sent,
        World,
        run_sandbox,
    )

    settings = settings_of(args)
    options = SandboxOptions(
        port=parse_int("--port", args.port, 0, 65535),
        orders=parse_int("--orders", args.orders, 0, 100_000),
        asns=parse_int("--asns", args.asns, 0, 100_000),
        drop=_fraction(args.drop),
        step=parse_duration(args.step, "--step ", example="30s"),
        rate=parse_rate(
            args.rate, "--rate ", bare_unit="s", high_per_second=1000, example="10/s"
        ).per_second,
        seed=parse_int("--seed", args.seed, 0, 2**31),
        first_id=None
        if args.first_id is None
        else parse_int("--first-id", args.first_id, 0, 2**30),
        api_key=settings.mintsoft_api_key,
        username=settings.mintsoft_username,
        password=settings.mintsoft_password,
    )

    def ready(url: str) -> None:
        key = (
            "the key in BRIDGE_MINTSOFT_API_KEY"
            if options.api_key
            else "any key (BRIDGE_MINTSOFT_API_KEY is unset)"
        )
        asns = f", {options.asns} ASNs" if options.asns else ""
        _line(
            f"sandbox Mintsoft API on {url} (ms-apikey: {key}); {options.orders} orders{asns}, "
            f"a move every {options.step:g}s, {options.drop:.0%} of webhook calls dropped"
        )
        key = "" if options.api_key else " BRIDGE_MINTSOFT_API_KEY=any-key"
        _line(
            f"try: BRIDGE_MINTSOFT_URL={url}{key} .venv/bin/mintsoft-bridge doctor "
            "(docs/sandbox.md: connect-actions, sync)"
        )

    def move(what: str, subject: Order | Asn) -> None:
        if what == "created":
            note = f" (client {subject.client_id}, warehouse {subject.warehouse_id})"
        else:
            note = "" if subject.actions else " (no connect action registered: nothing to call)"
        kind = "ASN" if isinstance(subject, Asn) else "order"
        _line(f"{kind} {subject.id} {what}{note}")

    def sent(call: Sent) -> None:
        kind = "ASN" if call.event == ASN_BOOKED_IN else "order"
        _line(f"{kind} {call.order_id} {call.event} webhook: {call.outcome}")

    def finished(world: World) -> None:
        moves = Counter(s.event for s in world.sent)
        dropped = sum(1 for s in world.sent if s.dropped)
        _line(
            f"all {options.orders} orders{f' and {options.asns} ASNs' if options.asns else ''} "
            "have moved; "
            f"{len(world.sent)} webhook calls "
            f"({', '.join(f'{n} {e}' for e, n in sorted(moves.items())) or 'none'}), "
            f"{dropped} dropped. Still serving; Ctrl-C stops."
        )

    async def main() -> None:
        with stop_on_signals() as stop:
            await run_sandbox(options, stop, Listeners(ready, move, sent, finished))

    run_async(main())
    return 0
