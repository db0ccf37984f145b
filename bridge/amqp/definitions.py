"""The topology as RabbitMQ definitions JSON (for the management plugin's import, and
``deploy/rabbitmq/definitions.json``), from the same data ``declare`` uses."""

from __future__ import annotations

import json
from typing import Any

from bridge.amqp.topology import Topology


def definitions(topology: Topology, vhost: str = "/") -> dict[str, Any]:
    """``topology`` as a RabbitMQ definitions document, importable by the management plugin
    (``rabbitmqctl import_definitions``, the UI's upload, or ``load_definitions`` at boot)."""
    return {
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": True,
                "auto_delete": False,
                "internal": False,
                "arguments": dict(e.arguments),
            }
            for e in topology.exchanges
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": dict(q.arguments),
            }
            for q in topology.queues
        ],
        "bindings": [
            {
                "source": b.exchange,
                "vhost": vhost,
                "destination": b.queue,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": dict(b.arguments),
            }
            for b in topology.bindings
        ],
    }


def definitions_json(topology: Topology) -> str:
    """:func:`definitions` as the indented JSON of ``deploy/rabbitmq/definitions.json``."""
    return json.dumps(definitions(topology), indent=2, sort_keys=True) + "\n"
