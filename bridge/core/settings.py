"""Reading and checking settings: environment variables, their ``_FILE`` forms, and flags.

Every setting is an environment variable ``BRIDGE_*``; a command-line flag of the same name
(``--port`` or ``--bridge-port`` for ``BRIDGE_PORT``) wins. Any variable can instead be read
from a file named by ``<VARIABLE>_FILE``, which is how secrets are mounted in containers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it and says how to fix it."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean: use true or false")


def _parse_int(name: str, raw: str, low: int, high: int, example: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        shown = low if example is None else example
        raise SettingsError(f"{name}={raw!r} is not a whole number: use e.g. {shown}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range: use a number from {low} to {high}")
    return value


def _parse_seconds(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds: use e.g. 5") from None
    if not 0 < value <= 3600:
        raise SettingsError(f"{name}={value} is out of range: use seconds above 0, at most 3600")
    return value


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_amqp_urls(name: str, raw: str) -> tuple[str, ...]:
    urls = _parse_list(raw)
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


def _parse_http_url(name: str, raw: str) -> str:
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
    """The URL with any password replaced by ``***``, safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


@dataclass(frozen=True)
class Settings:
    """Every setting of the bridge, checked. Build one with :func:`load_settings`."""

    amqp_urls: tuple[str, ...] = ("amqp://guest:guest@localhost:5672/",)
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    auth_headers: tuple[str, ...] = field(default=(), repr=False)
    allow_unauthenticated: bool = False
    exchange: str = "mintsoft.orders"
    max_body_bytes: int = 10 * 1024 * 1024
    publish_timeout: float = 5.0
    spool_path: str = "./var/spool.sqlite3"
    spool_max_bytes: int = 1024 * 1024 * 1024
    log_format: str = "text"
    mintsoft_url: str = "https://api.mintsoft.co.uk"
    mintsoft_api_key: str | None = field(default=None, repr=False)
    mintsoft_username: str | None = None
    mintsoft_password: str | None = field(default=None, repr=False)
    public_url: str | None = None
    metrics_host: str | None = None
    """``None``: 127.0.0.1 for ``serve``; the worker keeps its older default, ``BRIDGE_HOST``."""
    metrics_port: int | None = None
    """``None``: no separate listener (``serve`` answers ``/metrics`` on its main port)."""
    archive: bool = True
    archive_max_age: str = "30D"
    archive_max_bytes: int = 50_000_000_000
    console_host: str = "127.0.0.1"
    console_port: int = 8090
    console_password: str | None = field(default=None, repr=False)

    @property
    def auth_configured(self) -> bool:
        """Whether any credential is configured for incoming webhooks."""
        return bool(self.api_keys or self.auth_headers)

    def require_auth_or_opt_out(self) -> None:
        """Refuse to serve an open endpoint unless the operator said so explicitly."""
        if not self.auth_configured and not self.allow_unauthenticated:
            raise SettingsError(
                "BRIDGE_API_KEYS and BRIDGE_AUTH_HEADERS are both unset: set one of them "
                "(or BRIDGE_ALLOW_UNAUTHENTICATED=true to accept webhooks from anyone)"
            )


@dataclass(frozen=True)
class _Spec:
    attr: str
    parse: Callable[[str, str], Any]
    help: str
    secret: bool = False


def _optional(name: str, raw: str) -> str | None:
    return raw.strip() or None


