"""What the bridge's HTTP listeners share: a ``Server`` header that names no versions, and the
separate metrics listener (``GET /metrics``, ``GET /healthz``) of ``serve``, ``worker``,
``sync`` and ``ledger``.

aiohttp answers ``Server: Python/3.x aiohttp/3.y`` by default, which tells a scanner which
published flaws to try; every app built here answers ``Server: mintsoft-bridge`` instead,
including the 400s aiohttp writes itself for a request it cannot parse (those are never
routed to the app, so only aiohttp's module-wide default reaches them: it is replaced for the
whole process, which only ever runs the bridge's own listeners).
A listener that cannot bind its address (a bad host, a port in use) is a bad setting:
:func:`listen_error` and :func:`check_listen` raise :class:`~bridge.core.settings.SettingsError`
naming the setting and the fix (exit 2), never a ``socket.gaierror`` traceback.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator, Callable

from aiohttp import web, web_response

from bridge.core import metrics
from bridge.core.settings import Settings, SettingsError

SERVER_HEADER = "mintsoft-bridge"

DEFAULT_METRICS_HOST = "127.0.0.1"


def hide_versions(app: web.Application) -> None:
    """Make every answer of ``app`` (and of every other app of this process) carry
    ``Server: mintsoft-bridge``, no versions."""
    # aiohttp sets the header of every answer, routed or not (a request line or header it
    # cannot parse), from this module-wide default (setdefault, when the answer has none);
    # a test checks it still takes effect with the installed aiohttp. Cheaper than a
    # response-prepare signal, which costs a coroutine per answer.
    web_response.SERVER_SOFTWARE = SERVER_HEADER  # type: ignore[attr-defined]


async def start_metrics_listener(
    host: str, port: int, on_scrape: Callable[[], None] | None = None, *, process: str
) -> web.AppRunner:
    """Serve ``/metrics`` (Prometheus text, the families ``process`` owns: see
    :data:`bridge.core.metrics.OWNERS`) and ``/healthz`` on ``host:port``; ``on_scrape``
    is called after each answered scrape. Stop it with ``runner.cleanup()``."""
    export = metrics.scraper(process)

    async def scrape(request: web.Request) -> web.Response:
        response = await export(request)
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
        raise listen_error(exc, host, port, "BRIDGE_METRICS_HOST", "BRIDGE_METRICS_PORT") from None
    return runner


def metrics_address(settings: Settings) -> tuple[str, int] | None:
    """Where a long-running process serves ``/metrics`` and ``/healthz``:
    ``BRIDGE_METRICS_PORT`` (the ``--metrics-port`` flag) on ``BRIDGE_METRICS_HOST``
    (127.0.0.1 unless set: metrics are for Prometheus, not for whoever reaches
    ``BRIDGE_HOST``); ``None``: no listener."""
    if settings.metrics_port is None:
        return None
    return settings.metrics_host, settings.metrics_port


@contextlib.asynccontextmanager
async def serving_metrics(settings: Settings, *, process: str) -> AsyncIterator[None]:
    """The metrics listener of a long-running process (``worker``, ``sync``, ``ledger``) on
    ``BRIDGE_METRICS_HOST:BRIDGE_METRICS_PORT`` for as long as the block runs; none when the
    port is not set. A port that cannot be bound raises before the block starts."""
    address = metrics_address(settings)
    runner = None
    if address is not None:
        runner = await start_metrics_listener(*address, process=process)
    try:
        yield
    finally:
        if runner is not None:
            await runner.cleanup()


def listen_error(
    exc: OSError, host: str, port: int, host_setting: str, port_setting: str
) -> SettingsError:
    """The :class:`SettingsError` for a failed bind of ``host:port``; the settings named are
    the ones the user sets (``BRIDGE_HOST`` and ``BRIDGE_PORT``, or a flag's name)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return SettingsError(
            f"{host_setting}={host!r} is not an address of this machine ({reason}): use one of "
            "its IP addresses, 127.0.0.1 for this machine only, or 0.0.0.0 for every interface"
        )
    if exc.errno == errno.EADDRINUSE:
        return SettingsError(
            f"{port_setting}={port}: the port is already in use on {host} (another process "
            f"listens there): stop that process or set {port_setting} to a free port"
        )
    if exc.errno == errno.EACCES:
        return SettingsError(
            f"{port_setting}={port}: listening there needs privileges ({reason}): use a port "
            "above 1023 (e.g. 8080) behind your proxy"
        )
    return SettingsError(
        f"cannot listen on {host}:{port} ({reason}): check {host_setting} and {port_setting}"
    )


def check_listen(host: str, port: int, host_setting: str, port_setting: str) -> None:
    """Bind ``host:port`` once and let go, so that a bad address or a port in use is
    reported before the process connects to anything (the real bind may still fail in a
    race: its caller reports that with :func:`listen_error` too)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in infos:
            with socket.socket(family, kind, proto) as probe:
                # As the server binds: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        raise listen_error(exc, host, port, host_setting, port_setting) from None
