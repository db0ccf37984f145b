"""A link the broker keeps nacking is renewed (a fresh connection and channel), at most once
a second; a confirm in between resets the count. Publisher and worker share this."""

from __future__ import annotations

import asyncio

from bridge.amqp.connection import NACKS_BEFORE_RENEW, BrokerLink
from tests.conftest import AMQP_URL


async def _wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_nacks_in_a_row_renew_the_link_and_a_confirm_resets_the_count() -> None:
    link = BrokerLink((AMQP_URL,), name="test-renew")
    assert await link.start(wait=10)
    try:
        first = link.channel
        for _ in range(NACKS_BEFORE_RENEW - 1):
            link.note_nack()
        link.note_confirm()
        link.note_nack()
        assert link.channel is first  # never three in a row: no renewal

        for _ in range(NACKS_BEFORE_RENEW):
            link.note_nack()
        assert await _wait_for(lambda: link.channel is not None and link.channel is not first)
        assert link.reconnects == 1

        # Refusals that go on do not cause a storm of reconnects: one per second at most.
        second = link.channel
        for _ in range(NACKS_BEFORE_RENEW):
            link.note_nack()
        await asyncio.sleep(0.3)
        assert link.channel is second
    finally:
        await link.close()
