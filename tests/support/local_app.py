"""An aiohttp app on a free loopback port, for the fakes tests talk to (Mintsoft, targets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge.mintsoft.sandbox.api import listen


async def serve_locally(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """Every method and path to ``handler`` on 127.0.0.1 (a port the system picks); returns
    the runner (``cleanup()`` stops it) and the base URL."""
    return await listen(handler, "127.0.0.1", 0)
