"""The message handed to handlers; kept here so ``from bridge.message import Message``
works for handler authors. It lives in :mod:`bridge.worker.message`."""

from bridge.worker.message import Message

__all__ = ["Message"]
