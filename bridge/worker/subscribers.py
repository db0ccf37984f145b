"""The subscribers file of ``worker --config``: a TOML list of ``[[subscriber]]`` tables.

Each table names a service, the events it wants, and either a Python ``handler`` or a
``forward_url`` for the built-in HTTP forwarder. Every mistake is one line naming the file,
the subscriber and the field, raised as :class:`~bridge.core.settings.SettingsError` (exit 2).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge.amqp.topology import (
    ArchiveRetention,
    Topology,
    receiver_topology,
    subscriber_queue_names,
    subscriber_topology,
)
from bridge.core.contract import EVENTS
from bridge.core.durations import Rate, parse_duration, parse_rate
from bridge.core.settings import SettingsError, is_http_url
from bridge.worker.signing import signing_variable

if TYPE_CHECKING:
    from bridge.worker.message import Message

Handler = Callable[["Message"], Awaitable[None]]
"""What a subscriber runs for each message: ``async def handle(message) -> None``."""

DEFAULT_RETRY_DELAYS = ("5s", "1m", "10m", "1h")
ORDERED_RETRY_DELAYS = ("1s", "5s", "30s", "2m")
"""An ordered subscriber waits these out holding the message (later events of its order
must not overtake it), so the whole wait stays under RabbitMQ's consumer_timeout."""
DEFAULT_PARTITIONS = 4
MAX_PARTITIONS = 64
MAX_FILTER_VALUES = 200
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
MAX_STEPS = 20
MAX_HELD_SECONDS = 25 * 60
"""A message is unacked while its in-process tries run; RabbitMQ closes the channel of a
consumer that holds one past ``consumer_timeout`` (30 minutes by default)."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")
_KEYS = {
    "name",
    "events",
    "handler",
    "forward_url",
    "forward_headers",
    "signing_secrets_env",
    "retry_delays",
    "prefetch",
    "timeout",
    "in_process_tries",
    "clients",
    "warehouses",
    "rate_limit",
    "ordered",
    "partitions",
}


@dataclass(frozen=True)
class Subscriber:
    """One ``[[subscriber]]``: its queue name, events, ladder and what delivers its messages."""

    name: str
    events: tuple[str, ...]
    retry_delays_ms: tuple[int, ...]
    handler: str | None = None
    forward_url: str | None = None
    forward_headers: tuple[tuple[str, str], ...] = ()
    signing_secrets_env: str | None = None
    """The environment variable holding the forwarder's ``whsec_`` secrets (never a secret
    itself): read by the worker when it starts (:mod:`bridge.worker.signing`)."""
    prefetch: int = 32
    timeout: float = 30.0
    in_process_tries: int = 3
    clients: tuple[str, ...] = ()
    warehouses: tuple[str, ...] = ()
    rate_limit: Rate | None = None
    ordered: bool = False
    partitions: int = DEFAULT_PARTITIONS

    @property
    def filtered(self) -> bool:
        return bool(self.clients or self.warehouses)

    def queue_names(self) -> list[str]:
        """Every queue of this subscriber."""
        return subscriber_queue_names(
            self.name, len(self.retry_delays_ms), self.ordered, self.partitions
        )

    def topology(self, exchange: str) -> Topology:
        """This subscriber's exchanges, queues and bindings on ``exchange``."""
        return subscriber_topology(
            exchange,
            self.name,
            self.events,
            self.retry_delays_ms,
            clients=self.clients,
            warehouses=self.warehouses,
            ordered=self.ordered,
            partitions=self.partitions,
            # One worker at a time takes a rate-limited subscriber's messages: its limit is
            # the subscriber's (contract section 5), however many workers run it.
            single_active=self.rate_limit is not None,
        )


def delay_ms(text: str, where: str = "") -> int:
    """A retry delay in the duration grammar (``"200ms"``, ``"5s"``, ``"1w"``) as whole
    milliseconds, 1 ms to 7 days; :class:`SettingsError` naming ``where`` else."""
    seconds = parse_duration(text, where, example='"5s"', low=0.001, high=MAX_DELAY_MS / 1000)
    return round(seconds * 1000)


