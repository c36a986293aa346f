"""CSRF tokens: every form that changes something carries one, and a POST
without the right one is refused.

A token is ``HMAC-SHA256(server secret, binding)``, where the binding is the
session's stored key (:attr:`meterd.portal.sessions.Session.key`) or, on the
login page before any login session exists, the random value of a pre-login cookie.
Nothing is stored per token: the server recomputes it, and a token from one
login session is worthless in another. Tokens are compared with
``hmac.compare_digest``, so the time a wrong token takes to refuse says
nothing about how much of it was right.

``SameSite=Strict`` cookies already keep other sites' forms from arriving
logged in; the token is the second lock, for browsers that ignore SameSite
and for a sibling subdomain that could post with the cookie.

Pure module: standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["FIELD", "CsrfGuard", "new_secret"]

#: The name of the hidden form field that carries the token.
FIELD: Final = "csrf"
_CONTEXT: Final = b"meterd-portal-csrf\x00"


def new_secret() -> bytes:
    """A fresh server secret (32 random bytes); a restart with a new one voids old tokens."""
    return secrets.token_bytes(32)


class CsrfGuard:
    """Makes and checks the tokens of one server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the CSRF secret must be at least 32 bytes")
        self._secret = secret

    def token(self, binding: str) -> str:
        """The token for forms shown under ``binding`` (a login session's key or a pre-login value)."""
        if not binding:
            raise ValueError("a CSRF token must be bound to something")
        mac = hmac.new(self._secret, _CONTEXT + binding.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return mac.hexdigest()

    def check(self, binding: str, token: str | None) -> bool:
        """Whether ``token`` is the one for ``binding`` (constant-time; False when missing)."""
        if not binding or not token:
            return False
        return hmac.compare_digest(self.token(binding).encode("ascii"), token.encode("utf-8", "surrogateescape"))
