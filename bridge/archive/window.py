"""Times of an archive window: RFC 3339 (``2026-11-30T10:00:00Z``) or relative (``90m``,
``2h``, ``30D``, ``2w``: that long ago, in the one duration grammar of
:mod:`bridge.core.durations`), always as aware UTC datetimes.

Pure functions; a text that is neither raises :class:`SettingsError` naming the forms that
work (one line, exit 2 on the command line).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.core.durations import DURATION_SHAPE, parse_duration
from bridge.core.settings import SettingsError

DEFAULT_WINDOW = timedelta(hours=24)
"""``archive find`` without ``--since``: the last 24 hours."""


def parse_time(
    text: str, now: datetime, *, offset_required: bool = False, flag: str = "time"
) -> datetime:
    """``text`` as an aware UTC datetime: RFC 3339 with an offset or ``Z`` (a time without
    one is taken as UTC, or refused with ``offset_required``), or a relative age before
    ``now``. The one parser of every command's ``--since`` / ``--until``; errors start
    with ``flag``."""
    raw = text.strip()
    if DURATION_SHAPE.match(raw):
        seconds = parse_duration(raw, f"{flag} ", example="7d", low=0)
        try:
            return now.astimezone(UTC) - timedelta(seconds=seconds)
        except OverflowError:
            raise SettingsError(f"{flag} {text!r} is too far back: use e.g. 7d") from None
    try:
        value = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(
            f"{flag} {text!r} is neither RFC 3339 nor relative: use e.g. "
            "2026-11-30T10:00:00Z, 90m, 2h or 7d"
        ) from None
    if value.tzinfo is None:
        if offset_required:
            # sync: Mintsoft's own times are local and offset-less, so a bare time is
            # ambiguous there (UTC or Mintsoft's zone?): make the user say.
            raise SettingsError(f"{flag} {text!r} has no offset: add Z (UTC) or +01:00")
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def window(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The half-open window ``[since, until)``: ``since`` defaults to 24 hours before
    ``now``, ``until`` to ``now``; refused when it is empty."""
    end = parse_time(until, now, flag="--until") if until else now.astimezone(UTC)
    start = parse_time(since, now, flag="--since") if since else end - DEFAULT_WINDOW
    if start >= end:
        raise SettingsError(
            f"--since {start.isoformat()} is not before --until {end.isoformat()}: "
            "give an earlier --since"
        )
    return start, end


def parse_received_at(value: object) -> datetime | None:
    """An ``x-received-at`` header (RFC 3339, milliseconds) as an aware datetime, or
    ``None`` when absent or malformed."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
