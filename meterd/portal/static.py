"""Serves the portal's stylesheet and script, shipped inside the package.

Two files, read once at start from the installed package (so ``pip install .``
is all the portal needs, offline), each answered with its content type, an
``ETag`` and ``Cache-Control: no-cache``: the browser keeps its copy and
revalidates it with a cheap 304, so a new meterd version is picked up at the
next page view without fingerprinted file names.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Final

from twisted.web.resource import Resource
from twisted.web.server import Request

__all__ = ["ASSETS", "StaticAsset", "static_resource"]

#: File name → content type.
ASSETS: Final = {
    "portal.css": b"text/css; charset=utf-8",
    "portal.js": b"text/javascript; charset=utf-8",
}


class StaticAsset(Resource):
    """One file, held in memory."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode("ascii") + b'"'

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"etag", self.etag)
        if self.etag in (request.getHeader(b"if-none-match") or b"").replace(b" ", b"").split(b","):
            request.setResponseCode(304)
            return b""
        return self.body


def static_resource() -> Resource:
    """The ``static`` directory of the portal (mount it at :data:`meterd.portal.routes.STATIC`)."""
    directory = Resource()
    files = resources.files("meterd.portal") / "static"
    for name, content_type in ASSETS.items():
        asset = StaticAsset((files / name).read_bytes(), content_type)
        directory.putChild(name.encode("ascii"), asset)
    return directory
