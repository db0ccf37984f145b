"""The built-in HTTP forwarder: POSTs each message to ``forward_url``; its
:class:`~bridge.worker.breaker.CircuitBreaker` pauses the subscriber while the target is down.

2xx is success. A 429 or 503 with a ``Retry-After`` raises :class:`Throttled`: the subscriber
pauses that long and tries the same message again, spending no try. 408, 429, other 5xx,
timeouts and refused connections raise :class:`ForwardFailed` (retried along the ladder);
any other answer raises
:class:`~bridge.errors.PermanentError` (straight to the DLQ). Refused or dropped connections,
timeouts and 502/503/504 also count towards the breaker: after ``threshold`` of them in a
row it opens, the worker stops taking messages (they wait in the queue, no attempt spent),
and the breaker probes the target until it answers, then closes and the worker resumes.
Of the answer's body only the first :data:`KEPT_BYTES` are read (for ``x-error`` and the
delivery record): a target answering gigabytes costs the worker no more memory than a short
answer. Each call leaves its HTTP status and those bytes, credentials masked, in
:data:`LAST_ANSWER` (of the calling task) for the attempt's delivery record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp

from bridge import __version__
from bridge.core.contract import HTTP_EVENT, HTTP_MESSAGE_ID, HTTP_REQUEST_ID
from bridge.core.secrets import mask
from bridge.core.values import url_passwords
from bridge.errors import PermanentError
from bridge.worker.breaker import CircuitBreaker
from bridge.worker.message import Message
from bridge.worker.signing import Signer

log = logging.getLogger("bridge.worker.forwarder")

DOWN_STATUSES = frozenset({502, 503, 504})
KEPT_BYTES = 200
"""Bytes of the target's answer kept (for ``x-error``); the rest is never read."""
RETRY_STATUSES = frozenset({408, 429})
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    """What the target answered: its HTTP status and at most :data:`KEPT_BYTES` of its
    body, credentials masked."""

    status: int
    text: str


LAST_ANSWER: ContextVar[Answer | None] = ContextVar("bridge_forward_answer", default=None)
"""The answer to the current task's last forward (None: no answer, or not a forwarder)."""


class ForwardFailed(Exception):
    """The target did not take the message this time; worth retrying."""


class TargetDown(ForwardFailed):
    """The target could not be reached (refused, timeout, 502/503/504)."""


class Throttled(ForwardFailed):
    """The target answered 429 or 503 with ``Retry-After``: wait ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


THROTTLE_STATUSES = frozenset({429, 503})


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` value (delta-seconds or an HTTP date) in seconds; None if absent
    or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if seconds == seconds else None  # NaN is unreadable


def shown_url(url: str) -> str:
    """The URL without credentials or query (safe for logs and ``x-error``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


class Forwarder:
    """A handler that POSTs the body to ``url`` with its content type and the headers
    ``X-Mintsoft-Event``, ``X-Message-Id`` (and ``X-Request-Id`` when known); with a
    ``signer``, each request also carries its Standard Webhooks signature headers."""

    def __init__(
        self,
        subscriber: str,
        url: str,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        connections: int = 32,
        signer: Signer | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.url = url
        self.timeout = timeout
        self.extra_headers = dict(headers or {})
        self.connections = connections
        self.signer = signer
        self.breaker = CircuitBreaker(subscriber, self.probe)
        self._session: aiohttp.ClientSession | None = None
        self._where = shown_url(url)
        # A target may echo what it was sent ("credential rejected: Bearer ..."): its words
        # reach logs, x-error, dlq list and the console only masked.
        self._secrets = (*self.extra_headers.values(), *url_passwords(url))

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": f"mintsoft-bridge/{__version__}"},
            )
        return self._session

    async def __call__(self, message: Message) -> None:
        headers = {
            **self.extra_headers,
            "Content-Type": message.content_type,
            HTTP_EVENT: message.event,
            HTTP_MESSAGE_ID: message.message_id,
        }
        if message.request_id:
            headers[HTTP_REQUEST_ID] = message.request_id
        if self.signer is not None:
            # Signed at each try: a fresh timestamp, so a retry is no stale replay.
            headers.update(self.signer.headers(message.message_id, message.body))
        try:
            async with self._client().post(
                self.url, data=message.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                text = (await _head(response)).decode("utf-8", "replace")
            LAST_ANSWER.set(Answer(status, self._masked(text)))
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            self.breaker.target_down()
            reason = "no answer in time" if isinstance(exc, TimeoutError) else _reason(exc)
            raise TargetDown(self._masked(f"{self._where}: {reason}")) from None
        if 200 <= status < 300:
            self.breaker.succeeded()
            return
        detail = self._masked(f"{self._where} answered {status}: {text.strip()}").rstrip(": ")
        wait = retry_after_seconds(retry_after) if status in THROTTLE_STATUSES else None
        if wait is not None:
            # The target is up and said when to come back: no breaker, no retry step.
            self.breaker.succeeded()
            raise Throttled(detail, wait)
        if status in DOWN_STATUSES:
            self.breaker.target_down()
            raise TargetDown(detail)
        self.breaker.succeeded()
        if status in RETRY_STATUSES or status >= 500:
            raise ForwardFailed(detail)
        raise PermanentError(detail)

    def _masked(self, text: str) -> str:
        """``text`` with the credentials this forwarder sends (header values, the URL's
        password) masked: a target may echo what it was sent."""
        return mask(text, self._secrets)

    async def probe(self) -> bool:
        """Whether the target answers at all (a HEAD request; any status but 502-504)."""
        try:
            async with asyncio.timeout(min(self.timeout, PROBE_TIMEOUT)):
                async with self._client().head(self.url, allow_redirects=False) as response:
                    return response.status not in DOWN_STATUSES
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def close(self) -> None:
        await self.breaker.close()
        if self._session is not None:
            await self._session.close()


async def _head(response: aiohttp.ClientResponse) -> bytes:
    """At most :data:`KEPT_BYTES` of the body; the connection is closed unless the body was
    read to its end, so a huge answer costs the worker at most aiohttp's read buffer."""
    kept = b""
    while len(kept) < KEPT_BYTES:
        chunk = await response.content.read(KEPT_BYTES - len(kept))
        if not chunk:
            return kept
        kept += chunk
    if not response.content.at_eof():
        response.close()
    return kept


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
