"""What a test session leaves on the shared broker: every queue and exchange this process
declared (through aiormq, whatever the caller: the bridge under test, a probe, aio-pika)
and every name a test made up for one (an exchange fixture, a subscriber: what a
subprocess declares under it counts too), checked against the broker when the session ends.

The check lists the broker with ``rabbitmqctl`` (one call each for queues and exchanges),
so it runs only against a broker on this machine with ``rabbitmqctl`` at hand; otherwise it
says nothing. Names made by other processes (another test run, another xdist worker) are
never reported: only this process's are compared.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from aiormq.channel import Channel

MADE: dict[str, str] = {}
"""Name (or prefix) -> the test that declared or made it."""

_LOCAL = {"127.0.0.1", "localhost", "::1"}


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "(outside a test)").rsplit(" ", 1)[0]


def made(name: str) -> str:
    """Note ``name`` (an exchange or subscriber name a test made up) and return it."""
    MADE.setdefault(name, _current_test())
    return name


def _noting(declare: Callable[..., Awaitable[Any]], key: str) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(declare)
    async def noted(self: Channel, *args: Any, **kwargs: Any) -> Any:
        name = args[0] if args else kwargs.get(key, "")
        if name and not kwargs.get("passive") and not str(name).startswith("amq."):
            made(str(name))
        return await declare(self, *args, **kwargs)

    return noted


def note_declarations() -> None:
    """From now on, note every queue and exchange this process declares."""
    if not getattr(Channel.queue_declare, "__wrapped__", None):
        Channel.queue_declare = _noting(Channel.queue_declare, "queue")  # type: ignore[method-assign,assignment]
        Channel.exchange_declare = _noting(Channel.exchange_declare, "exchange")  # type: ignore[method-assign,assignment]


def _listed(what: str) -> list[str] | None:
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    if not os.path.exists(ctl):
        return None
    try:
        done = subprocess.run(
            [ctl, "-q", what, "name"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in done.stdout.splitlines()[1:] if line.strip()]


def under(name: str, prefixes: Iterable[str]) -> str | None:
    """The noted name ``name`` is, or stands under (``<prefix>.<anything>``)."""
    for prefix in prefixes:
        if name == prefix or name.startswith(prefix + "."):
            return prefix
    return None


def leftovers(amqp_url: str) -> list[str] | None:
    """``"<queue or exchange> (<test that made it>)"`` for each still on the broker;
    ``None`` when the broker cannot be listed from here."""
    if not MADE or urlsplit(amqp_url).hostname not in _LOCAL:
        return None
    queues, exchanges = _listed("list_queues"), _listed("list_exchanges")
    if queues is None or exchanges is None:
        return None
    found = []
    for kind, names in (("queue", queues), ("exchange", exchanges)):
        for name in names:
            prefix = under(name, MADE)
            if prefix is not None:
                found.append(f"{kind} {name} ({MADE[prefix]})")
    return sorted(found)
