"""Exceptions users and handlers see."""

from __future__ import annotations


class PermanentError(Exception):
    """Raised by a handler for a message that must never be retried: it goes to the DLQ."""


class CommandError(Exception):
    """A command could not do its job for a reason outside the user's arguments (a broker
    that is down, a remote API that refused): printed as one line, exit status 1."""
