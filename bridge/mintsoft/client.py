"""A small Mintsoft API client, and ``connect-actions``: registering the bridge's webhook URLs
on Mintsoft orders.

Mintsoft authorises every call with the ``ms-apikey`` header. The key is either configured
(``BRIDGE_MINTSOFT_API_KEY``) or obtained from ``POST /api/Auth`` with a username and
password; such keys expire after 24 hours, so a 401 fetches a fresh one, once. 429 and 5xx
answers are retried a few times, waiting what ``Retry-After`` asks for (within a bound).
"""

from __future__ import annotations

import asyncio
import email.utils
import sys
import time
from argparse import Namespace
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bridge.core.contract import EVENTS, EXTRA_CODES
from bridge.core.progress import Progress
from bridge.core.settings import Settings, SettingsError
from bridge.errors import CommandError
from bridge.mintsoft.urls import check_public_url, mintsoft_credentials, require_https, webhook_url

EXTRA_CODE_MAX_CHARS = 255
"""Mintsoft does not document the length of a connect action's ExtraCode fields; 255 is the
usual size of such a column, so longer values are refused rather than silently cut."""

REQUEST_TIMEOUT = 30.0
ATTEMPTS = 4
MAX_RETRY_AFTER = 30.0
"""Longest ``Retry-After`` honoured; asked to wait longer, the command gives up and says so."""

BULK_CONCURRENCY = 4
"""Orders registered at once by ``--from-file``: gentle on Mintsoft's rate limit."""


