"""The local durable spool: envelopes the broker could not confirm, kept in SQLite until the
drain (:mod:`bridge.receiving.drain`) has published them with a confirm.

SQLite in WAL mode with ``synchronous=FULL`` makes every commit durable (the WAL is fsynced
before the commit returns), and a crash or SIGKILL leaves either the whole transaction or
none of it. Its directory is 0700 and its files 0600 (:func:`prepare_files`). All SQLite
work runs in one dedicated thread that takes every pending append and delete off its queue
and commits them in one transaction: one fsync serves all the requests that arrived
meanwhile (group commit), and the event loop never blocks on disk.

One process at a time per spool file (:class:`SpoolLock`): ``serve`` holds the spool's lock
for as long as it runs, and ``spool drain`` takes it before publishing, so two drains never
publish the same file side by side (which would publish every message twice). The lock is an
exclusive ``flock`` on ``<spool>.lock`` beside the spool (mode 0600), not on the database:
SQLite's own locks on that file must stay untouched. The kernel drops it when the process
ends, however it ends, so a crash never leaves a stale lock behind.

``spool status`` (:func:`read_status`): depth, bytes and oldest age of a spool file, read
while ``serve`` may be writing it (WAL readers never block the writer). A missing file is a
:class:`~bridge.core.settings.SettingsError` (never "depth 0": someone looking for stranded
webhooks must not be told there are none), an unreadable one a
:class:`~bridge.errors.CommandError`; both name the setting to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from bridge.core import metrics
from bridge.core.contract import CONTENT_TYPE_JSON, Envelope
from bridge.core.settings import SettingsError
from bridge.errors import CommandError

log = logging.getLogger("bridge.receiving.spool")

RECORD_OVERHEAD = 64
"""Bytes counted per message on top of its body and headers (row and index overhead)."""

MAX_BATCH = 4096
"""At most this many appends and deletes share one transaction."""

READ_BYTES = 16 * 1024 * 1024
"""What one read of the drain holds in memory at most (bodies can be up to 10 MiB each)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL
)
"""
_INSERT = (
    "INSERT INTO spool (event, routing_key, message_id, received_at, headers, body, size)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT seq, event, routing_key, message_id, received_at, headers, body, size"
    " FROM spool WHERE seq > ? ORDER BY seq LIMIT ?"
)
STATS = "SELECT count(*), coalesce(sum(size), 0) FROM spool"
OLDEST = "SELECT received_at FROM spool ORDER BY seq LIMIT 1"


class SpoolFull(Exception):
    """The spool is at ``BRIDGE_SPOOL_MAX_BYTES``: the message was not written."""


class SpoolError(Exception):
    """SQLite could not commit (disk full, I/O error): the message was not written."""


@dataclass(frozen=True, slots=True)
class Spooled:
    """One stored envelope and its place in the spool."""

    seq: int
    envelope: Envelope
    size: int


def record_size(envelope: Envelope, headers: bytes) -> int:
    """The bytes one message counts against ``BRIDGE_SPOOL_MAX_BYTES``."""
    return (
        len(envelope.body)
        + len(headers)
        + len(envelope.event)
        + len(envelope.routing_key)
        + len(envelope.message_id)
        + RECORD_OVERHEAD
    )


_CONTENT_TYPE_KEY = "\x00content-type"  # a quarantined body's own, among stored headers


def _row(envelope: Envelope) -> tuple[Any, ...]:
    stored = envelope.headers
    if envelope.content_type != CONTENT_TYPE_JSON:
        stored = {**stored, _CONTENT_TYPE_KEY: envelope.content_type}
    headers = orjson.dumps(stored)
    return (
        envelope.event,
        envelope.routing_key,
        envelope.message_id,
        envelope.received_at,
        headers,
        envelope.body,
        record_size(envelope, headers),
    )


def _spooled(row: tuple[Any, ...]) -> Spooled:
    seq, event, key, message_id, received_at, headers, body, size = row
    stored = orjson.loads(headers)
    kind = stored.pop(_CONTENT_TYPE_KEY, CONTENT_TYPE_JSON)
    envelope = Envelope(event, key, bytes(body), message_id, received_at, stored, kind)
    return Spooled(seq, envelope, size)


def connect(path: str, *, create: bool) -> sqlite3.Connection:
    """A connection to the spool at ``path`` in WAL mode with full sync."""
    if create:
        prepare_files(path)  # 0700 directory, 0600 files, before SQLite makes any
    mode = "rwc" if create else "rw"
    uri = f"file:{quote(os.path.abspath(path))}?mode={mode}"
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    if create:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(_SCHEMA)
    return connection


# One job for the spool thread: (kind, payload, future).
_Job = tuple[str, Any, "asyncio.Future[Any] | None"]
_Settle = Callable[[list[tuple["asyncio.Future[Any]", Any, BaseException | None]]], None]


class Spool:
    """The durable spool at ``path``, limited to ``max_bytes``.

    ``depth`` and ``bytes`` count every message accepted by :meth:`append`, including
    those still waiting for their commit, so callers can queue behind them at once.
    """

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.depth = 0
        self.bytes = 0
        self.stored = 0
        self.commits = 0
        self.oldest_received_at: float | None = None
        self._last_size = 0
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._has_stored = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating if needed) the database and start the spool thread."""
        self._loop = asyncio.get_running_loop()
        try:
            connection = await asyncio.to_thread(connect, self.path, create=True)
            depth, size = await asyncio.to_thread(lambda: connection.execute(STATS).fetchone())
            oldest = await asyncio.to_thread(lambda: connection.execute(OLDEST).fetchone())
        except (OSError, sqlite3.Error) as exc:
            raise SettingsError(
                f"BRIDGE_SPOOL_PATH={self.path!r} cannot be opened ({exc}): point it at a "
                "writable file, or set it empty to run without a spool"
            ) from None
        self.depth = self.stored = int(depth)
        self.bytes = int(size)
        self.oldest_received_at = oldest[0] if oldest else None
        if self.stored:
            self._has_stored.set()
            log.warning(
                "spool %s holds %d messages from before; draining them first",
                self.path,
                self.stored,
            )
        metrics.watch_spool(self)
        self._thread = threading.Thread(
            target=self._work, args=(connection,), name="bridge-spool", daemon=True
        )
        self._thread.start()

    async def close(self) -> None:
        """Finish pending work and close the database."""
        if self._thread is None:
            return
        done = self._future()
        self._jobs.put(("stop", None, done))
        await done
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # --- what callers use -----------------------------------------------------------

    @property
    def has_room(self) -> bool:
        """Whether a message like the last one offered would fit."""
        return self.bytes + self._last_size <= self.max_bytes

    def oldest_age(self) -> float:
        """Seconds since the oldest spooled message was received (0 when empty)."""
        if self.oldest_received_at is None or self.depth == 0:
            return 0.0
        return max(time.time() - self.oldest_received_at, 0.0)

    async def append(self, envelope: Envelope) -> None:
        """Store ``envelope``; returns once it is committed and fsynced.

        Raises :class:`SpoolFull` (nothing written) when it would pass ``max_bytes``, and
        :class:`SpoolError` when the commit failed (nothing written either).
        """
        row = _row(envelope)
        size: int = row[-1]
        self._last_size = size
        if self.bytes + size > self.max_bytes:
            metrics.SPOOL_REJECTED.inc()
            raise SpoolFull(f"the spool is full ({self.bytes} of {self.max_bytes} bytes)")
        self.depth += 1
        self.bytes += size

        def undo(future: asyncio.Future[Any]) -> None:
            if future.exception() is not None:
                self.depth -= 1
                self.bytes -= size

        done = self._future()
        done.add_done_callback(undo)
        self._jobs.put(("insert", row, done))
        # Shielded: a caller that gives up still leaves a consistent spool behind.
        await asyncio.shield(done)

    async def head(self, limit: int, after: int = 0, max_bytes: int = READ_BYTES) -> list[Spooled]:
        """Up to ``limit`` committed messages in arrival order, from ``seq > after``; no more
        than ``max_bytes`` in all, but always at least one."""
        done = self._future()
        self._jobs.put(("select", (after, limit, max_bytes), done))
        rows: list[tuple[Any, ...]] = await done
        return [_spooled(row) for row in rows]

    async def remove(self, items: Sequence[Spooled]) -> None:
        """Delete messages (after their confirm); the delete shares a group commit."""
        if not items:
            return
        removed = len(items)
        size = sum(item.size for item in items)

        def account(future: asyncio.Future[Any]) -> None:
            if future.exception() is None:
                self.depth -= removed
                self.stored -= removed
                self.bytes -= size
                if self.stored == 0:
                    self._has_stored.clear()

        done = self._future()
        done.add_done_callback(account)
        self._jobs.put(("delete", [(item.seq,) for item in items], done))
        await asyncio.shield(done)

    async def wait_stored(self) -> None:
        """Return once at least one committed message is in the spool."""
        await self._has_stored.wait()

    # --- the spool thread -----------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        assert self._loop is not None, "open() the spool first"
        return self._loop.create_future()

    def _settle(self, results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        for future, value, error in results:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

    def _committed(self, inserted: int, oldest: float | None) -> None:
        self.commits += 1
        self.stored += inserted
        self.oldest_received_at = oldest
        if self.stored > 0:
            self._has_stored.set()

    def _work(self, connection: sqlite3.Connection) -> None:
        assert self._loop is not None
        loop = self._loop
        try:
            while True:
                jobs = [self._jobs.get()]
                while len(jobs) < MAX_BATCH:
                    try:
                        jobs.append(self._jobs.get_nowait())
                    except queue.Empty:
                        break
                results = self._run_batch(connection, jobs, loop)
                loop.call_soon_threadsafe(self._settle, results)
                if any(kind == "stop" for kind, _, _ in jobs):
                    return
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.close()

    def _run_batch(
        self, connection: sqlite3.Connection, jobs: list[_Job], loop: asyncio.AbstractEventLoop
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        inserts = [job for job in jobs if job[0] == "insert"]
        deletes = [job for job in jobs if job[0] == "delete"]
        if inserts or deletes:
            error: BaseException | None = None
            try:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(_INSERT, [payload for _, payload, _ in inserts])
                for _, seqs, _ in deletes:
                    connection.executemany("DELETE FROM spool WHERE seq = ?", seqs)
                connection.execute("COMMIT")
                oldest = connection.execute(OLDEST).fetchone()
                loop.call_soon_threadsafe(
                    self._committed, len(inserts), oldest[0] if oldest else None
                )
            except Exception as exc:  # never leave a caller waiting, whatever failed
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                log.error("spool commit failed: %s", exc)
                error = SpoolError(f"the spool could not commit ({exc})")
            for _, _, future in inserts + deletes:
                assert future is not None
                results.append((future, None, error))
        for kind, payload, future in jobs:
            if kind == "select":
                assert future is not None
                try:
                    results.append((future, _read(connection, *payload), None))
                except Exception as exc:
                    results.append((future, None, SpoolError(str(exc))))
            elif kind == "stop" and future is not None:
                results.append((future, None, None))
        return results


def _read(
    connection: sqlite3.Connection, after: int, limit: int, max_bytes: int
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    total = 0
    cursor = connection.execute(_SELECT, (after, limit))
    try:
        for row in cursor:
            rows.append(row)
            total += row[-1]
            if total >= max_bytes:
                break
    finally:
        cursor.close()
    return rows


# --- file modes ---------------------------------------------------------------------
#
# File modes of the spool: it holds webhook bodies (names, addresses, e-mails), so its
# directory is 0700 and its files (``spool.sqlite3``, ``-wal``, ``-shm``) 0600, whatever the
# umask.
#
# The database file is created 0600 before SQLite opens it; SQLite then gives its ``-wal``
# and ``-shm`` the database file's mode (it sets them explicitly, past the umask). A directory
# or file found looser than that is tightened, with one warning line naming what was. A
# directory with the sticky bit (``/tmp``) is shared by design and left alone, as is one this
# user may not change (said in the same warning line); the files in it are still 0600.

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SUFFIXES = ("", "-wal", "-shm", "-journal")


def prepare_files(path: str) -> None:
    """Create the spool's directory and database file with private modes, or tighten them.

    Raises ``OSError`` when the directory or file cannot be created.
    """
    spool = Path(os.path.abspath(path))
    directory = spool.parent
    tightened: list[str] = []
    untouched: list[str] = []
    if not directory.exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
        os.chmod(directory, DIRECTORY_MODE)  # mkdir's mode passed through the umask
    elif directory.is_dir():  # not a directory: the open below says so
        _tighten(directory, tightened, untouched)
    if not spool.exists():
        descriptor = os.open(spool, os.O_CREAT | os.O_WRONLY, FILE_MODE)
        try:
            os.fchmod(descriptor, FILE_MODE)  # whatever the umask
        finally:
            os.close(descriptor)
    for suffix in SUFFIXES:
        _tighten(Path(f"{spool}{suffix}"), tightened, untouched)
    if tightened or untouched:
        parts = []
        if tightened:
            parts.append(f"tightened {', '.join(tightened)}")
        if untouched:
            parts.append(f"could not tighten {', '.join(untouched)}")
        log.warning(
            "the spool holds customer data, but others could read it: %s "
            "(the spool wants its directory 0700 and its files 0600)",
            "; ".join(parts),
        )


def _tighten(path: Path, tightened: list[str], untouched: list[str]) -> None:
    """Take group and other bits off ``path`` (missing: nothing to do). A sticky directory
    (``/tmp``) is shared by design and left as it is; one we may not change is reported."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not mode & 0o077 or (stat.S_ISDIR(mode) and mode & stat.S_ISVTX):
        return
    shown = f"{path} ({stat.S_IMODE(mode):o})"
    try:
        os.chmod(path, stat.S_IMODE(mode) & ~0o077)
    except PermissionError:
        untouched.append(shown)
        return
    tightened.append(shown)


# --- one process per spool file ----------------------------------------------------


class SpoolInUse(Exception):
    """Another process holds the spool's lock."""


class SpoolLock:
    """The lock of the spool at ``path``: :meth:`acquire`, then :meth:`release`."""

    def __init__(self, path: str) -> None:
        self.path = path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting; raises :class:`SpoolInUse` when another process has
        it (and ``OSError`` when the lock file cannot be created)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolInUse(self.path) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the only descriptor releases the flock


# --- spool status --------------------------------------------------------------------


@dataclass(frozen=True)
class SpoolStatus:
    depth: int
    bytes: int
    oldest_age_seconds: float


def read_status(path: str, named: str = "BRIDGE_SPOOL_PATH") -> SpoolStatus:
    """Depth, bytes and oldest age of the spool file at ``path`` (given by ``named``, the
    setting or flag an error tells to fix), read while ``serve`` may be writing it (WAL
    readers never block the writer)."""
    if not Path(path).exists():
        raise SettingsError(
            f"no spool file at {path!r} ({Path(path).absolute()}): point {named} at the "
            "spool serve uses (serve creates it on start; a relative path is relative to "
            "the directory serve runs in)"
        )
    try:
        connection = connect(path, create=False)
        try:
            depth, size = connection.execute(STATS).fetchone()
            oldest = connection.execute(OLDEST).fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise CommandError(
            f"cannot read the spool {path!r} ({exc}): check BRIDGE_SPOOL_PATH points at the "
            "bridge's spool file"
        ) from None
    age = max(time.time() - oldest[0], 0.0) if oldest else 0.0
    return SpoolStatus(int(depth), int(size), age)
