"""The local spool (not built yet: placeholder that says so)."""

from __future__ import annotations

from argparse import Namespace

from bridge.errors import CommandError
from bridge.settings import Settings

__all__ = ["Namespace"]


def status_command(settings: Settings, as_json: bool) -> int:
    raise CommandError("the local spool is not built yet in this version")
