"""The worker's per-message histogram observer counts exactly as prometheus_client does."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram

from bridge.core.metrics import HANDLER_SECONDS, observer


def test_the_per_message_observer_counts_as_the_library_does() -> None:
    # metrics.observer finds the bucket by bisection: every bucket, the count and the sum
    # must stay what prometheus_client's own observe gives, bounds and odd amounts included.
    registry = CollectorRegistry()
    bounds = HANDLER_SECONDS._upper_bounds[:-1]  # the shipped buckets, +Inf added again
    histogram = Histogram("t_seconds", "t", ["side"], buckets=bounds, registry=registry)
    amounts = [*bounds, *(b * 0.999 for b in bounds), *(b * 1.001 for b in bounds)]
    amounts += [0.0, -1.0, 1e-9, 61.0, float("inf"), float("nan"), 0.0123456789]
    library, ours = histogram.labels("library"), observer(histogram.labels("ours"))
    for amount in amounts:
        library.observe(amount)
        ours(amount)
    samples: dict[str, dict[tuple[str, str], float]] = {"library": {}, "ours": {}}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            side = sample.labels["side"]
            samples[side][(sample.name, sample.labels.get("le", ""))] = sample.value
    assert samples["ours"].keys() == samples["library"].keys()
    for key, value in samples["library"].items():
        got = samples["ours"][key]
        assert got == value or (math.isnan(value) and math.isnan(got)), key


def test_a_library_without_the_internals_it_reads_gets_its_own_observe_back() -> None:
    # A prometheus_client release that renames the bounds, buckets or sum must cost speed,
    # never a worker that fails to start or counts wrong.
    class Renamed:  # a labelled child of such a release: observable, other internals
        def __init__(self) -> None:
            self.seen: list[float] = []

        def _raise_if_not_observable(self) -> None:
            pass

        def observe(self, amount: float) -> None:
            self.seen.append(amount)

    child = Renamed()
    observe = observer(child)  # type: ignore[arg-type]
    observe(0.5)
    assert child.seen == [0.5]
