"""The one duration grammar and the one rate parser (bridge/core/durations.py), as every
setting, subscribers-file field and --since flag reads them; no broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.archive.window import parse_time
from bridge.cli import main
from bridge.core.durations import format_duration, parse_duration, parse_max_age, parse_rate
from bridge.core.settings import SettingsError, load_settings
from bridge.worker.subscribers import parse_subscribers

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("1.5h", 5400),
        ("30D", 30 * 86400),
        ("30d", 30 * 86400),
        ("2w", 14 * 86400),
        ("1W", 7 * 86400),
        (" 5 s ", 5),
        ("90MS", 0.09),
    ],
)
def test_durations_in_every_unit_and_case(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "s", "5x", "-5s", "5 s s", "1y", "five m", "1e3s"])
def test_a_bad_duration_says_where_and_gives_an_example(text: str) -> None:
    with pytest.raises(SettingsError, match=r"^BRIDGE_X='.*' is not a duration: .*e\.g\. 9m$"):
        parse_duration(text, "BRIDGE_X=", example="9m")


def test_a_capital_m_is_refused_not_guessed() -> None:
    # RabbitMQ's x-max-age reads M as months: taking "6M" as 6 minutes would trim an archive
    # meant to keep half a year.
    with pytest.raises(SettingsError, match="M is ambiguous"):
        parse_duration("6M")
    with pytest.raises(SettingsError, match=r"BRIDGE_ARCHIVE_MAX_AGE='6M'.*ambiguous"):
        load_settings({"BRIDGE_ARCHIVE_MAX_AGE": "6M"})


def test_bare_numbers_only_where_a_unit_is_named_and_ranges_hold() -> None:
    assert parse_duration("5", bare_unit="s") == 5
    with pytest.raises(SettingsError, match="out of range: use more than 0"):
        parse_duration("0s")
    with pytest.raises(SettingsError, match="at most 1h"):
        parse_duration("2h", high=3600)
    with pytest.raises(SettingsError, match="at least 1ms"):
        parse_duration("0.5ms", low=0.001)
    assert format_duration(604800) == "1w"
    assert [format_duration(s) for s in (0.2, 90, 5400, 86400)] == ["200ms", "90s", "90m", "1d"]


def test_settings_read_the_grammar() -> None:
    settings = load_settings(
        {
            "BRIDGE_SYNC_INTERVAL": "1m",
            "BRIDGE_SYNC_GRACE": "1.5h",
            "BRIDGE_PUBLISH_TIMEOUT": "500ms",
            "BRIDGE_MINTSOFT_RATE": "120/m",
            "BRIDGE_ARCHIVE_MAX_AGE": "2w",
        }
    )
    assert (settings.sync_interval, settings.sync_grace) == (60, 5400)
    assert settings.publish_timeout == pytest.approx(0.5)
    assert settings.mintsoft_rate == 2
    assert settings.archive_max_age == "14D"
    # The contract's bare forms still hold.
    assert load_settings({"BRIDGE_PUBLISH_TIMEOUT": "5"}).publish_timeout == 5
    assert load_settings({"BRIDGE_MINTSOFT_RATE": "0.5"}).mintsoft_rate == 0.5
    with pytest.raises(SettingsError, match=r"BRIDGE_SYNC_GRACE='31d' is out of range.*30d"):
        load_settings({"BRIDGE_SYNC_GRACE": "31d"})
    with pytest.raises(SettingsError, match=r"BRIDGE_MINTSOFT_RATE='2000' is out of range"):
        load_settings({"BRIDGE_MINTSOFT_RATE": "2000"})


@pytest.mark.parametrize(
    ("written", "broker"),
    [
        ("30D", "30D"),
        ("30d", "30D"),
        ("030D", "30D"),
        ("2w", "14D"),
        ("12h", "12h"),
        ("60m", "60m"),  # kept as written: RabbitMQ compares the text on a redeclare
        ("1.5h", "90m"),
        ("1.5d", "36h"),
        ("90s", "90s"),
        ("2000ms", "2s"),
    ],
)
def test_the_archive_age_reaches_rabbitmq_in_its_own_units(written: str, broker: str) -> None:
    assert parse_max_age("BRIDGE_ARCHIVE_MAX_AGE", written) == broker


def test_an_archive_age_that_rabbitmq_cannot_take_is_refused() -> None:
    for bad in ("1500ms", "0.5s", "0D"):
        with pytest.raises(SettingsError, match="BRIDGE_ARCHIVE_MAX_AGE"):
            parse_max_age("BRIDGE_ARCHIVE_MAX_AGE", bad)


def test_since_takes_the_same_grammar_and_names_the_flag() -> None:
    assert parse_time("30D", NOW, flag="--since") == NOW - timedelta(days=30)
    assert parse_time("2w", NOW, flag="--since") == NOW - timedelta(weeks=2)
    with pytest.raises(SettingsError, match=r"^--since '30x' is not a duration: .*e\.g\. 7d"):
        parse_time("30x", NOW, flag="--since")


@pytest.mark.parametrize("since", ["30D", "2w"])
def test_archive_find_accepts_the_retention_form(
    since: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No stream for this exchange: the command gets past its arguments and says so (exit 1).
    exchange = f"test.{uuid.uuid4().hex[:12]}"
    assert main(["archive", "find", "--since", since, "--exchange", exchange]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_archive_find_refuses_a_bad_since_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["archive", "find", "--since", "3 weeks"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--since '3 weeks'" in err and "e.g." in err


def test_the_subscribers_file_takes_weeks_and_rates() -> None:
    [sub] = parse_subscribers(
        {
            "subscriber": [
                {
                    "name": "erp",
                    "events": ["*"],
                    "handler": "tests.worker_helpers:record",
                    "retry_delays": ["5s", "1H", "1d", "1w"],
                    "rate_limit": "20/M".lower(),
                    "prefetch": 4,
                }
            ]
        }
    )
    assert sub.retry_delays_ms == (5000, 3_600_000, 86_400_000, 604_800_000)
    assert sub.rate_limit is not None and sub.rate_limit.per_second == pytest.approx(1 / 3)


def test_a_bad_toml_duration_names_the_subscriber_and_field(tmp_path: Path) -> None:
    document = {
        "subscriber": [
            {
                "name": "erp",
                "events": ["*"],
                "handler": "tests.worker_helpers:record",
                "retry_delays": ["5s", "2W"],
            }
        ]
    }
    with pytest.raises(SettingsError, match=r"subscriber 'erp': retry_delays: '2W' is out of"):
        parse_subscribers(document)


def test_rates() -> None:
    assert parse_rate("10/s").per_second == 10
    assert parse_rate("100/h").per_second == pytest.approx(100 / 3600)
    assert parse_rate("2", bare_unit="s").per_second == 2
    with pytest.raises(SettingsError, match=r"^rate_limit: '10' is not a rate: .*e\.g\. 10/s$"):
        parse_rate("10", "rate_limit: ")
