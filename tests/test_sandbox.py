"""The sandbox Mintsoft (contract section 11): its API behaves as Mintsoft's does (paging,
offset-less London times, ms-apikey, POST /api/Auth, 429s when called too fast), its story
moves every order to despatched, and the ``sandbox`` command calls the URLs that
``connect-actions`` registered, with the Authorization of ExtraCode4, printing each move."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from bridge.cli import main
from bridge.mintsoft.sandbox.api import SandboxApi
from bridge.mintsoft.sandbox.story import Story
from bridge.mintsoft.sandbox.world import Asn, Order, World
from tests.support.local_app import serve_locally
from tests.support.rabbit_node import free_port

OFFSETLESS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{2,7}$")


async def _serve(api: SandboxApi) -> tuple[web.AppRunner, str]:
    return await serve_locally(api.handle)


async def test_lists_in_pages_of_at_most_100_with_london_times_and_the_key() -> None:
    world = World()
    orders = [world.create(client_id=12 + i % 2) for i in range(150)]
    runner, url = await _serve(SandboxApi(world, api_key="k-1"))
    try:
        async with aiohttp.ClientSession(headers={"ms-apikey": "k-1"}) as http:

            async def page(query: str) -> list[dict[str, object]]:
                async with http.get(f"{url}/api/Order/List?{query}") as response:
                    assert response.status == 200
                    rows: list[dict[str, object]] = await response.json()
                    return rows

            first = await page("Limit=500&SortOldestFirst=true")
            second = await page("Limit=500&SortOldestFirst=true&PageNo=2")
            assert len(first) == 100 and len(second) == 50
            assert await page("Limit=500&PageNo=3") == []
            assert [r["ID"] for r in first + second] == [o.id for o in orders]
            assert {r["ClientId"] for r in first} == {12, 13}
            assert len(await page("ClientId=13")) == 75
            assert all(OFFSETLESS.match(str(r["LastUpdated"])) for r in first)
            newest_first = await page("Limit=1")
            assert newest_first[0]["ID"] == orders[-1].id
            async with http.get(
                f"{url}/api/Order/List", headers={"ms-apikey": "another"}
            ) as refused:
                assert refused.status == 401
            async with http.get(f"{url}/api/Order/List?Limit=many") as invalid:
                assert invalid.status == 400
    finally:
        await runner.cleanup()


async def test_any_key_when_none_is_set_and_a_login_gets_one() -> None:
    runner, url = await _serve(SandboxApi(World()))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/api/Order/List", headers={"ms-apikey": "x"}) as ok:
                assert ok.status == 200
            async with http.get(f"{url}/api/Order/List") as no_key:
                assert no_key.status == 401
            login = {"Username": "me", "Password": "pw"}
            async with http.post(f"{url}/api/Auth", json=login) as answer:
                assert answer.status == 200
                assert isinstance(await answer.json(), str)
    finally:
        await runner.cleanup()
    api = SandboxApi(World(), api_key="k-2", username="me", password="pw")
    runner, url = await _serve(api)
    try:
        async with aiohttp.ClientSession() as http:
            wrong = {"Username": "me", "Password": "nope"}
            async with http.post(f"{url}/api/Auth", json=wrong) as refused:
                assert refused.status == 400
            right = {"Username": "me", "Password": "pw"}
            async with http.post(f"{url}/api/Auth", json=right) as answer:
                assert await answer.json() == "k-2"
    finally:
        await runner.cleanup()


async def test_answers_429_with_retry_after_when_called_too_fast() -> None:
    runner, url = await _serve(SandboxApi(World(), rate=2.0))
    try:
        async with aiohttp.ClientSession(headers={"ms-apikey": "x"}) as http:
            statuses = Counter[int]()
            for _ in range(12):
                async with http.get(f"{url}/api/Order/List") as response:
                    statuses[response.status] += 1
                    if response.status == 429:
                        assert response.headers["Retry-After"] == "1"
            assert statuses[200] >= 4 and statuses[429] >= 1
    finally:
        await runner.cleanup()


async def _target() -> tuple[web.AppRunner, str, list[tuple[str, str | None, object]]]:
    """A stand-in bridge: records (path, Authorization, body) of every call, answers 200."""
    calls: list[tuple[str, str | None, object]] = []

    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        calls.append((request.path, request.headers.get("Authorization"), body))
        return web.Response(text="ok")

    runner, url = await serve_locally(handle)
    return runner, url, calls


async def test_the_story_despatches_every_order_and_calls_registered_urls() -> None:
    runner, url, calls = await _target()
    world = World()
    await world.open()
    moves: list[tuple[str, int]] = []

    def moved(move: str, order: Order) -> None:
        moves.append((move, order.id))
        if move == "created" and order.id % 2:  # register half, as connect-actions would
            order.actions = [{"ExtraCode1": f"{url}/webhooks/despatched", "ExtraCode4": "Bearer t"}]

    try:
        story = Story(world, orders=8, step=0.05, seed=3, on_move=moved)
        await asyncio.wait_for(story.play(), 30)
    finally:
        await world.close()
        await runner.cleanup()
    assert {o.status for o in world.orders.values()} <= {3, 4}
    assert Counter(m for m, _ in moves)["despatched"] == 8
    assert len({(o.client_id, o.warehouse_id) for o in world.orders.values()}) > 1
    registered = sorted(o.id for o in world.orders.values() if o.id % 2)
    despatched = sorted(b["ID"] for p, _, b in calls if p == "/webhooks/despatched")  # type: ignore[index]
    assert despatched == registered
    assert {auth for _, auth, _ in calls} == {"Bearer t"}
    assert all(not s.dropped for s in world.sent)


async def test_a_drop_of_one_calls_nothing_and_says_so() -> None:
    runner, url, calls = await _target()
    world = World(drop=1.0)
    await world.open()
    try:
        order = world.create()
        order.actions = [{"ExtraCode1": f"{url}/webhooks/despatched?APIKEY=secret-key"}]
        await world.despatch(order)
    finally:
        await world.close()
        await runner.cleanup()
    assert calls == []
    [sent] = world.sent
    assert sent.dropped and "dropped" in sent.outcome
    assert "secret-key" not in sent.outcome


def test_help_answers_and_a_bad_drop_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["sandbox", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "--orders" in out and "--drop" in out and "8070" in out
    assert main(["sandbox", "--drop", "1.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--drop" in err


async def test_the_command_calls_what_connect_actions_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole command as a newcomer runs it: ``sandbox`` prints its orders, ``connect-actions``
    registers one against it, and the sandbox calls that URL when it despatches the order."""
    runner, target, calls = await _target()
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
        "BRIDGE_MINTSOFT_API_KEY": "sandbox-key",
        "BRIDGE_MINTSOFT_URL": f"http://127.0.0.1:{port}",
        "BRIDGE_PUBLIC_URL": target,
        "BRIDGE_AUTH_HEADERS": "Bearer bridge-secret",
    }
    out = tmp_path / "sandbox.out"
    with out.open("w") as sink:
        sandbox = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "sandbox",
            "--port",
            str(port),
            "--orders",
            "2",
            "--drop",
            "0",
            "--step",
            "1s",
            "--first-id",
            "1000",
            env=env,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def printed(text: str) -> str:
        deadline = time.monotonic() + 30
        while text not in out.read_text():
            assert sandbox.returncode is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            await asyncio.sleep(0.05)
        return out.read_text()

    try:
        await printed("order 1001 created")
        for name, value in env.items():
            if name.startswith("BRIDGE_"):
                monkeypatch.setenv(name, value)
        assert await asyncio.to_thread(main, ["connect-actions", "1001"]) == 0
        lines = await printed("order 1001 despatched webhook: called")
        assert f"{target}/webhooks/despatched: 200" in lines
        assert "bridge-secret" not in lines and "sandbox-key" not in lines
        [(_, auth, body)] = [c for c in calls if c[0] == "/webhooks/despatched"]
        assert auth == "Bearer bridge-secret"
        assert body["ID"] == 1001 and body["OrderStatusId"] == 4  # type: ignore[index]
    finally:
        sandbox.terminate()
        assert await asyncio.wait_for(sandbox.wait(), 20) == 0
        await runner.cleanup()


