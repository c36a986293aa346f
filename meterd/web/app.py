"""Every route meterd serves, and the OpenAPI document of them all.

The core API (:class:`meterd.web.api.Api`) declares the assignment's routes;
each feature declares its own in its own module, on a class whose instance
:meth:`Api.mount` serves. ``ROUTE_CLASSES`` names them all, so the document
(and the tests that walk every route) can be built without a running server.
"""

from __future__ import annotations

import functools
from typing import Any, Final

import orjson

from meterd.web import openapi
from meterd.web.api import JSON, Api, Call
from meterd.web.bills import Bills
from meterd.web.exchange import Answer
from meterd.web.exports import Exports
from meterd.web.fleet import Fleet
from meterd.web.operations import Operations
from meterd.web.routes import Route, route, routes_of
from meterd.web.webhook_routes import WebhookRoutes


class Document:
    """``/openapi.json``: served from the declarations, built once."""

    @route(
        "GET", "/openapi.json", "public",
        summary="This document", tag="operations",
        ok=((200, "an OpenAPI 3 document", None),),
    )
    async def openapi(self, call: Call) -> Answer:
        return Answer(200, JSON, openapi_bytes(), {})


ROUTE_CLASSES: Final[tuple[type, ...]] = (Api, Bills, Document, Operations, Exports, Fleet, WebhookRoutes)


def all_routes() -> list[Route]:
    """Every route's declaration, the core API's first."""
    return [r for cls in ROUTE_CLASSES for r in routes_of(cls)]


@functools.cache
def openapi_document() -> dict[str, Any]:
    """``/openapi.json``: the routes' declarations and the schemas of their answers (a class's ``schemas`` and ``tags`` too)."""
    schemas = {name: schema for cls in ROUTE_CLASSES for name, schema in getattr(cls, "schemas", {}).items()}
    tags = [tag for cls in ROUTE_CLASSES for tag in getattr(cls, "tags", ())]
    return openapi.document(all_routes(), schemas=schemas, tags=tags)


@functools.cache
def openapi_bytes() -> bytes:
    """The document as served: encoded once, as every request for it gets the same bytes."""
    return orjson.dumps(openapi_document())


def mount_all(api: Api, *groups: object) -> Api:
    """``api`` serving the document and ``groups`` besides its own routes; every class must be in ROUTE_CLASSES."""
    for group in (Document(), *groups):
        assert type(group) in ROUTE_CLASSES, f"{type(group).__name__} is missing from ROUTE_CLASSES"
        api.mount(group)
    return api
