"""Running subscribers (not built yet: placeholder that says so)."""

from __future__ import annotations

from argparse import Namespace

from bridge.errors import CommandError
from bridge.settings import Settings

__all__ = ["Namespace"]


async def worker_command(settings: Settings, config: str) -> int:
    raise CommandError("running subscribers is not built yet in this version")
