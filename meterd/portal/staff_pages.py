"""The operator's pages: find a customer, see one, register customers and
meters (their token or key shown once), and the fleet of meters.

Each page is a :class:`~meterd.portal.layout.PortalPage` rendered from the
API's JSON answers (``CustomerCreated``, ``MeterCreated``, ``Meters``,
``MeterStatus``) plus the keys named in each class's docstring. Register
forms re-show what was typed, with each field's error next to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.web.template import Flattenable, Tag, tags

from meterd import taxid
from meterd.portal import routes
from meterd.portal.customer_pages import alarm_item
from meterd.portal.fmt import Fmt
from meterd.portal.layout import PageContext, PortalPage, csrf_field, field, scroll_region, select_field

__all__ = ["CredentialPage", "CustomerPage", "FleetPage", "NewCustomerPage", "NewMeterPage", "SearchPage", "meter_state"]


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
    before a search; the API's ``CustomerSearch`` results) [{``id``,
    ``name``, ``ligacao``, ``meters`` (count)}]; optional ``more`` (the URL of
    the next page of results)."""

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
                if d.get("more"):
                    out.append(tags.p(tags.a(t("staff.search.more"), href=d["more"], rel="next")))
        return out


def meter_state(meter: Mapping[str, Any]) -> str:
    """A meter of the API's ``CustomerDetail`` as the record shows it: ``"retired"``,
    ``"never"`` (no reading yet), ``"silent"`` (the silent rule finds it so now) or ``"ok"``."""
    if meter.get("retired_at"):
        return "retired"
    if meter.get("last_seen") is None:
        return "never"
    return "silent" if meter["silent"] else "ok"


def _meter_rows(fmt: Fmt, meters: list[Mapping[str, Any]]) -> list[Tag]:
    t = fmt.t
    rows = []
    for m in meters:
        state = meter_state(m)
        rows.append(
            tags.tr(
                tags.th(str(m["id_medidor"]), scope="row"),
                tags.td(t(f"mode.{m['mode']}")),
                tags.td(tags.span(t(f"state.{state}"), class_=f"state state-{state}")),
                tags.td(fmt.datetime(m["last_seen"]) if m.get("last_seen") else "—"),
                tags.td(fmt.number(m["last_kwh"], 3) if m.get("last_kwh") is not None else "—", class_="num"),
            )
        )
    return rows


def _meter_head(fmt: Fmt) -> Tag:
    t = fmt.t
    names = [t("bill.meter"), t("staff.mode"), t("staff.state"), t("staff.last_seen"), t("staff.last_kwh")]
    return tags.thead(tags.tr(*(tags.th(x, scope="col") for x in names)))


