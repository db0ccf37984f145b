"""``doctor``'s check of what sync needs: a Mintsoft key that can list orders and read an
order's connect actions. Skipped (not failed) when no Mintsoft credentials are set: sync is
optional. Each call is bounded and made once (no retries)."""

from __future__ import annotations

from typing import Any

from bridge.core.settings import Settings, SettingsError
from bridge.errors import CommandError
from bridge.mintsoft.client import client_for

NAME = "Mintsoft API for sync"


async def check_sync_access(settings: Settings, timeout: float) -> tuple[bool | None, str, str]:
    """``(ok, detail, fix)``; ``ok`` is ``None`` when the check was skipped."""
    if not (settings.mintsoft_api_key or settings.mintsoft_username):
        return None, "skipped: no BRIDGE_MINTSOFT_API_KEY (sync is not configured)", ""
    try:
        client = client_for(settings, timeout=timeout, attempts=1)
    except SettingsError as exc:
        reason, _, fix = str(exc).partition(": ")
        return False, reason, fix
    async with client:
        try:
            orders: Any = await client.request("GET", "/api/Order/List?Limit=1&PageNo=1")
        except CommandError as exc:
            return False, f"listing orders failed: {exc}", _fix(exc)
        if not isinstance(orders, list):
            return False, "GET /api/Order/List did not answer a list", "check BRIDGE_MINTSOFT_URL"
        if not orders or not isinstance(orders[0], dict) or "ID" not in orders[0]:
            return True, "the key lists orders (none yet, so connect actions were not read)", ""
        order_id = orders[0]["ID"]
        try:
            await client.request("GET", f"/api/Order/{order_id}/ConnectActions")
        except CommandError as exc:
            return False, f"reading an order's connect actions failed: {exc}", _fix(exc)
    return True, "the key lists orders and reads their connect actions", ""


def _fix(exc: CommandError) -> str:
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return (
            "give sync a key of a Mintsoft user allowed to view and edit orders "
            "(AdminEditOrder or ClientEditOrder)"
        )
    return "check BRIDGE_MINTSOFT_URL and that Mintsoft answers"
