"""What each operator page shows and does, through the API as the operator.

Registering a customer or a meter and reissuing a token or a key call the
API's own routes in this process (:meth:`meterd.web.api.Api.call_as`); a form
is checked first by the same field declarations the route parses with, so
every field's error is shown next to it at once, in the page's language.

Two pages wait on work of the operations issue, and say so here: the search
finds a customer by the exact CPF/CNPJ (``/buscaClientes``, with names and
accents, replaces it), and the customer's record is read from the API's
directory of customers (its detail route replaces that).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from meterd import periods
from meterd.directory import OPERATOR
from meterd.portal.layout import PageContext
from meterd.portal.message_page import api_reason
from meterd.portal.staff_pages import CredentialPage, CustomerPage, FleetPage, NewCustomerPage, NewMeterPage, SearchPage
from meterd.readings import InvalidField, customer_id
from meterd.web.api import Api, customer_json
from meterd.web.errors import ApiError

__all__ = ["Desk", "credential", "customer", "fleet", "new_customer", "new_meter", "search"]

_NEW_CUSTOMER_FIELDS = ("id", "name", "ligacao", "limite_kw", "limite_kwh", "tz")


@dataclass(frozen=True)
class Desk:
    """The operator's session: the API, and the page context."""

    api: Api
    ctx: PageContext

    async def ask(self, method: str, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return await self.api.call_as(OPERATOR, method, path, {k: v for k, v in params.items() if v not in (None, "")})

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
    """A customer by the exact CPF/CNPJ typed (until ``/buscaClientes`` searches names too)."""
    q = (query.get("q") or "").strip()
    results: list[dict[str, Any]] | None = None
    if q:
        results = []
        try:
            found = await d.api.customer(customer_id(q))
        except (InvalidField, ApiError):  # not a CPF/CNPJ, or nobody's
            found = None
        if found is not None:
            meters = await d.api.meter_ids(found.id, None)
            results.append({"id": found.id, "name": found.name, "ligacao": found.ligacao, "meters": len(meters)})
    return SearchPage(d.ctx, {"q": q, "results": results})


async def customer(d: Desk, query: Mapping[str, str]) -> CustomerPage:
    meters = await d.ask("GET", "/getMedidores", {"id": query.get("id")})
    record = await d.api.customer(meters["id"])
    service = d.api.alarm_service
    return CustomerPage(
        d.ctx,
        {
            "customer": customer_json(record),
            "meters": meters["meters"],
            "now": periods.iso(d.api.now_ms(), ZoneInfo(record.tz)),
            "silent_after_s": float(service.silent_after_s) if service is not None else 0.0,
            "alarms": await d.ask("GET", "/getAlarme", {"id": record.id}),
        },
    )


async def new_customer(d: Desk, form: Mapping[str, str] | None) -> tuple[int, NewCustomerPage]:
    """The form (``form`` None), or the registration it posted: the page and its status."""
    if form is None:
        return 200, NewCustomerPage(d.ctx, {})
    values = {k: (form.get(k) or "").strip() for k in _NEW_CUSTOMER_FIELDS}
    errors, status = d.field_errors("/cadCliente", values), 400
    if not errors:
        try:
            return 201, NewCustomerPage(d.ctx, {"created": await d.ask("POST", "/cadCliente", values)})
        except ApiError as e:
            if e.status != 409:  # customer_exists
                raise
            errors["id"], status = api_reason(d.ctx.fmt, e), 409
    return status, NewCustomerPage(d.ctx, {"values": values, "errors": errors})


async def new_meter(d: Desk, query: Mapping[str, str], form: Mapping[str, str] | None) -> tuple[int, NewMeterPage]:
    if form is None:
        return 200, NewMeterPage(d.ctx, {"values": {"id": query.get("id") or ""}})
    values = {"id": (form.get("id") or "").strip(), "mode": (form.get("mode") or "").strip()}
    errors, status = d.field_errors("/cadMedidor", values), 400
    if not errors:
        try:
            return 201, NewMeterPage(d.ctx, {"created": await d.ask("POST", "/cadMedidor", values)})
        except ApiError as e:
            if e.status != 404:  # unknown_customer
                raise
            errors["id"], status = api_reason(d.ctx.fmt, e), 404
    return status, NewMeterPage(d.ctx, {"values": values, "errors": errors})


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