def load_subscribers(path: str) -> list[Subscriber]:
    """Read and check a subscribers file. Handlers are only named here; the worker imports
    them with :func:`resolve_handler`, so ``topology --config`` works without their code."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            f"subscribers file {path!r} cannot be read ({reason}): pass --config FILE"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"subscribers file {path}: not valid TOML ({exc})") from None
    return parse_subscribers(document, path)


def parse_subscribers(document: Mapping[str, Any], source: str = "<config>") -> list[Subscriber]:
    """Check a parsed subscribers document (see :func:`load_subscribers`)."""
    extra = sorted(set(document) - {"subscriber"})
    if extra:
        raise SettingsError(f"{source}: unknown top-level key {extra[0]!r}: use [[subscriber]]")
    tables = document.get("subscriber")
    if not isinstance(tables, list) or not tables:
        raise SettingsError(f"{source}: no [[subscriber]] table: declare at least one")
    subscribers: list[Subscriber] = []
    queues: dict[str, str] = {}
    for index, table in enumerate(tables):
        sub = _subscriber(table, f"{source}: subscriber #{index + 1}")
        for queue in _queue_names(sub):
            if queue in queues:
                what = "duplicate name" if queues[queue] == queue else "queue name clash"
                raise SettingsError(
                    f"{source}: subscriber {sub.name!r}: name: {what} with subscriber "
                    f"{queues[queue]!r} (queue {queue}): give each subscriber its own name"
                )
        queues.update(dict.fromkeys(_queue_names(sub), sub.name))
        subscribers.append(sub)
    return subscribers


def _queue_names(sub: Subscriber) -> list[str]:
    return sub.queue_names()


def _subscriber(table: Any, where: str) -> Subscriber:
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: is not a table: write [[subscriber]] with name = ...")
    name = table.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SettingsError(
            f"{where}: name: {name!r} is not a queue name: use letters, digits, '.', '-', "
            "'_' or ':' (e.g. name = \"erp\")"
        )
    where = f"{where.split(': ')[0]}: subscriber {name!r}"
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise SettingsError(
            f"{where}: unknown field {unknown[0]!r}: use one of {', '.join(sorted(_KEYS))}"
        )
    handler = table.get("handler")
    forward_url = table.get("forward_url")
    if (handler is None) == (forward_url is None):
        both = "both are" if handler is not None else "neither is"
        raise SettingsError(
            f"{where}: handler / forward_url: {both} set: set exactly one "
            '(handler = "package.module:function" or forward_url = "http://...")'
        )
    if handler is not None and (
        not isinstance(handler, str) or not re.match(r"^[\w.]+:[\w.]+$", handler)
    ):
        raise SettingsError(
            f'{where}: handler: {handler!r} is not "module:function": use e.g. '
            '"mypkg.handlers:on_order"'
        )
    if forward_url is not None:
        forward_url = _http_url(forward_url, f"{where}: forward_url")
    forward_headers = _headers(table.get("forward_headers", {}), f"{where}: forward_headers")
    if forward_url is not None:
        _one_authorization(forward_url, forward_headers, where)
    signing = signing_variable(table.get("signing_secrets_env"), forward_url, where)
    ordered = table.get("ordered", False)
    if not isinstance(ordered, bool):
        raise SettingsError(f"{where}: ordered: {ordered!r} is not true or false")

    if ordered and "prefetch" in table:
        raise SettingsError(
            f"{where}: prefetch: an ordered subscriber takes one message at a time per "
            "partition: remove prefetch and raise partitions for more parallel work"
        )
    if not ordered and "partitions" in table:
        raise SettingsError(f"{where}: partitions: only with ordered = true")
    default_delays = ORDERED_RETRY_DELAYS if ordered else DEFAULT_RETRY_DELAYS
    sub = Subscriber(
        name=name,
        events=_events(table.get("events"), f"{where}: events"),
        retry_delays_ms=_delays(
            table.get("retry_delays", list(default_delays)), f"{where}: retry_delays"
        ),
        handler=handler,
        forward_url=forward_url,
        forward_headers=forward_headers,
        signing_secrets_env=signing,
        prefetch=_int(table.get("prefetch", 32), 1, 10_000, f"{where}: prefetch"),
        timeout=_seconds(table.get("timeout", "30s"), f"{where}: timeout"),
        in_process_tries=_int(
            table.get("in_process_tries", 3), 1, 10, f"{where}: in_process_tries"
        ),
        clients=_ids(table.get("clients"), f"{where}: clients"),
        warehouses=_ids(table.get("warehouses"), f"{where}: warehouses"),
        rate_limit=_rate(table.get("rate_limit"), f"{where}: rate_limit"),
        ordered=ordered,
        partitions=_int(
            table.get("partitions", DEFAULT_PARTITIONS), 1, MAX_PARTITIONS, f"{where}: partitions"
        ),
    )
    _check_held(sub, where)
    return sub


def _check_held(sub: Subscriber, where: str) -> None:
    """A message held unacked past RabbitMQ's consumer_timeout (30 min by default) closes
    the consumer's channel: refuse settings that can hold one that long."""
    rounds = len(sub.retry_delays_ms) + 1 if sub.ordered else 1
    held = rounds * sub.in_process_tries * sub.timeout
    what = "timeout x in_process_tries"
    if sub.ordered:
        held += sum(sub.retry_delays_ms) / 1000
        what = "retry_delays (waited out in place) and timeout x in_process_tries per round"
    if held > MAX_HELD_SECONDS:
        raise SettingsError(
            f"{where}: {what} hold a message up to {held / 60:g} min, past RabbitMQ's "
            f"consumer_timeout (30 min by default): keep it under {MAX_HELD_SECONDS // 60} min"
        )
    if sub.rate_limit is not None:
        waiting = (sub.partitions if sub.ordered else sub.prefetch) / sub.rate_limit.per_second
        if waiting > MAX_HELD_SECONDS:
            raise SettingsError(
                f"{where}: rate_limit {sub.rate_limit.text!r} keeps prefetched messages waiting "
                f"up to {waiting / 60:g} min, past RabbitMQ's consumer_timeout: lower prefetch"
            )


