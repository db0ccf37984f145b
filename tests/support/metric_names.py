"""The Prometheus metrics the bridge's code exports, found by importing every module of the
package, so tests about metrics grow with the code instead of a hand-kept list."""

from __future__ import annotations

import importlib
import pkgutil

from prometheus_client import REGISTRY

import bridge

PREFIX = "bridge_"

_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}

_ALWAYS_SAMPLED_SUFFIX = {"counter": "_total", "histogram": "_count", "summary": "_count"}


def _import_all() -> None:
    for module in pkgutil.walk_packages(bridge.__path__, "bridge."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


def exported_families() -> dict[str, str]:
    """Every ``bridge_*`` metric family the code registers: name -> type."""
    _import_all()
    return {
        family.name: family.type for family in REGISTRY.collect() if family.name.startswith(PREFIX)
    }


def exported_series() -> set[str]:
    """Every series name a query may use (``_total``, ``_bucket``, ``_sum`` ... included)."""
    return {
        name + suffix
        for name, kind in exported_families().items()
        for suffix in _SERIES_SUFFIXES.get(kind, ("",))
    }


def sample_name(family: str, kind: str) -> str:
    """The series a scrape shows for ``family`` once it has been observed at least once."""
    return family + _ALWAYS_SAMPLED_SUFFIX.get(kind, "")
