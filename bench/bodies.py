"""Body cases, bridge against the naive receiver: ``python -m bench.bodies`` (also a part of
``python -m bench``, ``--only bodies``).

- ``distinct``: the despatched fixture with a different order ``ID`` in every request (real
  traffic: every webhook its own message id);
- ``identical``: the very same bytes in every request (a first load test with one fixture,
  ``hey -D order.json``): every webhook has the same message id;
- ``non-ascii``: a Mintsoft-shaped order whose names, addresses and item details are in
  é, ü, ł, 中文 (common in real orders), a different ``ID`` in every request.

Each case saturates both servers with ``wrk -t1 -c32`` in interleaved rounds; the median
round is kept. Reported per server: requests/s and CPU µs per request (the server process's
CPU time over the requests it answered: steadier than requests/s on a shared machine).
Loopback only, bounded (about 2 minutes), a unique exchange deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench import load
from bench.run import (
    API_KEY,
    FIXTURE,
    Broker,
    bridge_command,
    bridge_env,
    compact_body,
    free_port,
    median_round,
    proc_status,
    running,
)
from bridge.amqp.topology import declare, delete, receiver_topology, unrouted_name

Result = dict[str, Any]
CASES = ("distinct", "identical", "non-ascii")
SERVERS = ("naive", "bridge")


def non_ascii_body(directory: Path) -> Path:
    """The despatched fixture with the customer's names and address, the company and the
    item details in Polish, German, French and Chinese (compact, order ``ID`` first)."""
    document = orjson.loads(FIXTURE.read_bytes())
    document.update(
        FirstName="Zoë Łucja",
        LastName="Müller-Wąsowska",
        CompanyName="Ærøskøbing Café & Crème GmbH",
        Address1="ul. Świętokrzyska 30/63",
        Address2="Straße der Pariser Kommune 12",
        Address3="上海市浦东新区世纪大道100号",
        Town="Kraków",
        County="Małopolskie",
        Email="zoe.muller@example.com",
    )
    document["Channel"]["Description"] = "Boutique française — 网上商店"
    for item in document.get("OrderItems") or []:
        item["Details"] = "Größe: M; Farbe: Grün; 颜色: 绿色; Taille: élevée"
    path = directory / "body-non-ascii.json"
    path.write_bytes(orjson.dumps(document))
    return path


def ascii_twin(path: Path) -> Path:
    """The same body with every non-ASCII character replaced by as many ``x`` as its UTF-8
    bytes: same structure, same length, ASCII only (what non-ASCII text costs, alone)."""
    text = path.read_bytes().decode()
    twin = "".join(c if c.isascii() else "x" * len(c.encode()) for c in text)
    out = path.with_name(path.stem + "-ascii.json")
    out.write_bytes(twin.encode())
    return out


async def compare(broker: Broker, logs: Path, quick: bool = False) -> Result:
    """The three cases on a fresh naive receiver and bridge, against ``broker``."""
    seconds, warmup, rounds = (2.0, 1.0, 2) if quick else (3.0, 2.0, 5)
    bodies = {
        "distinct": compact_body(logs),
        "identical": compact_body(logs),
        "non-ascii": non_ascii_body(logs),
    }
    exchange = f"bench.{uuid.uuid4().hex[:10]}"
    topology = receiver_topology(exchange)
    await declare(broker.ch, topology)
    unrouted = unrouted_name(exchange)
    measured: dict[str, dict[str, list[Result]]] = {c: {s: [] for s in SERVERS} for c in CASES}
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls: dict[str, tuple[str, int]] = {}
            for name in SERVERS:
                port = free_port()
                url = f"http://127.0.0.1:{port}/webhooks/despatched?APIKEY={API_KEY}"
                if name == "bridge":
                    command = bridge_command()
                    # The archive off: both servers publish to one exchange, which an
                    # archive would make both servers feed.
                    env = bridge_env(broker.url, exchange, port, logs, archive=False)
                    probe = f"http://127.0.0.1:{port}/readyz"
                else:
                    command = [sys.executable, "-m", "bench.servers", name, str(port)]
                    command += ["--url", broker.url, "--exchange", exchange]
                    env, probe = {}, url
                process = await stack.enter_async_context(
                    running(f"bodies-{name}", command, env, probe, logs)
                )
                urls[name] = (url, process.pid)
            for url, _ in urls.values():
                await load.saturate(url, bodies["distinct"], warmup)
            await broker.purge(unrouted)
            for index in range(rounds):
                print(f"bench: body cases, round {index + 1}/{rounds}", flush=True)
                for case in CASES:
                    for name in SERVERS:
                        url, pid = urls[name]
                        before = proc_status(pid)["cpu_s"]
                        result = await load.saturate(
                            url, bodies[case], seconds, identical=case == "identical"
                        )
                        used = proc_status(pid)["cpu_s"] - before
                        result["cpu_us_per_request"] = used / max(result["requests"], 1) * 1e6
                        measured[case][name].append(result)
                        await broker.purge(unrouted)
    finally:
        with contextlib.suppress(Exception):
            await delete(broker.ch, topology)
    out: Result = {"body_bytes": {c: p.stat().st_size for c, p in bodies.items()}}
    for case in CASES:
        row = {name: median_round(measured[case][name], "rps") for name in SERVERS}
        for name in SERVERS:
            cpu = sorted(r["cpu_us_per_request"] for r in measured[case][name])
            row[name]["cpu_us_per_request"] = cpu[len(cpu) // 2]  # its own median
        naive, bridge = row["naive"], row["bridge"]
        row["rps_ratio"] = bridge["rps"] / naive["rps"] if naive["rps"] else None
        row["cpu_ratio"] = (
            naive["cpu_us_per_request"] / bridge["cpu_us_per_request"]
            if bridge["cpu_us_per_request"]
            else None
        )
        out[case] = row
    return out


def table(bodies: Result) -> str:
    """Markdown: one row per case, both servers, and the bridge/naive ratios."""
    lines = [
        "| body | naive requests/s | bridge requests/s | bridge/naive | naive CPU us/req "
        "| bridge CPU us/req | naive/bridge CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in CASES:
        row = bodies.get(case)
        if not row:
            continue
        naive, bridge = row["naive"], row["bridge"]
        size = bodies.get("body_bytes", {}).get(case, 0)
        lines.append(
            f"| {case} ({size:,} B) | {naive['rps']:,.0f} | {bridge['rps']:,.0f} "
            f"| {row['rps_ratio']:.2f}x | {naive['cpu_us_per_request']:.0f} "
            f"| {bridge['cpu_us_per_request']:.0f} | {row['cpu_ratio']:.2f}x |"
        )
    return "\n".join(lines)


async def _main(quick: bool) -> Result:
    logs = Path(tempfile.mkdtemp(prefix="mintsoft-bench-bodies-"))
    broker = Broker(os.environ.get("BRIDGE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"))
    try:
        await broker.open()
    except Exception as exc:
        sys.exit(f"bench: cannot reach RabbitMQ at 127.0.0.1:5672 ({exc}); run `make broker`")
    try:
        return await compare(broker, logs, quick)
    finally:
        await broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bodies", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    load.ensure_tools()
    import uvloop

    bodies = uvloop.run(_main(args.quick))
    print(table(bodies))
    print(orjson.dumps(bodies).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
