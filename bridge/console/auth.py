"""Console sign-in, sessions and CSRF.

``BRIDGE_CONSOLE_PASSWORD`` is either the password itself or a hash of it:
``scrypt:N:r:p:SALT_HEX:HASH_HEX`` or ``pbkdf2:sha256:ITERATIONS:SALT_HEX:HASH_HEX``
(:func:`hash_password` makes the scrypt form). The given password is compared in constant
time. A session is a random token in an ``HttpOnly``, ``SameSite=Strict`` cookie (also
``Secure`` when the console is reached over https), held in memory only (a restart signs
everyone out). A session ends after :data:`IDLE_SECONDS` without a request (a page's own
refreshes do not count), after :data:`SESSION_SECONDS` in any case, and when the same
operator signs in again (with one shared password everyone is the same operator: the newest
sign-in is the only session; with named operators, :mod:`bridge.console.users`, each
operator's newest sign-in is theirs, and the session remembers the name). Off
loopback a well-known placeholder password (``CHANGE-ME``, ``changeme``, ``password``, the
development one...) is refused at start. Every POST must carry the session's CSRF token
(form field ``csrf`` or header ``X-CSRF-Token``); the sign-in form carries a one-time token
of its own (double submit). Failures answer 303 to ``/login`` (pages) or 403 (changes);
nothing here logs a password, a token or a cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from bridge.core.settings import SettingsError

SESSION_COOKIE = "bridge_console_session"
LOGIN_COOKIE = "bridge_console_login"
SESSION_SECONDS = 12 * 3600
IDLE_SECONDS = 30 * 60
PUBLIC_PREFIXES = ("/login", "/static/", "/healthz")
_SCRYPT = (2**14, 8, 1)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``scrypt:`` form of ``password`` for ``BRIDGE_CONSOLE_PASSWORD``."""
    salt = salt or secrets.token_bytes(16)
    n, r, p = _SCRYPT
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt:{n}:{r}:{p}:{salt.hex()}:{digest.hex()}"


def check_password(configured: str, given: str) -> bool:
    """Whether ``given`` matches ``configured`` (plain, ``scrypt:`` or ``pbkdf2:``)."""
    parts = configured.split(":")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            salt, want = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
            got = hashlib.scrypt(
                given.encode(), salt=salt, n=n, r=r, p=p, dklen=len(want), maxmem=2**27
            )
            return hmac.compare_digest(got, want)
        if parts[0] == "pbkdf2" and len(parts) == 5:
            salt, want = bytes.fromhex(parts[3]), bytes.fromhex(parts[4])
            got = hashlib.pbkdf2_hmac(parts[1], given.encode(), salt, int(parts[2]), len(want))
            return hmac.compare_digest(got, want)
    except ValueError:
        return False
    # Plain: compare digests so neither length nor content leaks through timing.
    return hmac.compare_digest(
        hashlib.sha256(configured.encode()).digest(), hashlib.sha256(given.encode()).digest()
    )


