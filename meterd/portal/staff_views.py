"""What each operator page shows and does, through the API as the operator.

Registering a customer or a meter and reissuing a token or a key call the
API's own routes in this process (:meth:`meterd.web.api.Api.call_as`); a form
is checked first by the same field declarations the route parses with, so
every field's error is shown next to it at once, in the page's language.

The search is ``/buscaClientes`` (a CPF/CNPJ prefix, or words of the name,
accents aside) a page at a time, and the customer's record ``/getCliente``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from meterd.directory import OPERATOR
from meterd.portal import routes
from meterd.portal.layout import PageContext, PortalPage
from meterd.portal.message_page import api_reason
from meterd.portal.staff_pages import CredentialPage, CustomerPage, FleetPage, NewCustomerPage, NewMeterPage, SearchPage
from meterd.web.api import Api
from meterd.web.errors import ApiError

__all__ = ["Desk", "credential", "customer", "fleet", "new_customer", "new_meter", "search"]

P = TypeVar("P", bound=PortalPage)

_NEW_CUSTOMER_FIELDS = ("id", "name", "ligacao", "limite_kw", "limite_kwh", "tz")


@dataclass(frozen=True)
class Desk:
    """The operator's login session: the API, the page context, and the browser's address (the audit log's)."""

    api: Api
    ctx: PageContext
    client: str

    async def ask(self, method: str, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        values = {k: v for k, v in params.items() if v not in (None, "")}
        answer = await self.api.call_as(OPERATOR, method, path, values, self.client)
        assert isinstance(answer, dict), f"{path} answered {type(answer).__name__}, not JSON"
        return answer

    def field_errors(self, path: str, values: Mapping[str, str]) -> dict[str, str]:
        """Each field of the route that ``values`` gets wrong, with the reason in the page's language."""
        errors = {}
        for f in self.api.routes[path][0].fields:
            try:
                f.value(values)
            except ApiError as e:
                errors[f.name] = api_reason(self.ctx.fmt, e)
        return errors


async def search(d: Desk, query: Mapping[str, str]) -> SearchPage:
    """A page of ``/buscaClientes``, with the link to the next one."""
    q = (query.get("q") or "").strip()
    if not q:
        return SearchPage(d.ctx, {"q": q, "results": None})
    try:
        found = await d.ask("GET", "/buscaClientes", {"q": q, "cursor": query.get("cursor")})
    except ApiError as e:
        if e.status != 400:  # a query with nothing to search for (punctuation alone): no one found
            raise
        return SearchPage(d.ctx, {"q": q, "results": []})
    more = routes.href(routes.STAFF_SEARCH, q=q, cursor=found["cursor"]) if found["cursor"] else None
    return SearchPage(d.ctx, {"q": q, "results": found["results"], "more": more})


async def customer(d: Desk, query: Mapping[str, str]) -> CustomerPage:
    return CustomerPage(d.ctx, await d.ask("GET", "/getCliente", {"id": query.get("id")}))


async def new_customer(d: Desk, form: Mapping[str, str] | None) -> tuple[int, NewCustomerPage]:
    """The form (``form`` None), or the registration it posted: the page and its status."""
    if form is None:
        return 200, NewCustomerPage(d.ctx, {})
    values = {k: (form.get(k) or "").strip() for k in _NEW_CUSTOMER_FIELDS}
    return await _register(d, NewCustomerPage, "/cadCliente", values, 409)  # 409: customer_exists


async def new_meter(d: Desk, query: Mapping[str, str], form: Mapping[str, str] | None) -> tuple[int, NewMeterPage]:
    if form is None:
        return 200, NewMeterPage(d.ctx, {"values": {"id": query.get("id") or ""}})
    values = {"id": (form.get("id") or "").strip(), "mode": (form.get("mode") or "").strip()}
    return await _register(d, NewMeterPage, "/cadMedidor", values, 404)  # 404: unknown_customer


async def _register(d: Desk, page: type[P], route: str, values: dict[str, str], refusal: int) -> tuple[int, P]:
    """``values`` posted to ``route``: 201 and the page showing what it created, or the form again with its errors.

    The fields are checked by the route's own declaration first (400); the
    API's ``refusal`` status (the id already registered, or unknown) is shown
    on the ``id`` field, and any other error is the site's to answer.
    """
    errors, status = d.field_errors(route, values), 400
    if not errors:
        try:
            return 201, page(d.ctx, {"created": await d.ask("POST", route, values)})
        except ApiError as e:
            if e.status != refusal:
                raise
            errors["id"], status = api_reason(d.ctx.fmt, e), refusal
    return status, page(d.ctx, {"values": values, "errors": errors})


async def credential(d: Desk, kind: str, params: Mapping[str, str], post: bool) -> CredentialPage:
    """A new token (``kind`` "token") or meter key ("key"): the confirmation, or (``post``) the new secret, shown once."""
    path = "/novoToken" if kind == "token" else "/novaChave"
    args = d.api.routes[path][0].parse({"id": params.get("id"), "id_medidor": params.get("medidor")})  # the route's 400s
    record = await d.api.customer(args["id"])  # 404 unless registered
    data: dict[str, Any] = {"kind": kind, "customer": {"id": record.id, "name": record.name}}
    if kind == "key":
        data["meter"] = args["id_medidor"]
        await d.api.meter_ids(record.id, args["id_medidor"])  # 404 unless it exists
    if post:
        data["issued"] = await d.ask("POST", path, args)
    return CredentialPage(d.ctx, data)


async def fleet(d: Desk) -> FleetPage:
    return FleetPage(d.ctx, await d.ask("GET", "/getFrota", {}))
