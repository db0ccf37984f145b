"""An archive replay as its dry run counted it, carried unchanged to its confirmation.

The form's window may be relative (``1h``); the dry run turns it into absolute times (from,
inclusive; until, exclusive; an empty until is the moment of the count) and the confirmation
form carries those, with the events, order, message id, target and count, as hidden fields:
the send reads exactly the window that was counted, however long the operator took and
whatever arrived since. A confirmation without them (or with a time that does not parse) is
a 400 asking to count first.

Also here: what the target takes (:func:`audience_of`: its events and client / warehouse
filters), how fast the copies go (:func:`pace_of`: its ``rate_limit``, else
:data:`~bridge.archive.pace.DEFAULT_RATE`), and the sentences saying what a dry run left out
and why. Pure, apart from reading the clock given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bridge.archive.audience import Audience, Reason
from bridge.archive.pace import DEFAULT_RATE, duration
from bridge.archive.reader import ArchiveQuery
from bridge.archive.replay import LeftOut
from bridge.archive.window import parse_time
from bridge.core.contract import EVENTS, subscribed_events
from bridge.core.durations import Rate, format_duration
from bridge.core.settings import SettingsError
from bridge.worker.subscribers import Subscriber

DEFAULT_SINCE = "1h"


def stamp(moment: datetime) -> str:
    """``2026-12-07T10:51:30.123Z``: a window edge as the confirmation carries it."""
    text = moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def shown(moment: datetime) -> str:
    """``2026-12-07 10:51:30.123``: a window edge as the pages show it (UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class Plan:
    """One replay: what to copy, where, and the window fixed by its count."""

    to: str
    since: datetime
    until: datetime
    events: tuple[str, ...] = ()
    order: str | None = None
    message: str | None = None
    since_text: str = DEFAULT_SINCE
    until_text: str = ""
    pace: str = ""
    """The rate the copies go at (set when sent, for the job's page and the list)."""

    def query(self) -> ArchiveQuery:
        return ArchiveQuery(
            since=self.since,
            until=self.until,
            order_id=self.order,
            events=self.events,
            message_id=self.message,
        )

    @property
    def window(self) -> str:
        """The window as the pages show it."""
        return f"{shown(self.since)} to {shown(self.until)} UTC"

    @property
    def restriction(self) -> str | None:
        """What narrows it besides the window and events, in words."""
        if self.message:
            return f"only webhook {self.message}"
        if self.order:
            return f"only order {self.order}"
        return None

    def hidden(self) -> list[tuple[str, str]]:
        """The confirmation's hidden fields (see :func:`confirmed_plan`)."""
        fields = [
            ("to", self.to),
            ("from_at", stamp(self.since)),
            ("until_at", stamp(self.until)),
            ("since", self.since_text),
            ("until", self.until_text),
            ("order", self.order or ""),
            ("message", self.message or ""),
        ]
        return fields + [("event", event) for event in self.events]


def form_values(source: Mapping[str, Any], events: list[str]) -> dict[str, Any]:
    """The replay form's values (``events``: the ticked ones, unknown ones dropped)."""
    return {
        "since": str(source.get("since", DEFAULT_SINCE)).strip(),
        "until": str(source.get("until", "")).strip(),
        "events": [e for e in events if e in EVENTS],
        "order": str(source.get("order", "")).strip(),
        "message": str(source.get("message", "")).strip(),
        "to": str(source.get("to", "")).strip(),
    }


def counted_plan(values: Mapping[str, Any], now: datetime) -> Plan:
    """The plan of a dry run: the form's window made absolute at ``now``;
    :class:`SettingsError` (a 400 with the sentence) when a time does not parse or the
    window is empty."""
    since_text = values["since"] or DEFAULT_SINCE
    since = parse_time(since_text, now, flag="Since")
    until = parse_time(values["until"], now, flag="Until") if values["until"] else now
    until = until.astimezone(UTC)
    if since >= until:
        raise SettingsError(
            f"The window is empty: since ({shown(since)}) is not before until "
            f"({shown(until)}); give an earlier since or a later until."
        )
    return _over(values, since, until, since_text)


def confirmed_plan(values: Mapping[str, Any], source: Mapping[str, Any]) -> Plan:
    """The plan a confirmation carried (its hidden window); a 400 asking to count first
    when the window is missing or unreadable."""
    try:
        since = _edge(source.get("from_at"))
        until = _edge(source.get("until_at"))
    except ValueError:
        raise web.HTTPBadRequest(
            text="Count first: a confirmation carries the window its dry run counted "
            "(from_at and until_at), and this one has none that can be read."
        ) from None
    if since >= until:
        raise web.HTTPBadRequest(text="Count first: the confirmed window is empty.")
    return _over(values, since, until, values["since"])


def _over(values: Mapping[str, Any], since: datetime, until: datetime, since_text: str) -> Plan:
    """The plan of the form's ``values`` over the window from ``since`` to ``until``."""
    return Plan(
        to=values["to"],
        since=since,
        until=until,
        events=tuple(values["events"]),
        order=values["order"] or None,
        message=values["message"] or None,
        since_text=since_text,
        until_text=values["until"],
    )


def _edge(raw: object) -> datetime:
    if not isinstance(raw, str) or not raw.endswith("Z") or len(raw) > 40:
        raise ValueError(raw)
    moment = datetime.fromisoformat(raw[:-1] + "+00:00")
    return moment.astimezone(UTC)


def audience_of(sub: Subscriber) -> Audience:
    """What ``sub`` takes from the exchange."""
    return Audience(sub.events, sub.clients, sub.warehouses)


def pace_of(sub: Subscriber) -> tuple[Rate, str]:
    """The rate a replay to ``sub`` goes at, and where it comes from, in words."""
    if sub.rate_limit is not None:
        return sub.rate_limit, f"{sub.name}'s rate_limit"
    return DEFAULT_RATE, "the default for a subscriber without a rate_limit"


def pace_text(sub: Subscriber, copies: int) -> str:
    """``At most 10/s (erp's rate_limit): 4,154 copies take about 7m.``"""
    rate, why = pace_of(sub)
    took = duration(rate, copies)
    about = f"about {_about(took)}" if took >= 1 else "under a second"
    return (
        f"At most {rate.text} ({why}): {copies:,} cop{'y' if copies == 1 else 'ies'} take {about}."
    )


def _about(seconds: float) -> str:
    for unit in (86400, 3600, 60, 1):
        if seconds >= unit:
            return format_duration(round(seconds / unit) * unit)
    return format_duration(seconds)


def _listed(counts: Mapping[str, int], noun: Callable[[str], str]) -> str:
    return ", ".join(f"{n:,} {noun(what)}" for what, n in sorted(counts.items()))


def left_out_lines(left_out: LeftOut, sub: Subscriber) -> list[str]:
    """One sentence per reason the dry run left webhooks out, each saying why."""
    by_reason: dict[Reason, dict[str, int]] = {}
    for (reason, what), n in left_out.items():
        by_reason.setdefault(reason, {})[what] = n
    lines = []
    if Reason.EVENT in by_reason:
        counts = by_reason[Reason.EVENT]
        takes = ", ".join(subscribed_events(sub.events))
        lines.append(f"{_listed(counts, str)}: {sub.name} takes only {takes}.")
    for reason, kind, taken in (
        (Reason.CLIENT, "client", sub.clients),
        (Reason.WAREHOUSE, "warehouse", sub.warehouses),
    ):
        if reason in by_reason:
            listed = _listed(by_reason[reason], f"of {kind} {{}}".format)
            plural = "s" if len(taken) > 1 else ""
            lines.append(f"{listed}: {sub.name} takes only {kind}{plural} {', '.join(taken)}.")
    if Reason.NOT_JSON in by_reason:
        n = sum(by_reason[Reason.NOT_JSON].values())
        lines.append(f"{n:,} not JSON: no subscriber gets a quarantined body.")
    return lines
