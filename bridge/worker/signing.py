"""Signed forwards (Standard Webhooks, contract section 5): the secrets a subscriber's
``signing_secrets_env`` names, and the three headers that sign one request.

Each forward carries ``webhook-id`` (the message id: the same on every retry, so a target
can drop duplicates), ``webhook-timestamp`` (Unix seconds at this try, so a target can
refuse old replays) and ``webhook-signature``: ``v1,<base64 HMAC-SHA256(key,
"<id>.<timestamp>.<body>")>`` for each secret, space-separated, so a target that knows any
one of them verifies (key rotation: add the new secret, move the targets, drop the old one).

Fails: :func:`load_signer` raises :class:`~bridge.core.settings.SettingsError` naming the
variable when it is unset, empty or holds anything but ``whsec_<base64>`` values; neither
the errors nor a :class:`Signer`'s ``repr`` ever show a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Any

from bridge.core.contract import HTTP_WEBHOOK_ID, HTTP_WEBHOOK_SIGNATURE, HTTP_WEBHOOK_TIMESTAMP
from bridge.core.settings import SettingsError, read_variable

SECRET_PREFIX = "whsec_"
MIN_KEY_BYTES = 16
"""Shorter keys are refused: Standard Webhooks asks for 24 to 64 random bytes; 16 still
leaves brute force out of reach, and anything shorter is a mistake, not a secret."""


class Signer:
    """Signs forwards with one or more keys (the decoded part of each ``whsec_`` secret)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        if not keys:
            raise ValueError("a signer needs at least one key")
        self._keys = keys

    def __repr__(self) -> str:
        return f"Signer({len(self._keys)} secret{'s' if len(self._keys) != 1 else ''})"

    def headers(self, message_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for one request."""
        timestamp = str(int(time.time() if now is None else now))
        signed = f"{message_id}.{timestamp}.".encode() + body
        signatures = " ".join(
            "v1," + base64.b64encode(hmac.digest(key, signed, hashlib.sha256)).decode()
            for key in self._keys
        )
        return {
            HTTP_WEBHOOK_ID: message_id,
            HTTP_WEBHOOK_TIMESTAMP: timestamp,
            HTTP_WEBHOOK_SIGNATURE: signatures,
        }


_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")


def signing_variable(value: Any, forward_url: str | None, where: str) -> str | None:
    """A subscriber's ``signing_secrets_env`` as checked in its file (``None`` when unset):
    a variable name, on a forwarding subscriber. Never echoes a bad value (it may be a
    secret pasted in by mistake)."""
    if value is None:
        return None
    where = f"{where}: signing_secrets_env"
    if forward_url is None:
        raise SettingsError(f"{where}: only signs the built-in forwarder: set forward_url")
    if not isinstance(value, str) or not _VARIABLE.match(value):
        raise SettingsError(
            f"{where}: not an environment variable name: name the variable that holds the "
            'secrets (e.g. signing_secrets_env = "ERP_SIGNING_SECRETS"), never a secret'
        )
    return value


def load_signer(variable: str, subscriber: str) -> Signer:
    """The :class:`Signer` of the secrets in ``variable`` (or ``<variable>_FILE``)."""
    where = f"{variable} (signing_secrets_env of subscriber {subscriber!r})"
    raw = read_variable(variable)
    if raw is None or not raw.split():
        raise SettingsError(
            f"{where} is not set: set it (or {variable}_FILE) to one or more space-separated "
            f"{SECRET_PREFIX}<base64> secrets"
        )
    keys = []
    for number, secret in enumerate(raw.split(), start=1):
        key = _key(secret)
        if key is None:
            raise SettingsError(
                f"{where}: secret #{number} is not {SECRET_PREFIX} followed by base64 of at "
                f"least {MIN_KEY_BYTES} bytes: generate one with "
                "python -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(32))"
                '.decode())"'
            )
        keys.append(key)
    return Signer(tuple(keys))


def _key(secret: str) -> bytes | None:
    if not secret.startswith(SECRET_PREFIX):
        return None
    text = secret[len(SECRET_PREFIX) :]
    try:
        # Unpadded base64 is accepted, as the Standard Webhooks libraries accept it.
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) >= MIN_KEY_BYTES else None
