"""An aiohttp app on a free loopback port, for the fakes tests talk to (Mintsoft, targets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web


async def serve_locally(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """Every method and path to ``handler`` on 127.0.0.1 (a port the system picks); returns
    the runner (``cleanup()`` stops it) and the base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
