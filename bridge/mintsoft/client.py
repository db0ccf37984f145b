"""A small Mintsoft API client.

Mintsoft authorises every call with the ``ms-apikey`` header. The key is either configured
(``BRIDGE_MINTSOFT_API_KEY``) or obtained from ``POST /api/Auth`` with a username and
password; such keys expire after 24 hours, so a 401 fetches a fresh one, once. 429 and 5xx
answers are retried a few times, waiting what ``Retry-After`` asks for (within a bound).
Redirects are never followed (they would take the key, the password or the bridge's own
credential elsewhere): a 3xx fails the call with its status and the target's origin.

What is read is bounded, whatever Mintsoft (or something in its place) sends: an answer's
body at most :data:`MAX_PAGE_BYTES` (more is an error naming the limit, the rest unread),
an error's body only its first :data:`MAX_ERROR_BYTES` (on every attempt; the connection is
closed rather than drained).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Self
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bridge.core.secrets import mask
from bridge.core.settings import Settings, SettingsError
from bridge.errors import CommandError
from bridge.mintsoft.urls import require_https

REQUEST_TIMEOUT = 30.0
RETRIES = 4
"""A 429, a 5xx or a failed connection is retried up to this many times (as docs/mintsoft.md
says)."""
ATTEMPTS = RETRIES + 1
MAX_RETRY_AFTER = 30.0
"""Longest ``Retry-After`` honoured; asked to wait longer, the command gives up and says so."""
MAX_PAGE_BYTES = 32 * 1024 * 1024
"""Largest answer read: a page of 100 orders is well under 1 MiB; 32 MiB is a broken or
hostile server (a 66 MB page of a million orders once cost 680 MB of memory)."""
MAX_ERROR_BYTES = 1024
"""How much of an error's body is read: enough for Mintsoft's message."""


def rate_limiter(per_second: float) -> AsyncLimiter:
    """At most ``per_second`` requests a second (``BRIDGE_MINTSOFT_RATE``), never a burst
    above one second's worth; below 1/s, one request per ``1/per_second`` seconds."""
    if per_second >= 1:
        return AsyncLimiter(per_second, 1.0)
    return AsyncLimiter(1, 1.0 / per_second)


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
        limiter: AbstractAsyncContextManager[Any] | None = None,
        on_answer: Callable[[str], None] | None = None,
        max_retry_after: float = MAX_RETRY_AFTER,
        redact: Sequence[str] = (),
    ) -> None:
        """``limiter`` is entered around every HTTP attempt (a rate limit that retries obey
        too); ``on_answer`` is told each attempt's outcome: the status code, or ``error``;
        ``redact`` are more secrets to mask in errors besides the Mintsoft key and password
        (the bridge's own credentials, which a connect-action body carries)."""
        self._redact = tuple(redact)
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
        self._limiter = limiter
        self._on_answer = on_answer
        self._max_retry_after = max_retry_after

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
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
        return float(wait_exponential_jitter(multiplier=self._backoff, max=10)(state))

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

    def _answered(self, answer: str) -> None:
        if self._on_answer is not None:
            self._on_answer(answer)

    def _secrets(self, key: str | None) -> tuple[str, ...]:
        return tuple(s for s in (key, self._key, self._password, *self._redact) if s)

    async def _once(self, method: str, path: str, payload: Any, key: str | None) -> Any:
        assert self._session is not None, "use MintsoftClient in an async with block"
        headers = {"Accept": "application/json"}
        if key is not None:
            headers["ms-apikey"] = key
        url = self._base + path
        what = f"{method} {path}"
        if self._limiter is not None:
            async with self._limiter:
                pass
        try:
            async with self._session.request(
                method,
                url,
                data=None if payload is None else orjson.dumps(payload),
                headers=(
                    headers if payload is None else {**headers, "Content-Type": "application/json"}
                ),
                # A redirect would carry ms-apikey, the body (the bridge's key, or the
                # Mintsoft password on /api/Auth) to whatever host it names: never follow.
                allow_redirects=False,
            ) as response:
                status = response.status
                location = response.headers.get("Location", "")
                retry_after = _retry_after(response.headers.get("Retry-After"))
                limit = MAX_PAGE_BYTES if status < 300 else MAX_ERROR_BYTES
                body, whole = await _read_at_most(response, limit)
                text = body.decode(response.get_encoding() if whole else "utf-8", "replace")
        except TimeoutError:
            self._answered("error")
            raise _Retryable(f"Mintsoft did not answer {what} in time") from None
        except aiohttp.ClientError as exc:
            self._answered("error")
            raise _Retryable(f"cannot reach Mintsoft at {self._base} ({exc})") from None
        self._answered(str(status))
        if status < 300 and not whole:
            raise MintsoftError(
                f"Mintsoft answered {what} with more than {MAX_PAGE_BYTES // (1024 * 1024)} MiB: "
                "not read further; check BRIDGE_MINTSOFT_URL points at the Mintsoft API",
                status,
            )
        if 300 <= status < 400:
            raise MintsoftError(
                f"Mintsoft answered {what} with {status} redirecting to "
                f"{_origin(url, location)}: not followed, credentials go only to "
                f"BRIDGE_MINTSOFT_URL ({self._base}); check it is the API's address",
                status,
            )
        said = _said(text, self._secrets(key)) if status >= 400 else ""
        if status == 429 or status >= 500:
            if retry_after is not None and retry_after > self._max_retry_after:
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
            try:  # orjson refuses integers above 64 bits; the standard parser takes them
                document = json.loads(text)
            except ValueError:
                return text
        # Some Mintsoft calls answer 200 with {"Success": false, "Message": ...}.
        if isinstance(document, dict) and document.get("Success") is False:
            raise MintsoftError(
                f"Mintsoft answered {what} with {status} but did not do it"
                f"{_said(text, self._secrets(key))}",
                status,
            )
        return document


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether that was all of it. A body cut short
    closes the connection (never drained: that would read it all)."""
    if response.content_length is not None and response.content_length > limit:
        body, whole = await response.content.read(min(limit, MAX_ERROR_BYTES)), False
    else:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            more = await response.content.read(limit + 1 - size)
            if not more:
                break
            chunks.append(more)
            size += len(more)
        whole = size <= limit
        body = b"".join(chunks)[:limit]
    if not whole:
        response.close()
    return body, whole


def _origin(url: str, location: str) -> str:
    """Scheme, host and port a redirect points at (never its path or query, which may hold
    a key)."""
    if not location:
        return "nowhere (no Location)"
    try:
        target = urlsplit(urljoin(url, location))
        host = target.hostname or "?"
        port = f":{target.port}" if target.port else ""
    except ValueError:
        return "an unreadable Location"
    return f"{target.scheme}://{host}{port}"


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
    message = mask(" ".join(str(message).split()), secrets)
    if not message:
        return ""
    return ": " + (message[:300] + "…" if len(message) > 300 else message)


def client_for(settings: Settings, **options: Any) -> MintsoftClient:
    """The client ``settings`` describe (``options`` as :class:`MintsoftClient` takes them):
    HTTPS required, and the bridge's own credentials masked in its errors like Mintsoft's."""
    require_https(
        "BRIDGE_MINTSOFT_URL", settings.mintsoft_url, "the Mintsoft key would be sent in clear"
    )
    return MintsoftClient(
        settings.mintsoft_url,
        api_key=settings.mintsoft_api_key,
        username=settings.mintsoft_username,
        password=settings.mintsoft_password,
        redact=settings.secret_values(),
        **options,
    )
