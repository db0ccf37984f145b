"""The documented example handler (docs/subscribers.md, "Writing a handler"), saved as
``mypkg/handlers.py`` as a user would: the worker imports it the way the page says (with its
directory on the import path), it handles a message, its log line carries the message's fields
in the text log format too, and it refuses a cancellation without an order id."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bridge import PermanentError
from bridge.core.contract import webhook_envelope
from bridge.core.logs import TextFormatter
from bridge.core.settings import SettingsError
from bridge.worker.handlers import resolve_handler
from bridge.worker.message import Message
from bridge.worker.subscribers import Handler, load_subscribers
from tests.conftest import fixture_body
from tests.support.docs import page, section

SUBSCRIBERS = '[[subscriber]]\nname = "erp"\nevents = ["*"]\nhandler = "mypkg.handlers:on_order"\n'


def _example() -> str:
    code = re.search(
        r"```python\n(.*?)```", section(page("subscribers.md"), "## Writing a handler"), re.S
    )
    assert code, "no python block under 'Writing a handler'"
    assert code.group(1).startswith("# mypkg/handlers.py\n")
    return code.group(1)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A directory holding ``mypkg/handlers.py`` (the example) and ``subscribers.toml``;
    ``mypkg`` is forgotten afterwards, so each test imports its own copy."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "handlers.py").write_text(_example())
    (tmp_path / "subscribers.toml").write_text(SUBSCRIBERS)
    yield tmp_path
    for name in ("mypkg.handlers", "mypkg"):
        sys.modules.pop(name, None)


def _handler(project: Path, monkeypatch: pytest.MonkeyPatch) -> Handler:
    """What the worker does at start, run the way the page says (PYTHONPATH=. from the
    directory that holds mypkg/)."""
    monkeypatch.syspath_prepend(str(project))
    [sub] = load_subscribers(str(project / "subscribers.toml"))
    return resolve_handler(sub)


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


def test_without_its_directory_on_the_path_the_worker_says_how_to_import_it(
    project: Path,
) -> None:
    [sub] = load_subscribers(str(project / "subscribers.toml"))
    with pytest.raises(SettingsError, match="fix PYTHONPATH"):
        resolve_handler(sub)


@pytest.mark.parametrize("event", ["despatched", "cancelled", "delivered", "split"])
def test_the_example_handler_handles_a_message_and_logs_its_fields_as_text(
    event: str, project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    on_order = _handler(project, monkeypatch)
    caplog.set_level(logging.INFO, logger="mypkg")
    message = _message(event, fixture_body(event))
    asyncio.run(on_order(message))
    [record] = [r for r in caplog.records if r.name == "mypkg.handlers"]
    line = TextFormatter().format(record)  # BRIDGE_LOG_FORMAT=text, the default
    assert f"message_id={message.message_id}" in line, line
    assert "subscriber=erp" in line and f"event={event}" in line, line


def test_the_example_handler_refuses_a_cancellation_without_an_order_id(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_order = _handler(project, monkeypatch)
    with pytest.raises(PermanentError):
        asyncio.run(on_order(_message("cancelled", b'{"OrderNumber": "X-1"}')))


def test_the_page_shows_the_worker_started_with_pythonpath() -> None:
    text = section(page("subscribers.md"), "## Writing a handler")
    assert "PYTHONPATH=. mintsoft-bridge worker --config subscribers.toml" in text
