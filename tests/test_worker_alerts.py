"""The shipped alert ``MintsoftBridgeBrokerDisconnected`` evaluated against a real worker's
scrape: a worker that consumes reports ``bridge_broker_connected 1``, so it does not fire."""

from __future__ import annotations

import operator
import os
import time
from collections.abc import Callable
from pathlib import Path

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.amqp.topology import receiver_topology, subscriber_topology
from tests.conftest import AMQP_URL, delete_declared, receiver_names
from tests.support.processes import bridge_process, http
from tests.support.rabbit_node import free_port

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}
_AGGREGATE: dict[str, Callable[[list[float]], float]] = {"min": min, "max": max, "sum": sum}

Series = list[tuple[dict[str, str], float]]


def _expr(alert: str) -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    [rule] = [r for g in groups for r in g["rules"] if r.get("alert") == alert]
    return str(rule["expr"])


def _scraped(text: str, instance: str) -> Series:
    """Samples as Prometheus stores them: with the target's ``instance`` label added."""
    return [
        ({"__name__": s.name, **s.labels, "instance": instance}, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def firing(expr: str, series: Series) -> list[dict[str, str]]:
    """The label sets an expression of the form ``AGG by (labels) (metric) OP number``
    returns, i.e. for which the alert fires (the only form this evaluator knows)."""
    tree = promql_parser.parse(expr)
    assert isinstance(tree, promql_parser.BinaryExpr), expr
    aggregate, threshold = tree.lhs, tree.rhs
    assert isinstance(aggregate, promql_parser.AggregateExpr), expr
    assert isinstance(threshold, promql_parser.NumberLiteral), expr
    selector = aggregate.expr
    assert isinstance(selector, promql_parser.VectorSelector) and not str(selector.matchers)[2:-2]
    by = list(aggregate.modifier.labels)
    groups: dict[tuple[str, ...], list[float]] = {}
    for labels, value in series:
        if labels["__name__"] == selector.name:
            groups.setdefault(tuple(labels.get(n, "") for n in by), []).append(value)
    compare, combine = _COMPARE[str(tree.op)], _AGGREGATE[str(aggregate.op)]
    return [
        dict(zip(by, key, strict=True))
        for key, values in groups.items()
        if compare(combine(values), threshold.val)
    ]


def test_the_evaluator_fires_on_a_disconnected_instance() -> None:
    expr = _expr("MintsoftBridgeBrokerDisconnected")
    down = _scraped("bridge_broker_connected 0\n", "w:9100")
    up = _scraped("bridge_broker_connected 1\n", "r:8080")
    assert firing(expr, down + up) == [{"instance": "w:9100"}]
    assert firing(expr, up) == []


def test_a_consuming_worker_does_not_fire_the_broker_disconnected_alert(tmp_path: Path) -> None:
    port = free_port()
    exchange = f"test.alerts.{os.getpid()}.{port}"
    name = f"test-alerts-{port}"
    config = tmp_path / "subscribers.toml"
    config.write_text(
        f'[[subscriber]]\nname = "{name}"\nevents = ["*"]\n'
        'handler = "bridge.examples.log_events:log_event"\n'
        f'[[subscriber]]\nname = "{name}-b"\nevents = ["despatched"]\n'
        'handler = "bridge.examples.log_events:log_event"\n'
    )
    env = {"BRIDGE_EXCHANGE": exchange, "BRIDGE_AMQP_URL": AMQP_URL}
    topology = receiver_topology(exchange) + subscriber_topology(
        exchange, name, ("*",), (5000, 60000, 600000, 3600000)
    )
    topology = topology + subscriber_topology(
        exchange, name + "-b", ("despatched",), (5000, 60000, 600000, 3600000)
    )
    base = f"http://127.0.0.1:{port}"
    expr = _expr("MintsoftBridgeBrokerDisconnected")
    try:
        with bridge_process(
            ["worker", "--config", str(config), "--metrics-port", str(port)],
            env,
            base + "/healthz",
        ) as worker:
            deadline = time.monotonic() + 15
            while True:
                status, text = http(base + "/metrics")
                assert status == 200
                series = _scraped(text.decode(), f"127.0.0.1:{port}")
                if not firing(expr, series) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            output = worker.stop()
    finally:
        # The worker declares the archive and records' streams too: receiver_names has them.
        queues, exchanges = receiver_names(exchange)
        delete_declared(
            AMQP_URL,
            (*queues, *(q.name for q in topology.queues)),
            (*exchanges, *(e.name for e in topology.exchanges)),
        )
    assert f"consuming {name}" in output
    values = [v for labels, v in series if labels["__name__"] == "bridge_broker_connected"]
    assert values == [1.0], output
    assert firing(expr, series) == []