class MintsoftError(CommandError):
    """Mintsoft refused or could not be reached; the message says what it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    """A 429 or 5xx answer, or a failed connection: worth another attempt."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class MintsoftClient:
    """Calls the Mintsoft API; use as ``async with MintsoftClient(...) as client``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
        attempts: int = ATTEMPTS,
        backoff: float = 1.0,
    ) -> None:
        if api_key is None and not (username and password):
            raise SettingsError(
                "no Mintsoft credentials: set BRIDGE_MINTSOFT_API_KEY (or "
                "BRIDGE_MINTSOFT_USERNAME and BRIDGE_MINTSOFT_PASSWORD)"
            )
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._username = username
        self._password = password
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._attempts = attempts
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None
        self._auth_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def _can_login(self) -> bool:
        return bool(self._username and self._password)

    async def authenticate(self) -> str:
        """A fresh key from ``POST /api/Auth`` (its answer is the key as a JSON string)."""
        try:
            answer = await self._send(
                "POST",
                "/api/Auth",
                {"Username": self._username, "Password": self._password},
                key=None,
            )
        except MintsoftError as exc:
            if exc.status not in (400, 401, 403):
                raise
            raise MintsoftError(
                f"Mintsoft refused the login of BRIDGE_MINTSOFT_USERNAME={self._username!r} "
                f"({exc.status}): check BRIDGE_MINTSOFT_USERNAME and BRIDGE_MINTSOFT_PASSWORD "
                "(the Mintsoft password, which may differ from the Access Evo one)",
                exc.status,
            ) from None
        if not isinstance(answer, str) or not answer.strip():
            raise MintsoftError(
                "Mintsoft's POST /api/Auth did not answer with a key: check "
                "BRIDGE_MINTSOFT_URL points at the Mintsoft API"
            )
        self._key = answer.strip()
        return self._key

    async def request(self, method: str, path: str, payload: Any = None) -> Any:
        """Call ``path`` with the key; on a 401 with a username and password, log in again
        and repeat the call once. Returns the parsed JSON answer (``None`` if empty)."""
        key = await self._current_key()
        try:
            return await self._send(method, path, payload, key=key)
        except MintsoftError as exc:
            if exc.status != 401 or not self._can_login:
                raise
        async with self._auth_lock:
            if self._key is None or self._key == key:  # nobody refreshed it meanwhile
                fresh = await self.authenticate()
            else:
                fresh = self._key
        return await self._send(method, path, payload, key=fresh)

    async def connect_actions(self, order_id: int, body: dict[str, Any]) -> Any:
        """``PUT /api/Order/<order_id>/ConnectActions`` with ``body``."""
        return await self.request("PUT", f"/api/Order/{order_id}/ConnectActions", body)

    async def _current_key(self) -> str:
        async with self._auth_lock:
            if self._key is None:
                await self.authenticate()
            assert self._key is not None
            return self._key

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            return error.retry_after
        return float(wait_exponential_jitter(initial=self._backoff, max=10)(state))

    async def _send(self, method: str, path: str, payload: Any, key: str | None) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(method, path, payload, key)
        except _Retryable as exc:
            raise MintsoftError(f"{exc} (gave up after {self._attempts} attempts)") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _secrets(self, key: str | None) -> tuple[str, ...]:
        return tuple(s for s in (key, self._key, self._password) if s)

    async def _once(self, method: str, path: str, payload: Any, key: str | None) -> Any:
        assert self._session is not None, "use MintsoftClient in an async with block"
        headers = {"Accept": "application/json"}
        if key is not None:
            headers["ms-apikey"] = key
        url = self._base + path
        what = f"{method} {path}"
        try:
            async with self._session.request(
                method,
                url,
                data=None if payload is None else orjson.dumps(payload),
                headers=(
                    headers if payload is None else {**headers, "Content-Type": "application/json"}
                ),
            ) as response:
                status = response.status
                text = await response.text(errors="replace")
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError:
            raise _Retryable(f"Mintsoft did not answer {what} in time") from None
        except aiohttp.ClientError as exc:
            raise _Retryable(f"cannot reach Mintsoft at {self._base} ({exc})") from None
        said = _said(text, self._secrets(key)) if status >= 400 else ""
        if status == 429 or status >= 500:
            if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                raise MintsoftError(
                    f"Mintsoft answered {what} with {status}{said} and asked to wait "
                    f"{retry_after:.0f} s: try again later",
                    status,
                )
            raise _Retryable(f"Mintsoft answered {what} with {status}{said}", retry_after)
        if status == 401 and key is not None:
            raise MintsoftError(
                f"Mintsoft refused the API key for {what} (401){said}: set a valid "
                "BRIDGE_MINTSOFT_API_KEY, or BRIDGE_MINTSOFT_USERNAME and "
                "BRIDGE_MINTSOFT_PASSWORD",
                status,
            )
        if status >= 400:
            raise MintsoftError(f"Mintsoft answered {what} with {status}{said}", status)
        if not text.strip():
            return None
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        # Some Mintsoft calls answer 200 with {"Success": false, "Message": ...}.
        if isinstance(document, dict) and document.get("Success") is False:
            raise MintsoftError(
                f"Mintsoft answered {what} with {status} but did not do it"
                f"{_said(text, self._secrets(key))}",
                status,
            )
        return document


def _said(text: str, secrets: tuple[str, ...]) -> str:
    """``: <what Mintsoft said>``, short, one line, the key never in it."""
    message = text
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict):
        for field in ("Message", "message", "error_description", "error"):
            if isinstance(document.get(field), str):
                message = str(document[field])
                detail = document.get("ExceptionMessage") or document.get("MessageDetail")
                if isinstance(detail, str):
                    message += f" ({detail})"
                break
    elif isinstance(document, str):
        message = document
    message = " ".join(str(message).split())
    for secret in secrets:
        message = message.replace(secret, "***")
    if not message:
        return ""
    return ": " + (message[:300] + "…" if len(message) > 300 else message)


# --- connect-actions --------------------------------------------------------------------


def parse_events(raw: str) -> tuple[str, ...]:
    """``despatched,split`` -> the events in Mintsoft's field order; a bad name raises."""
    wanted = [part.strip().lower() for part in raw.split(",") if part.strip()]
    unknown = [e for e in wanted if e not in EVENTS]
    if unknown or not wanted:
        raise SettingsError(
            f"--events {raw!r} names no known event{'s' if len(unknown) > 1 else ''}"
            f"{' (' + ', '.join(unknown) + ')' if unknown else ''}: use a comma-separated "
            f"list of {', '.join(EVENTS)}"
        )
    return tuple(e for e in EVENTS if e in wanted)


def connect_action(
    settings: Settings, events: Iterable[str], source_order_id: str | None
) -> dict[str, Any]:
    """The connect-action body of contract section 6: one URL per event, and the bridge's
    credential as ``ExtraCode4`` (an Authorization value) or else ``?APIKEY=`` on each URL."""
    if settings.public_url is None:
        raise SettingsError(
            "BRIDGE_PUBLIC_URL is not set: set it to the https URL Mintsoft will call, "
            "e.g. https://bridge.example.com"
        )
    check_public_url(settings.public_url)
    if not settings.auth_configured and not settings.allow_unauthenticated:
        raise SettingsError(
            "BRIDGE_AUTH_HEADERS and BRIDGE_API_KEYS are both unset, so the bridge would answer "
            "Mintsoft 401: set one of them to the value the bridge serves with"
        )
    api_key, headers = mintsoft_credentials(settings)
    auth_header = headers.get("Authorization")
    body: dict[str, Any] = {"Type": "API", "SourceOrderId": source_order_id, "Complete": False}
    extra = {
        EXTRA_CODES[event]: _fits(
            EXTRA_CODES[event], webhook_url(settings.public_url, event, api_key)
        )
        for event in events
    }
    if auth_header:
        extra["ExtraCode4"] = _fits("ExtraCode4", auth_header, show=False)
    return body | dict(sorted(extra.items()))


