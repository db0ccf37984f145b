"""Garbage collection of a long-running server: what start-up built is never scanned again.

A server process holds some 50,000 objects from its imports and start-up (aiohttp,
aio-pika, prometheus-client, the settings, the app) that live as long as it does. CPython's
full (generation 2) collection walks all of them: tens of milliseconds on a busy 2-core
machine, during which the event loop answers nobody, so each one shows up in the latency
tail at a fixed rate. :func:`settle` collects once and then moves every surviving object to
the permanent generation (``gc.freeze``), which later collections skip: they cost only what
was created since. It also raises the generation-0 threshold (:data:`GEN0_THRESHOLD`):
a webhook's objects are freed by reference counting as its answer leaves, so collections
mostly find nothing, and at CPython's 700 they ran every few dozen requests (``bench.tail``
and ``bench.probe``: 2.5-5 us of collections per request at saturation, none at 7,000).
Nothing is leaked by it: a frozen object that becomes garbage is still
freed by reference counting (only a cycle among frozen objects would stay, and start-up
makes none that it later drops).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 7000
"""Net new container objects between two generation-0 collections (CPython: 700)."""


def settle() -> int:
    """Collect, freeze what survived, raise the generation-0 threshold; returns how many
    objects are now frozen."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(max(GEN0_THRESHOLD, gc.get_threshold()[0]), older, oldest)
    return gc.get_freeze_count()
