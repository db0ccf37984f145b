"""Masking secrets in text: the one function every error, log line, header and page that
may quote a credential goes through (the sync's errors and state, the worker's ``x-error``,
its logs and ``dlq list``, and the console).

:func:`mask` replaces, with ``***``:

- every configured secret given to it, in any letter case, raw or URL-encoded (each
  character either itself or percent-encoded with upper- or lower-case hex, a space also
  as ``+``), so a service echoing a key upper-cased or through a URL encoder does not leak
  it; a ``Scheme token`` value (``Bearer abc``, ``Basic ...``) is masked as a whole and its
  token alone;
- whatever follows ``APIKEY=``, ``token=``, ``password=``, ``Authorization:`` and the
  ``Bearer`` / ``Basic`` schemes, even when the value was never configured here.

It never raises; a text without secrets comes back unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

MASK = "***"
_MIN_LENGTH = 3
"""Shorter values are not masked by value (they would blank common words); the patterns
below still catch them after ``APIKEY=`` and the like."""

_PATTERNS = re.compile(
    r"((?:apikey|api_key|api-key|ms-apikey|token|password|secret)\s*[=:]\s*)[^&\s'\"]+"
    r"|((?:authorization)\s*[=:]\s*)(?:(?:basic|bearer)\s+)?[^&\s'\",]+"
    r"|(\b(?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]+=*",
    re.I,
)


def secret_forms(value: str) -> tuple[str, ...]:
    """``value`` and, for a ``Scheme token`` header value, the token alone."""
    value = value.strip()
    scheme, _, token = value.partition(" ")
    if token.strip() and scheme.isalpha():
        return (value, token.strip())
    return (value,) if value else ()


def _char(c: str) -> str:
    """A pattern for one character: itself (any case), percent-encoded (any hex case),
    or ``+`` for a space."""
    encoded = "".join(f"%{byte:02x}" for byte in c.encode("utf-8"))
    options = [re.escape(c), re.escape(encoded)]
    if c == " ":
        options.append(r"\+")
    return "(?:" + "|".join(options) + ")"


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    forms = {form for secret in secrets for form in secret_forms(secret)}
    usable = sorted((f for f in forms if len(f) >= _MIN_LENGTH), key=len, reverse=True)
    if not usable:
        return None
    return re.compile("|".join("".join(_char(c) for c in f) for f in usable), re.I)


def mask(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every one of ``secrets`` and every credential-looking value masked."""
    pattern = _pattern(tuple(sorted({s for s in secrets if s})))
    if pattern is not None:
        text = pattern.sub(MASK, text)
    return _PATTERNS.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + MASK, text)
