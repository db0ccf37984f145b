"""The Mintsoft API client (not built yet: placeholder that says so)."""

from __future__ import annotations

from argparse import Namespace

from bridge.errors import CommandError
from bridge.settings import Settings

__all__ = ["Namespace"]


async def connect_actions_command(settings: Settings, args: Namespace) -> int:
    raise CommandError("the Mintsoft API client is not built yet in this version")
