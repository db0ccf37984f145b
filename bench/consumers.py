"""The consumption baselines, each its own process:
``python -m bench.consumers {raw,faststream} URL QUEUE COUNT PREFETCH``.

Both consume a queue that is already full and print, as one JSON line, the rate between the
first and the ``COUNT``-th delivery and the process's CPU time per message over the same
span (steadier than the rate on a shared machine). ``raw`` is aio-pika with manual acks, as
its documentation writes a consumer (``await message.ack()`` per message); ``faststream`` is
a FastStream RabbitMQ subscriber (it acks after the handler returns). The worker they are
compared with (``mintsoft-bridge worker`` with :func:`bench.handlers.noop`) measures the
same span the same way, on the same prefetch, with a handler that does the same nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from typing import Any

import aio_pika
import orjson
import uvloop


class Clock:
    """First and last delivery times, and a future that completes at ``count``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.first = 0.0
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self.sys_first = 0.0
        self.sys_last = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def tick(self) -> None:
        now = time.perf_counter()
        if self.seen == 0:
            self.first = now
            self.cpu_first = time.process_time()
            self.sys_first = resource.getrusage(resource.RUSAGE_SELF).ru_stime
        self.seen += 1
        if self.seen == self.count:
            self.last = now
            self.cpu_last = time.process_time()
            self.sys_last = resource.getrusage(resource.RUSAGE_SELF).ru_stime
            self.done.set_result(None)

    def result(self) -> dict[str, Any]:
        seconds = self.last - self.first
        return {
            "messages": self.seen,
            "seconds": seconds,
            "rate": (self.seen - 1) / seconds if seconds > 0 else 0.0,
            "cpu_us_per_message": (self.cpu_last - self.cpu_first) / (self.seen - 1) * 1e6,
            "kernel_share": (self.sys_last - self.sys_first) / (self.cpu_last - self.cpu_first)
            if self.cpu_last > self.cpu_first
            else 0.0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


async def raw(url: str, queue_name: str, count: int, prefetch: int) -> dict[str, Any]:
    clock = Clock(count)
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.get_queue(queue_name)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        clock.tick()

    await queue.consume(on_message)
    await clock.done
    await connection.close()
    return clock.result()


async def faststream(url: str, queue_name: str, count: int, prefetch: int) -> dict[str, Any]:
    from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue

    clock = Clock(count)
    broker = RabbitBroker(url, default_channel=Channel(prefetch_count=prefetch))

    @broker.subscriber(RabbitQueue(queue_name, queue_type=QueueType.QUORUM, durable=True))
    async def on_message(body: Any) -> None:
        clock.tick()

    await broker.start()
    await clock.done
    await broker.stop()
    return clock.result()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("raw", "faststream"))
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("count", type=int)
    parser.add_argument("prefetch", type=int)
    args = parser.parse_args()
    run = raw if args.kind == "raw" else faststream
    result = uvloop.run(run(args.url, args.queue, args.count, args.prefetch))
    print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
