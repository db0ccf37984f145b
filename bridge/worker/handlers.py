"""Finding a subscriber's handler: ``handler = "module:function"`` imported at start, so a
wrong name or a sync function is one line and exit 2 before anything is consumed."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from bridge.core.settings import SettingsError
from bridge.worker.subscribers import Handler, Subscriber


def resolve_handler(sub: Subscriber) -> Handler:
    """Import ``sub.handler`` (``"module:function"``); SettingsError naming it on failure."""
    assert sub.handler is not None
    module_name, _, attribute = sub.handler.partition(":")
    where = f"subscriber {sub.name!r}: handler {sub.handler!r}"
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise SettingsError(
            f"{where}: cannot import {module_name} ({type(exc).__name__}: {exc}): "
            "install the package or fix PYTHONPATH"
        ) from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SettingsError(f"{where}: {module_name} has no {attribute}: check the name")
    if not (inspect.iscoroutinefunction(target) or _async_call(target)):
        raise SettingsError(f"{where}: is not an async function: define it with async def")
    handler: Handler = target
    return handler


def _async_call(target: Any) -> bool:
    """An object whose ``__call__`` is ``async def`` (like the forwarder)."""
    return callable(target) and inspect.iscoroutinefunction(type(target).__call__)
