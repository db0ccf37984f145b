"""The spool's file modes: directory 0700 and files 0600 whatever the umask, and an older,
looser spool tightened with one warning line."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bridge.core.contract import Envelope, webhook_envelope
from bridge.receiving.spool import Spool


def envelope(n: int) -> Envelope:
    body = orjson.dumps({"ID": n, "OrderNumber": f"SO-{n}"})
    return webhook_envelope("despatched", body, orjson.loads(body), f"req-{n}", 1_700_000_000 + n)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_spool_directory_is_0700_and_its_files_0600_whatever_the_umask(
    tmp_path: Path, loose_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "var" / "spool.sqlite3"
    spool = Spool(str(path), 10_000_000)
    await spool.open()
    try:
        await spool.append(envelope(1))
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
        assert all(f.exists() for f in files)
        assert {str(f): _mode(f) for f in files} == {str(f): 0o600 for f in files}
        assert _mode(path.parent) == 0o700
    finally:
        await spool.close()
    assert "others could read it" not in caplog.text  # nothing was loose: no warning


def _loose_spool(path: Path) -> sqlite3.Connection:
    """An older spool made under umask 022 (directory 0755, files 0644), still open."""
    path.parent.mkdir()
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("CREATE TABLE t (x)")
    for loose in (path.parent, path, Path(f"{path}-wal")):
        loose.chmod(0o755 if loose.is_dir() else 0o644)
    return connection


async def test_a_looser_spool_directory_and_files_are_tightened_with_one_warning(
    tmp_path: Path, loose_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "var" / "spool.sqlite3"
    connection = _loose_spool(path)
    wal = Path(f"{path}-wal")
    spool = Spool(str(path), 10_000_000)
    with caplog.at_level(logging.WARNING, logger="bridge.receiving.spool"):
        await spool.open()
    connection.close()
    try:
        assert _mode(path.parent) == 0o700
        assert _mode(path) == _mode(wal) == _mode(Path(f"{path}-shm")) == 0o600
    finally:
        await spool.close()
    warnings = [r for r in caplog.records if "others could read it" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "\n" not in warnings[0].getMessage()
    assert str(path.parent) in warnings[0].getMessage()
