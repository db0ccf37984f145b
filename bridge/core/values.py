"""How each setting's text becomes a value. Every parser takes the variable's name and its
raw text and returns the value, or raises :class:`SettingsError` naming the variable and an
example of a good value (one line, exit 2 at the command line)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean: use true or false")


def parse_int(name: str, raw: str, low: int, high: int, example: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        shown = low if example is None else example
        raise SettingsError(f"{name}={raw!r} is not a whole number: use e.g. {shown}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range: use a number from {low} to {high}")
    return value


def parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_amqp_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = parse_list(raw)
    if not urls:
        raise SettingsError(f"{name} is empty: set it to e.g. amqp://guest:guest@localhost:5672/")
    for url in urls:
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in {"amqp", "amqps"} or not parts.hostname or port == -1:
            shown = redact_url(url)
            raise SettingsError(
                f"{name} has a malformed broker URL {shown!r}: "
                "use amqp://user:password@host:5672/vhost (or amqps://)"
            )
    return urls


def is_http_url(url: str) -> bool:
    """Whether ``url`` is a usable http(s) URL: scheme, host, and a port in range if any."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def parse_http_url(name: str, raw: str) -> str:
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme in {"http", "https"} and parts.hostname:
        try:
            parts.port  # noqa: B018 - raises ValueError when out of range or not a number
        except ValueError:
            port = parts.netloc.rsplit(":", 1)[-1]
            what = "is out of range" if port.isdigit() else "is not a number"
            raise SettingsError(
                f"{name}={raw!r}: its port {port!r} {what}: use a port from 1 to 65535, "
                "or none (https uses 443)"
            ) from None
    if not is_http_url(url):
        raise SettingsError(f"{name}={raw!r} is not an http(s) URL: use e.g. https://host.example")
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, safe to log.

    A password may hold an unencoded ``#``, ``/``, ``?`` or ``@``, which a URL parser takes
    for the end of the host: the user part here runs to the *last* ``@``, so the password is
    never shown (at worst a query holding an ``@`` is masked too)."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0:
        return url
    user, colon, _password = rest[:at].partition(":")
    if not colon:
        return url
    return f"{scheme}://{user}:***@{rest[at + 1 :]}"


def url_passwords(url: str) -> list[str]:
    """The password of ``url`` as written and decoded (empty list when it has none), read
    the way :func:`redact_url` reads it."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    password = rest[:at].partition(":")[2] if at >= 0 else ""
    return [p for p in dict.fromkeys((password, unquote(password))) if p]


def parse_optional(name: str, raw: str) -> str | None:
    return raw.strip() or None


def parse_exchange(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 200 or any(c.isspace() for c in value):
        raise SettingsError(
            f"{name}={raw!r} is not a valid exchange name: use e.g. mintsoft.orders"
        )
    return value


def parse_log_format(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"text", "json"}:
        raise SettingsError(f"{name}={raw!r} is not a log format: use text or json")
    return value


def parse_optional_http_url(name: str, raw: str) -> str | None:
    return parse_http_url(name, raw) if raw.strip() else None


def parse_optional_port(name: str, raw: str) -> int | None:
    # Empty or 0 means unset: 0 is what the worker's --metrics-port took for "off".
    if raw.strip() in {"", "0"}:
        return None
    return parse_int(name, raw, 1, 65535)


def parse_ids(name: str, raw: str) -> tuple[int, ...]:
    parts = parse_list(raw)
    if not all(p.isdigit() for p in parts):
        raise SettingsError(f"{name}={raw!r} is not a list of ids: use e.g. 12,14")
    return tuple(int(p) for p in parts)


def parse_reconcile_mode(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"enrolled", "all", "off"}:
        raise SettingsError(f"{name}={raw!r} is not a reconcile mode: use enrolled, all or off")
    return value


def parse_timezone(name: str, raw: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    value = raw.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"{name}={raw!r} is not a time zone: use e.g. Europe/London") from None
    return value


LEDGER_SCHEMES = ("sqlite", "postgresql", "postgres", "postgresql+psycopg")


def parse_ledger_url(name: str, raw: str) -> str | None:
    """``sqlite:///path`` or ``postgresql://user@host:5432/db``; empty turns the ledger off."""
    value = raw.strip()
    if not value:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in LEDGER_SCHEMES or not rest.strip("/"):
        raise SettingsError(
            f"{name}={redact_url(value)!r} is not a ledger database URL: use "
            "sqlite:///./var/ledger.sqlite3 or postgresql://user@host:5432/db (empty: no ledger)"
        )
    return value