def _fits(field: str, value: str, show: bool = True) -> str:
    if len(value) > EXTRA_CODE_MAX_CHARS:
        shown = "" if not show or "APIKEY=" in value else f" ({value[:60]}…)"
        raise SettingsError(
            f"{field} would be {len(value)} characters{shown}, more than the "
            f"{EXTRA_CODE_MAX_CHARS} a Mintsoft ExtraCode field holds: shorten "
            "BRIDGE_PUBLIC_URL or the credential (BRIDGE_API_KEYS / BRIDGE_AUTH_HEADERS)"
        )
    return value


@dataclass(frozen=True)
class OrderToConnect:
    order_id: int
    source_order_id: str | None


def _order_id(raw: str, where: str) -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{where}: {raw!r} is not a Mintsoft order id: use a whole number")
    return int(text)


def read_orders_file(path: str) -> list[OrderToConnect]:
    """Order ids one per line, or CSV lines ``order id,source order id``; blank lines,
    ``#`` comments and a header line (``OrderId,SourceOrderId``) are skipped."""
    import csv

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SettingsError(
            f"--from-file {path!r} cannot be read ({exc.strerror or type(exc).__name__}): "
            "point it at a file of order ids"
        ) from None
    orders: list[OrderToConnect] = []
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [cell.strip() for cell in row]
        if not cells or not cells[0] or cells[0].startswith("#"):
            continue
        if number == 1 and not cells[0].isdigit() and "order" in cells[0].lower():
            continue  # a header line
        source = cells[1] if len(cells) > 1 and cells[1] else None
        orders.append(OrderToConnect(_order_id(cells[0], f"{path} line {number}"), source))
    if not orders:
        raise SettingsError(f"--from-file {path!r} holds no order ids: put one per line")
    return orders


def _orders(args: Namespace) -> list[OrderToConnect]:
    orders = [
        OrderToConnect(_order_id(raw, "ORDER_ID"), args.source_order_id) for raw in args.order_ids
    ]
    if args.from_file:
        orders += read_orders_file(args.from_file)
    if not orders:
        raise SettingsError(
            "no order given: pass ORDER_ID (the id PUT /api/Order answered) or --from-file FILE"
        )
    return orders


def _dumps(document: Any) -> str:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


async def connect_actions_command(settings: Settings, args: Namespace) -> int:
    """``connect-actions``: register the bridge's URLs on orders (or print what would be)."""
    events = parse_events(args.events)
    if args.print_create_order:
        block = connect_action(settings, events, args.source_order_id)
        print(_dumps({"ConnectAction": block}))
        print(
            "# add this block to the body of your create-order call (PUT /api/Order)",
            file=sys.stderr,
        )
        return 0
    orders = _orders(args)
    bodies = [(o, connect_action(settings, events, o.source_order_id)) for o in orders]
    if args.dry_run:
        for order, body in bodies:
            print(
                f"# would PUT {settings.mintsoft_url}/api/Order/{order.order_id}/ConnectActions",
                file=sys.stderr,
            )
            print(_dumps(body))
        return 0
    async with _client(settings) as client:
        if len(bodies) == 1:
            order, body = bodies[0]
            await client.connect_actions(order.order_id, body)
            print(f"order {order.order_id}: connect action registered ({', '.join(events)})")
            return 0
        return await _connect_many(client, bodies, events)


def _client(settings: Settings) -> MintsoftClient:
    require_https(
        "BRIDGE_MINTSOFT_URL", settings.mintsoft_url, "the Mintsoft key would be sent in clear"
    )
    return MintsoftClient(
        settings.mintsoft_url,
        api_key=settings.mintsoft_api_key,
        username=settings.mintsoft_username,
        password=settings.mintsoft_password,
    )


async def _connect_many(
    client: MintsoftClient,
    bodies: list[tuple[OrderToConnect, dict[str, Any]]],
    events: tuple[str, ...],
) -> int:
    progress = Progress(len(bodies), "connect-actions")
    failures: list[tuple[int, str]] = []
    limit = asyncio.Semaphore(BULK_CONCURRENCY)

    async def one(order: OrderToConnect, body: dict[str, Any]) -> None:
        async with limit:
            try:
                await client.connect_actions(order.order_id, body)
            except CommandError as exc:
                failures.append((order.order_id, str(exc)))
                progress.advance(ok=False)
            else:
                progress.advance(ok=True)

    await asyncio.gather(*(one(order, body) for order, body in bodies))
    progress.close()
    done = len(bodies) - len(failures)
    print(
        f"connect actions registered on {done} of {len(bodies)} orders "
        f"({', '.join(events)}); {len(failures)} failed"
    )
    for order_id, reason in sorted(failures):
        print(f"  order {order_id}: {reason}")
    return 1 if failures else 0
