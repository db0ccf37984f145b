"""Deployment checks (not built yet: placeholder that says so)."""

from __future__ import annotations

from argparse import Namespace

from bridge.errors import CommandError
from bridge.settings import Settings

__all__ = ["Namespace"]


async def doctor_command(settings: Settings, args: Namespace) -> int:
    raise CommandError("deployment checks is not built yet in this version")
