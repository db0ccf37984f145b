"""File modes of the spool: it holds webhook bodies (names, addresses, e-mails), so its
directory is 0700 and its files (``spool.sqlite3``, ``-wal``, ``-shm``) 0600, whatever the
umask.

The database file is created 0600 before SQLite opens it; SQLite then gives its ``-wal``
and ``-shm`` the database file's mode (it sets them explicitly, past the umask). A directory
or file found looser than that is tightened, with one warning line naming what was. A
directory with the sticky bit (``/tmp``) is shared by design and left alone, as is one this
user may not change (said in the same warning line); the files in it are still 0600.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("bridge.receiving.spool")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
SUFFIXES = ("", "-wal", "-shm", "-journal")


def prepare(path: str) -> None:
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
