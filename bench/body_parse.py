"""``python -m bench.body_parse``: what reading a body's headers costs, before and after.

"before" is what the receiver did until it stopped building documents: ``orjson.loads`` of
the whole body, then ``order_headers``. "after" is :func:`bridge.core.body.read_headers`
(validate everything, build only the header fields). Bodies: a realistic 2 MB despatched
order (the fixture with its items repeated, names and addresses non-ASCII), and 10 MiB of
``[{},{},…]``. Time is the median of repeated runs in this process; memory is the growth
of peak RSS (VmHWM, reset first) of one call in a fresh child process (Linux). No broker,
no network.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bridge.core.body import read_headers
from bridge.core.contract import order_headers

FIXTURE = Path(__file__).resolve().parent.parent / "bridge" / "fixtures" / "order-despatched.json"


def realistic_order(size: int = 2_000_000) -> bytes:
    order = json.loads(FIXTURE.read_text())
    item = order["OrderItems"][0]
    order.update(FirstName="Zoë", LastName="Łukasiewicz-Müller", Town="Škofja Loka")
    items = []
    while len(orjson.dumps({**order, "OrderItems": items})) < size:
        items.extend(
            {**item, "ID": item["ID"] + n, "Details": f"Café crème n°{n} – «spécial»"}
            for n in range(len(items), len(items) + 500)
        )
    return orjson.dumps({**order, "OrderItems": items})


def empty_objects(size: int = 10 * 1024 * 1024) -> bytes:
    return b"[" + b"{}," * ((size - 3) // 3) + b"{}]"


def before(body: bytes) -> dict[str, str]:
    return order_headers(orjson.loads(body))


BODIES: dict[str, Callable[[], bytes]] = {
    "order-2MB": realistic_order,
    "empty-objects-10MiB": empty_objects,
}
WAYS: dict[str, Callable[[bytes], dict[str, str]]] = {"before": before, "after": read_headers}


def timed(way: Callable[[bytes], object], body: bytes, runs: int = 40) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        way(body)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def child(body_name: str, way_name: str) -> None:
    body = BODIES[body_name]()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    start = _status_kb("VmHWM")
    WAYS[way_name](body)
    print(_status_kb("VmHWM") - start)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
        return
    for body_name, make in BODIES.items():
        body = make()
        assert before(body) == read_headers(body)
        for way_name, way in WAYS.items():
            grown_kb = int(
                subprocess.check_output(
                    [sys.executable, "-m", "bench.body_parse", "--child", body_name, way_name]
                )
            )
            print(
                f"{body_name:20} ({len(body) / 1e6:.1f} MB) {way_name:6}: "
                f"{timed(way, body) * 1000:7.2f} ms median, peak RSS +{grown_kb / 1024:6.1f} MiB"
            )


if __name__ == "__main__":
    main()
