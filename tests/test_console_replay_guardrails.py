"""The archive replay's guardrails (issue 23): a dry run counts only what the target takes
and says what it left out and why; the window is fixed by the count; the copies are paced at
the target's rate limit; the page warns when the target is paused or down; replays are
listed with their progress and outcome; "Replay to..." from an order and a webhook; a lookup
that finds nothing says how much it searched."""

from __future__ import annotations

import asyncio
import html
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bridge.amqp.topology import declare_topology
from bridge.archive.pace import DEFAULT_RATE, Pacer, duration, schedule
from bridge.console import replay as replay_page
from bridge.console.app import build_app
from bridge.console.jobs import Job
from bridge.console.replay_plan import shown
from bridge.console.state import Console
from bridge.core.contract import HEADER_REPLAY_ID, message_id
from bridge.core.durations import parse_rate
from bridge.worker.message import Message
from tests.conftest import AMQP_URL, API_KEY, BridgeFactory, BrokerProbe, RunningBridge
from tests.console_helpers import console_state, sign_in
from tests.worker_helpers import (
    body_for,
    running_worker,
    subscriber,
    track_subscriber,
    wait_until,
)

_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
_MATCHED = re.compile(r'data-figure="matched">(\d+)<')


async def _post(bridge: RunningBridge, event: str, times: int, start: int = 0) -> list[str]:
    """POST ``times`` distinct ``event`` webhooks to an archiving bridge; their message ids."""
    ids = []
    for n in range(start, start + times):
        body = body_for(event, n)
        answer = await bridge.client.post(
            f"/webhooks/{event}",
            params={"APIKEY": API_KEY},
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status == 200, await answer.text()
        ids.append(message_id(event, body))
    return ids


async def _archive(make_bridge: BridgeFactory, probe: BrokerProbe, exchange: str) -> RunningBridge:
    bridge = await make_bridge(archive=True)
    probe.track(queues=(exchange + ".archive",))
    return bridge


async def _declared(probe: BrokerProbe, exchange: str, *subs: Any) -> None:
    """Declare ``subs`` (after the webhooks were posted: only a replay fills their queues)."""
    for sub in subs:
        track_subscriber(probe, exchange, sub)
        await declare_topology((AMQP_URL,), sub.topology(exchange))


async def _dry_run(client: TestClient[Any, Any], csrf: str, **fields: str) -> str:
    answer = await client.post("/replay", data={"csrf": csrf, "since": "1h", **fields})
    page = await answer.text()
    assert answer.status == 200, page
    return page


def _matched(page: str) -> int:
    found = _MATCHED.search(page)
    assert found is not None, "no dry-run count on the page"
    return int(found.group(1))


def _section(page: str, element_id: str) -> str:
    start = page.index(f'id="{element_id}"')
    return page[start : page.index("</", start)]


def _confirmation(page: str) -> list[tuple[str, str]]:
    form = page[page.index('id="replay-confirm"') :]
    form = form[: form.index("</form>")]
    return [(name, html.unescape(value)) for name, value in _HIDDEN.findall(form)]


async def _confirm(client: TestClient[Any, Any], console: Console, page: str) -> Job:
    """Send what the dry run on ``page`` counted; the job, once it started."""
    fields = [*_confirmation(page), ("confirmed", "1")]
    answer = await client.post("/replay", data=fields, allow_redirects=False)
    assert answer.status == 303, await answer.text()
    job = console.jobs.get(answer.headers["Location"].rsplit("/", 1)[-1])
    assert job is not None
    return job


async def _finished(job: Job) -> None:
    await wait_until(lambda: job.finished, timeout=30)


# 1. Only what the target takes


async def test_a_replay_of_all_events_counts_and_copies_only_what_the_target_takes(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    bridge = await _archive(make_bridge, probe, exchange)
    for event, times in (("despatched", 3), ("cancelled", 1), ("split", 1), ("delivered", 1)):
        await _post(bridge, event, times)
    some = subscriber(events=("cancelled", "split"))
    one_client = subscriber(events=("*",), clients=("7",))
    await _declared(probe, exchange, some, one_client)
    console = console_state(exchange, [some, one_client])
    async with TestClient(TestServer(build_app(console))) as client:
        csrf = await sign_in(client)
        page = await _dry_run(client, csrf, to=some.name)
        assert _matched(page) == 2
        left_out = _section(page, "replay-left-out")
        assert f"1 delivered, 3 despatched: {some.name} takes only cancelled, split" in left_out

        job = await _confirm(client, console, page)
        await _finished(job)
        assert (job.outcome, job.done, job.total) == ("done", 2, 2), job.error
        copies = await probe.get_until_sentinel(some.name)
        assert sorted(str(m.header.properties.message_type) for m in copies) == [
            "cancelled",
            "split",
        ]

        # A client filter: the fixtures are client 12 (delivered has none).
        page = await _dry_run(client, csrf, to=one_client.name)
        assert _matched(page) == 0
        left_out = _section(page, "replay-left-out")
        assert "5 of client 12" in left_out and "1 of client none" in left_out
        assert f"{one_client.name} takes only client 7" in left_out
        assert 'id="replay-send" disabled' in page


# 2. The window is fixed by the count


async def test_the_send_copies_exactly_the_window_counted_however_late_and_whatever_arrived(
    probe: BrokerProbe,
    exchange: str,
    make_bridge: BridgeFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bridge = await _archive(make_bridge, probe, exchange)
    counted = await _post(bridge, "despatched", 3)
    sub = subscriber()
    await _declared(probe, exchange, sub)
    console = console_state(exchange, [sub])
    counted_at = datetime.now(UTC)
    monkeypatch.setattr(replay_page, "now", lambda: counted_at)
    async with TestClient(TestServer(build_app(console))) as client:
        csrf = await sign_in(client)
        page = await _dry_run(client, csrf, to=sub.name)
        assert _matched(page) == 3
        # Shown and carried as absolute times, "1h" before the count to the count.
        assert f"{shown(counted_at - timedelta(hours=1))} to {shown(counted_at)} UTC" in page
        fields = dict(_confirmation(page))
        assert fields["until_at"] == counted_at.isoformat(timespec="milliseconds")[:-6] + "Z"

        # New webhooks arrive, and the operator confirms two hours later: "1h" from then
        # would hold none of the counted ones and only new ones.
        await _post(bridge, "despatched", 2, start=3)
        monkeypatch.setattr(replay_page, "now", lambda: counted_at + timedelta(hours=2))
        job = await _confirm(client, console, page)
        await _finished(job)
        assert (job.outcome, job.done) == ("done", 3), job.error
        # The queue also got the two new ones live (it was declared before they came).
        arrived = await probe.get_until_sentinel(sub.name)
        copies = [m for m in arrived if HEADER_REPLAY_ID in (m.header.properties.headers or {})]
        assert len(arrived) == 5
        assert sorted(m.header.properties.message_id or "" for m in copies) == sorted(counted)


async def test_a_confirmation_without_the_counted_window_is_refused(exchange: str) -> None:
    sub = subscriber(name="erp")
    async with TestClient(TestServer(build_app(console_state(exchange, [sub])))) as client:
        csrf = await sign_in(client)
        for window in ({}, {"from_at": "1h", "until_at": ""}, {"from_at": "x", "until_at": "y"}):
            answer = await client.post(
                "/replay",
                data={"csrf": csrf, "since": "1h", "to": "erp", "confirmed": "1", "count": "1"}
                | window,
            )
            assert answer.status == 400, (window, answer.status)
            assert "Count first" in await answer.text()


# 3. Paced at the target's rate limit


def test_the_schedule_spaces_copies_evenly_at_the_rate() -> None:
    assert schedule(parse_rate("10/s"), 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert schedule(parse_rate("30/m"), 3) == pytest.approx([0.0, 2.0, 4.0])
    assert duration(parse_rate("2/s"), 5) == pytest.approx(2.0)
    assert duration(DEFAULT_RATE, 6001) == pytest.approx(60.0)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


async def test_the_pacer_holds_each_copy_to_its_time_and_never_bursts_to_catch_up() -> None:
    clock = FakeClock()
    pacer = Pacer(parse_rate("5/s"), clock=clock.now, sleep=clock.sleep)
    sent = []
    for _ in range(4):
        await pacer.wait()
        sent.append(clock.t)
    assert sent == pytest.approx(schedule(parse_rate("5/s"), 4))
    clock.t += 10.0  # the broker was slow: no burst of the 50 "owed" copies
    await pacer.wait()
    first = clock.t
    await pacer.wait()
    assert clock.t - first == pytest.approx(0.2)


async def test_a_replay_waits_for_its_pacer_before_each_copy(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    from bridge.archive.reader import ArchiveQuery
    from bridge.archive.replay import replay

    bridge = await _archive(make_bridge, probe, exchange)
    await _post(bridge, "despatched", 4)
    sub = subscriber()
    await _declared(probe, exchange, sub)
    clock = FakeClock()
    rate = parse_rate("2/s")
    now = datetime.now(UTC)
    query = ArchiveQuery(since=now - timedelta(hours=1), until=now + timedelta(seconds=1))
    pacer = Pacer(rate, clock=clock.now, sleep=clock.sleep)
    result = await replay((AMQP_URL,), exchange, query, sub.name, pacer=pacer)
    assert result.sent == 4
    assert clock.slept == pytest.approx([0.5, 0.5, 0.5])


async def test_a_console_replay_goes_at_the_subscriber_s_rate_limit_and_can_be_cancelled(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    """One copy a minute: the first goes at once, the second waits; cancelled then, one was
    sent. The history lists it as cancelled, and the finished one before it as done."""
    bridge = await _archive(make_bridge, probe, exchange)
    await _post(bridge, "despatched", 3)
    slow = subscriber(rate_limit=parse_rate("1/m"))
    fast = subscriber()
    await _declared(probe, exchange, slow, fast)
    console = console_state(exchange, [slow, fast])
    async with TestClient(TestServer(build_app(console))) as client:
        csrf = await sign_in(client)
        page = await _dry_run(client, csrf, to=fast.name)
        assert "At most 100/s (the default for a subscriber without a rate_limit)" in page
        done = await _confirm(client, console, page)
        await _finished(done)

        page = await _dry_run(client, csrf, to=slow.name)
        pace = _section(page, "replay-pace")
        assert f"At most 1/m ({slow.name}&#39;s rate_limit): 3 copies take about 2m" in pace
        paced = await _confirm(client, console, page)
        await wait_until(lambda: paced.done == 1, timeout=15)
        assert not paced.finished  # the second copy waits its minute
        job_page = await (await client.get(f"/replay/jobs/{paced.id}")).text()
        assert f"at most 1/m ({slow.name}&#39;s rate_limit)" in job_page
        answer = await client.post(
            f"/replay/jobs/{paced.id}/cancel", data={"csrf": csrf}, allow_redirects=False
        )
        assert answer.status == 303
        await _finished(paced)
        assert (paced.outcome, paced.done) == ("cancelled", 1)
        assert await probe.count(slow.name) == 1

        # 5. The history: newest first, who, target, copied of counted, outcome.
        listing = await (await client.get("/replay")).text()
    rows = re.findall(r'data-job="([0-9a-f]+)" data-outcome="([a-z]+)"', listing)
    assert rows == [(paced.id, "cancelled"), (done.id, "done")]
    assert f"<code>{slow.name}</code>" in listing and f"<code>{fast.name}</code>" in listing
    copied = re.findall(r'data-figure="copied">([^<]+)<', listing)
    assert copied == ["1 of 3", "3 of 3"]


# 4. The target's state, before the confirm button


async def test_the_dry_run_warns_when_the_target_is_paused_or_has_no_worker(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    bridge = await _archive(make_bridge, probe, exchange)
    await _post(bridge, "despatched", 1)
    sub = subscriber()
    await _declared(probe, exchange, sub)
    console = console_state(exchange, [sub])

    async def handler(message: Message) -> None:
        return None

    def warning(page: str) -> str | None:
        found = re.search(r'id="target-warning" data-state="([a-z-]+)"', page)
        if found is None:
            return None
        assert page.index('id="target-warning"') < page.index('id="replay-send"')
        return found.group(1)

    async with TestClient(TestServer(build_app(console))) as client:
        csrf = await sign_in(client)
        page = await _dry_run(client, csrf, to=sub.name)
        assert warning(page) == "no-worker" and f"No worker runs {sub.name}" in page
        async with running_worker(probe, exchange, [sub], {sub.name: handler}):

            async def consuming() -> bool:
                return warning(await _dry_run(client, csrf, to=sub.name)) is None

            await wait_until(consuming, timeout=15)
            paused = await client.post(
                f"/subscribers/{sub.name}/pause", data={"csrf": csrf}, allow_redirects=False
            )
            assert paused.status == 303
            page = await _dry_run(client, csrf, to=sub.name)
            assert warning(page) == "paused"
            assert f"{sub.name} is paused (Paused by" in page and "You can still send" in page
            assert 'id="replay-send" disabled' not in page


# 6. Replay to... from an order and a webhook; 7. what a lookup searched


async def test_replay_to_from_an_order_page_and_a_webhook_page_is_restricted_to_them(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    bridge = await _archive(make_bridge, probe, exchange)
    await _post(bridge, "despatched", 1)  # order 20285
    await _post(bridge, "delivered", 1)  # order 20285
    await _post(bridge, "cancelled", 2)  # order 20286
    sub = subscriber()
    await _declared(probe, exchange, sub)
    console = console_state(exchange, [sub])
    async with TestClient(TestServer(build_app(console))) as client:
        await sign_in(client)
        order = await (await client.get("/orders?q=20285&since=1h")).text()
        assert 'id="replay-to"' in order and 'data-busy="order-searching"' in order
        form = order[
            order.index('id="replay-to"') : order.index("</form>", order.index('id="replay-to"'))
        ]
        fields = [(n, html.unescape(v)) for n, v in _HIDDEN.findall(form)]
        assert ("order", "20285") in fields
        answer = await client.post("/replay", data=[*fields, ("to", sub.name)])
        page = await answer.text()
        assert answer.status == 200, page
        assert _matched(page) == 2 and "only order 20285" in page
        job = await _confirm(client, console, page)
        await _finished(job)
        assert job.done == 2
        copies = await probe.get_until_sentinel(sub.name)
        assert {m.header.properties.message_type for m in copies} == {"despatched", "delivered"}
        assert len({(m.header.properties.headers or {})[HEADER_REPLAY_ID] for m in copies}) == 1

        # One webhook's page: only that message id.
        link = re.search(r'href="(/orders/webhooks/[^"]+)"', order)
        assert link is not None
        hook = await (await client.get(html.unescape(link.group(1)))).text()
        form = hook[
            hook.index('id="replay-to"') : hook.index("</form>", hook.index('id="replay-to"'))
        ]
        fields = [(n, html.unescape(v)) for n, v in _HIDDEN.findall(form)]
        answer = await client.post("/replay", data=[*fields, ("to", sub.name)])
        page = await answer.text()
        assert _matched(page) == 1 and "only webhook " in page

        # Nothing found: how many webhooks of which window were searched.
        nothing = await (await client.get("/orders?q=99999&since=1h")).text()
    assert 'data-figure="searched">4<' in nothing and "received from" in nothing
    assert 'id="replay-to"' not in nothing


async def test_every_replay_job_keeps_when_and_what_for_the_history() -> None:
    from bridge.console.jobs import Jobs

    jobs = Jobs()
    release = asyncio.Event()

    async def work(job: Job) -> str:
        await release.wait()
        return "ok"

    first = jobs.start("a", work, key="a", started_by="alice", plan="plan-a")
    second = jobs.start("b", work, key="b")
    assert [j.id for j in jobs.listed()] == [second.id, first.id]
    assert (first.started_by, first.plan, first.outcome) == ("alice", "plan-a", "running")
    release.set()
    await wait_until(lambda: first.finished and second.finished)
    assert first.outcome == "done" and first.finished_at is not None
    assert first.finished_at >= first.started_at
    await jobs.stop()
