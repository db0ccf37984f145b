"""The package's shape, checked: imports point one way, without cycles, only the CLI parses
arguments or exits, every confirmed publish goes through one module, the contract's header
names are spelled in one module, and no call is bounded in a way that can lose a cancel.
(Modules are sized by concept, not by a line cap.)"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import aiormq

PACKAGE = Path(__file__).resolve().parent.parent / "bridge"

# part -> the parts of ours it may import (besides itself and bridge.errors / bridge itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "amqp": {"core"},
    "receiving": {"core", "amqp"},
    "worker": {"core", "amqp"},
    "archive": {"core", "amqp"},
    "ledger": {"core", "amqp", "archive"},
    "mintsoft": {"core", "amqp", "archive", "ledger"},
    "console": {"core", "amqp", "archive", "worker", "mintsoft", "ledger"},
    "examples": {"core", "worker"},
}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(name: str, path: Path) -> set[str]:
    """Every ``bridge...`` module ``path`` imports, at any depth (lazy imports count)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "bridge")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "bridge":
                continue
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    known = {n for n, _ in _modules()}
    return {m for m in found if m in known and m != name}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_parts_import_only_what_the_map_allows() -> None:
    wrong = []
    for name, path in _modules():
        part = _part(name)
        if part not in ALLOWED:
            continue  # bridge/__init__, __main__, errors, message (re-export), cli
        for imported in _imports(name, path):
            other = _part(imported)
            if other in ("", "errors", part) or other in ALLOWED[part]:
                continue
            wrong.append(f"{name} imports {imported}")
    assert wrong == []


def test_no_import_cycles() -> None:
    graph = {name: _imports(name, path) for name, path in _modules()}
    # Only top-level imports make a cycle at import time, but a cycle through lazy imports
    # is still a tangle: none of either kind.
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            # a package importing its own sub-module (re-exports) is not a cycle
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_only_the_cli_parses_arguments_prints_or_exits() -> None:
    offenders = []
    for name, path in _modules():
        if name in ("bridge.cli", "bridge.__main__") or name.startswith("bridge.cli."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                module = node.module if isinstance(node, ast.ImportFrom) else None
                if "argparse" in names or module == "argparse":
                    offenders.append(f"{name}: imports argparse")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "print":
                    offenders.append(f"{name}:{node.lineno}: print()")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "exit"
                and isinstance(node.value, ast.Name)
                and node.value.id == "sys"
            ):
                offenders.append(f"{name}:{node.lineno}: sys.exit")
    assert offenders == []


def test_the_message_contract_has_one_home() -> None:
    """Every header name of the contract is a string literal in bridge/core/contract.py only."""
    contract = (PACKAGE / "core" / "contract.py").read_text(encoding="utf-8")
    names = set(re.findall(r'"(x-[a-z-]+|X-[A-Za-z-]+)"', contract))
    assert {"x-event", "x-order-id", "x-attempt", "X-Mintsoft-Event"} <= names
    elsewhere = []
    for name, path in _modules():
        if path.name == "contract.py" and _part(name) == "core":
            continue
        for literal in re.findall(r'"(x-[a-z-]+|X-[A-Za-z-]+)"', path.read_text("utf-8")):
            if literal in names:
                elsewhere.append(f"{name}: {literal}")
    assert elsewhere == []


PUBLISH_HOME = PACKAGE / "amqp" / "publisher.py"
_PUBLISH_CALLS = {"basic_publish"}  # aiormq's publish-with-confirm on a channel


def _publish_calls(tree: ast.AST) -> Iterator[int]:
    """Lines calling a channel's publish, directly or through getattr(..., "basic_publish")."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in _PUBLISH_CALLS) or (
            isinstance(func, ast.Call)
            and isinstance(func.func, ast.Name)
            and func.func.id == "getattr"
            and any(isinstance(a, ast.Constant) and a.value in _PUBLISH_CALLS for a in func.args)
        ):
            yield node.lineno


def test_every_confirmed_publish_goes_through_the_one_publisher() -> None:
    """Only bridge/amqp/publisher.py calls a channel's publish (issue 20: one confirmed
    publish, one outcome, one twin policy)."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for _name, path in _modules()
        if path != PUBLISH_HOME
        for line in _publish_calls(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == []
    assert list(_publish_calls(ast.parse(PUBLISH_HOME.read_text(encoding="utf-8"))))


def test_the_publish_check_finds_a_publish() -> None:
    sample = "async def f(ch):\n    await ch.basic_publish(b'', routing_key='q')\n"
    sneaky = "async def f(ch):\n    await getattr(ch, 'basic_publish')(b'')\n"
    assert list(_publish_calls(ast.parse(sample))) == [2]
    assert list(_publish_calls(ast.parse(sneaky))) == [2]


# aiormq's methods that take ``timeout=`` (found in aiormq itself, so a new one counts too).
_AIORMQ_TIMEOUT_METHODS = {
    name
    for cls in (aiormq.Channel, aiormq.Connection)
    for name, method in inspect.getmembers(cls, inspect.isfunction)
    if not name.startswith("_") and "timeout" in inspect.signature(method).parameters
}


def _cancel_losing_calls(tree: ast.AST) -> Iterator[int]:
    """Lines calling ``asyncio.wait_for`` (or a bare ``wait_for``), or an aiormq channel or
    connection method with ``timeout=`` (which is asyncio.wait_for inside aiormq)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        wait_for = (isinstance(func, ast.Name) and func.id == "wait_for") or (
            isinstance(func, ast.Attribute)
            and func.attr == "wait_for"
            and isinstance(func.value, ast.Name)
            and func.value.id == "asyncio"
        )
        aiormq_timeout = (
            isinstance(func, ast.Attribute)
            and func.attr in _AIORMQ_TIMEOUT_METHODS
            and any(keyword.arg == "timeout" for keyword in node.keywords)
        )
        if wait_for or aiormq_timeout:
            yield node.lineno


def test_no_call_is_bounded_in_a_way_that_loses_a_cancel() -> None:
    """On Python 3.11 asyncio.wait_for returns the answer and drops a cancel that arrives
    with it (CPython gh-86296); aiormq's ``timeout=`` is wait_for. A task stopped that way
    goes on (a worker's pause gate polled on and its stop hung): calls are bounded with
    bridge.core.tasks.within (asyncio.timeout) instead."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for _name, path in _modules()
        for line in _cancel_losing_calls(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert found == []


def test_the_cancel_check_finds_each_kind() -> None:
    assert {"basic_get", "queue_declare", "basic_qos", "channel"} <= _AIORMQ_TIMEOUT_METHODS
    flagged = (
        "async def f(ch, conn, q):\n"
        "    await ch.basic_get(q, no_ack=False, timeout=1)\n"
        "    await conn.channel(timeout=1)\n"
        "    await asyncio.wait_for(q.get(), 1)\n"
        "    await wait_for(q.get(), timeout=1)\n"
    )
    fine = (
        "async def f(ch, q, cond):\n"
        "    await confirms(ch).publish(b'', routing_key=q, timeout=1)\n"
        "    await within(1, ch.basic_get(q, no_ack=False))\n"
        "    await asyncio.wait({q}, timeout=1)\n"
        "    await cond.wait_for(lambda: True)\n"
        "    aiohttp.ClientSession(timeout=1)\n"
    )
    assert sorted(_cancel_losing_calls(ast.parse(flagged))) == [2, 3, 4, 5]
    assert list(_cancel_losing_calls(ast.parse(fine))) == []
