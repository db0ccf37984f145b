"""Durations and rates: the one grammar of every setting, subscribers-file field, flag and
console form that takes a length of time or a rate (docs/durations.md).

A duration is a number and a unit: ``200ms``, ``30s``, ``15m``, ``2h``, ``30d``, ``2w``.
Units are ``ms``, ``s``, ``m``, ``h``, ``d`` and ``w``, in any case (``30D`` is ``30d``),
except a capital ``M``: RabbitMQ reads it as months and this grammar would read minutes, so
it is refused rather than guessed. The number may have a fraction (``1.5h``, ``0.5s``);
space between number and unit is allowed. A bare number is a duration only where the caller
names its unit (``BRIDGE_PUBLISH_TIMEOUT=5`` is seconds).

A rate is a count per duration: ``10/s``, ``30/m``, ``100/h``, ``5/30s``; a bare number is a
rate only where the caller names its unit (``BRIDGE_MINTSOFT_RATE=2`` is per second).

Pure functions. A text that does not parse, or is out of the caller's range, raises
:class:`SettingsError` (a ValueError) saying where it came from, the forms that work and an
example: one line, exit 2 at the command line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bridge.core.values import SettingsError

UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
"""Seconds per unit, in the order they are written out (largest last)."""

DURATION_SHAPE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)$")
"""A number and letters: what a duration looks like, well formed or not."""
_UNIT_NAMES = "ms, s, m, h, d or w"


def parse_duration(
    text: str,
    where: str = "",
    *,
    example: str = "15m",
    bare_unit: str | None = None,
    low: float | None = None,
    high: float | None = None,
) -> float:
    """``text`` as seconds. ``where`` prefixes every error (``"BRIDGE_SYNC_GRACE="``,
    ``"subscriber 'erp': timeout: "``, ``"--since "``); ``bare_unit`` is the unit of a
    number written without one (none: refused). The value must be above 0 (or at least
    ``low``) and at most ``high``."""
    raw = text.strip()
    match = DURATION_SHAPE.match(raw)
    unit = match.group(2) if match else ""
    if match is not None and unit == "" and bare_unit is not None:
        unit = bare_unit
    if match is None or unit.lower() not in UNITS or unit == "M":
        if unit == "M":
            reason = (
                "M is ambiguous (months to RabbitMQ, minutes here): write m for minutes, "
                "or months as days (180d)"
            )
        else:
            bare = f"a number of {_unit_word(bare_unit)} or " if bare_unit else ""
            reason = f"use {bare}a number and a unit ({_UNIT_NAMES})"
        raise SettingsError(f"{where}{text!r} is not a duration: {reason}, e.g. {example}")
    seconds = float(match.group(1)) * UNITS[unit.lower()]
    if (low is None and seconds <= 0) or (low is not None and seconds < low):
        least = "more than 0" if low is None else f"at least {format_duration(low)}"
        most = f", at most {format_duration(high)}" if high is not None else ""
        raise SettingsError(f"{where}{text!r} is out of range: use {least}{most}, e.g. {example}")
    if high is not None and seconds > high:
        raise SettingsError(
            f"{where}{text!r} is out of range: use at most {format_duration(high)}, e.g. {example}"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` written in the grammar with the largest unit that holds it whole
    (``300`` -> ``5m``, ``0.2`` -> ``200ms``, ``90`` -> ``90s``)."""
    for unit, size in reversed(UNITS.items()):
        count = seconds / size
        if count >= 1 and math.isclose(count, round(count), abs_tol=1e-9):
            return f"{round(count)}{unit}"
    return f"{seconds * 1000:g}ms"


@dataclass(frozen=True)
class Rate:
    """At most ``count`` events per ``seconds``: a whole ``count`` (``0.5/s`` is one call
    every two seconds), so a token bucket such as aiolimiter's can hold it."""

    count: float
    seconds: float
    text: str

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


def parse_rate(
    text: str,
    where: str = "",
    *,
    example: str = "10/s",
    bare_unit: str | None = None,
    high_per_second: float | None = None,
) -> Rate:
    """``text`` as a :class:`Rate`: a count above 0, ``/`` and a duration whose number may
    be left out (``10/s`` = ``10/1s``). ``bare_unit``: the unit of a bare count (none:
    refused); ``high_per_second`` bounds the rate."""
    raw = text.strip()
    count_text, slash, per = raw.partition("/")
    if not slash and bare_unit is not None:
        per = bare_unit
    per = per.strip()
    try:
        count = float(count_text)
        if not math.isfinite(count) or not per or "/" in per:
            raise ValueError(text)
        seconds = parse_duration(per if per[0].isdigit() else "1" + per)
    except ValueError:
        bare = f"a number per {_unit_word(bare_unit, one=True)} or " if bare_unit else ""
        raise SettingsError(
            f"{where}{text!r} is not a rate: use {bare}a count per unit ({_UNIT_NAMES}), "
            f"e.g. {example}"
        ) from None
    if count <= 0 or (high_per_second is not None and count / seconds > high_per_second):
        most = f", at most {high_per_second:g}/s" if high_per_second is not None else ""
        raise SettingsError(
            f"{where}{text!r} is out of range: use more than 0{most}, e.g. {example}"
        )
    if count < 1:  # 0.5/s: one call every two seconds (the bucket holds whole calls)
        count, seconds = 1.0, seconds / count
    return Rate(count, seconds, raw)


def _unit_word(unit: str | None, one: bool = False) -> str:
    words = {"ms": "millisecond", "s": "second", "m": "minute", "h": "hour", "d": "day"}
    word = words.get(unit or "s", "week")
    return word if one else word + "s"


_BROKER_AGE_UNITS = (("D", 86400), ("h", 3600), ("m", 60), ("s", 1))


def parse_max_age(name: str, raw: str) -> str:
    """``BRIDGE_ARCHIVE_MAX_AGE`` in the grammar, converted to RabbitMQ's ``x-max-age`` (its
    own units: ``D``, ``h``, ``m`` minutes, ``s``), in the largest unit no larger than the
    one written that holds it whole: ``30d`` -> ``30D``, ``2w`` -> ``14D``, ``1.5h`` ->
    ``90m``. The unit written is kept where it can be, since RabbitMQ compares the text: a
    stream declared with ``60m`` refuses ``1h``."""
    seconds = parse_duration(raw, f"{name}=", example="30d", low=1)
    if not seconds.is_integer():
        raise SettingsError(f"{name}={raw!r} is not whole seconds: use e.g. 30d or 90m")
    written = DURATION_SHAPE.match(raw.strip())
    unit = written.group(2).lower() if written else "s"
    start = {"w": "D", "d": "D", "h": "h", "m": "m"}.get(unit, "s")
    units = _BROKER_AGE_UNITS[[u for u, _ in _BROKER_AGE_UNITS].index(start) :]
    whole = int(seconds)
    for letter, size in units:
        if whole % size == 0:
            return f"{whole // size}{letter}"
    raise AssertionError("seconds divide every whole number")  # pragma: no cover
