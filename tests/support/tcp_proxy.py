"""A TCP proxy for fault tests, run inside the test's event loop: forwards 127.0.0.1:<port>
to a target, and on demand resets every connection (RST) or turns into a black hole that
accepts bytes and never answers (the way a dead NAT entry or a hung peer looks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class TcpProxy:
    """``await start()``, then ``reset_all()``, ``black_hole()``, ``heal()``, ``close()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self.blackholed = False
        self.accepted = 0
        """Connections accepted so far (each one a client's connection to the broker)."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._replies = asyncio.Event()
        self._replies.set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def black_hole(self) -> None:
        """From now on swallow every byte in both directions, on old and new connections."""
        self.blackholed = True

    def heal(self) -> None:
        """Forward again (connections black-holed meanwhile have lost bytes: reset them)."""
        self.blackholed = False

    def hold_replies(self) -> None:
        """Keep forwarding to the target but hold its answers (confirms, returns) until
        :meth:`release_replies`, in order."""
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def reset_all(self) -> None:
        """Abort every open connection with a TCP reset, both sides."""
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def close(self) -> None:
        self.reset_all()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        if self.blackholed:
            await self._pump(reader, None)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            _reset(writer)
            return
        self._writers.add(up_writer)
        tasks = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer, replies=True)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            for side in (writer, up_writer):
                self._writers.discard(side)
                side.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter | None,
        replies: bool = False,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if replies:
                    await self._replies.wait()
                if writer is None or self.blackholed:
                    continue  # accepted, never answered
                writer.write(data)
                await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
