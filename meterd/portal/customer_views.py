"""What each customer page shows, asked of the API on behalf of the login session.

A :class:`Viewer` is a login session looking at one customer's pages: the customer
itself, or the operator looking through the customer's eyes. Every figure
comes from the API's own routes, called in this process with the login session's
principal (:meth:`meterd.web.api.Api.call_as`), so what a customer may see is
decided by the API's rule, in one place: a customer's login session asking for
another customer's page gets the API's 403, as the customer's token would.

The few things the API does not answer are composed here from its answers:
the month-end projection priced by the bill's own rules, the cost per
history bucket, the 12 months behind a bill.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from meterd import periods
from meterd.alarms import alarm_json
from meterd.billing import compute_bill
from meterd.directory import Principal
from meterd.portal import estimates, routes
from meterd.portal.customer_pages import AlarmsPage, BillPage, HistoryPage, OverviewPage
from meterd.portal.fmt import decimal_of
from meterd.portal.layout import PageContext
from meterd.web.api import Api
from meterd.web.errors import ApiError
from meterd.web.exchange import Reply

__all__ = ["HISTORY_MONTHS", "Viewer", "ack", "alarms", "bill", "history", "history_csv", "overview"]

#: The months a bill's consumption chart and the list of bills span.
HISTORY_MONTHS = 12


@dataclass(frozen=True)
class Viewer:
    """A login session (its principal and page context) looking at the pages of ``customer_id``, from ``client``."""

    api: Api
    principal: Principal
    ctx: PageContext
    customer_id: str
    client: str  # the browser's address

    async def reply(self, method: str, path: str, **params: Any) -> dict[str, Any] | Reply:
        """``path`` for this customer, as the login session's principal; ``None`` parameters are left out."""
        values = {"id": self.customer_id, **{k: str(v) for k, v in params.items() if v is not None}}
        return await self.api.call_as(self.principal, method, path, values, self.client)

    async def ask(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        """A JSON answer of ``path`` for this customer (:meth:`reply`)."""
        answer = await self.reply(method, path, **params)
        assert isinstance(answer, dict), f"{path} answered {type(answer).__name__}, not JSON"
        return answer

    def parse(self, path: str, **params: Any) -> dict[str, Any]:
        """The route's own parsing of these parameters (400 ``ApiError`` as the API gives it)."""
        values = {"id": self.customer_id, **{k: v for k, v in params.items() if v is not None}}
        return self.api.routes[path][0].parse(values)

    def now(self, tz: str) -> str:
        return periods.iso(self.api.now_ms(), ZoneInfo(tz))


async def overview(v: Viewer) -> OverviewPage:
    month = await v.ask("GET", "/getConsumoHist", kind="M", periodo=0)
    bill = await v.ask("GET", "/getFatura", periodo=0)
    now = v.now(month["tz"])
    projected = estimates.month_projection_kwh(month["total_kwh"], month["start"], month["end"], now)
    year, number = (int(part) for part in bill["referencia"].split("-"))
    priced = compute_bill(tariff=v.api.tariff, ligacao=bill["ligacao"], year=year, month=number, consumo_wh=int(projected * 1000), estimado=False)
    data: dict[str, Any] = {
        "customer": {"id": bill["id"], "name": bill["name"]},
        "now": now,
        "month": month,
        "bill": bill,
        "projection": {"consumo_kwh": float(projected), "total": f"{priced.total:.2f}"},
        "alarms": await v.ask("GET", "/getAlarme"),
    }
    for key, periodo in (("previous", 1), ("last_year", 12)):
        other = await v.ask("GET", "/getFatura", periodo=periodo)
        if decimal_of(other["consumo_kwh"]) > 0:  # nothing measured (before the first reading): nothing to compare with
            data[key] = other
    return OverviewPage(v.ctx, data)


def _history_args(v: Viewer, query: Mapping[str, str]) -> dict[str, Any]:
    return v.parse("/getConsumoHist", kind=query.get("kind") or "M", periodo=query.get("periodo") or "0", id_medidor=query.get("medidor") or None)


async def history(v: Viewer, query: Mapping[str, str]) -> HistoryPage:
    args = _history_args(v, query)
    h = await v.ask("GET", "/getConsumoHist", kind=args["kind"], periodo=args["periodo"], id_medidor=args["id_medidor"])
    meters = await v.ask("GET", "/getMedidores")
    rate = estimates.all_in_rate(await v.ask("GET", "/getFatura", periodo=0))
    data = {"history": h, "now": v.now(h["tz"]), "meters": meters["meters"], "meter": args["id_medidor"], "rate": rate}
    return HistoryPage(v.ctx, data)


async def history_csv(v: Viewer, query: Mapping[str, str]) -> Reply:
    """The history view as the API's CSV (``/getConsumoHist`` with ``format=csv``: its file name, its columns)."""
    args = _history_args(v, query)
    csv = await v.reply("GET", "/getConsumoHist", kind=args["kind"], periodo=args["periodo"], id_medidor=args["id_medidor"], format="csv")
    assert not isinstance(csv, dict), "/getConsumoHist answered JSON when asked for CSV"
    return csv


async def bill(v: Viewer, query: Mapping[str, str]) -> BillPage:
    """The bill of ``periodo``, with the 12 months up to it (its chart, when the bill does not bring its own)
    and the bills to switch to (this month's preview and the 12 before it)."""
    periodo = v.parse("/getFatura", periodo=query.get("periodo") or "0")["periodo"]
    shown = await v.ask("GET", "/getFatura", periodo=periodo)
    months: dict[int, dict[str, Any]] = {periodo: shown}
    for p in {*range(periodo + 1, periodo + HISTORY_MONTHS), *range(0, HISTORY_MONTHS + 1)} - {periodo}:
        try:
            months[p] = await v.ask("GET", "/getFatura", periodo=p)
        except ApiError as e:
            if e.status != 400:  # 400: a month before 1970, or past the API's reach: not listed
                raise
    data = dict(shown)
    if "historico" not in data:
        data["historico"] = [
            {"referencia": months[p]["referencia"], "consumo_kwh": months[p]["consumo_kwh"], "estimado": months[p]["estimado"]}
            for p in range(periodo + HISTORY_MONTHS - 1, periodo - 1, -1)
            if p in months
        ]
    data["others"] = [
        {"periodo": p, "referencia": months[p]["referencia"], "total": months[p]["total"]} for p in range(HISTORY_MONTHS + 1) if p in months
    ]
    return BillPage(v.ctx, data)


async def alarms(v: Viewer) -> AlarmsPage:
    """Active alarms and recent events from the API; the ended alarms those events name, from the alarm service's memory."""
    view = await v.ask("GET", "/getAlarme")
    active = {a["alarm_id"] for a in view["active"]}
    ended = [e["alarm_id"] for e in view["events"] if e["alarm_id"] not in active]
    past: list[dict[str, Any]] = []
    service = v.api.alarm_service
    if ended and service is not None:
        tz = ZoneInfo((await v.api.customer(v.customer_id)).tz)
        past = [alarm_json(a, tz) for a in service.recent(v.customer_id, ended) if not a.active]
    return AlarmsPage(v.ctx, {"alarms": view, "past": past})


async def ack(v: Viewer, form: Mapping[str, str]) -> str:
    """Acknowledge the form's alarm; the page to go back to."""
    await v.ask("POST", "/ackAlarme", alarm_id=form.get("alarm_id"))
    return v.ctx.link(routes.ALARMS)
