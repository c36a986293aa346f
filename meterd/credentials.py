"""Tokens and keys: how they are made, stored and compared.

Tokens are 32 random bytes, so a plain SHA-256 is a safe one-way store (no
password stretching needed) and a dictionary keyed by that hash finds the
owner in O(1) without comparing secrets byte by byte.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

OPERATOR_TOKEN_FILE = "operator.token"


def new_token() -> str:
    """32 random bytes, URL-safe; never starting with "-".

    A token is typed after ``--token`` on command lines (the console, curl
    scripts), where one that starts with "-" reads as an option and the
    command fails (1 token in 64 did). Drawing again costs 6 bits of 256 at
    most once in 64 draws.
    """
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def new_meter_key() -> str:
    """64 hex chars: the 32 bytes a meter signs its datagrams with."""
    return secrets.token_hex(32)


def new_webhook_secret() -> str:
    """The key a webhook's deliveries are signed with: 32 random bytes in hex, behind a ``whsec_`` that says what it is.

    Kept in the clear, like a meter's key: meterd signs with it. The receiver
    uses the whole string, prefix included, as the HMAC key (its UTF-8 bytes).
    """
    return "whsec_" + secrets.token_hex(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode("utf-8", "surrogateescape"))


def operator_token(data_dir: Path) -> tuple[str, Path, bool]:
    """Read the operator token, creating it (mode 0600) on first start.

    Returns the token, its path and whether it was created now. The file is
    created with O_EXCL and the mode set at creation, so it is never readable
    by others, not even for an instant.
    """
    path = data_dir / OPERATOR_TOKEN_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"{path} is empty; delete it to have a new token made") from None
        return token, path, False
    token = new_token()
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, path, True
