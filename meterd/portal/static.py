"""The portal's stylesheet, script and icon, shipped inside the package.

Three files, read once at start from the installed package (so ``pip install .``
is all the portal needs, offline), each answered with its content type, an
``ETag`` and ``Cache-Control: no-cache``: the browser keeps its copy and
revalidates it with a cheap 304, so a new meterd version is picked up at the
next page view without fingerprinted file names (:mod:`meterd.portal.site`
answers with them).

Pure module: standard library only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

__all__ = ["ASSETS", "Asset", "load_assets"]

#: File name → content type.
ASSETS: Final = {
    "portal.css": b"text/css; charset=utf-8",
    "portal.js": b"text/javascript; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One file, held in memory, with the headers every answer of it carries."""

    body: bytes
    content_type: bytes

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    def headers(self) -> dict[str, str]:
        return {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "ETag": self.etag}

    def fresh(self, if_none_match: str | None) -> bool:
        """Whether the browser's copy (its ``If-None-Match``) is this one: a 304 then."""
        return self.etag in (if_none_match or "").replace(" ", "").split(",")


def load_assets() -> dict[str, Asset]:
    """The shipped files by name."""
    files = resources.files("meterd.portal") / "static"
    return {name: Asset((files / name).read_bytes(), content_type) for name, content_type in ASSETS.items()}
