"""How the subscriber page and the overview cards put the ledger's figures into words: times
as ``11:02:03 UTC (12 min ago)``, ages, and a target's answer or error with every
credential masked (:func:`bridge.console.views.mask_text`: the console's secrets, and
anything after ``APIKEY=`` or ``Authorization:``) and cut to fit a card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.console.subscriber_state import ago, clock
from bridge.console.views import mask_text

EXCERPT = 200
"""Characters of an answer or error shown (a record keeps at most 200 bytes of an answer)."""


@dataclass(frozen=True)
class Shown:
    secrets: Sequence[str]
    now: datetime

    def clock(self, moment: datetime | None) -> str:
        return "-" if moment is None else clock(moment, self.now)

    def ago(self, moment: datetime | None) -> str:
        """``12 min ago``; ``-`` for none."""
        if moment is None:
            return "-"
        seconds = (self.now - moment).total_seconds()
        return "just now" if seconds < 2 else f"{ago(seconds)} ago"

    def age(self, moment: datetime | None) -> str:
        """``12 min`` (how old ``moment`` is); ``-`` for none."""
        return "-" if moment is None else ago((self.now - moment).total_seconds())

    def seconds(self, moment: datetime | None) -> float | None:
        return None if moment is None else (self.now - moment).total_seconds()

    def text(self, value: str | None) -> str:
        """``value`` masked and cut to :data:`EXCERPT` characters, on one line."""
        if not value:
            return ""
        one_line = " ".join(mask_text(value, self.secrets).split())
        return one_line if len(one_line) <= EXCERPT else one_line[: EXCERPT - 1] + "…"
