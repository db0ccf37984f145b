"""Dead-letter queues (not built yet: placeholder that says so)."""

from __future__ import annotations

from argparse import Namespace

from bridge.errors import CommandError
from bridge.settings import Settings

__all__ = ["Namespace"]


async def list_command(settings: Settings, name: str, limit: int | None) -> int:
    raise CommandError("dead-letter queues is not built yet in this version")


async def replay_command(settings: Settings, name: str, limit: int | None) -> int:
    raise CommandError("dead-letter queues is not built yet in this version")
