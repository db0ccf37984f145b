"""The README's example handler, copied into a module as a user would, handles a message
(and refuses a cancellation without an order id as the README says)."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from bridge import PermanentError
from bridge.core.contract import webhook_envelope
from bridge.worker.message import Message
from tests.conftest import fixture_body

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_handler(tmp_path: Path) -> ModuleType:
    section = README.read_text().split("### Writing a handler", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "no python block under 'Writing a handler'"
    path = tmp_path / "mypkg_handlers.py"
    path.write_text(code.group(1))
    spec = importlib.util.spec_from_file_location("mypkg_handlers", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _message(event: str, body: bytes) -> Message:
    envelope = webhook_envelope(event, body, orjson.loads(body), "req-readme", time.time())
    return Message(
        event=event,
        body=body,
        message_id=envelope.message_id,
        headers=envelope.headers,
        routing_key=envelope.routing_key,
        subscriber="erp",
    )


@pytest.mark.parametrize("event", ["despatched", "cancelled", "delivered", "split"])
def test_the_readme_handler_handles_a_message(
    event: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = _readme_handler(tmp_path)
    caplog.set_level("INFO")
    message = _message(event, fixture_body(event))
    asyncio.run(module.on_order(message))
    assert message.message_id in caplog.text


def test_the_readme_handler_refuses_a_cancellation_without_an_order_id(tmp_path: Path) -> None:
    module = _readme_handler(tmp_path)
    with pytest.raises(PermanentError):
        asyncio.run(module.on_order(_message("cancelled", b'{"OrderNumber": "X-1"}')))