def _exchange(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or len(value) > 200 or any(c.isspace() for c in value):
        raise SettingsError(
            f"{name}={raw!r} is not a valid exchange name: use e.g. mintsoft.orders"
        )
    return value


def _log_format(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"text", "json"}:
        raise SettingsError(f"{name}={raw!r} is not a log format: use text or json")
    return value


_AGE_UNITS = "YMDhms"


def _max_age(name: str, raw: str) -> str:
    # RabbitMQ's x-max-age: "<int><unit>", unit case-sensitive (M months, m minutes); a
    # lowercase d is taken as days, since RabbitMQ has no other meaning for it.
    value = raw.strip()
    if value.endswith("d"):
        value = value[:-1] + "D"
    if len(value) < 2 or value[-1] not in _AGE_UNITS or not value[:-1].isdigit():
        raise SettingsError(
            f"{name}={raw!r} is not an age: use a number and one of Y, M (months), D, h, "
            "m (minutes), s, e.g. 30D"
        )
    if int(value[:-1]) < 1:
        raise SettingsError(f"{name}={raw!r} is zero: use at least 1, e.g. 30D")
    return value[:-1].lstrip("0") + value[-1]


def _optional_http_url(name: str, raw: str) -> str | None:
    return _parse_http_url(name, raw) if raw.strip() else None


def _optional_port(name: str, raw: str) -> int | None:
    # Empty or 0 means unset: 0 is what the worker's --metrics-port took for "off".
    if raw.strip() in {"", "0"}:
        return None
    return _parse_int(name, raw, 1, 65535)


SPECS: dict[str, _Spec] = {
    "BRIDGE_AMQP_URL": _Spec(
        "amqp_urls", _parse_amqp_urls, "broker URL(s), comma-separated for a cluster", True
    ),
    "BRIDGE_HOST": _Spec("host", lambda n, r: r.strip() or "127.0.0.1", "address serve listens on"),
    "BRIDGE_PORT": _Spec(
        "port", lambda n, r: _parse_int(n, r, 1, 65535, 8080), "port serve listens on"
    ),
    "BRIDGE_API_KEYS": _Spec(
        "api_keys", lambda n, r: _parse_list(r), "keys accepted as ?APIKEY=", True
    ),
    "BRIDGE_AUTH_HEADERS": _Spec(
        "auth_headers", lambda n, r: _parse_list(r), "accepted Authorization values", True
    ),
    "BRIDGE_ALLOW_UNAUTHENTICATED": _Spec(
        "allow_unauthenticated", _parse_bool, "serve with no credentials configured"
    ),
    "BRIDGE_EXCHANGE": _Spec("exchange", _exchange, "topic exchange webhooks go to"),
    "BRIDGE_MAX_BODY_BYTES": _Spec(
        "max_body_bytes",
        lambda n, r: _parse_int(n, r, 1, 1 << 30, 10485760),
        "larger bodies get 413",
    ),
    "BRIDGE_PUBLISH_TIMEOUT": _Spec(
        "publish_timeout", _parse_seconds, "seconds to wait for a broker confirm"
    ),
    "BRIDGE_SPOOL_PATH": _Spec("spool_path", lambda n, r: r.strip(), "local spool, empty: none"),
    "BRIDGE_SPOOL_MAX_BYTES": _Spec(
        "spool_max_bytes",
        lambda n, r: _parse_int(n, r, 4096, 1 << 50, 1073741824),
        "spool size limit",
    ),
    "BRIDGE_LOG_FORMAT": _Spec("log_format", _log_format, "text or json"),
    "BRIDGE_MINTSOFT_URL": _Spec("mintsoft_url", _parse_http_url, "Mintsoft API base URL"),
    "BRIDGE_MINTSOFT_API_KEY": _Spec("mintsoft_api_key", _optional, "Mintsoft ms-apikey", True),
    "BRIDGE_MINTSOFT_USERNAME": _Spec("mintsoft_username", _optional, "Mintsoft user"),
    "BRIDGE_MINTSOFT_PASSWORD": _Spec("mintsoft_password", _optional, "Mintsoft password", True),
    "BRIDGE_PUBLIC_URL": _Spec("public_url", _optional_http_url, "the bridge's public base URL"),
    "BRIDGE_METRICS_HOST": _Spec(
        "metrics_host", _optional, "address of the /metrics listener (127.0.0.1; worker: --host)"
    ),
    "BRIDGE_METRICS_PORT": _Spec(
        "metrics_port", _optional_port, "port of a separate /metrics listener (unset: none)"
    ),
    "BRIDGE_ARCHIVE": _Spec("archive", _parse_bool, "declare and feed the archive stream"),
    "BRIDGE_ARCHIVE_MAX_AGE": _Spec("archive_max_age", _max_age, "archive retention, e.g. 30D"),
    "BRIDGE_ARCHIVE_MAX_BYTES": _Spec(
        "archive_max_bytes",
        lambda n, r: _parse_int(n, r, 1_000_000, 1 << 60),
        "archive size limit in bytes",
    ),
    "BRIDGE_CONSOLE_HOST": _Spec(
        "console_host", lambda n, r: r.strip() or "127.0.0.1", "address console listens on"
    ),
    "BRIDGE_CONSOLE_PORT": _Spec(
        "console_port", lambda n, r: _parse_int(n, r, 1, 65535), "port console listens on"
    ),
    "BRIDGE_CONSOLE_PASSWORD": _Spec(
        "console_password", _optional, "console sign-in password (or scrypt:/pbkdf2: hash)", True
    ),
}


def flag_name(variable: str) -> str:
    """``BRIDGE_AMQP_URL`` -> ``--amqp-url``: the command-line flag for a setting."""
    return "--" + variable.removeprefix("BRIDGE_").lower().replace("_", "-")


def _read_file(variable: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            f"{variable}_FILE={path!r} cannot be read ({reason}): point it at a readable file"
        ) from None


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
) -> Settings:
    """Build :class:`Settings` from the environment, ``_FILE`` forms and flag overrides.

    ``overrides`` maps variable names (``BRIDGE_PORT``) to raw flag values; ``None`` means
    the flag was not given. Raises :class:`SettingsError` naming the first bad setting.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for variable, spec in SPECS.items():
        raw: str | None = None
        if overrides and overrides.get(variable) is not None:
            raw = overrides[variable]
        elif env.get(variable) is not None:
            raw = env[variable]
            if env.get(variable + "_FILE"):
                raise SettingsError(f"{variable} and {variable}_FILE are both set: keep one")
        elif env.get(variable + "_FILE"):
            raw = _read_file(variable, env[variable + "_FILE"])
        if raw is not None:
            values[spec.attr] = spec.parse(variable, raw)
    known = {f.name for f in fields(Settings)}
    assert set(values) <= known
    return Settings(**values)


INTERNAL_VARIABLES = frozenset({"BRIDGE_PUBLISH_PATH"})
"""Read outside the settings, not for users: ``public`` forces aiormq's public publish API
(tests run both paths; see bridge/amqp/aiormq_internals.py)."""


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``BRIDGE_*`` variables that are set but mean nothing (most often a typo)."""
    env = os.environ if environ is None else environ
    valid = set(SPECS) | {v + "_FILE" for v in SPECS} | INTERNAL_VARIABLES
    return sorted(k for k in env if k.startswith("BRIDGE_") and k not in valid)
