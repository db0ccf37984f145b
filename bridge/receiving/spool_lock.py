"""One process at a time per spool file: ``serve`` holds the spool's lock for as long as it
runs, and ``spool drain`` takes it before publishing, so two drains never publish the same
file side by side (which would publish every message twice).

The lock is an exclusive ``flock`` on ``<spool>.lock`` beside the spool (mode 0600), not on
the database: SQLite's own locks on that file must stay untouched. The kernel drops it when
the process ends, however it ends, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os


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
