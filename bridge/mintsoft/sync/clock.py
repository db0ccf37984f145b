"""Mintsoft's clock: its date-times carry no offset and are local to
``BRIDGE_MINTSOFT_TIMEZONE`` (Europe/London by default, so they jump back an hour each
October). Cursors are kept as Mintsoft's own strings and compared as naive local times; the
query window always reaches back far enough to cover that repeated hour and a commit that
lands a little after its timestamp. ``--since`` is read by
:func:`bridge.archive.window.parse_time`, the one parser of every command's times."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

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
