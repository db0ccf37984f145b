"""``serve --workers N``: N receiver processes answering on one port (``SO_REUSEPORT``), each
with its own broker link, spool and metrics listener.

The kernel spreads new connections over the N listening sockets, so one Python process per
core can take webhooks. Worker 0 uses ``BRIDGE_SPOOL_PATH`` itself, worker ``i`` the same
name with ``-i`` before its suffix (``spool.sqlite3``, ``spool-1.sqlite3``, ...): a spool
is never shared (:class:`.spool.SpoolLock`). With ``BRIDGE_METRICS_PORT`` set, worker ``i`` serves
``/metrics`` on that port plus ``i``; without it, ``/metrics`` on the main port answers from
whichever worker took the connection (one worker's counters): set it when N > 1.

Guarantees: the parent forks the workers before any event loop, thread or connection
exists; SIGTERM or SIGINT to the parent reaches every worker once (a second one, again:
the workers then stop at once, as a single ``serve`` does); a worker whose parent is gone
stops itself; when a worker exits with an error, the others are stopped and the parent
returns that worker's exit code. Fails: :class:`~bridge.core.settings.SettingsError` when
the system offers no ``SO_REUSEPORT`` or a derived metrics port collides with the main one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bridge.core.listeners import check_listen
from bridge.core.settings import Settings, SettingsError

log = logging.getLogger("bridge.receiving.workers")

PARENT_CHECK = 1.0
"""Seconds between a worker's checks that its parent still runs."""


def check_reuse_port(workers: int) -> None:
    """Raise :class:`SettingsError` unless this system lets sockets share a port."""
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is not None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, option, 1)
            return
        except OSError:
            pass
    raise SettingsError(
        f"--workers {workers} needs SO_REUSEPORT, which this system does not offer: run "
        "--workers 1 (one process per port, several behind your load balancer)"
    )


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index``: its own spool file and metrics port."""
    spool = settings.spool_path
    if spool and index:
        path = Path(spool)
        spool = str(path.with_name(f"{path.stem}-{index}{path.suffix}"))
    metrics_port = settings.metrics_port
    if metrics_port is not None:
        metrics_port += index
    return dataclasses.replace(settings, spool_path=spool, metrics_port=metrics_port)


def run_workers(settings: Settings, count: int, one: Callable[[Settings], int]) -> int:
    """Fork ``count`` workers, each running ``one(its settings)`` (which serves with
    ``SO_REUSEPORT`` and returns an exit code); wait for all; return the first non-zero
    code, else 0."""
    check_reuse_port(count)
    check_listen(settings.host, settings.port, "BRIDGE_HOST", "BRIDGE_PORT")
    if settings.metrics_port is not None:
        ports = range(settings.metrics_port, settings.metrics_port + count)
        if settings.port in ports:
            raise SettingsError(
                f"BRIDGE_METRICS_PORT={settings.metrics_port}: with --workers {count} the "
                f"workers' metrics use ports {ports.start}-{ports.stop - 1}, which include "
                f"BRIDGE_PORT={settings.port}: pick a metrics port outside that range"
            )
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    children: dict[int, int] = {}
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: object = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # Installed before the first fork, so no signal falls between two forks unforwarded.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(count):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the worker (tests run it as a process)
                _worker(parent, index, worker_settings(settings, index), one)
            children[pid] = index
        log.info("serving with %d worker processes on port %d", count, settings.port)
        code = 0
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in children:
                continue
            index = children.pop(pid)
            exit_code = os.waitstatus_to_exitcode(status)
            if exit_code and not code:
                code = exit_code if exit_code > 0 else 1
                if not stopping:
                    log.error("worker %d exited with %d: stopping the others", index, exit_code)
                    stop()
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _worker(parent: int, index: int, settings: Settings, one: Callable[[Settings], int]) -> None:
    """The forked worker: its own process group (a terminal's Ctrl-C reaches the parent
    alone, which passes it on once), a watch on the parent, then ``one``; never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        # Not the parent's forwarding handler (it knows the siblings forked before this one).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
        code = one(settings)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        logging.getLogger("bridge.receiving.workers").exception("worker %d failed", index)
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _watch_parent(parent: int) -> None:
    # A worker whose parent was killed (SIGKILL, OOM) would serve on unsupervised: it stops
    # the way a signal would stop it, finishing its requests and draining its spool.
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK)
    os.kill(os.getpid(), signal.SIGTERM)
