"""What a page could see: either the rows it read, or why it could not look.

A page that could not ask the broker (or the ledger) must say so, never show "nothing" for
what it did not see (contract section 9). Readers therefore hand the views a
:class:`Looked`: ``rows`` when the read answered (possibly empty: "nothing" is then true),
or ``reason`` when it did not. Templates branch on :attr:`Looked.looked`, never on strings.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge.errors import CommandError

T = TypeVar("T")

COULD_NOT_LOOK = (CommandError, OSError, TimeoutError)
"""What a read that did not answer raises: the broker away, refusing, or silent."""


@dataclass(frozen=True)
class Looked(Generic[T]):
    """The rows a read returned, or the reason it could not look (exactly one is set)."""

    rows: T | None = None
    reason: str | None = None

    @property
    def looked(self) -> bool:
        return self.reason is None

    @classmethod
    def saw(cls, rows: T) -> Looked[T]:
        return cls(rows=rows)

    @classmethod
    def could_not(cls, error: BaseException) -> Looked[T]:
        return cls(reason=str(error) or type(error).__name__)


async def look(read: Awaitable[T]) -> Looked[T]:
    """Await ``read``; a broker that did not answer becomes a could-not-look reason."""
    try:
        return Looked.saw(await read)
    except COULD_NOT_LOOK as exc:
        return Looked.could_not(exc)
