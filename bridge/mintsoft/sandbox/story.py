"""The sandbox's default story: what happens to its orders, and when.

Every order is created within the first half ``step`` (its ``ClientId`` / ``WarehouseId``
vary), so a ``sync`` pass can enrol it; one to two ``step`` later it is despatched (as soon
as that time comes once the order holds a connect action, or regardless after two more
``step``, as Mintsoft does not wait for anyone); some orders are later delivered (a tracking
event) and some cancelled. With the default ``step`` of 30 s every order is despatched
within a minute or two of the start. The plan is drawn from ``seed``, so a run repeats.
``asns`` ASNs (stock arriving) are created and booked in on the same schedule, booked in
taking the place of despatched. Each move is reported to ``on_move`` (the webhook calls
themselves to ``World.on_sent``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.mintsoft.sandbox.world import Asn, Order, World

CLIENTS = (12, 14, 17)
WAREHOUSES = (1, 2)
STEP = 30.0


@dataclass
class Plan:
    """When each move of one order is due (seconds after the start), ``None``: never."""

    index: int
    asn: bool
    create_at: float
    despatch_at: float
    then: str | None  # "delivered", "cancelled" or None
    then_at: float
    subject: Order | Asn | None = None
    done: int = 0  # moves made: 0 none, 1 created, 2 despatched (booked in), 3 then

    @property
    def finished(self) -> bool:
        return self.done == (3 if self.then else 2)


def plan(orders: int, step: float, seed: int, asns: int = 0) -> list[Plan]:
    """The moves of ``orders`` orders (a quarter then delivered, about one in seven
    cancelled) and ``asns`` ASNs."""
    draw = random.Random(seed)
    plans = []
    for i in range(orders + asns):
        asn = i >= orders
        create_at = 0.0 if i == 0 else draw.uniform(0, step / 2)
        despatch_at = create_at + draw.uniform(step, 2 * step)
        then = "delivered" if i % 4 == 1 else "cancelled" if i % 7 == 3 else None
        then_at = despatch_at + draw.uniform(step / 2, step)
        plans.append(Plan(i, asn, create_at, despatch_at, None if asn else then, then_at))
    return plans


class Story:
    """``await Story(world, ...).play()`` makes every planned move, then returns."""

    def __init__(
        self,
        world: World,
        orders: int = 10,
        step: float = STEP,
        seed: int = 7,
        on_move: Callable[[str, Order | Asn], None] = lambda move, subject: None,
        asns: int = 0,
    ) -> None:
        self.world = world
        self.step = step
        self.plans = plan(orders, step, seed, asns)
        self.on_move = on_move

    async def play(self) -> None:
        started = time.monotonic()
        tick = min(0.5, self.step / 4)
        while not all(p.finished for p in self.plans):
            elapsed = time.monotonic() - started
            for p in self.plans:
                await self._move(p, elapsed)
            await asyncio.sleep(tick)

    async def _move(self, p: Plan, elapsed: float) -> None:
        if p.done == 0 and elapsed >= p.create_at:
            client = CLIENTS[p.index % len(CLIENTS)]
            warehouse = WAREHOUSES[(p.index // len(CLIENTS)) % len(WAREHOUSES)]
            create = self.world.create_asn if p.asn else self.world.create
            p.subject = create(client, warehouse)
            p.done = 1
            self.on_move("created", p.subject)
        elif p.done == 1 and elapsed >= p.despatch_at:
            assert p.subject is not None
            if not p.subject.actions and elapsed < p.despatch_at + 2 * self.step:
                return  # give sync (or connect-actions) a chance to register it first
            p.done = 2
            p.then_at = max(p.then_at, elapsed + self.step / 2)
            if isinstance(p.subject, Asn):
                self.on_move("booked in", p.subject)
                await self.world.book_in(p.subject)
            else:
                self.on_move("despatched", p.subject)
                await self.world.despatch(p.subject)
        elif p.done == 2 and p.then and elapsed >= p.then_at:
            assert isinstance(p.subject, Order)
            p.done = 3
            self.on_move(p.then, p.subject)
            if p.then == "delivered":
                await self.world.deliver(p.subject)
            else:
                await self.world.cancel(p.subject)