def _ids(value: Any, where: str) -> tuple[str, ...]:
    """Mintsoft ids (``[7, 12]``) as the strings the receiver puts in the headers."""
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or len(value) > MAX_FILTER_VALUES
        or not all(_is_id(item) for item in value)
    ):
        raise SettingsError(
            f"{where}: use a list of 1 to {MAX_FILTER_VALUES} Mintsoft ids, e.g. [7, 12]"
        )
    return tuple(dict.fromkeys(str(item).strip() for item in value))


def _is_id(item: Any) -> bool:
    if isinstance(item, bool):
        return False
    if isinstance(item, int):
        return item >= 0
    return isinstance(item, str) and item.strip().isdigit()


def _rate(value: Any, where: str) -> Rate | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise SettingsError(f'{where}: {value!r} is not a rate: use e.g. "10/s" or "30/m"')
    return parse_rate(value, f"{where}: ", example='"10/s" or "30/m"')


def _events(value: Any, where: str) -> tuple[str, ...]:
    choices = ", ".join(EVENTS)
    if not isinstance(value, list) or not value:
        raise SettingsError(f'{where}: missing or empty: use e.g. ["despatched"] or ["*"]')
    for event in value:
        if event != "*" and event not in EVENTS:
            raise SettingsError(
                f"{where}: unknown event {event!r}: use {choices} or * (the order events)"
            )
    return tuple(dict.fromkeys(value))


def _delays(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_STEPS:
        raise SettingsError(
            f'{where}: use a list of at most {MAX_STEPS} durations, e.g. ["5s", "1m", "10m"]'
        )
    delays = []
    for item in value:
        if not isinstance(item, str):
            raise SettingsError(f'{where}: {item!r} is not a duration: write it as text, "5s"')
        delays.append(delay_ms(item, f"{where}: "))
    return tuple(delays)


def _seconds(value: Any, where: str) -> float:
    if not isinstance(value, str):
        raise SettingsError(f'{where}: {value!r} is not a duration: write it as text, "30s"')
    return parse_duration(value, f"{where}: ", example='"30s"', low=0.001, high=3600)


def _int(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SettingsError(f"{where}: {value!r} is not a whole number from {low} to {high}")
    return value


def _http_url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not is_http_url(value):
        raise SettingsError(f"{where}: not an http(s) URL: use e.g. http://erp.internal/mintsoft")
    return str(value)


def _headers(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SettingsError(f'{where}: use a table of strings, e.g. {{ Authorization = "..." }}')
    return tuple(value.items())


def _one_authorization(url: str, headers: tuple[tuple[str, str], ...], where: str) -> None:
    # aiohttp refuses every request that has both (each message would fail into the DLQ):
    # say so once, at start. Neither the password nor the header's value is shown.
    if urlsplit(url).username is None and urlsplit(url).password is None:
        return
    if any(name.strip().lower() == "authorization" for name, _ in headers):
        raise SettingsError(
            f"{where}: forward_url has user:password@ and forward_headers has an "
            "Authorization: keep one of them"
        )


def full_topology(
    exchange: str,
    config: str | None,
    archive: ArchiveRetention | None = None,
    deliveries: ArchiveRetention | None = None,
) -> Topology:
    """The receiver's topology (with the archive and delivery records' streams given their
    retention), plus every subscriber's queues when ``config`` names a subscribers file."""
    topology = receiver_topology(exchange, archive, deliveries)
    if config is not None:
        for sub in load_subscribers(config):
            topology = topology + sub.topology(exchange)
    return topology
