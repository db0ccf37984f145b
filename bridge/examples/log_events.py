"""A handler that logs every webhook it receives: a demo subscriber for docker-compose.

```toml
[[subscriber]]
name = "log-events"
events = ["*"]
handler = "bridge.examples.log_events:log_event"
```
"""

from __future__ import annotations

import logging

from bridge.worker.message import Message

log = logging.getLogger("bridge.examples.log_events")


async def log_event(message: Message) -> None:
    """Log the event, order, message id and body size of one webhook."""
    log.info(
        "%s webhook for order %s (%d bytes, message %s)",
        message.event,
        message.order_id or "?",
        len(message.body),
        message.message_id,
        extra=message.log_fields(),
    )
