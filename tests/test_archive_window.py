"""Archive window times: RFC 3339 and relative forms, and the one-line errors (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.archive.window import DEFAULT_WINDOW, parse_time, window
from bridge.core.settings import SettingsError, load_settings

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30T10:00:00.250Z", datetime(2026, 11, 30, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-30T11:00:00+01:00", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30T10:00:00", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("30s", NOW - timedelta(seconds=30)),
        ("7D", NOW - timedelta(days=7)),
        ("30D", NOW - timedelta(days=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("1.5h", NOW - timedelta(minutes=90)),
    ],
)
def test_times_are_rfc3339_or_relative_and_always_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["yesterday", "2h ago", "-2h", "2026-13-01T00:00:00Z", ""])
def test_a_bad_time_names_the_forms_that_work(text: str) -> None:
    with pytest.raises(SettingsError, match=r"RFC 3339 nor relative: use e\.g\."):
        parse_time(text, NOW)


def test_the_default_window_is_the_last_24_hours_and_an_empty_one_is_refused() -> None:
    assert window(None, None, NOW) == (NOW - DEFAULT_WINDOW, NOW)
    assert window("2h", None, NOW) == (NOW - timedelta(hours=2), NOW)
    with pytest.raises(SettingsError, match="not before --until"):
        window("1h", "2h", NOW)
    east = timezone(timedelta(hours=5))
    assert window("1h", None, NOW.astimezone(east))[1].tzinfo == UTC


def test_archive_settings_defaults_and_checks() -> None:
    settings = load_settings({})
    assert (settings.archive, settings.archive_max_age, settings.archive_max_bytes) == (
        True,
        "30D",
        50_000_000_000,
    )
    assert load_settings({"BRIDGE_ARCHIVE_MAX_AGE": "7d"}).archive_max_age == "7D"
    assert load_settings({"BRIDGE_ARCHIVE_MAX_AGE": "12h"}).archive_max_age == "12h"
    for bad in ("30", "D", "30x", "0D", "thirty days"):
        with pytest.raises(SettingsError, match="BRIDGE_ARCHIVE_MAX_AGE"):
            load_settings({"BRIDGE_ARCHIVE_MAX_AGE": bad})
    with pytest.raises(SettingsError, match="BRIDGE_ARCHIVE_MAX_BYTES"):
        load_settings({"BRIDGE_ARCHIVE_MAX_BYTES": "50GB"})
    assert load_settings({"BRIDGE_ARCHIVE": "false"}).archive is False