def check_hash_form(configured: str) -> None:
    """SettingsError when the password looks like a hash but is malformed (the users file
    checks its hashes with this too)."""
    parts = configured.split(":")
    fine = True
    if parts[0] == "scrypt":
        fine = len(parts) == 6 and all(x.isdigit() for x in parts[1:4])
    elif parts[0] == "pbkdf2":
        fine = len(parts) == 5 and parts[2].isdigit() and parts[1] in hashlib.algorithms_available
    if fine and parts[0] in {"scrypt", "pbkdf2"}:
        try:
            bytes.fromhex(parts[-2]), bytes.fromhex(parts[-1])
        except ValueError:
            fine = False
    if not fine:
        raise SettingsError(
            "BRIDGE_CONSOLE_PASSWORD looks like a hash but is malformed: use "
            "scrypt:N:r:p:SALT_HEX:HASH_HEX or pbkdf2:sha256:ITERATIONS:SALT_HEX:HASH_HEX"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


PLACEHOLDERS = frozenset(
    {
        "change-me",
        "changeme",
        "change_me",
        "change-it",
        "changeit",
        "replace-me",
        "replaceme",
        "password",
        "passw0rd",
        "password1",
        "admin",
        "secret",
        "console",
        "letmein",
        "123456",
        "12345678",
        "test",
        "example",
        "dev-console-password",
        "console-password",
    }
)
"""Passwords every scanner tries, and those of this project's examples."""
_HASHED_PLACEHOLDERS = ("CHANGE-ME", "change-me", "changeme", "password", "dev-console-password")


def is_placeholder(password: str) -> bool:
    """Whether ``password`` (or the hash configured) is a well-known placeholder."""
    if password.split(":", 1)[0] in {"scrypt", "pbkdf2"}:
        return any(check_password(password, p) for p in _HASHED_PLACEHOLDERS)
    return password.strip().lower() in PLACEHOLDERS


def require_password_off_loopback(
    host: str, password: str | None, allow_placeholder: bool = False
) -> None:
    """Refuse to serve the console beyond this machine without a password, or with a
    well-known placeholder one (unless ``BRIDGE_CONSOLE_ALLOW_PLACEHOLDER_PASSWORD``)."""
    if not password and not is_loopback(host):
        raise SettingsError(
            f"BRIDGE_CONSOLE_HOST={host} is reachable from other machines but "
            "BRIDGE_CONSOLE_PASSWORD is unset: set a password (or its scrypt: hash), or keep "
            "the console on 127.0.0.1"
        )
    if password:
        check_hash_form(password)
    if password and not allow_placeholder and not is_loopback(host) and is_placeholder(password):
        raise SettingsError(
            f"BRIDGE_CONSOLE_PASSWORD is a well-known placeholder and BRIDGE_CONSOLE_HOST={host} "
            "is reachable from other machines: choose your own passphrase (or its scrypt: "
            "hash), or keep the console on 127.0.0.1"
        )


@dataclass
class Session:
    expires: float
    seen: float
    user: str | None = None
    """The operator's name (named operators); ``None`` with the shared password."""
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    notice: str | None = None
    """A one-time notice for the next page (what a change did), never taken from a URL."""

    def flash(self, notice: str) -> None:
        self.notice = notice

    def take_notice(self) -> str:
        notice, self.notice = self.notice, None
        return notice or ""


@dataclass(eq=False, repr=False)  # repr=False: it holds the session tokens
class Sessions:
    """Signed-in sessions by cookie token, in memory; the newest sign-in ends the others."""

    idle: float = IDLE_SECONDS
    lifetime: float = SESSION_SECONDS
    clock: Callable[[], float] = time.monotonic
    _by_token: dict[str, Session] = field(default_factory=dict, init=False)

    def new(self, user: str | None = None) -> tuple[str, Session]:
        """A new session of operator ``user``; their older ones end (with the shared
        password, ``None``: every older session ends, one operator at a time)."""
        now = self.clock()
        token = secrets.token_urlsafe(32)
        session = Session(expires=now + self.lifetime, seen=now, user=user)
        kept = {
            t: s
            for t, s in self._by_token.items()
            if user is not None and s.user != user and self._alive(s, now)
        }
        self._by_token = {**kept, token: session}
        return token, session

    def get(self, token: str | None, touch: bool = True) -> Session | None:
        """The live session of ``token``; ``touch`` counts this request as activity."""
        session = self._by_token.get(token or "")
        if session is None:
            return None
        now = self.clock()
        if not self._alive(session, now):
            self.drop(token)
            return None
        if touch:
            session.seen = now
        return session

    def drop(self, token: str | None) -> None:
        self._by_token.pop(token or "", None)

    def _alive(self, session: Session, now: float) -> bool:
        return session.expires > now and now - session.seen <= self.idle


SESSION_KEY = web.RequestKey("console_session", Session)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def given_csrf(request: web.Request) -> str | None:
    header = request.headers.get("X-CSRF-Token")
    if header:
        return header
    form = await request.post()
    value = form.get("csrf")
    return value if isinstance(value, str) else None


def make_middleware(sessions: Sessions) -> Middleware:
    """Every path but ``/login``, ``/static/`` and ``/healthz`` needs a session; every POST
    its CSRF token."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        # A page's own periodic refresh (htmx) is not activity: it must not keep an
        # unattended session alive past its idle timeout.
        refresh = request.method == "GET" and bool(request.headers.get("HX-Request"))
        session = sessions.get(request.cookies.get(SESSION_COOKIE), touch=not refresh)
        if session is None:
            if request.headers.get("HX-Request"):
                # A refresh fragment: send the whole page to sign-in, not into the fragment.
                return web.Response(status=204, headers={"HX-Redirect": "/login"})
            if request.method in {"GET", "HEAD"}:
                raise web.HTTPSeeOther(f"/login?next={_quote(request.path_qs)}")
            raise web.HTTPForbidden(text="Sign in first: open /login.")
        if request.method not in {"GET", "HEAD"} and not csrf_ok(
            session.csrf, await given_csrf(request)
        ):
            raise web.HTTPForbidden(
                text="The form expired (CSRF token missing or wrong): reload the page, try again."
            )
        request[SESSION_KEY] = session
        return await handler(request)

    return guard


def safe_next(value: str | None) -> str:
    """Only a path on this console is followed after sign-in: it starts with a single ``/``
    and holds no control character, space or backslash (browsers and servers drop a tab or
    a newline *after* this check, which turned ``/<TAB>/evil.example`` into
    ``//evil.example``); anything else is ``/``."""
    if not value or any(ord(c) < 0x21 or c in "\x7f\\" for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


def _quote(path: str) -> str:
    return quote(path, safe="")


def set_session_cookie(response: web.StreamResponse, token: str, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
        max_age=SESSION_SECONDS,
    )


def flash(request: web.Request, notice: str) -> None:
    """Show ``notice`` once on the next page of this session."""
    session = request.get(SESSION_KEY)
    if session is not None:
        session.flash(notice)


def take_notice(request: web.Request) -> str:
    """The session's one-time notice ('' if none); it is gone after this."""
    session = request.get(SESSION_KEY)
    return session.take_notice() if session is not None else ""


def operator_of(request: web.Request) -> str | None:
    """The signed-in operator's name (named operators); ``None`` with the shared password."""
    session = request.get(SESSION_KEY)
    return session.user if session is not None else None
