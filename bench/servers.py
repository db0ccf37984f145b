"""The HTTP baselines, each run as its own process: ``python -m bench.servers KIND PORT``.

``bare`` reads the body and answers 200: the HTTP ceiling. ``naive`` is the receiver a user
would write in an afternoon: aiohttp plus aio-pika, the ``APIKEY`` query parameter checked
in constant time, one confirmed persistent publish per request, mandatory (aio-pika's
default: an unroutable message is an error, as in the bridge). Both run on uvloop, like the
bridge, so the comparison is about the code.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import signal

import aio_pika
import uvloop
from aiohttp import web


async def _serve(app: web.Application, port: int) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


def bare_app() -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/webhooks/{event}", handle)
    return app


NAIVE_KEY = "bench-key"
"""The API key the naive receiver accepts in ``APIKEY`` (the bench's, as for the bridge)."""


async def naive(port: int, url: str, exchange_name: str) -> None:
    # The 20-line receiver: what the bridge has to beat.
    connection = await aio_pika.connect(url)
    channel = await connection.channel()  # publisher confirms are on by default
    exchange = await channel.get_exchange(exchange_name)
    key = NAIVE_KEY.encode()

    async def handle(request: web.Request) -> web.Response:
        given = request.query.get("APIKEY", "").encode()
        if not hmac.compare_digest(given, key):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.read()
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="order." + request.match_info["event"],
            mandatory=True,
        )
        return web.json_response({"status": "accepted"})

    app = web.Application()
    app.router.add_post("/webhooks/{event}", handle)
    try:
        await _serve(app, port)
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("bare", "naive"))
    parser.add_argument("port", type=int)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--exchange", default="")
    args = parser.parse_args()
    if args.kind == "bare":
        uvloop.run(_serve(bare_app(), args.port))
    else:
        uvloop.run(naive(args.port, args.url, args.exchange))


if __name__ == "__main__":
    main()
