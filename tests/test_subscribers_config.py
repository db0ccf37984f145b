"""The subscribers file's options for real integrations (clients, warehouses, rate_limit,
ordered, partitions): what they declare, and every mistake one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.cli import main
from bridge.worker.subscribers import ORDERED_RETRY_DELAYS, delay_ms, parse_subscribers

HANDLER = 'events = ["*"]\nhandler = "tests.worker_helpers:record"\n'

BAD = {
    "clients not a list": ("clients = 7", "clients"),
    "clients empty": ("clients = []", "clients"),
    "clients not ids": ('clients = ["seven"]', "clients"),
    "clients bool": ("clients = [true]", "clients"),
    "warehouses negative": ("warehouses = [-1]", "warehouses"),
    "rate not a rate": ('rate_limit = "fast"', "rate_limit"),
    "rate per day": ('rate_limit = "10/d"', "rate_limit"),
    "rate zero": ('rate_limit = "0/s"', "rate_limit"),
    "rate too slow for prefetch": ('rate_limit = "1/m"\nprefetch = 100', "rate_limit"),
    "ordered not bool": ('ordered = "yes"', "ordered"),
    "partitions without ordered": ("partitions = 8", "partitions"),
    "partitions zero": ("ordered = true\npartitions = 0", "partitions"),
    "partitions too many": ("ordered = true\npartitions = 1000", "partitions"),
    "ordered with prefetch": ("ordered = true\nprefetch = 8", "prefetch"),
    "ordered holds too long": ('ordered = true\nretry_delays = ["1h"]', "retry_delays"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_option_is_one_line_naming_it_and_exit_2(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body, field = BAD[case]
    config = tmp_path / "subs.toml"
    config.write_text(f'[[subscriber]]\nname = "erp"\n{HANDLER}{body}\n')
    assert main(["topology", "--print", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert field in err and "erp" in err


def test_options_are_read() -> None:
    [filtered, ordered] = parse_subscribers(
        {
            "subscriber": [
                {
                    "name": "erp-7",
                    "events": ["despatched"],
                    "forward_url": "http://erp.internal/hook",
                    "clients": [7, "12", 7],
                    "warehouses": [1],
                    "rate_limit": "10/s",
                },
                {
                    "name": "wms",
                    "events": ["*"],
                    "handler": "tests.worker_helpers:record",
                    "ordered": True,
                },
            ]
        }
    )
    assert filtered.clients == ("7", "12") and filtered.warehouses == ("1",)
    assert filtered.rate_limit is not None and filtered.rate_limit.per_second == 10
    assert not filtered.ordered
    assert ordered.ordered and ordered.partitions == 4
    assert ordered.retry_delays_ms == tuple(delay_ms(d) for d in ORDERED_RETRY_DELAYS)
    assert ordered.queue_names() == [
        "wms.partition.0",
        "wms.partition.1",
        "wms.partition.2",
        "wms.partition.3",
        "wms.workers",
        "wms.dlq",
        "wms.control",
    ]


def test_a_partition_queue_name_clash_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Exception, match="queue name clash"):
        parse_subscribers(
            {
                "subscriber": [
                    {"name": "a", "events": ["*"], "handler": "m:f", "ordered": True},
                    {"name": "a.partition.0", "events": ["*"], "handler": "m:f"},
                ]
            }
        )


def test_topology_print_shows_filters_and_partitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "subs.toml"
    config.write_text(
        '[[subscriber]]\nname = "erp"\nevents = ["despatched"]\n'
        'forward_url = "http://erp.internal/hook"\nclients = [7]\n\n'
        '[[subscriber]]\nname = "wms"\nevents = ["*"]\nforward_url = "http://wms/hook"\n'
        "ordered = true\npartitions = 2\nwarehouses = [1]\n"
    )
    assert main(["topology", "--print", "--config", str(config), "--exchange", "x"]) == 0
    out = capsys.readouterr().out
    assert "exchange erp.filter (headers, durable) alternate-exchange=x.filtered" in out
    assert "binding  x -> erp.filter (exchange) [order.despatched]" in out
    assert "binding  erp.filter -> erp []" in out and "x-client-id=7" in out
    assert "x-match=all-with-x" in out
    assert "exchange wms.partitions (x-consistent-hash, durable) hash-header=x-order-id" in out
    assert "queue    wms.partition.1 (durable)" in out and "x-single-active-consumer=True" in out
    assert "binding  wms.filter -> wms.partitions (exchange) []" in out
    assert "binding  wms.partitions -> wms.partition.0 [1]" in out
    assert "wms.retry" not in out
    # The shared sink is declared once however many subscribers filter.
    assert out.count("exchange x.filtered (fanout") == 1
