"""The subscribers file of ``worker --config`` (not built yet: placeholder that says so)."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import CommandError


@dataclass(frozen=True)
class Subscriber:
    name: str
    events: tuple[str, ...]
    retry_delays_ms: tuple[int, ...]


def load_subscribers(path: str) -> list[Subscriber]:
    raise CommandError("subscribers files are not built yet in this version")
