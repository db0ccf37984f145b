"""Sending test webhooks (not built yet: placeholder that says so)."""

from __future__ import annotations

from argparse import Namespace

from bridge.errors import CommandError
from bridge.settings import Settings

__all__ = ["Namespace"]


async def simulate_command(settings: Settings, args: Namespace) -> int:
    raise CommandError("sending test webhooks is not built yet in this version")
