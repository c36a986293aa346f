"""The operator's pages: find a customer, see one, register customers and
meters (their token or key shown once), and the fleet of meters.

Each page is a :class:`~meterd.portal.layout.PortalPage` rendered from the
API's JSON answers (``CustomerCreated``, ``MeterCreated``, ``Meters``,
``MeterStatus``) plus the keys named in each class's docstring. Register
forms re-show what was typed, with each field's error next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from twisted.web.template import Flattenable, Tag, tags

from meterd import taxid
from meterd.portal import routes
from meterd.portal.fmt import Fmt
from meterd.portal.layout import PageContext, PortalPage, csrf_field, field, scroll_region, select_field

__all__ = ["CustomerPage", "FleetPage", "NewCustomerPage", "NewMeterPage", "SearchPage", "meter_state"]


def _secret_once(ctx: PageContext, label: str, value: str, field_id: str) -> Tag:
    """A token or key shown once: labelled, selectable, copyable, with the warning."""
    t = ctx.fmt.t
    return tags.div(
        tags.p(t("staff.shown_once"), class_="warning", role="alert"),
        tags.label(label, for_=field_id),
        tags.textarea(value, id=field_id, readonly="readonly", rows="2", class_="secret"),
        tags.button(
            t("bill.copy"), type="button", class_="button small", hidden="hidden", **{"data-copy": field_id, "data-copied": t("bill.copied")}
        ),
        tags.p("", class_="copy-status", role="status"),
        class_="secret-box",
    )


def _errors(data: Mapping[str, Any]) -> Mapping[str, str]:
    return data.get("errors") or {}


def _values(data: Mapping[str, Any]) -> Mapping[str, str]:
    return data.get("values") or {}


class SearchPage(PortalPage):
    """``data``: ``q`` (what was searched, may be empty); ``results`` (None
    before a search) [{``id``, ``name``, ``ligacao``, ``meters`` (count)}]."""

    page_class = "page page-search"

    def title(self) -> str:
        return self.fmt.t("staff.search.title")

    def main(self) -> Flattenable:
        t, d = self.fmt.t, self.data
        form = tags.form(
            field("q", t("staff.search.label"), value=d.get("q") or "", type="search", hint=t("staff.search.hint")),
            tags.button(t("staff.search.submit"), type="submit", class_="button"),
            method="get",
            action=routes.STAFF_SEARCH,
            role="search",
            class_="inline-form",
        )
        out: list[Flattenable] = [tags.h1(self.title()), form]
        results = d.get("results")
        if results is not None:
            if not results:
                out.append(tags.p(t("staff.search.none", q=d.get("q") or ""), role="status"))
            else:
                rows = [
                    tags.tr(
                        tags.th(tags.a(taxid.format_taxid(r["id"]), href=routes.href(routes.STAFF_CUSTOMER, id=r["id"])), scope="row"),
                        tags.td(r["name"]),
                        tags.td(t(f"ligacao.{r['ligacao']}")),
                        tags.td(str(r["meters"]), class_="num"),
                    )
                    for r in results
                ]
                caption = t("staff.search.results", count=len(results))
                out.append(
                    scroll_region(
                        tags.table(
                            tags.caption(caption),
                            tags.thead(
                                tags.tr(*(tags.th(x, scope="col") for x in (t("staff.taxid"), t("staff.name"), t("bill.class"), t("staff.meters"))))
                            ),
                            tags.tbody(*rows),
                            class_="data",
                        ),
                        caption,
                    )
                )
        return out


def meter_state(meter: Mapping[str, Any], now: str | datetime, silent_after_s: float) -> str:
    """``"never"`` (no reading yet), ``"silent"`` (none for ``silent_after_s``) or ``"ok"``."""
    if meter.get("last_seen") is None:
        return "never"
    moment = now if isinstance(now, datetime) else datetime.fromisoformat(now)
    age = (moment - datetime.fromisoformat(meter["last_seen"])).total_seconds()
    return "silent" if age >= silent_after_s else "ok"


def _meter_rows(fmt: Fmt, meters: list[Mapping[str, Any]], now: str, silent_after_s: float, *, with_customer: bool) -> list[Tag]:
    t = fmt.t
    rows = []
    for m in meters:
        state = meter_state(m, now, silent_after_s)
        cells: list[Tag] = []
        if with_customer:
            cells.append(
                tags.td(
                    tags.a(taxid.format_taxid(m["id"]), href=routes.href(routes.STAFF_CUSTOMER, id=m["id"])),
                    tags.br(),
                    tags.span(m["name"], class_="sub"),
                )
            )
        cells += [
            tags.th(str(m["id_medidor"]), scope="row"),
            tags.td(t(f"mode.{m['mode']}")),
            tags.td(tags.span(t(f"state.{state}"), class_=f"state state-{state}")),
            tags.td(fmt.datetime(m["last_seen"]) if m.get("last_seen") else "—"),
            tags.td(fmt.number(m["last_kwh"], 3) if m.get("last_kwh") is not None else "—", class_="num"),
        ]
        rows.append(tags.tr(*cells))
    return rows


def _meter_head(fmt: Fmt, *, with_customer: bool) -> Tag:
    t = fmt.t
    names = ([t("staff.customer")] if with_customer else []) + [
        t("bill.meter"),
        t("staff.mode"),
        t("staff.state"),
        t("staff.last_seen"),
        t("staff.last_kwh"),
    ]
    return tags.thead(tags.tr(*(tags.th(x, scope="col") for x in names)))


class CustomerPage(PortalPage):
    """``data``: ``customer`` {``id``, ``name``, ``ligacao``, ``limite_kw``,
    ``limite_kwh``, ``tz``}; ``meters`` (the ``meters`` of ``Meters``);
    ``now`` (ISO); ``silent_after_s``; optional ``alarms`` (``Alarms``)."""

    page_class = "page page-customer"

    def title(self) -> str:
        return self.data["customer"]["name"]

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        c = d["customer"]
        facts = tags.dl(
            *(
                tags.div(tags.dt(term), tags.dd(value))
                for term, value in (
                    (t("staff.taxid"), taxid.format_taxid(c["id"])),
                    (t("bill.class"), t(f"ligacao.{c['ligacao']}")),
                    (t("staff.limit_kw"), f"{fmt.number(c['limite_kw'], 1)} kW"),
                    (t("staff.limit_kwh"), fmt.kwh(c["limite_kwh"], 0)),
                    (t("staff.tz"), c["tz"]),
                )
            ),
            class_="facts",
        )
        views = tags.ul(
            *(
                tags.li(tags.a(t(key), href=routes.href(path, id=c["id"])))
                for key, path in (
                    ("nav.overview", routes.OVERVIEW),
                    ("nav.history", routes.HISTORY),
                    ("nav.bill", routes.BILL),
                    ("nav.alarms", routes.ALARMS),
                )
            ),
            class_="link-list",
        )
        meters = d["meters"]
        table: Flattenable = (
            scroll_region(
                tags.table(
                    tags.caption(t("staff.meters"), class_="visually-hidden"),
                    _meter_head(fmt, with_customer=False),
                    tags.tbody(*_meter_rows(fmt, meters, d["now"], d["silent_after_s"], with_customer=False)),
                    class_="data",
                ),
                t("staff.meters"),
            )
            if meters
            else tags.p(t("staff.no_meters"))
        )
        active = (d.get("alarms") or {}).get("active", [])
        return [
            tags.h1(c["name"]),
            facts,
            tags.section(tags.h2(t("staff.views"), id="views-heading"), views, **{"aria-labelledby": "views-heading"}),
            tags.section(
                tags.h2(t("staff.meters"), id="meters-heading"),
                table,
                tags.p(tags.a(t("staff.add_meter"), href=routes.href(routes.STAFF_NEW_METER, id=c["id"]), class_="button secondary")),
                **{"aria-labelledby": "meters-heading"},
            ),
            tags.section(
                tags.h2(t("alarms.active"), id="alarms-heading"),
                tags.p(t("staff.active_alarms", count=len(active))),
                **{"aria-labelledby": "alarms-heading"},
            ),
        ]


class NewCustomerPage(PortalPage):
    """``data``: optional ``values`` and ``errors`` (by field: ``id``,
    ``name``, ``ligacao``, ``limite_kw``, ``limite_kwh``, ``tz``; errors are
    texts for the person); optional ``created`` (the API's
    ``CustomerCreated``, whose token this page shows once)."""

    page_class = "page page-new-customer"

    def title(self) -> str:
        return self.fmt.t("staff.new_customer.title")

    def main(self) -> Flattenable:
        t, d = self.fmt.t, self.data
        created = d.get("created")
        if created:
            return [
                tags.h1(t("staff.new_customer.done", name=created["name"])),
                tags.p(t("staff.new_customer.done_lede", taxid=taxid.format_taxid(created["id"]))),
                _secret_once(self.ctx, t("staff.token"), created["token"], "new-token"),
                tags.p(
                    tags.a(t("staff.add_meter"), href=routes.href(routes.STAFF_NEW_METER, id=created["id"]), class_="button"),
                    tags.a(t("staff.see_customer"), href=routes.href(routes.STAFF_CUSTOMER, id=created["id"]), class_="button secondary"),
                    class_="actions",
                ),
            ]
        v, e = _values(d), _errors(d)
        return [
            tags.h1(self.title()),
            tags.form(
                csrf_field(self.ctx),
                field("id", t("staff.taxid"), value=v.get("id"), error=e.get("id"), required=True, inputmode="numeric", hint=t("login.taxid_hint")),
                field("name", t("staff.name"), value=v.get("name"), error=e.get("name"), required=True, autocomplete="off", maxlength="200"),
                select_field(
                    "ligacao",
                    t("bill.class"),
                    [(k, t(f"ligacao.{k}")) for k in ("mono", "bi", "tri")],
                    selected=v.get("ligacao", "mono"),
                    error=e.get("ligacao"),
                ),
                field(
                    "limite_kw",
                    t("staff.limit_kw"),
                    value=v.get("limite_kw"),
                    error=e.get("limite_kw"),
                    inputmode="decimal",
                    hint=t("staff.default_hint"),
                ),
                field(
                    "limite_kwh",
                    t("staff.limit_kwh"),
                    value=v.get("limite_kwh"),
                    error=e.get("limite_kwh"),
                    inputmode="decimal",
                    hint=t("staff.default_hint"),
                ),
                field("tz", t("staff.tz"), value=v.get("tz"), error=e.get("tz"), hint=t("staff.tz_hint")),
                tags.button(t("staff.register"), type="submit", class_="button"),
                method="post",
                action=routes.STAFF_NEW_CUSTOMER,
                class_="stack-form",
                novalidate="novalidate",
            ),
        ]


class NewMeterPage(PortalPage):
    """``data``: optional ``values`` and ``errors`` (``id``, ``mode``);
    optional ``created`` (the API's ``MeterCreated``, whose key this page shows once)."""

    page_class = "page page-new-meter"

    def title(self) -> str:
        return self.fmt.t("staff.new_meter.title")

    def main(self) -> Flattenable:
        t, d = self.fmt.t, self.data
        created = d.get("created")
        if created:
            return [
                tags.h1(t("staff.new_meter.done", meter=created["id_medidor"], taxid=taxid.format_taxid(created["id"]))),
                tags.p(t("staff.new_meter.done_lede", mode=t(f"mode.{created['mode']}"))),
                _secret_once(self.ctx, t("staff.key"), created["key"], "new-key"),
                tags.p(tags.a(t("staff.see_customer"), href=routes.href(routes.STAFF_CUSTOMER, id=created["id"]), class_="button secondary")),
            ]
        v, e = _values(d), _errors(d)
        return [
            tags.h1(self.title()),
            tags.form(
                csrf_field(self.ctx),
                field("id", t("staff.taxid"), value=v.get("id"), error=e.get("id"), required=True, inputmode="numeric"),
                select_field(
                    "mode",
                    t("staff.mode"),
                    [("register", t("mode.register")), ("interval", t("mode.interval"))],
                    selected=v.get("mode", "register"),
                    error=e.get("mode"),
                    hint=t("staff.mode_hint"),
                ),
                tags.button(t("staff.register"), type="submit", class_="button"),
                method="post",
                action=routes.STAFF_NEW_METER,
                class_="stack-form",
                novalidate="novalidate",
            ),
        ]


class FleetPage(PortalPage):
    """``data``: ``now`` (ISO); ``silent_after_s`` (seconds without a reading
    that make a meter silent); ``meters`` [``MeterStatus`` plus the
    customer's ``id`` and ``name``]."""

    page_class = "page page-fleet"

    def title(self) -> str:
        return self.fmt.t("staff.fleet.title")

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        meters = d["meters"]
        counts = {"ok": 0, "silent": 0, "never": 0}
        for m in meters:
            counts[meter_state(m, d["now"], d["silent_after_s"])] += 1
        summary = tags.ul(
            *(tags.li(tags.span(t(f"state.{k}"), class_=f"state state-{k}"), " ", tags.strong(str(n))) for k, n in counts.items()),
            class_="fleet-summary",
        )
        return [
            tags.h1(self.title()),
            tags.p(t("staff.fleet.lede", count=len(meters), at=fmt.datetime(d["now"])), class_="lede"),
            summary,
            scroll_region(
                tags.table(
                    tags.caption(t("staff.fleet.table")),
                    _meter_head(fmt, with_customer=True),
                    tags.tbody(*_meter_rows(fmt, meters, d["now"], d["silent_after_s"], with_customer=True)),
                    class_="data",
                ),
                t("staff.fleet.table"),
            ),
        ]
