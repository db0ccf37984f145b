"""What the bridge's HTTP listeners share: a ``Server`` header that names no versions, and the
separate metrics listener (``GET /metrics``, ``GET /healthz``) of ``serve`` and ``worker``.

aiohttp answers ``Server: Python/3.x aiohttp/3.y`` by default, which tells a scanner which
published flaws to try; every app built here answers ``Server: mintsoft-bridge`` instead,
including the 400s aiohttp writes itself for a request it cannot parse (those are never
routed to the app, so only aiohttp's module-wide default reaches them: it is replaced for the
whole process, which only ever runs the bridge's own listeners).
A metrics listener that cannot bind its address raises
:class:`~bridge.core.settings.SettingsError` naming ``BRIDGE_METRICS_PORT`` (exit 2).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web, web_response

from bridge.core import metrics
from bridge.core.settings import SettingsError

SERVER_HEADER = "mintsoft-bridge"

DEFAULT_METRICS_HOST = "127.0.0.1"


async def _plain_server(request: web.Request, response: web.StreamResponse) -> None:
    # Runs after aiohttp set its default, so this value is the one sent.
    response.headers["Server"] = SERVER_HEADER


def hide_versions(app: web.Application) -> None:
    """Make every answer of ``app`` carry ``Server: mintsoft-bridge``, no versions."""
    app.on_response_prepare.append(_plain_server)
    # The default of answers written before routing (a request line or header aiohttp cannot
    # parse); a test checks it still takes effect with the installed aiohttp.
    web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]


async def start_metrics_listener(
    host: str, port: int, on_scrape: Callable[[], None] | None = None
) -> web.AppRunner:
    """Serve ``/metrics`` (Prometheus text) and ``/healthz`` on ``host:port``; ``on_scrape``
    is called after each answered scrape. Stop it with ``runner.cleanup()``."""

    async def scrape(request: web.Request) -> web.Response:
        response = await metrics.scrape(request)
        if on_scrape is not None:
            on_scrape()
        return response

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    hide_versions(app)
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as exc:
        await runner.cleanup()
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            f"BRIDGE_METRICS_PORT={port} cannot be served on {host} ({reason}): "
            "pick another port (or BRIDGE_METRICS_HOST address)"
        ) from None
    return runner
