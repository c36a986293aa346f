"""Opaque page cursors: where the next page starts, in a form clients pass back and never read.

A cursor is the keyset position after the last item of a page (never an
offset, so rows inserted meanwhile neither repeat nor hide anything), tagged
with what it pages through: the kind of list and a fingerprint of the
request it came from (a search's query). A cursor from another list, another
query, or no cursor at all but text someone made up is refused as a 400
``invalid_cursor``, never a 500 and never a page of something else.

URL-safe base64 of a small JSON array, without padding. Pure: no Twisted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

__all__ = ["InvalidCursor", "decode", "encode"]

MAX_LENGTH = 2048  # characters: far above any position meterd writes (a name's key is at most a few hundred)


class InvalidCursor(ValueError):
    """Not a cursor of this list and this request."""


def _tag(kind: str, fingerprint: str) -> str:
    return hashlib.sha256(f"{kind}\0{fingerprint}".encode()).hexdigest()[:12]


def encode(kind: str, fingerprint: str, position: list[Any]) -> str:
    """The cursor for ``position`` (JSON values) in the list ``kind`` of the request ``fingerprint`` names."""
    raw = json.dumps([_tag(kind, fingerprint), *position], ensure_ascii=False, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str, kind: str, fingerprint: str, shape: tuple[type, ...]) -> list[Any]:
    """The position ``text`` holds, if it is a cursor of this list and request whose values have these types."""
    if len(text) > MAX_LENGTH:
        raise InvalidCursor("the cursor is too long to be one of meterd's")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        raise InvalidCursor("not a cursor meterd wrote; send back the `cursor` of the previous answer as it came") from None
    if not isinstance(value, list) or not value or not isinstance(value[0], str):
        raise InvalidCursor("not a cursor meterd wrote; send back the `cursor` of the previous answer as it came")
    if value[0] != _tag(kind, fingerprint):
        raise InvalidCursor("this cursor belongs to another list or another query; ask the first page again")
    position = value[1:]
    if len(position) != len(shape) or not all(type(v) is t for v, t in zip(position, shape)):
        raise InvalidCursor("not a cursor meterd wrote; send back the `cursor` of the previous answer as it came")
    return position
