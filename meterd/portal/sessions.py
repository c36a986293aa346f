"""Server-side sessions of the portal: who is logged in, and in which language.

The browser's cookie holds a random session id (32 bytes from ``secrets``);
the store keeps only its SHA-256, so a copy of the server's memory (a core
dump, a debugger) gives no cookie that logs anyone in. The id has 256 bits of
entropy, so a plain hash is a safe one-way store, as for the API's tokens
(:mod:`meterd.credentials`).

A session ends at the first of: logout, ``idle`` seconds without a request,
``absolute`` seconds after login (so a stolen cookie that is kept busy still
dies). Expired sessions are dropped when met and by :meth:`SessionStore.prune`.
The store holds at most ``max_sessions``; a new login beyond that evicts the
session idle the longest, so memory is bounded whatever logs in.

The clock is injected (seconds, like ``reactor.seconds``), so expiry is tested
without waiting. Pure module: standard library only.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal

from meterd.portal.fmt import LANGS

__all__ = ["COOKIE_NAME", "SECURE_COOKIE_NAME", "Session", "SessionStore", "Who", "clear_cookie", "session_cookie", "session_key"]

COOKIE_NAME: Final = "meterd_portal"
#: With TLS the ``__Host-`` prefix makes the browser refuse the cookie unless
#: it is Secure, has Path=/ and no Domain: no subdomain can plant or shadow it.
SECURE_COOKIE_NAME: Final = "__Host-meterd_portal"

Kind = Literal["operator", "customer"]


@dataclass(frozen=True)
class Who:
    """Who a session belongs to: the operator, or one customer (``customer_id``, digits)."""

    kind: Kind
    customer_id: str | None = None

    def __post_init__(self) -> None:
        if (self.kind == "customer") != (self.customer_id is not None):
            raise ValueError("a customer session names its customer; an operator session names none")


@dataclass(frozen=True)
class Session:
    """A live session. ``key`` is the SHA-256 of the cookie's id (what the store keys by)."""

    key: str
    who: Who
    lang: str
    created: float
    last_seen: float


def session_key(session_id: str) -> str:
    """The stored form of a cookie's session id."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class SessionStore:
    """Sessions in memory, keyed by the hash of their id."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle: float = 30 * 60,
        absolute: float = 12 * 3600,
        max_sessions: int = 10_000,
    ) -> None:
        if not 0 < idle <= absolute:
            raise ValueError("need 0 < idle <= absolute")
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._clock = clock
        self.idle = idle
        self.absolute = absolute
        self.max_sessions = max_sessions
        # Least recently used first: eviction and pruning start from the front.
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, who: Who, lang: str) -> tuple[str, Session]:
        """Log ``who`` in: the new session id (for the cookie, never stored) and its session.

        Call it on every login, so an id planted before login (session
        fixation) never becomes a logged-in session.
        """
        _check_lang(lang)
        now = self._clock()
        self.prune()
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)
        session_id = secrets.token_urlsafe(32)
        session = Session(session_key(session_id), who, lang, now, now)
        self._sessions[session.key] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's id, its idle timer restarted; None if none or expired."""
        if not session_id:
            return None
        key = session_key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self._clock()
        if self._expired(session, now):
            del self._sessions[key]
            return None
        session = replace(session, last_seen=now)
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        return session

    def alive(self, key: str) -> bool:
        """Whether the session stored under ``key`` (:attr:`Session.key`) is live; its idle timer is left alone.

        For what the browser does by itself (a live alarm stream kept open),
        which must not keep an unattended session alive past ``idle``, and
        which holds the session's key, never its id.
        """
        session = self._sessions.get(key)
        return session is not None and not self._expired(session, self._clock())

    def set_lang(self, session_id: str, lang: str) -> Session | None:
        """Switch a live session's language; None if the session is gone."""
        _check_lang(lang)
        session = self.get(session_id)
        if session is None:
            return None
        session = replace(session, lang=lang)
        self._sessions[session.key] = session
        return session

    def logout(self, session_id: str | None) -> None:
        """End the session (nothing happens if it is unknown or already gone)."""
        if session_id:
            self._sessions.pop(session_key(session_id), None)

    def logout_everywhere(self, who: Who) -> int:
        """End every session of ``who`` (a customer whose token was replaced); how many ended."""
        keys = [key for key, s in self._sessions.items() if s.who == who]
        for key in keys:
            del self._sessions[key]
        return len(keys)

    def prune(self) -> int:
        """Drop expired sessions; how many were dropped."""
        now = self._clock()
        expired = [key for key, s in self._sessions.items() if self._expired(s, now)]
        for key in expired:
            del self._sessions[key]
        return len(expired)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen >= self.idle or now - session.created >= self.absolute


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}")


def session_cookie(session_id: str, *, secure: bool, max_age: int | None = None) -> str:
    """The ``Set-Cookie`` value that gives the browser its session id.

    ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
    page sends it), ``Path=/``, and over TLS ``Secure`` with the ``__Host-``
    name. Without ``max_age`` it is a browser-session cookie: the server's
    idle and absolute limits decide when it stops working.
    """
    name = SECURE_COOKIE_NAME if secure else COOKIE_NAME
    parts = [f"{name}={session_id}", "Path=/", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)


def clear_cookie(*, secure: bool) -> str:
    """The ``Set-Cookie`` value that makes the browser forget its session id (logout)."""
    return session_cookie("", secure=secure, max_age=0)
