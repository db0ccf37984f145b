"""Reading and checking settings: environment variables, their ``_FILE`` forms, and flags.

Every setting is an environment variable ``BRIDGE_*``; a command-line flag of the same name
(``--port`` or ``--bridge-port`` for ``BRIDGE_PORT``) wins. Any variable can instead be read
from a file named by ``<VARIABLE>_FILE``, which is how secrets are mounted in containers.

How each variable's text is parsed lives in :mod:`bridge.core.values`; durations and rates
in :mod:`bridge.core.durations`, the one grammar of both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge.core.durations import parse_duration, parse_max_age, parse_rate
from bridge.core.values import SettingsError as SettingsError
from bridge.core.values import is_http_url as is_http_url
from bridge.core.values import (
    parse_amqp_urls,
    parse_bool,
    parse_exchange,
    parse_http_url,
    parse_ids,
    parse_int,
    parse_ledger_url,
    parse_list,
    parse_log_format,
    parse_optional,
    parse_optional_http_url,
    parse_optional_port,
    parse_reconcile_mode,
    parse_timezone,
    url_passwords,
)
from bridge.core.values import redact_url as redact_url


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
    metrics_host: str = "127.0.0.1"
    """``None``: 127.0.0.1 for ``serve``; the worker keeps its older default, ``BRIDGE_HOST``."""
    metrics_port: int | None = None
    """``None``: no separate listener (``serve`` answers ``/metrics`` on its main port)."""
    archive: bool = True
    archive_max_age: str = "30D"
    archive_max_bytes: int = 50_000_000_000
    sync_state_path: str = "./var/sync.sqlite3"
    sync_interval: float = 60.0
    sync_grace: float = 15 * 60.0
    sync_reconcile: str = "enrolled"
    sync_client_ids: tuple[int, ...] = ()
    sync_warehouse_ids: tuple[int, ...] = ()
    mintsoft_rate: float = 2.0
    mintsoft_timezone: str = "Europe/London"
    console_host: str = "127.0.0.1"
    console_port: int = 8090
    console_password: str | None = field(default=None, repr=False)
    console_users_file: str | None = None
    """Named operators, one ``name:hash`` a line (:mod:`bridge.console.users`)."""
    console_secure_cookies: bool = False
    console_trusted_proxies: tuple[str, ...] = ()
    console_allowed_hosts: tuple[str, ...] = ()
    console_allow_placeholder_password: bool = False
    ledger_url: str | None = field(default="sqlite:///./var/ledger.sqlite3", repr=False)
    """``None``: no ledger (``BRIDGE_LEDGER_URL`` set empty)."""

    @property
    def auth_configured(self) -> bool:
        """Whether any credential is configured for incoming webhooks."""
        return bool(self.api_keys or self.auth_headers)

    def secret_values(self) -> tuple[str, ...]:
        """Every configured secret (keys, Authorization values, passwords, the password of
        each URL that has one): what :func:`bridge.core.secrets.mask` is given."""
        found: list[str] = []
        for spec in SPECS.values():
            value = getattr(self, spec.attr, None) if spec.secret else None
            for one in value if isinstance(value, tuple) else (value,):
                if isinstance(one, str) and one:
                    found += url_passwords(one) if "://" in one else [one]
        return tuple(found)

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


SPECS: dict[str, _Spec] = {
    "BRIDGE_AMQP_URL": _Spec(
        "amqp_urls", parse_amqp_urls, "broker URL(s), comma-separated for a cluster", True
    ),
    "BRIDGE_HOST": _Spec("host", lambda n, r: r.strip() or "127.0.0.1", "address serve listens on"),
    "BRIDGE_PORT": _Spec(
        "port", lambda n, r: parse_int(n, r, 1, 65535, 8080), "port serve listens on"
    ),
    "BRIDGE_API_KEYS": _Spec(
        "api_keys", lambda n, r: parse_list(r), "keys accepted as ?APIKEY=", True
    ),
    "BRIDGE_AUTH_HEADERS": _Spec(
        "auth_headers", lambda n, r: parse_list(r), "accepted Authorization values", True
    ),
    "BRIDGE_ALLOW_UNAUTHENTICATED": _Spec(
        "allow_unauthenticated", parse_bool, "serve with no credentials configured"
    ),
    "BRIDGE_EXCHANGE": _Spec("exchange", parse_exchange, "topic exchange webhooks go to"),
    "BRIDGE_MAX_BODY_BYTES": _Spec(
        "max_body_bytes",
        lambda n, r: parse_int(n, r, 1, 1 << 30, 10485760),
        "larger bodies get 413",
    ),
    "BRIDGE_PUBLISH_TIMEOUT": _Spec(
        "publish_timeout",
        lambda n, r: parse_duration(r, f"{n}=", example="5s", bare_unit="s", high=3600),
        "how long to wait for a broker confirm (bare number: seconds)",
    ),
    "BRIDGE_SPOOL_PATH": _Spec("spool_path", lambda n, r: r.strip(), "local spool, empty: none"),
    "BRIDGE_SPOOL_MAX_BYTES": _Spec(
        "spool_max_bytes",
        lambda n, r: parse_int(n, r, 4096, 1 << 50, 1073741824),
        "spool size limit",
    ),
    "BRIDGE_LOG_FORMAT": _Spec("log_format", parse_log_format, "text or json"),
    "BRIDGE_MINTSOFT_URL": _Spec("mintsoft_url", parse_http_url, "Mintsoft API base URL"),
    "BRIDGE_MINTSOFT_API_KEY": _Spec(
        "mintsoft_api_key", parse_optional, "Mintsoft ms-apikey", True
    ),
    "BRIDGE_MINTSOFT_USERNAME": _Spec("mintsoft_username", parse_optional, "Mintsoft user"),
    "BRIDGE_MINTSOFT_PASSWORD": _Spec(
        "mintsoft_password", parse_optional, "Mintsoft password", True
    ),
    "BRIDGE_PUBLIC_URL": _Spec(
        "public_url", parse_optional_http_url, "the bridge's public base URL"
    ),
    "BRIDGE_METRICS_HOST": _Spec(
        "metrics_host",
        lambda n, r: r.strip() or "127.0.0.1",
        "address of the /metrics listener",
    ),
    "BRIDGE_METRICS_PORT": _Spec(
        "metrics_port", parse_optional_port, "port of a separate /metrics listener (unset: none)"
    ),
    "BRIDGE_ARCHIVE": _Spec("archive", parse_bool, "declare and feed the archive stream"),
    "BRIDGE_ARCHIVE_MAX_AGE": _Spec(
        "archive_max_age", parse_max_age, "archive retention, e.g. 30D"
    ),
    "BRIDGE_ARCHIVE_MAX_BYTES": _Spec(
        "archive_max_bytes",
        lambda n, r: parse_int(n, r, 1_000_000, 1 << 60),
        "archive size limit in bytes",
    ),
    "BRIDGE_CONSOLE_HOST": _Spec(
        "console_host", lambda n, r: r.strip() or "127.0.0.1", "address console listens on"
    ),
    "BRIDGE_CONSOLE_PORT": _Spec(
        "console_port", lambda n, r: parse_int(n, r, 1, 65535, 8090), "port console listens on"
    ),
    "BRIDGE_CONSOLE_PASSWORD": _Spec(
        "console_password",
        parse_optional,
        "console sign-in password (or scrypt:/pbkdf2: hash)",
        True,
    ),
    "BRIDGE_CONSOLE_USERS_FILE": _Spec(
        "console_users_file",
        parse_optional,
        "named console operators, one name:hash a line (see console --hash-password)",
    ),
    "BRIDGE_CONSOLE_SECURE_COOKIES": _Spec(
        "console_secure_cookies", parse_bool, "console cookies Secure (reached over https)"
    ),
    "BRIDGE_CONSOLE_TRUSTED_PROXIES": _Spec(
        "console_trusted_proxies",
        lambda n, r: parse_list(r),
        "proxies whose X-Forwarded-For/-Proto the console believes",
    ),
    "BRIDGE_CONSOLE_ALLOWED_HOSTS": _Spec(
        "console_allowed_hosts",
        lambda n, r: parse_list(r),
        "host names the console answers to besides loopback",
    ),
    "BRIDGE_CONSOLE_ALLOW_PLACEHOLDER_PASSWORD": _Spec(
        "console_allow_placeholder_password",
        parse_bool,
        "accept a well-known console password off loopback",
    ),
}


def _sync_duration(example: str) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        return parse_duration(raw, f"{name}=", example=example, bare_unit="s", high=30 * 86400)

    return parse


SPECS.update(
    {
        "BRIDGE_SYNC_STATE_PATH": _Spec(
            "sync_state_path", lambda n, r: r.strip() or "./var/sync.sqlite3", "sync's state"
        ),
        "BRIDGE_SYNC_INTERVAL": _Spec(
            "sync_interval", _sync_duration("60s"), "how often sync polls"
        ),
        "BRIDGE_SYNC_GRACE": _Spec(
            "sync_grace", _sync_duration("15m"), "age before a missing webhook is recovered"
        ),
        "BRIDGE_SYNC_RECONCILE": _Spec(
            "sync_reconcile", parse_reconcile_mode, "enrolled, all or off"
        ),
        "BRIDGE_SYNC_CLIENT_IDS": _Spec("sync_client_ids", parse_ids, "sync only these clients"),
        "BRIDGE_SYNC_WAREHOUSE_IDS": _Spec(
            "sync_warehouse_ids", parse_ids, "sync only these warehouses"
        ),
        "BRIDGE_MINTSOFT_RATE": _Spec(
            "mintsoft_rate",
            lambda n, r: (
                parse_rate(
                    r, f"{n}=", example="2 or 120/m", bare_unit="s", high_per_second=1000
                ).per_second
            ),
            "Mintsoft requests per second (or a rate: 120/m)",
        ),
        "BRIDGE_MINTSOFT_TIMEZONE": _Spec(
            "mintsoft_timezone", parse_timezone, "zone of Mintsoft's date-times"
        ),
        # A secret: a PostgreSQL URL may hold a password (so no flag; env or _FILE only).
        "BRIDGE_LEDGER_URL": _Spec(
            "ledger_url", parse_ledger_url, "the ledger database URL (empty: no ledger)", True
        ),
    }
)


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


def read_variable(variable: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of ``variable``, or of the file its ``<variable>_FILE`` names (stripped);
    ``None`` when neither is set. Both set, or an unreadable file, is a
    :class:`SettingsError` naming the variable (never its value)."""
    env = os.environ if environ is None else environ
    if env.get(variable) is not None:
        if env.get(variable + "_FILE"):
            raise SettingsError(f"{variable} and {variable}_FILE are both set: keep one")
        return env[variable]
    if env.get(variable + "_FILE"):
        return _read_file(variable, env[variable + "_FILE"])
    return None


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
        else:
            raw = read_variable(variable, env)
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
