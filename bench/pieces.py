"""``python -m bench.pieces --before DIR``: the CPU of the receiver's per-request pieces, this
checkout against an earlier one (``DIR`` holds its ``bridge/`` package, e.g. from
``git archive main bridge | tar -x -C DIR``), without HTTP or a broker.

Each piece runs in a fresh process per side (the import path decides which bridge), the
sides alternating, ``--rounds`` times; the median of each is reported in CPU microseconds
per call (process time: steadier than wall time on a shared machine):

- ``access_log``: one webhook's access line, text format, to the configured handler;
- ``answer_200``: the 200 answer of a kept webhook (counter included);
- ``body``: the headers of the non-ASCII order (JSON check, UTF-8 check, order_headers);
- ``body_ascii``: the same for its ASCII twin;
- ``envelope``: the whole envelope of the non-ASCII order as the route builds it (the body
  check, the headers, the message id, the received-at time).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CALLS = 20_000


def _measure(calls: int) -> dict[str, float]:
    """In the child: every piece, CPU us per call."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from bench.bodies import ascii_twin, non_ascii_body
    from bridge.core import logs
    from bridge.core.body import read_document
    from bridge.core.contract import order_headers
    from bridge.receiving import receiver

    try:
        from bridge.core.access_log import AccessLogger
    except ImportError:  # before the access log had a module of its own
        AccessLogger = logs.AccessLogger  # type: ignore[attr-defined]

    logs.configure("text")
    handler: Any = logging.getLogger().handlers[0]
    handler.stream = io.StringIO()
    request = make_mocked_request("POST", "/webhooks/despatched?APIKEY=k")
    request[logs.WEBHOOK_EVENT] = "despatched"
    request[logs.WEBHOOK_LOGGED] = logs.LoggedWebhook(
        "0123456789abcdef0123456789abcdef", {"x-request-id": "abcd", "x-order-id": "123"}
    )
    response = web.Response(status=200)
    access = AccessLogger(logging.getLogger("aiohttp.access"), "")
    directory = Path(tempfile.mkdtemp(prefix="mintsoft-bench-pieces-"))
    body = non_ascii_body(directory)
    bodies = {"body": body.read_bytes(), "body_ascii": ascii_twin(body).read_bytes()}
    message_id = "0123456789abcdef0123456789abcdef"

    def answer() -> None:
        if hasattr(receiver, "_kept"):
            receiver._kept("despatched", "accepted", message_id, "abcd00000001")
        else:
            payload = {"status": "accepted", "message_id": message_id}
            receiver._answer("despatched", 200, payload, {"X-Request-Id": "abcd00000001"})

    def timed(piece: Any) -> float:
        started = time.process_time()
        for _ in range(calls):
            piece()
        return (time.process_time() - started) / calls * 1e6

    async def pieces() -> dict[str, float]:
        def log_line() -> None:
            access.log(request, response, 0.0012)
            if len(handler._pending) > 64:  # as a loop turn's flush would
                handler._pending.clear()

        out = {"access_log": timed(log_line), "answer_200": timed(answer)}
        for name, data in bodies.items():
            out[name] = timed(lambda data=data: order_headers(read_document(data)))
        data = bodies["body"]
        out["envelope"] = timed(
            lambda: receiver._envelope("despatched", data, "abcd00000001", 1.7e9, None)
        )
        return out

    return asyncio.run(pieces())


def _side(path: Path, calls: int) -> dict[str, float]:
    code = (
        f"import sys, json; sys.path[:0] = [{str(path)!r}, {str(ROOT)!r}]; "
        f"from bench.pieces import _measure; print(json.dumps(_measure({calls})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pieces", description=__doc__)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sides = {"before": args.before.resolve(), "now": ROOT}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for index in range(args.rounds):
        for name in list(sides) if index % 2 == 0 else list(sides)[::-1]:
            runs[name].append(_side(sides[name], CALLS))
    print("| piece | before us/call | now us/call | now / before |")
    print("| --- | ---: | ---: | ---: |")
    for piece in runs["now"][0]:
        before = statistics.median(r[piece] for r in runs["before"])
        now = statistics.median(r[piece] for r in runs["now"])
        print(f"| {piece} | {before:.2f} | {now:.2f} | {now / before:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
