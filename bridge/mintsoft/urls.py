"""The bridge's webhook URLs as Mintsoft (and ``simulate``) call them, and the rule for an
acceptable public URL."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote, urlsplit

from bridge.core.secrets import mask
from bridge.core.settings import Settings, SettingsError


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(setting: str, url: str, why: str) -> None:
    """Refuse plain http, unless to a loopback address (a local trial): ``why`` says what
    would cross the network in clear."""
    parts = urlsplit(url)
    if parts.scheme != "https" and not is_loopback(parts.hostname):
        raise SettingsError(f"{setting}={url!r} is not https: {why}; use its https:// URL")


def check_public_url(url: str) -> None:
    """Refuse a public URL Mintsoft must not be given: plain http (order data and the key
    would cross the internet in clear) unless it is loopback, or one with a query."""
    require_https(
        "BRIDGE_PUBLIC_URL",
        url,
        "Mintsoft would send orders and the key in clear (put TLS in front)",
    )
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise SettingsError(
            f"BRIDGE_PUBLIC_URL={url!r} has a query or fragment: give only the base URL, "
            "e.g. https://bridge.example.com"
        )


def webhook_url(base: str, event: str, api_key: str | None = None) -> str:
    """``<base>/webhooks/<event>``, with ``?APIKEY=<key>`` when a key is given."""
    url = f"{base.rstrip('/')}/webhooks/{event}"
    if api_key:
        url += "?APIKEY=" + quote(api_key, safe="")
    return url


def mintsoft_credentials(settings: Settings) -> tuple[str | None, dict[str, str]]:
    """What Mintsoft is given to authenticate with, as ``(api_key, headers)``: the first
    Authorization value (``ExtraCode4``) if any, else the first key as ``?APIKEY=``.
    ``connect-actions`` registers it and ``simulate`` sends it, so both always agree."""
    if settings.auth_headers:
        return None, {"Authorization": settings.auth_headers[0]}
    if settings.api_keys:
        return settings.api_keys[0], {}
    return None, {}


def without_key(text: str, api_key: str | None) -> str:
    """``text`` (an error that may quote the request URL) with every ``APIKEY=`` value, and
    the key itself in any case or encoding, replaced by ``***``."""
    return mask(text, [api_key] if api_key else [])
