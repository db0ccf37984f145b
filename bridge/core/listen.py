"""A listening socket that cannot be opened, said as a bad setting: one line naming the
setting and the fix (exit 2), never a ``socket.gaierror`` or ``OSError`` traceback."""

from __future__ import annotations

import errno
import socket

from bridge.core.settings import SettingsError


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
