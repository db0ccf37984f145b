"""Garbage collection of a long-running server: what start-up built is never scanned again.

A server process holds some 50,000 objects from its imports and start-up (aiohttp,
aio-pika, prometheus-client, the settings, the app) that live as long as it does. CPython's
full (generation 2) collection walks all of them: tens of milliseconds on a busy 2-core
machine, during which the event loop answers nobody, so each one shows up in the latency
tail at a fixed rate. :func:`settle` collects once and then moves every surviving object to
the permanent generation (``gc.freeze``), which later collections skip: they cost only what
was created since. Nothing is leaked by it: a frozen object that becomes garbage is still
freed by reference counting (only a cycle among frozen objects would stay, and start-up
makes none that it later drops).
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect, then freeze what survived; returns how many objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
