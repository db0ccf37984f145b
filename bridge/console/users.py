"""Named console operators: the file ``BRIDGE_CONSOLE_USERS_FILE``.

One operator a line, ``NAME:HASH``, where HASH is the scrypt or pbkdf2 form the console's
password takes (``scrypt:N:r:p:SALT_HEX:HASH_HEX`` or
``pbkdf2:sha256:ITERATIONS:SALT_HEX:HASH_HEX``; :func:`user_line` makes one, and so does
``mintsoft-bridge console --hash-password NAME``). Blank lines and lines starting with ``#``
are ignored. A name is 1 to 64 of letters, digits, ``.``, ``_``, ``@`` and ``-``.

Guarantees: the file is read once, at start; anything wrong with it (unreadable, readable by
every local user or writable by other users, a line that is not ``NAME:HASH``, a bad name, a plain
password, a malformed or unusable hash, a name given twice) is a
:class:`~bridge.core.settings.SettingsError` naming ``file:line`` and the fix, never the
line's text (it holds a hash). :meth:`Users.check` compares in constant time and costs the
same for an unknown name as for a known one (it checks the password against another
operator's hash, then says no), so a sign-in page cannot be used to learn who exists.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.console.auth import check_hash_form, check_password, hash_password, is_placeholder
from bridge.core.settings import SettingsError

VARIABLE = "BRIDGE_CONSOLE_USERS_FILE"
NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MAX_MEMORY = 2**27
"""What :func:`bridge.console.auth.check_password` lets scrypt use: a hash needing more
could never match, so the file is refused instead."""
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Users:
    """The operators of the users file, by name, each with the hash of their password."""

    path: str
    hashes: dict[str, str] = field(repr=False)

    @property
    def names(self) -> list[str]:
        return sorted(self.hashes)

    def check(self, name: str, password: str) -> bool:
        """Whether ``name`` is an operator and ``password`` is theirs (blocking: scrypt
        costs about 100 ms; run it off the event loop)."""
        known = self.hashes.get(name)
        if known is None:
            # As costly as a real check, so the answer's time does not tell who exists.
            check_password(next(iter(self.hashes.values())), password)
            return False
        return check_password(known, password)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(sorted(self.hashes.items()))


def _where(path: str, number: int) -> str:
    return f"{VARIABLE}={path} line {number}"


def _fix_line() -> str:
    return (
        "each line is NAME:scrypt:... or NAME:pbkdf2:... "
        "(make one with `mintsoft-bridge console --hash-password NAME`)"
    )


def check_name(name: str) -> None:
    """A :class:`SettingsError` unless ``name`` can name an operator."""
    if not NAME.fullmatch(name):
        raise SettingsError(
            f"operator name {name!r} is not usable: use 1 to 64 letters, digits, '.', '_', '@' "
            "or '-'"
        )


def _usable(hashed: str) -> bool:
    """Whether a well-formed hash can ever match (scrypt's memory within the check's
    bound, a power-of-two N, a salt and a digest of at least 16 bytes)."""
    parts = hashed.split(":")
    if parts[0] == "scrypt":
        n, r, p = (int(x) for x in parts[1:4])
        if n < 2 or n & (n - 1) or r < 1 or p < 1 or 128 * r * (n + p + 2) > MAX_MEMORY:
            return False
    elif int(parts[2]) < 1:
        return False
    salt, digest = bytes.fromhex(parts[-2]), bytes.fromhex(parts[-1])
    return len(salt) >= 8 and len(digest) >= 16


def parse_users(text: str, path: str) -> Users:
    """The operators of a users file's ``text`` (``path`` names it in errors)."""
    hashes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, hashed = line.partition(":")
        where = _where(path, number)
        if not hashed:
            raise SettingsError(f"{where} is not NAME:HASH: {_fix_line()}")
        if not NAME.fullmatch(name):
            raise SettingsError(
                f"{where}: the name is not usable (1 to 64 letters, digits, '.', '_', '@' or "
                f"'-' before the first ':'): {_fix_line()}"
            )
        if name in hashes:
            raise SettingsError(f"{where}: {name} is named twice: keep one line per operator")
        if hashed.split(":", 1)[0] not in {"scrypt", "pbkdf2"}:
            raise SettingsError(
                f"{where}: {name} has no scrypt: or pbkdf2: hash (a plain password is not "
                f"accepted here): {_fix_line()}"
            )
        try:
            check_hash_form(hashed)
            fine = _usable(hashed)
        except (SettingsError, ValueError):
            fine = False
        if not fine:
            raise SettingsError(f"{where}: the hash of {name} is malformed: {_fix_line()}")
        hashes[name] = hashed
    if not hashes:
        raise SettingsError(
            f"{VARIABLE}={path} names no operator: add a line per operator ({_fix_line()})"
        )
    return Users(path, hashes)


def load_users(path: str) -> Users:
    """Read and check the users file at ``path`` (see the module's guarantees)."""
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise SettingsError(
            f"{VARIABLE}={path} cannot be read ({reason}): point it at a readable file"
        ) from None
    if mode & (stat.S_IROTH | stat.S_IWOTH | stat.S_IWGRP):
        raise SettingsError(
            f"{VARIABLE}={path} can be read or changed by other users (mode "
            f"{stat.S_IMODE(mode):03o}): it holds the operators' password hashes; "
            f"`chmod 600 {path}` (in Kubernetes, mount the Secret with defaultMode: 0400)"
        )
    return parse_users(text, path)


def placeholder_users(users: Users) -> list[str]:
    """The operators whose password is a well-known placeholder (costly: a few hash
    checks per operator)."""
    return [name for name, hashed in users if is_placeholder(hashed)]


def user_line(name: str, password: str) -> str:
    """The users-file line of operator ``name`` with ``password`` (scrypt, a fresh salt);
    a :class:`SettingsError` for an unusable name or a weak password."""
    check_name(name)
    if len(password) < MIN_PASSWORD:
        raise SettingsError(
            f"the password of {name} is shorter than {MIN_PASSWORD} characters: choose a "
            "longer passphrase"
        )
    if is_placeholder(password):
        raise SettingsError(
            f"the password of {name} is a well-known placeholder: choose your own passphrase"
        )
    return f"{name}:{hash_password(password)}"
