"""Archive replay from the console against a flood (issue 22, point 3): one running replay
per subscriber (409 naming it), at most the confirmed count sent, jobs cancellable and
evicted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient, TestServer

from bridge.console.app import build_app
from bridge.console.jobs import Job, Jobs
from bridge.console.replay_plan import stamp
from tests.conftest import BridgeFactory, BrokerProbe
from tests.console_helpers import archive_despatched, console_state, sign_in
from tests.worker_helpers import subscriber, wait_until


async def _until(condition: Callable[[], object], what: str) -> None:
    await wait_until(condition, 30, interval=0.02, what=what)


async def test_parallel_replays_to_one_subscriber_run_once_and_send_the_confirmed_count(
    probe: BrokerProbe, exchange: str, make_bridge: BridgeFactory
) -> None:
    bridge = await make_bridge(archive=True)
    probe.track(queues=(exchange + ".archive",))
    await archive_despatched(bridge, 5)
    sub = subscriber()
    channel = await probe._chan()
    await channel.queue_declare(sub.name, durable=True)
    probe.track(queues=(sub.name,))
    console = console_state(exchange, [sub])
    async with TestClient(TestServer(build_app(console))) as client:
        csrf = await sign_in(client)
        now = datetime.now(UTC)
        window = {"from_at": stamp(now - timedelta(hours=1)), "until_at": stamp(now)}
        form = {"csrf": csrf, "to": sub.name, "confirmed": "1", "count": "2", **window}
        answers = await asyncio.gather(
            *(client.post("/replay", data=form, allow_redirects=False) for _ in range(20))
        )
        accepted = [a for a in answers if a.status == 303]
        busy = [a for a in answers if a.status == 409]
        assert len(accepted) + len(busy) == 20, [a.status for a in answers]
        assert accepted and busy
        running = accepted[0].headers["Location"].rsplit("/", 1)[-1]
        assert f"job {running}" in await busy[0].text() or "already running" in (
            await busy[0].text()
        )
        job_ids = {a.headers["Location"].rsplit("/", 1)[-1] for a in accepted}

        def finished() -> bool:
            jobs = [console.jobs.get(j) for j in job_ids]
            return all(j is not None and j.finished for j in jobs)

        await _until(finished, "the replays to finish")
        for job_id in job_ids:
            job = console.jobs.get(job_id)
            assert job is not None and job.error is None, job and job.error
        # Each accepted replay sent the 2 confirmed, not the whole archive (5).
        assert await probe.count(sub.name) == 2 * len(accepted)


async def test_a_running_job_blocks_its_key_until_cancelled_and_says_so() -> None:
    from bridge.console.jobs import Running

    jobs = Jobs()
    release = asyncio.Event()

    async def slow(job: Job) -> str:
        await release.wait()
        return "done"

    first = jobs.start("replay to erp", slow, key="erp")
    try:
        jobs.start("replay to erp", slow, key="erp")
        raise AssertionError("a second job with the same key started")
    except Running as running:
        assert running.job is first
    other = jobs.start("replay to wms", slow, key="wms")  # another subscriber: fine
    assert jobs.cancel(first.id) is first
    await _until(lambda: first.finished, "the cancelled job to finish")
    assert first.error is not None and "operator" in first.error
    assert jobs.running("erp") is None
    again = jobs.start("replay to erp", slow, key="erp")
    release.set()
    await _until(lambda: again.finished and other.finished, "the jobs to finish")
    assert again.result == "done"
    await jobs.stop()


async def test_jobs_are_evicted_finished_first_then_unfinished() -> None:
    jobs = Jobs(keep=5)
    never = asyncio.Event()

    async def stuck(job: Job) -> str:
        await never.wait()
        return ""

    async def quick(job: Job) -> str:
        return "ok"

    stuck_job = jobs.start("stuck", stuck, key="a")
    for i in range(10):  # one after the other, as operators start them
        job = jobs.start(f"quick {i}", quick)
        await _until(lambda job=job: job.finished, "a quick job to finish")
    assert len(jobs._jobs) <= 5
    assert jobs.get(stuck_job.id) is stuck_job  # finished ones went first
    # Only unfinished ones left above the bound: the oldest is cancelled and evicted.
    stuck_more = [jobs.start(f"stuck {i}", stuck, key=f"k{i}") for i in range(6)]
    assert len(jobs._jobs) <= 5
    assert jobs.get(stuck_job.id) is None
    await _until(lambda: stuck_job.finished, "the evicted job to be cancelled")
    assert stuck_job.error is not None
    assert all(j.finished or jobs.get(j.id) is j for j in stuck_more)
    await jobs.stop()
