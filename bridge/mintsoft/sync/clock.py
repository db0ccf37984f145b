"""Mintsoft's clock: its date-times carry no offset and are local to
``BRIDGE_MINTSOFT_TIMEZONE`` (Europe/London by default, so they jump back an hour each
October). Cursors are kept as Mintsoft's own strings and compared as naive local times; the
query window always reaches back far enough to cover that repeated hour and a commit that
lands a little after its timestamp. Bad text raises :class:`SettingsError`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bridge.core.settings import SettingsError

OVERLAP = timedelta(minutes=5)
"""How far before its cursor each list query starts again: rows committed late (a slow
transaction stamps its start time) and clock skew; repeats are de-duplicated by order id."""

_FRACTION = re.compile(r"(\.\d{6})\d+")


class MintsoftClock:
    """Converts between Mintsoft's offset-less local times and UTC."""

    def __init__(self, zone: str) -> None:
        self.zone = ZoneInfo(zone)

    def parse(self, text: str) -> datetime:
        """``2026-11-30T10:00:00.1234567`` -> a naive local datetime (7-digit .NET ticks cut
        to microseconds); an offset, if Mintsoft ever sends one, is converted to local."""
        when = datetime.fromisoformat(_FRACTION.sub(r"\1", text.strip().replace("Z", "+00:00")))
        if when.tzinfo is not None:
            when = when.astimezone(self.zone).replace(tzinfo=None)
        return when

    @staticmethod
    def format(local: datetime) -> str:
        """The form Mintsoft answers with (and is the safest to send): no offset."""
        return local.replace(tzinfo=None).isoformat(timespec="milliseconds")

    def local(self, when: datetime) -> datetime:
        """An aware time as Mintsoft would stamp it."""
        return when.astimezone(self.zone).replace(tzinfo=None)

    def to_utc(self, local: datetime) -> datetime:
        """A Mintsoft local time in UTC. In the repeated autumn hour the later reading is
        taken, so an event never looks older than it is (its grace is never cut short)."""
        return local.replace(tzinfo=self.zone, fold=1).astimezone(UTC)

    def since(self, cursor: datetime, now: datetime) -> datetime:
        """Where a list query starts: ``OVERLAP`` before the cursor, and never after
        ``OVERLAP`` before the local time now (just after the clocks go back, local times
        repeat an hour that is below a cursor taken before)."""
        return min(cursor, self.local(now)) - OVERLAP


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: RFC 3339 (``2026-11-30T10:00:00Z``) or relative (``90m``, ``2h``,
    ``7d`` ago), as an aware UTC time."""
    value = text.strip().lower()
    relative = _RELATIVE.match(value)
    if relative:
        seconds = (
            float(relative.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[relative.group(2)]
        )
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SettingsError(
            f"--since {text!r} is not a time: use RFC 3339 (2026-11-30T10:00:00Z) or an age "
            "(90m, 2h, 7d)"
        ) from None
    if when.tzinfo is None:
        raise SettingsError(f"--since {text!r} has no offset: add Z (UTC) or +01:00")
    return when.astimezone(UTC)
