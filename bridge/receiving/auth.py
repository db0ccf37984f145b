"""Webhook authentication: the ``APIKEY`` query parameter or the whole ``Authorization``
header, compared in constant time against every configured value (so keys can be rotated
by listing old and new together)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from multidict import MultiMapping


class Authenticator:
    """Checks one request's credentials; knows nothing of HTTP beyond query and headers."""

    def __init__(
        self, api_keys: Iterable[str], auth_headers: Iterable[str], allow_unauthenticated: bool
    ) -> None:
        self._keys = tuple(k.encode() for k in api_keys)
        self._headers = tuple(h.encode() for h in auth_headers)
        self._open = allow_unauthenticated and not self._keys and not self._headers

    def check(self, query: MultiMapping[str], headers: Mapping[str, str]) -> bool:
        """True when a configured API key or Authorization value matches exactly."""
        if self._open:
            return True
        ok = False
        if self._keys:
            for name, value in query.items():
                if name.lower() == "apikey":
                    ok |= _matches_any(value, self._keys)
        if self._headers:
            given = headers.get("Authorization")
            if given is not None:
                ok |= _matches_any(given, self._headers)
        return ok


def _matches_any(given: str, accepted: tuple[bytes, ...]) -> bool:
    raw = given.encode("utf-8", "surrogateescape")
    found = False
    # Compare against every value, without stopping early, so timing says nothing of which.
    for value in accepted:
        found |= hmac.compare_digest(raw, value)
    return found
