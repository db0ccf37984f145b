"""The subscriber page's small chart: delivered and failed per minute over the last hour,
drawn by the server as inline SVG (no script, nothing fetched). Pure: geometry only; the
template ``_minute_chart.html`` draws it with its title, description and the numbers as a
table (what a screen reader, or a reader who wants the figures, reads).

Two bands over the same 60 minutes: delivered on top, failed below, each scaled to its own
busiest minute, which the legend states: a single failure next to hundreds of deliveries
still shows. A minute with any attempt gets a bar of at least :data:`MIN_BAR` units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from bridge.ledger.figures import Minute

WIDTH = 600
BAND = 50
GAP = 8
HEIGHT = 2 * BAND + GAP
MIN_BAR = 2.0


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # "delivered" or "failed"


@dataclass(frozen=True)
class Chart:
    bars: tuple[Bar, ...]
    delivered_max: int
    failed_max: int
    # The geometry every chart shares, for the template (not per chart: not fields).
    width: ClassVar[int] = WIDTH
    height: ClassVar[int] = HEIGHT
    band: ClassVar[int] = BAND
    gap: ClassVar[int] = GAP


def _height(count: int, peak: int) -> float:
    if count <= 0 or peak <= 0:
        return 0.0
    return max(MIN_BAR, BAND * count / peak)


def minute_chart(minutes: Sequence[Minute]) -> Chart:
    """The bars of ``minutes`` (oldest first): delivered grow up from the top band's
    baseline, failed hang down from the bottom band's top."""
    step = WIDTH / max(1, len(minutes))
    width = max(1.0, step * 0.8)
    delivered_max = max((m.delivered for m in minutes), default=0)
    failed_max = max((m.failed for m in minutes), default=0)
    bars: list[Bar] = []
    for i, minute in enumerate(minutes):
        x = round(i * step + (step - width) / 2, 2)
        up = _height(minute.delivered, delivered_max)
        if up:
            bars.append(Bar(x, round(BAND - up, 2), round(width, 2), round(up, 2), "delivered"))
        down = _height(minute.failed, failed_max)
        if down:
            bars.append(Bar(x, BAND + GAP, round(width, 2), round(down, 2), "failed"))
    return Chart(tuple(bars), delivered_max, failed_max)
