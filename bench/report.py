"""The benchmark's table, its JSON and the latency plot."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import orjson

Result = dict[str, Any]


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return a / b


def _get(data: Result, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def verdicts(results: Result) -> list[tuple[str, str, bool | None]]:
    """(what, value, met) for the targets of the parts beyond the headline (the headline's
    own, with their ranges, are :func:`bench.shipped.verdicts`)."""
    cases = results.get("cases", {})
    bridge = _get(cases, "bridge", "saturated", "rps")
    ceiling = _get(cases, "ceiling", "rate")
    out: list[tuple[str, str, bool | None]] = []

    def add(what: str, value: float | None, target: float, higher: bool, fmt: str) -> None:
        if value is None or math.isnan(value):
            out.append((what, "n/a", None))
            return
        met = value >= target if higher else value <= target
        out.append((what, format(value, fmt), met))

    if ceiling is not None:
        add("bridge/ceiling requests/s (>= 0.8)", _ratio(bridge, ceiling), 0.8, True, ".2f")
    consume = results.get("consume", {})
    worker = _get(consume, "worker", "rate")
    add(
        "worker/faststream messages/s (>= 1.2)",
        _ratio(worker, _get(consume, "faststream", "rate")),
        1.2,
        True,
        ".2f",
    )
    for what, pair, target in (
        ("worker, records off/raw aio-pika messages/s", "records off/raw", 1.0),
        ("worker as shipped (records on)/raw aio-pika messages/s", "records on/raw", 0.9),
        ("worker with/without delivery records messages/s", "records on/off", 0.9),
    ):
        add(f"{what}, median of rounds (>= {target})", _paired(consume, pair), target, True, ".2f")
    add(
        "identical bodies: bridge/naive requests/s (>= 0.8)",
        _get(results, "bodies", "identical", "rps_ratio"),
        0.8,
        True,
        ".2f",
    )
    add(
        "non-ASCII bodies: bridge/naive requests/s (>= 1.2)",
        _get(results, "bodies", "non-ascii", "rps_ratio"),
        1.2,
        True,
        ".2f",
    )
    add(
        "non-ASCII bodies: naive/bridge CPU per request (>= 1.2)",
        _get(results, "bodies", "non-ascii", "cpu_ratio"),
        1.2,
        True,
        ".2f",
    )
    add("end-to-end p99 at 500/s, ms (<= 25)", _get(results, "e2e", "p99_ms"), 25, False, ".1f")
    add(
        "serve RSS after leak check, MB (<= 100)",
        _get(results, "leak", "rss_mb_final"),
        100,
        False,
        ".1f",
    )
    add(
        "serve RSS growth after warm-up, MB (<= 5)",
        _get(results, "leak", "growth_after_warmup_mb"),
        5,
        False,
        ".1f",
    )
    return out


def _paired(consume: Result, pair: str) -> float | None:
    """The median of a comparison's per-round ratios (or, from an older result without
    them, the ratio of the median rounds)."""
    median = _get(consume, "ratios", pair, "median")
    if median is not None:
        return float(median)
    top, bottom = {
        "records off/raw": ("worker-no-records", "raw"),
        "records on/raw": ("worker", "raw"),
        "records on/off": ("worker", "worker-no-records"),
    }[pair]
    return _ratio(_get(consume, top, "rate"), _get(consume, bottom, "rate"))


def _round_ratios(consume: Result) -> list[str]:
    """Each comparison's ratio in every round (the kinds of one round ran one after the
    other), with their median and range; and the records per deliveries message."""
    said = [
        f"{what} median {found['median']:.2f} (range {found['low']:.2f}-{found['high']:.2f}; "
        + ", ".join(f"{r:.2f}" for r in found["rounds"])
        + ")"
        for what, found in (consume.get("ratios") or {}).items()
    ]
    lines = ["", "per round: " + "; ".join(said)] if said else []
    carried = consume.get("records_per_message")
    if carried and carried.get("per_message"):
        lines.append(
            f"delivery records per deliveries message: {carried['per_message']:.2f} "
            f"({carried['records']:,} records in {carried['messages']:,} messages)"
        )
    return lines


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def table(results: Result) -> str:
    from bench import shipped

    m = results["machine"]
    lines = [
        f"machine: {m['cores']} cores, {m['cpu']}, RabbitMQ {m['rabbitmq']}, "
        f"Python {m['python']}, Linux {m['kernel']}; body {m['body_bytes']} bytes (non-ASCII "
        f"order, distinct IDs); load average {results.get('load_average_at_start', 0):.1f} "
        f"at the start, {results.get('load_average_at_end', 0):.1f} at the end",
    ]
    if results.get("ratios") is not None:
        lines += ["", shipped.table(results)]
    ceiling = results.get("cases", {}).get("ceiling")
    if ceiling:
        lines += [
            "",
            f"broker ceiling (aio-pika, 256 in flight, no HTTP): {ceiling['rate']:,.0f} "
            f"messages/s, peak RSS {ceiling['peak_rss_mb']:.0f} MB",
        ]
    consume = results.get("consume")
    if consume:
        lines += [
            "",
            "| consumer (quorum queue, prefetch 32) | messages/s | rounds | "
            "CPU us/message | broker CPU us/message | /raw | peak RSS MB |",
        ]
        lines.append("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
        raw_rate = _get(consume, "raw", "rate")
        for name in ("worker", "worker-no-records", "raw", "faststream"):
            case = consume.get(name, {})
            label = {
                "worker": "mintsoft-bridge worker as shipped (delivery records on), no-op handler",
                "worker-no-records": "the same, delivery records off",
                "raw": "aio-pika, manual acks",
                "faststream": "FastStream subscriber",
            }[name]
            if "skipped" in case:
                lines.append(f"| {label} | skipped: {case['skipped']} | - | - | - | - | - |")
            elif case:
                rounds = ", ".join(f"{rate:,.0f}" for rate in case.get("rounds", []))
                lines.append(
                    f"| {label} | {_num(case.get('rate'), ',.0f')} | {rounds} "
                    f"| {_num(case.get('cpu_us_per_message'), '.0f')} "
                    f"| {_num(case.get('broker_us_per_message'), '.0f')} "
                    f"| {_num(_ratio(case.get('rate'), raw_rate), '.2f')} "
                    f"| {_num(case.get('peak_rss_mb'), '.0f')} |"
                )
        lines += _round_ratios(consume)
    if results.get("bodies"):
        from bench.bodies import table as bodies_table

        lines += ["", bodies_table(results["bodies"])]
    e2e = results.get("e2e")
    if e2e and "skipped" not in e2e:
        lines += [
            "",
            f"end to end (POST received -> handler called) at {e2e['rate']}/s: "
            f"p50 {e2e['p50_ms']:.1f} ms, p99 {e2e['p99_ms']:.1f} ms, max {e2e['max_ms']:.1f} ms "
            f"({e2e['messages']} messages; x-received-at has 1 ms resolution)",
        ]
    leak = results.get("leak")
    if leak:
        chunk = leak["webhooks"] // len(leak["rss_mb_after_each_chunk"])
        lines += [
            "",
            f"leak check: serve RSS after each {chunk:,}"
            f" webhooks (MB): {leak['rss_mb_after_each_chunk']}; "
            f"{leak['accepted']:,} of {leak['webhooks']:,} answered 2xx",
        ]
    others = [v for v in verdicts(results) if v[2] is not None]
    if others:
        lines += ["", "| target (other parts) | value | met |", "| --- | ---: | --- |"]
    for what, value, met in others:
        lines.append(f"| {what} | {value} | {'-' if met is None else 'yes' if met else 'NO'} |")
    return "\n".join(lines)


def plot(results: Result, path: Path) -> bool:
    cases = results.get("cases", {})
    series = {
        name: cases[name]["sweep"]
        for name in ("bridge", "naive")
        if cases.get(name, {}).get("sweep")
    }
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
        rates = [p["offered_rps"] for p in points]
        ax.plot(rates, [p["p99_ms"] for p in points], marker="o", label=f"{name} p99")
        ax.plot(rates, [p["p50_ms"] for p in points], marker=".", ls="--", label=f"{name} p50")
    ax.set_xlabel("offered requests/s (open loop, bench.openloop)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_yscale("log")
    m = results["machine"]
    ax.set_title(f"Latency against offered rate ({m['cores']} cores, RabbitMQ {m['rabbitmq']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def publish(results: Result, directory: Path) -> None:
    """Print the table; write ``bench-<time>.json``/``.png`` and ``latest.json``/``.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(results["started"]))
    results["table"] = table(results)
    results["targets"] = [
        {"target": what, "value": value, "met": met} for what, value, met in verdicts(results)
    ]
    data = orjson.dumps(results, option=orjson.OPT_INDENT_2)
    for name in (f"bench-{stamp}.json", "latest.json"):
        (directory / name).write_bytes(data)
    print()
    print(results["table"])
    print()
    if plot(results, directory / f"latency-{stamp}.png"):
        (directory / "latency.png").write_bytes((directory / f"latency-{stamp}.png").read_bytes())
        print(f"plot: {directory / f'latency-{stamp}.png'}")
    print(f"json: {directory / f'bench-{stamp}.json'}  (took {results['seconds']:.0f} s)")
