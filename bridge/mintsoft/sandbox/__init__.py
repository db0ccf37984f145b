"""``sandbox``: a local stand-in for Mintsoft's API (contract section 11).

``world`` is Mintsoft's side (orders, tracking, splits, connect actions, the webhook calls
it makes), ``api`` the HTTP endpoints over it, ``story`` what happens to the orders over
time. :func:`run_sandbox` puts the three together until ``stop`` is set; the tests' fakes use
the same three pieces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.core.contract import ASN_BOOKED_IN
from bridge.core.settings import SettingsError
from bridge.mintsoft.sandbox.api import SandboxApi, listen
from bridge.mintsoft.sandbox.story import STEP, Story
from bridge.mintsoft.sandbox.world import Asn, Order, Sent, World

DEFAULT_PORT = 8070
"""Beside serve (8080), console (8090) and the metrics ports (9101, 9102)."""
DEFAULT_RATE = 10.0
"""Requests a second before a 429: well above sync's default BRIDGE_MINTSOFT_RATE of 2."""


@dataclass(frozen=True)
class SandboxOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    orders: int = 10
    asns: int = 0
    drop: float = 0.2
    step: float = STEP
    seed: int = 7
    first_id: int | None = None
    """The first order's id minus one; ``None``: from the clock (a hundred a second), so a
    second run's orders never repeat the first's (whose webhooks the archive may hold)."""
    rate: float | None = DEFAULT_RATE
    api_key: str | None = None
    username: str | None = None
    password: str | None = None


@dataclass
class Listeners:
    """What the caller is told: the URL once serving, each order's move, each webhook
    call, and when the story has played out."""

    ready: Callable[[str], None] = lambda url: None
    move: Callable[[str, Order | Asn], None] = lambda move, subject: None
    sent: Callable[[Sent], None] = lambda sent: None
    finished: Callable[[World], None] = lambda world: None


async def run_sandbox(options: SandboxOptions, stop: asyncio.Event, tell: Listeners) -> World:
    """Serve the API and play the story until ``stop`` is set; returns the world as it
    ended. A port in use raises :class:`SettingsError` before anything happens."""
    first_id = options.first_id
    if first_id is None:
        first_id = int(time.time() * 100) % 1_000_000_000
    world = World(drop=options.drop, seed=options.seed, first_id=first_id)
    world.on_sent = tell.sent
    api = SandboxApi(world, options.api_key, options.username, options.password, options.rate)
    try:
        runner, url = await listen(api.handle, options.host, options.port)
    except OSError as exc:
        raise SettingsError(
            f"cannot listen on {options.host}:{options.port} ({exc.strerror or exc}): "
            "choose another port with --port"
        ) from None
    await world.open()
    story = Story(world, options.orders, options.step, options.seed, tell.move, options.asns)
    tell.ready(url)
    playing = asyncio.ensure_future(story.play())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({playing, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if playing.done():
            playing.result()
            tell.finished(world)
            await stopping
    finally:
        for task in (playing, stopping):
            task.cancel()
        await asyncio.gather(playing, stopping, return_exceptions=True)
        await world.close()
        await runner.cleanup()
        await world.close()
        await runner.cleanup()
    return world


__all__ = [
    "ASN_BOOKED_IN",
    "DEFAULT_PORT",
    "Asn",
    "Listeners",
    "Order",
    "SandboxApi",
    "SandboxOptions",
    "Sent",
    "World",
]
