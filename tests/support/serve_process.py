"""Several ``mintsoft-bridge serve`` processes side by side, each on a free port with its
own list of broker URLs, for scale-out tests and the cluster benchmark."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.conftest import AMQP_URL, delete_declared, receiver_names
from tests.support.processes import Running, bridge_process
from tests.support.rabbit_node import free_port


@contextlib.contextmanager
def receivers(
    url_lists: Sequence[tuple[str, ...]],
    exchange: str,
    api_key: str,
    logs: Path,
    spooled: Sequence[bool] = (),
) -> Iterator[list[str]]:
    """Start one receiver per entry of ``url_lists`` (its ``BRIDGE_AMQP_URL``, in that
    order), wait until each is ready, and give their base URLs; stopped on exit. Their
    output goes to ``logs/serve-<i>.log``. Receiver ``i`` keeps a spool in ``logs`` when
    ``spooled[i]``; without one, every 200 it gives is a broker confirm."""
    with contextlib.ExitStack() as running:
        bases = []
        for index, urls in enumerate(url_lists):
            base = f"http://127.0.0.1:{free_port()}"
            env = {
                "BRIDGE_AMQP_URL": ",".join(urls),
                "BRIDGE_HOST": "127.0.0.1",
                "BRIDGE_PORT": base.rsplit(":", 1)[1],
                "BRIDGE_API_KEYS": api_key,
                "BRIDGE_EXCHANGE": exchange,
                "BRIDGE_SPOOL_PATH": "",
            }
            if index < len(spooled) and spooled[index]:
                env["BRIDGE_SPOOL_PATH"] = str(logs / f"spool-{index}.sqlite3")
            output = logs / f"serve-{index}.log"
            running.enter_context(bridge_process(["serve"], env, base + "/readyz", output))
            bases.append(base)
        yield bases


@contextlib.contextmanager
def one_receiver(
    exchange: str, api_key: str, logs: Path, **env: str
) -> Iterator[tuple[str, Running]]:
    """One ``serve`` on a free port against the shared broker (no spool unless ``env`` sets
    ``BRIDGE_SPOOL_PATH``), ready once ``/healthz`` answers; gives its base URL and process.
    Its output goes to ``logs/serve.log`` (a process under load would fill a pipe)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = {
        "BRIDGE_AMQP_URL": AMQP_URL,
        "BRIDGE_HOST": "127.0.0.1",
        "BRIDGE_PORT": str(port),
        "BRIDGE_API_KEYS": api_key,
        "BRIDGE_EXCHANGE": exchange,
        "BRIDGE_SPOOL_PATH": "",
        **env,
    }
    try:
        with bridge_process(["serve"], settings, base + "/healthz", logs / "serve.log") as running:
            yield base, running
    finally:
        delete_declared(AMQP_URL, *receiver_names(exchange))