async def test_an_asn_takes_connect_actions_and_calls_extracode1_when_booked_in() -> None:
    """Contract 11: PUT /api/ASN/{id}/ConnectActions registers the URL; booked in, the
    sandbox POSTs GET /api/ASN/{id}'s body to ExtraCode1 with ExtraCode4 as Authorization."""
    target, target_url, calls = await _target()
    world = World()
    await world.open()
    api = SandboxApi(world, api_key="k-3")
    runner, url = await _serve(api)
    booked: list[int] = []
    created = asyncio.Event()

    def moved(move: str, subject: Order | Asn) -> None:
        booked.append(subject.id)
        created.set()

    try:
        story = Story(world, orders=0, step=0.5, asns=1, on_move=moved)
        playing = asyncio.ensure_future(story.play())
        await asyncio.wait_for(created.wait(), 10)
        [asn_id] = world.asns
        action = {
            "Type": "API",
            "SourceASNId": "S-1",
            "Complete": False,
            "ExtraCode1": f"{target_url}/webhooks/asn-booked-in",
            "ExtraCode4": "Bearer asn",
        }
        async with aiohttp.ClientSession(headers={"ms-apikey": "k-3"}) as http:
            put = f"{url}/api/ASN/{asn_id}/ConnectActions"
            async with http.put(put, json=action) as answer:
                assert answer.status == 200 and (await answer.json())["Success"] is True
            async with http.get(put) as answer:
                [held] = await answer.json()
                assert held["ExtraCode1"] == action["ExtraCode1"] and held["ASNId"] == asn_id
            async with http.get(f"{url}/api/ASN/{asn_id}/Splits") as answer:
                assert answer.status == 404
            await asyncio.wait_for(playing, 30)
            async with http.get(f"{url}/api/ASN/{asn_id}") as answer:
                document = await answer.json()
    finally:
        await world.close()
        await runner.cleanup()
        await target.cleanup()
    [(path, auth, body)] = calls
    assert path == "/webhooks/asn-booked-in" and auth == "Bearer asn"
    assert body == document and document["ID"] == asn_id and document["ASNStatusId"] == 5
    assert document["BookedInDate"] is not None and booked == [asn_id, asn_id]
    assert api.puts[asn_id] == 1