class CustomerPage(PortalPage):
    """``data``: the API's ``CustomerDetail`` (``/getCliente``): the
    customer's fields, its ``meters`` with their state, its ``active`` alarms."""

    page_class = "page page-customer"

    def title(self) -> str:
        return str(self.data["name"])

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        c = d
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
                    _meter_head(fmt),
                    tags.tbody(*_meter_rows(fmt, meters)),
                    class_="data",
                ),
                t("staff.meters"),
            )
            if meters
            else tags.p(t("staff.no_meters"))
        )
        active = d["active"]
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
                *([tags.ul(*(alarm_item(a, self.ctx, can_ack=False) for a in active), class_="alarm-list")] if active else []),
                tags.p(tags.a(t("overview.see_alarms"), href=routes.href(routes.ALARMS, id=c["id"]))),
                **{"aria-labelledby": "alarms-heading"},
            ),
            tags.section(
                tags.h2(t("staff.credentials"), id="credentials-heading"),
                tags.p(t("staff.credentials_note"), class_="note"),
                tags.ul(
                    tags.li(tags.a(t("staff.new_token"), href=routes.href(routes.STAFF_NEW_TOKEN, id=c["id"]))),
                    *(
                        tags.li(
                            tags.a(
                                t("staff.new_key", meter=m["id_medidor"]), href=routes.href(routes.STAFF_NEW_KEY, id=c["id"], medidor=m["id_medidor"])
                            )
                        )
                        for m in meters
                        if not m.get("retired_at")
                    ),
                    class_="link-list",
                ),
                **{"aria-labelledby": "credentials-heading"},
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


class CredentialPage(PortalPage):
    """A customer's new token, or a meter's new key: asked for with a button, then shown once.

    ``data``: ``kind`` (``"token"`` or ``"key"``); ``customer`` {``id``,
    ``name``}; ``meter`` (the ``id_medidor``, for a key); optional ``issued``
    (the API's ``NewToken`` or ``NewKey``, whose secret this page shows once).
    Without ``issued`` the page says what the old credential will stop doing
    and offers the POST button.
    """

    page_class = "page page-credential"

    def title(self) -> str:
        return self.fmt.t(f"staff.new_{self.data['kind']}.title")

    def main(self) -> Flattenable:
        t, d = self.fmt.t, self.data
        c, kind, meter = d["customer"], d["kind"], d.get("meter")
        names = {"name": c["name"], "taxid": taxid.format_taxid(c["id"]), "meter": meter}
        issued = d.get("issued")
        back = tags.p(tags.a(t("staff.see_customer"), href=routes.href(routes.STAFF_CUSTOMER, id=c["id"]), class_="button secondary"))
        if issued:
            secret, label, field_id = (
                (issued["token"], t("staff.token"), "new-token") if kind == "token" else (issued["key"], t("staff.key"), "new-key")
            )
            return [tags.h1(t(f"staff.new_{kind}.done", **names)), _secret_once(self.ctx, label, secret, field_id), back]
        path = routes.STAFF_NEW_TOKEN if kind == "token" else routes.STAFF_NEW_KEY
        return [
            tags.h1(self.title()),
            tags.p(t(f"staff.new_{kind}.confirm", **names), class_="warning"),
            tags.form(
                csrf_field(self.ctx),
                tags.input(type="hidden", name="id", value=c["id"]),
                *([tags.input(type="hidden", name="medidor", value=str(meter))] if kind == "key" else []),
                tags.button(t("staff.confirm"), type="submit", class_="button"),
                method="post",
                action=path,
                class_="actions",
            ),
            back,
        ]


class FleetPage(PortalPage):
    """The fleet at a glance: ``data`` is the API's ``Fleet`` (``/getFrota``).

    The figures sit in one region the script reloads every few seconds
    (``data-refresh``); without the script the page is a plain snapshot.
    """

    page_class = "page page-fleet"

    def title(self) -> str:
        return self.fmt.t("staff.fleet.title")

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        rate = d["readings_per_s"]
        figures = tags.section(
            tags.div(
                tags.p(t("staff.fleet.rate"), class_="figure-label"),
                tags.p(t("staff.fleet.rate_pending") if rate is None else fmt.number(rate, 1), class_="figure-value"),
                tags.p(t("staff.fleet.rate_note"), class_="figure-note"),
                class_="figure figure-main",
            ),
            tags.div(
                tags.p(t("staff.fleet.silent"), class_="figure-label"),
                tags.p(fmt.number(d["silent_meters"]), class_="figure-value"),
                class_="figure",
            ),
            class_="figures",
            **{"aria-label": t("staff.fleet.figures")},
        )
        alarms = tags.table(
            tags.caption(t("staff.fleet.alarms")),
            tags.tbody(*(tags.tr(tags.th(t(f"rule.{rule}"), scope="row"), tags.td(fmt.number(n), class_="num")) for rule, n in d["alarms"].items())),
            class_="data",
        )
        drops: Flattenable
        if d["drops"]:
            drops = tags.table(
                tags.caption(t("staff.fleet.drops")),
                tags.thead(tags.tr(tags.th(t("staff.fleet.reason"), scope="col"), tags.th(t("staff.fleet.count"), scope="col"))),
                tags.tbody(
                    *(tags.tr(tags.th(tags.code(reason), scope="row"), tags.td(fmt.number(n), class_="num")) for reason, n in d["drops"].items())
                ),
                class_="data",
            )
        else:
            drops = tags.p(t("staff.fleet.no_drops"))
        silent: list[Flattenable] = [tags.h2(t("staff.fleet.table"), id="silent-heading")]
        if d["silent"]:
            rows = [
                tags.tr(
                    tags.td(
                        tags.a(taxid.format_taxid(m["id"]), href=routes.href(routes.STAFF_CUSTOMER, id=m["id"])),
                        tags.br(),
                        tags.span(m["name"], class_="sub"),
                    ),
                    tags.th(str(m["id_medidor"]), scope="row"),
                    tags.td(tags.span(t("staff.fleet.since", at=fmt.datetime(m["since"])), class_="state state-silent")),
                )
                for m in d["silent"]
            ]
            head = tags.thead(tags.tr(*(tags.th(x, scope="col") for x in (t("staff.customer"), t("bill.meter"), t("staff.state")))))
            silent.append(
                scroll_region(
                    tags.table(tags.caption(t("staff.fleet.table"), class_="visually-hidden"), head, tags.tbody(*rows), class_="data"),
                    t("staff.fleet.table"),
                )
            )
            if d["silent_meters"] > len(d["silent"]):
                silent.append(tags.p(t("staff.fleet.more_silent", count=d["silent_meters"] - len(d["silent"]))))
        else:
            silent.append(tags.p(t("staff.fleet.none_silent"), class_="all-clear"))
        live = tags.div(
            tags.p(
                t("staff.fleet.lede", meters=fmt.number(d["meters"]), customers=fmt.number(d["customers"]), at=fmt.datetime(d["at"])), class_="lede"
            ),
            figures,
            tags.div(alarms, tags.div(drops, tags.p(t("staff.fleet.drops_note"), class_="note")), class_="fleet-tables"),
            tags.section(*silent, **{"aria-labelledby": "silent-heading"}),
            id="fleet-live",
            **{"data-refresh": "5"},
        )
        return [tags.h1(self.title()), tags.p(t("staff.fleet.live"), class_="note"), live]
