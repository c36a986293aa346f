"""The customer's pages: overview, history, bill and alarms.

Each page is a :class:`~meterd.portal.layout.PortalPage` rendered from the
API's JSON answers (``History``, ``Bill``, ``Alarms``, ``Meters``: see
``meterd/web/openapi.py``) plus the few keys the API does not give, named in
each class's docstring. An operator sees the same pages for any customer
(``PageContext.viewing``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from twisted.web.template import Flattenable, Tag, tags

from meterd import arrecadacao, pix, taxid
from meterd.portal import charts, estimates, routes
from meterd.portal.fmt import Fmt, decimal_of
from meterd.portal.layout import PageContext, PortalPage, csrf_field, hidden_table, render_fragment, select_field, svg

__all__ = ["AlarmsPage", "BillPage", "HistoryPage", "OverviewPage", "alarm_item", "alarm_item_html", "alarm_message"]

_KINDS = ("D", "M", "Y")


def _figure(label: str, value: str, *notes: Flattenable, extra_class: str = "") -> Tag:
    """One headline number of the overview: label, value, small print."""
    return tags.div(
        tags.p(label, class_="figure-label"),
        tags.p(value, class_="figure-value"),
        *(tags.p(n, class_="figure-note") for n in notes),
        class_=f"figure {extra_class}".strip(),
    )


def _chart_block(chart_svg: str, bars: Sequence[charts.Bar], fmt: Fmt, caption: str, places: int, table_id: str) -> Tag:
    """A chart with its hidden data table (the text alternative)."""
    rows = [
        (
            b.label,
            "—" if b.kwh is None else fmt.kwh(b.kwh, places),
            fmt.t("chart.estimated") if b.estimated else ("" if b.kwh is not None else fmt.t("chart.future")),
        )
        for b in bars
    ]
    return tags.figure(
        tags.div(svg(chart_svg), class_="chart-box"),
        hidden_table(caption, [fmt.t("table.period"), fmt.t("table.kwh"), fmt.t("table.note")], rows, table_id),
        class_="chart-figure",
    )


# ---------------------------------------------------------------------------
# Alarms (shared by the overview, the alarms page and the live list)


def _duration(fmt: Fmt, seconds: Any) -> str:
    s = int(decimal_of(seconds))
    if s < 3600:
        return fmt.t("duration.min", n=max(1, s // 60))
    if s < 86_400:
        return fmt.t("duration.h", n=s // 3600)
    return fmt.t("duration.d", n=s // 86_400)


def alarm_message(alarm: Mapping[str, Any], fmt: Fmt) -> str:
    """What an alarm says, in the page's language.

    Portuguese pages show the server's own message (it knows the demand
    window and words it exactly); other languages compose it from the rule,
    value and threshold.
    """
    if fmt.lang == "pt":
        return str(alarm["message"])
    rule, value, threshold = alarm["rule"], alarm["value"], alarm["threshold"]
    if rule == "silent":
        return fmt.t("alarm.msg.silent", meter=alarm["id_medidor"], duration=_duration(fmt, value))
    places = 1 if rule == "demand" else 0
    return fmt.t(f"alarm.msg.{rule}", value=fmt.number(value, places), threshold=fmt.number(threshold, places))


def alarm_item(alarm: Mapping[str, Any], ctx: PageContext, *, can_ack: bool = True) -> Tag:
    """One alarm as a list item: rule, message, times, and the acknowledge form."""
    fmt, t = ctx.fmt, ctx.fmt.t
    meter = t("alarm.meter", meter=alarm["id_medidor"]) if alarm["id_medidor"] is not None else t("alarm.all_meters")
    times = [t("alarm.raised", at=fmt.datetime(alarm["raised_at"]))]
    if alarm.get("cleared_at"):
        times.append(t("alarm.cleared", at=fmt.datetime(alarm["cleared_at"])))
    if alarm.get("acked_at"):
        times.append(t("alarm.acked", at=fmt.datetime(alarm["acked_at"])))
    body: list[Flattenable] = [
        tags.p(tags.strong(t(f"rule.{alarm['rule']}")), " · ", meter, class_="alarm-head"),
        tags.p(alarm_message(alarm, fmt), class_="alarm-message"),
        tags.p(" · ".join(times), class_="alarm-times"),
    ]
    if can_ack and not alarm.get("acked_at") and not alarm.get("cleared_at"):
        body.append(
            tags.form(
                csrf_field(ctx),
                tags.input(type="hidden", name="alarm_id", value=str(alarm["alarm_id"])),
                *([tags.input(type="hidden", name="id", value=ctx.viewing)] if ctx.viewing else []),
                tags.button(t("alarm.ack"), type="submit", class_="button small"),
                method="post",
                action=routes.ALARM_ACK,
                class_="alarm-ack",
            )
        )
    state = "cleared" if alarm.get("cleared_at") else ("acked" if alarm.get("acked_at") else "active")
    return tags.li(*body, class_=f"alarm alarm-{state}", id=f"alarm-{alarm['alarm_id']}")


def alarm_item_html(alarm: Mapping[str, Any], ctx: PageContext) -> str:
    """An active alarm's list item as HTML: the data of a live ``alarm`` event (:mod:`meterd.portal.sse`)."""
    return render_fragment(alarm_item(alarm, ctx))


# ---------------------------------------------------------------------------
# Overview


class OverviewPage(PortalPage):
    """This month at a glance.

    ``data``: ``customer`` {``id``, ``name``}; ``now`` (ISO instant);
    ``month`` (``History`` of this month, kind M); ``bill`` (this month's open
    ``Bill``); optional ``projection`` {``consumo_kwh``, ``total``} (kWh from
    :func:`meterd.portal.estimates.month_projection_kwh`, priced by
    ``compute_bill``); optional ``previous`` and ``last_year`` (the ``Bill`` of
    the previous month and of this month a year ago); ``alarms`` (``Alarms``).
    """

    page_class = "page page-overview"

    def title(self) -> str:
        return self.fmt.t("overview.title")

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        bill, month = d["bill"], d["month"]
        figures = [
            _figure(
                t("overview.so_far"),
                fmt.kwh(month["total_kwh"]),
                t("overview.so_far_money", money=fmt.money(bill["total"])),
                *([t("overview.estimated")] if month["estimated"] else []),
                extra_class="figure-main",
            )
        ]
        projection = d.get("projection")
        if projection:
            figures.append(
                _figure(
                    t("overview.projection"),
                    fmt.kwh(projection["consumo_kwh"], 0),
                    t("overview.projection_money", money=fmt.money(projection["total"])),
                    t("overview.projection_how"),
                )
            )
        for key, label in (("previous", "overview.previous"), ("last_year", "overview.last_year")):
            other = d.get(key)
            if other:
                notes: list[Flattenable] = [fmt.money(other["total"])]
                if key == "last_year" and projection:
                    change = estimates.relative_change(projection["consumo_kwh"], other["consumo_kwh"])
                    if change is not None:
                        notes.append(t("overview.change", change=fmt.change(change)))
                periodo = 1 if key == "previous" else 12
                notes.append(tags.a(t("overview.see_bill"), href=self.ctx.link(routes.BILL, periodo=periodo)))
                figures.append(_figure(t(label, month=fmt.month(other["referencia"])), fmt.kwh(other["consumo_kwh"], 0), *notes))

        bars = charts.history_bars(month, fmt, now=d["now"])
        chart = charts.history_chart(month, fmt, now=d["now"], chart_id="overview-chart")
        active = d["alarms"]["active"]
        alarms: Flattenable
        if active:
            alarms = tags.ul(*(alarm_item(a, self.ctx) for a in active), class_="alarm-list")
        else:
            alarms = tags.p(t("alarms.none_active"), class_="all-clear")
        return [
            tags.h1(t("overview.heading", name=d["customer"]["name"])),
            tags.p(fmt.month_long(month["start"]), class_="lede"),
            tags.section(*figures, class_="figures", **{"aria-label": t("overview.figures")}),
            tags.section(
                tags.h2(t("overview.chart"), id="overview-chart-heading"),
                _chart_block(chart, bars, fmt, t("overview.chart"), 1, "overview-table"),
                tags.p(tags.a(t("overview.see_history"), href=self.ctx.link(routes.HISTORY, kind="M"))),
                **{"aria-labelledby": "overview-chart-heading"},
            ),
            tags.section(
                tags.h2(t("alarms.active"), id="overview-alarms-heading"),
                alarms,
                tags.p(tags.a(t("overview.see_alarms"), href=self.ctx.link(routes.ALARMS))),
                **{"aria-labelledby": "overview-alarms-heading"},
            ),
        ]


# ---------------------------------------------------------------------------
# History


class HistoryPage(PortalPage):
    """Consumption of a day (by hour), a month (by day) or a year (by month).

    ``data``: ``history`` (the API's ``History``); ``now`` (ISO instant: later
    buckets are blank); ``meters`` (the ``meters`` list of ``Meters``, for the
    meter choice); optional ``meter`` (the ``id_medidor`` the history is
    limited to, None for all); optional ``rate`` (R$/kWh with taxes, e.g.
    :func:`meterd.portal.estimates.all_in_rate` of this month's bill) for the
    cost column.
    """

    page_class = "page page-history"

    def title(self) -> str:
        h = self.data["history"]
        return self.fmt.t("history.title", period=self.fmt.period(h["kind"], h["start"]))

    def _link(self, *, kind: str, periodo: int, meter: int | None) -> str:
        return self.ctx.link(routes.HISTORY, kind=kind, periodo=periodo, medidor=meter)

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        h = d["history"]
        kind, periodo = h["kind"], int(h["periodo"])
        meter = d.get("meter")
        rate = None if d.get("rate") is None else decimal_of(d["rate"])

        kinds = tags.ul(
            *(
                tags.li(
                    tags.a(t(f"history.kind.{k}"), href=self._link(kind=k, periodo=0, meter=meter), **({"aria-current": "page"} if k == kind else {}))
                )
                for k in _KINDS
            ),
            class_="tabs",
            **{"aria-label": t("history.kind")},
        )
        steps = [tags.a("← " + t(f"history.prev.{kind}"), href=self._link(kind=kind, periodo=periodo + 1, meter=meter), rel="prev")]
        if periodo > 0:
            steps.append(tags.a(t(f"history.next.{kind}") + " →", href=self._link(kind=kind, periodo=periodo - 1, meter=meter), rel="next"))
        meter_options = [("", t("history.all_meters"))] + [(str(m["id_medidor"]), t("alarm.meter", meter=m["id_medidor"])) for m in d["meters"]]
        chooser = tags.form(
            tags.input(type="hidden", name="kind", value=kind),
            tags.input(type="hidden", name="periodo", value=str(periodo)),
            *([tags.input(type="hidden", name="id", value=self.ctx.viewing)] if self.ctx.viewing else []),
            select_field("medidor", t("history.meter"), meter_options, selected="" if meter is None else str(meter)),
            tags.button(t("history.show"), type="submit", class_="button"),
            method="get",
            action=routes.HISTORY,
            class_="inline-form",
        )

        bars = charts.history_bars(h, fmt, now=d["now"])
        chart = charts.history_chart(h, fmt, now=d["now"])
        places = 2 if kind == "D" else 1
        head = [t("table.period"), t("table.kwh")] + ([t("table.cost")] if rate is not None else [])
        rows = []
        for bar in bars:
            cells = [tags.th(bar.label, scope="row")]
            if bar.kwh is None:
                cells += [tags.td("—", class_="num")] + ([tags.td("—", class_="num")] if rate is not None else [])
            else:
                mark = _estimated_mark(fmt) if bar.estimated else []
                cells.append(tags.td(fmt.kwh(bar.kwh, places), *mark, class_="num"))
                if rate is not None:
                    cells.append(tags.td(fmt.money(estimates.bucket_cost(bar.kwh, rate)), class_="num"))
            rows.append(tags.tr(*cells, class_="est" if bar.estimated else ""))
        summary = [tags.p(t("history.total", total=fmt.kwh(h["total_kwh"], places)), class_="total")]
        if h["estimated"]:
            summary.append(tags.p(t("history.estimated_note"), class_="note"))
        if len(h["meters"]) > 1:
            summary.append(
                tags.ul(
                    *(tags.li(t("alarm.meter", meter=m["id_medidor"]), ": ", fmt.kwh(m["total_kwh"], places)) for m in h["meters"]),
                    class_="meter-totals",
                )
            )
        if rate is not None:
            summary.append(tags.p(t("history.cost_note", rate=fmt.money(rate.quantize(Decimal("0.01")))), class_="note"))
        csv = self.ctx.link(routes.HISTORY_CSV, kind=kind, periodo=periodo, medidor=meter)
        return [
            tags.h1(self.title()),
            tags.nav(kinds, tags.p(*_joined(steps, " "), class_="steps"), class_="period-nav", **{"aria-label": t("history.navigation")}),
            chooser,
            tags.div(*summary, class_="summary"),
            tags.figure(tags.div(svg(chart), class_="chart-box"), class_="chart-figure"),
            tags.table(
                tags.caption(t("history.table", period=fmt.period(kind, h["start"]))),
                tags.thead(tags.tr(*(tags.th(x, scope="col") for x in head))),
                tags.tbody(*rows),
                class_="data",
            ),
            tags.p(tags.a(t("history.csv"), href=csv, download="", class_="button secondary")),
        ]


def _estimated_mark(fmt: Fmt) -> list[Flattenable]:
    """The asterisk that marks an estimated figure, explained on hover and to screen readers."""
    return [" ", tags.abbr("*", title=fmt.t("chart.estimated"), class_="est-mark")]


def _joined(items: Sequence[Flattenable], sep: str) -> list[Flattenable]:
    out: list[Flattenable] = []
    for i, item in enumerate(items):
        if i:
            out.append(sep)
        out.append(item)
    return out


# ---------------------------------------------------------------------------
# Bill


_LIGACAO = {"mono": "ligacao.mono", "bi": "ligacao.bi", "tri": "ligacao.tri"}


class BillPage(PortalPage):
    """The bill as a printable A4 document.

    ``data``: the API's ``Bill``; and, when the bill is issued, any of:
    ``numero`` (the bill number), ``emissao`` and ``vencimento`` (ISO dates),
    ``empresa`` {``nome``, ``cnpj`` (digits), ``endereco``}, ``instalacao``
    (the consumer unit's number), ``endereco`` (the unit's address),
    ``leituras`` [{``id_medidor``, ``data_anterior``, ``leitura_anterior``,
    ``data_atual``, ``leitura_atual``, ``consumo_kwh``}], ``historico``
    [{``referencia``, ``consumo_kwh`` (None before the customer existed),
    ``estimado``}] (the last 12 months), ``pix`` (the copia-e-cola payload) and
    ``codigo_barras`` (the 44-digit FEBRABAN barcode; the linha digitável is
    derived from it). Each is shown when present. Optional ``others``
    [{``periodo``, ``referencia``, ``total``}]: the bills to switch to (the
    open month's preview is ``periodo`` 0), listed beside the document and
    left out of print.
    """

    page_class = "page page-bill"

    def title(self) -> str:
        return self.fmt.t("bill.title", month=self.fmt.month(self.data["referencia"]))

    def main(self) -> Flattenable:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        ref = b["referencia"]
        empresa = b.get("empresa")
        utility = (
            tags.div(
                tags.p(empresa["nome"], class_="utility-name"),
                tags.p(t("bill.cnpj", cnpj=taxid.format_taxid(empresa["cnpj"]))),
                tags.p(empresa["endereco"]),
                class_="utility",
            )
            if empresa
            else tags.div(tags.p(self.ctx.utility, class_="utility-name"), class_="utility")
        )
        doc_facts = [tags.h1(t("bill.heading"), class_="bill-title")]
        if b.get("numero") is not None:
            doc_facts.append(tags.p(t("bill.number", number=str(b["numero"]))))
        if b.get("emissao"):
            doc_facts.append(tags.p(t("bill.issued", date=fmt.date(b["emissao"]))))
        header = tags.header(utility, tags.div(*doc_facts, class_="bill-doc"), class_="bill-header")

        customer = tags.dl(
            *_pair(t("bill.customer"), b["name"]),
            *_pair(t("bill.taxid"), taxid.format_taxid(b["id"])),
            *(_pair(t("bill.unit"), b["instalacao"]) if b.get("instalacao") else []),
            *(_pair(t("bill.address"), b["endereco"]) if b.get("endereco") else []),
            *_pair(t("bill.class"), t(_LIGACAO[b["ligacao"]])),
            *_pair(t("bill.period"), t("bill.period_range", start=fmt.date(b["inicio"]), end=fmt.date(_last_day(b["fim"])))),
            class_="bill-customer",
        )
        key_facts = tags.div(
            _key(t("bill.reference"), fmt.month(ref)),
            _key(t("bill.due"), fmt.date(b["vencimento"]) if b.get("vencimento") else t("bill.not_issued")),
            _key(t("bill.total"), fmt.money(b["total"]), "key-total"),
            class_="bill-keys",
        )
        notices = []
        if b.get("mes") == "aberto":
            notices.append(tags.p(t("bill.open_notice"), class_="notice"))
        if b["estimado"]:
            notices.append(tags.p(t("bill.estimated_notice"), class_="notice"))

        sections: list[Flattenable] = [header, tags.div(customer, key_facts, class_="bill-top"), *notices]
        sections.append(self._readings())
        sections.append(self._items())
        sections.append(tags.div(self._taxes(), *([self._months()] if b.get("historico") else []), class_="bill-columns"))
        if b.get("pix") or b.get("codigo_barras"):
            sections.append(self._payment())
        actions = tags.p(
            tags.button(t("bill.print"), type="button", class_="button", hidden="hidden", **{"data-print": ""}), class_="bill-actions no-print"
        )
        out: list[Flattenable] = [actions, tags.article(*sections, class_="bill", **{"aria-label": self.title()})]
        if b.get("others"):
            out.append(self._others())
        return out

    def _others(self) -> Tag:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        items = []
        for other in b["others"]:
            label = t("bill.this_month") if other["periodo"] == 0 else fmt.month(other["referencia"])
            current = {"aria-current": "page"} if other["referencia"] == b["referencia"] else {}
            link = tags.a(label, href=self.ctx.link(routes.BILL, periodo=other["periodo"]), **current)
            items.append(tags.li(link, " · ", tags.span(fmt.money(other["total"]), class_="sub")))
        return tags.nav(
            tags.h2(t("bill.others"), id="bill-others-heading"),
            tags.ul(*items, class_="link-list"),
            class_="bill-others no-print",
            **{"aria-labelledby": "bill-others-heading"},
        )

    def _readings(self) -> Tag:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        readings = b.get("leituras")
        if readings:
            head = [t("bill.meter"), t("bill.previous_reading"), t("bill.current_reading"), t("bill.consumption")]
            rows = [
                tags.tr(
                    tags.th(str(r["id_medidor"]), scope="row"),
                    tags.td(fmt.number(r["leitura_anterior"], 3), tags.br(), tags.span(fmt.date(r["data_anterior"]), class_="sub"), class_="num"),
                    tags.td(fmt.number(r["leitura_atual"], 3), tags.br(), tags.span(fmt.date(r["data_atual"]), class_="sub"), class_="num"),
                    tags.td(fmt.kwh(r["consumo_kwh"], 3), class_="num"),
                )
                for r in readings
            ]
        else:
            head = [t("bill.meter"), t("bill.consumption")]
            rows = [
                tags.tr(
                    tags.th(str(m["id_medidor"]), scope="row"),
                    tags.td(fmt.kwh(m["consumo_kwh"], 3), *(_estimated_mark(fmt) if m["estimado"] else []), class_="num"),
                )
                for m in b["medidores"]
            ]
        foot = tags.tfoot(
            tags.tr(
                tags.th(t("bill.consumption_total"), scope="row", colspan=str(len(head) - 1)), tags.td(fmt.kwh(b["consumo_kwh"], 3), class_="num")
            ),
            tags.tr(tags.th(t("bill.billed_kwh"), scope="row", colspan=str(len(head) - 1)), tags.td(fmt.kwh(b["faturado_kwh"], 3), class_="num")),
        )
        return tags.section(
            tags.table(
                tags.caption(t("bill.readings")),
                tags.thead(tags.tr(*(tags.th(x, scope="col") for x in head))),
                tags.tbody(*rows),
                foot,
                class_="data",
            ),
            class_="bill-readings",
        )

    def _items(self) -> Tag:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        rows = [
            tags.tr(
                tags.th(item["descricao"], scope="row"),
                tags.td(fmt.number(item["quantidade_kwh"], 3), class_="num"),
                tags.td(fmt.exact(item["tarifa"]), class_="num"),
                tags.td(fmt.money(item["valor"]), class_="num"),
            )
            for item in b["itens"]
        ]
        rows.append(
            tags.tr(tags.th(t("bill.taxes_line"), scope="row"), tags.td(""), tags.td(""), tags.td(fmt.money(b["tributos"]["valor"]), class_="num"))
        )
        # an issued bill's adjustments of earlier months (taxes included) and a previous bill's credit
        rows += [
            tags.tr(
                tags.th(a["descricao"], scope="row"),
                tags.td(fmt.number(a["quantidade_kwh"], 3), class_="num"),
                tags.td(""),
                tags.td(fmt.money(a["valor"]), class_="num"),
            )
            for a in b.get("ajustes") or []
        ]
        if b.get("credito_anterior"):
            credit = b["credito_anterior"]
            rows.append(tags.tr(tags.th(t("bill.credit", number=str(credit["numero"])), scope="row"), tags.td(""), tags.td(""),
                                tags.td(fmt.money(credit["valor"]), class_="num")))
        flag = b["bandeira"]
        return tags.section(
            tags.table(
                tags.caption(t("bill.items")),
                tags.thead(tags.tr(*(tags.th(x, scope="col") for x in (t("bill.item"), t("bill.quantity"), t("bill.rate"), t("bill.value"))))),
                tags.tbody(*rows),
                tags.tfoot(tags.tr(tags.th(t("bill.total"), scope="row", colspan="3"), tags.td(fmt.money(b["total"]), class_="num"))),
                class_="data",
            ),
            tags.p(
                tags.span("", class_=f"flag-dot flag-{flag}", **{"aria-hidden": "true"}), t("bill.flag", flag=t(f"flag.{flag}")), class_="bill-flag"
            ),
            class_="bill-items",
        )

    def _taxes(self) -> Tag:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        taxes = b["tributos"]
        rows = [
            tags.tr(
                tags.th(t(f"tax.{name}"), scope="row"),
                tags.td(fmt.money(taxes["base"]), class_="num"),
                tags.td(fmt.percent(taxes["aliquotas"][name]), class_="num"),
                tags.td(fmt.money(taxes[name]), class_="num"),
            )
            for name in ("icms", "pis", "cofins")
        ]
        return tags.section(
            tags.table(
                tags.caption(t("bill.taxes")),
                tags.thead(tags.tr(*(tags.th(x, scope="col") for x in (t("bill.tax"), t("bill.base"), t("bill.tax_rate"), t("bill.value"))))),
                tags.tbody(*rows),
                tags.tfoot(tags.tr(tags.th(t("bill.taxes_total"), scope="row", colspan="3"), tags.td(fmt.money(taxes["valor"]), class_="num"))),
                class_="data",
            ),
            tags.p(t("bill.taxes_note"), class_="note"),
            class_="bill-taxes",
        )

    def _months(self) -> Tag:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        months = b["historico"]
        bars = charts.bill_months_bars(months, fmt, current=b["referencia"])
        chart = charts.bill_months_chart(months, fmt, current=b["referencia"])
        known = [m for m in months if m.get("consumo_kwh") is not None]
        notes = []
        if known:
            mean = sum((decimal_of(m["consumo_kwh"]) for m in known), Decimal(0)) / len(known)
            notes.append(tags.p(t("bill.average", months=len(known), kwh=fmt.kwh(mean, 0)), class_="note"))
        return tags.section(
            tags.h2(t("chart.bill.title"), id="bill-months-heading"),
            _chart_block(chart, bars, fmt, t("chart.bill.title"), 0, "bill-months-table"),
            *notes,
            class_="bill-months",
            **{"aria-labelledby": "bill-months-heading"},
        )

    def _payment(self) -> Tag:
        fmt, t, b = self.fmt, self.fmt.t, self.data
        parts: list[Flattenable] = [tags.h2(t("bill.pay"), class_="pay-title")]
        if b.get("pix"):
            payload = b["pix"]
            parts.append(
                tags.div(
                    tags.h3(t("bill.pix")),
                    tags.div(svg(pix.qr_svg(payload), role="img", **{"aria-label": t("bill.pix_qr")}), class_="qr"),
                    tags.div(
                        tags.label(t("bill.pix_code"), for_="pix-code"),
                        tags.textarea(payload, id="pix-code", readonly="readonly", rows="3", class_="pix-code"),
                        tags.button(
                            t("bill.copy"),
                            type="button",
                            class_="button small",
                            hidden="hidden",
                            **{"data-copy": "pix-code", "data-copied": t("bill.copied")},
                        ),
                        tags.p("", class_="copy-status", role="status"),
                        class_="pix-text",
                    ),
                    class_="pay-pix",
                )
            )
        if b.get("codigo_barras"):
            barcode = b["codigo_barras"]
            line = arrecadacao.format_linha_digitavel(arrecadacao.linha_digitavel(barcode))
            parts.append(
                tags.div(
                    tags.h3(t("bill.barcode")),
                    tags.p(line, class_="linha", id="linha-digitavel"),
                    tags.div(svg(arrecadacao.itf_svg(barcode), **{"aria-label": t("bill.barcode")}), class_="barcode"),
                    class_="pay-barcode",
                )
            )
        summary = tags.p(
            t(
                "bill.pay_summary",
                month=fmt.month(b["referencia"]),
                due=fmt.date(b["vencimento"]) if b.get("vencimento") else "—",
                total=fmt.money(b["total"]),
            ),
            class_="pay-summary",
        )
        return tags.section(*parts[:1], summary, *parts[1:], class_="bill-payment")


def _pair(term: str, value: str) -> list[Tag]:
    return [tags.div(tags.dt(term), tags.dd(value))]


def _key(label: str, value: str, extra: str = "") -> Tag:
    return tags.div(tags.p(label, class_="key-label"), tags.p(value, class_="key-value"), class_=f"key {extra}".strip())


def _last_day(end: str) -> datetime:
    """The last day a period covers: its exclusive end minus one second."""
    moment = datetime.fromisoformat(end)
    return moment.fromtimestamp(moment.timestamp() - 1, moment.tzinfo)


# ---------------------------------------------------------------------------
# Alarms page


class AlarmsPage(PortalPage):
    """Active and past alarms, with live updates where the browser runs the script.

    ``data``: ``alarms`` (the API's ``Alarms``: ``active``, ``events``,
    ``cursor``); optional ``past`` (cleared ``Alarm`` objects, newest first).
    The live list subscribes to :data:`meterd.portal.routes.ALARM_EVENTS`
    from the ``cursor``; where the server refuses the stream the script
    reloads the active section (``#active-section``) instead.
    """

    page_class = "page page-alarms"

    def title(self) -> str:
        return self.fmt.t("alarms.title")

    def main(self) -> Flattenable:
        fmt, t, d = self.fmt, self.fmt.t, self.data
        view = d["alarms"]
        active = view["active"]
        known = {a["alarm_id"]: a for a in [*active, *d.get("past", [])]}
        live = tags.ul(
            *(alarm_item(a, self.ctx) for a in active),
            id="active-alarms",
            class_="alarm-list",
            **{"aria-live": "polite", "data-live": self.ctx.link(routes.ALARM_EVENTS, cursor=view["cursor"]), "data-empty": t("alarms.none_active")},
        )
        sections: list[Flattenable] = [
            tags.h1(t("alarms.title")),
            tags.section(
                tags.h2(t("alarms.active"), id="active-heading"),
                *([] if active else [tags.p(t("alarms.none_active"), class_="all-clear", id="no-active")]),
                live,
                id="active-section",
                **{"aria-labelledby": "active-heading"},
            ),
        ]
        past = d.get("past", [])
        sections.append(
            tags.section(
                tags.h2(t("alarms.past"), id="past-heading"),
                tags.ul(*(alarm_item(a, self.ctx, can_ack=False) for a in past), class_="alarm-list past") if past else tags.p(t("alarms.none_past")),
                **{"aria-labelledby": "past-heading"},
            )
        )
        events = view["events"]
        if events:
            rows = [
                tags.tr(
                    tags.td(fmt.datetime(e["at"])),
                    tags.td(t(f"event.{e['type']}")),
                    tags.td(t(f"rule.{known[e['alarm_id']]['rule']}") if e["alarm_id"] in known else f"#{e['alarm_id']}"),
                )
                for e in events
            ]
            sections.append(
                tags.section(
                    tags.table(
                        tags.caption(t("alarms.events")),
                        tags.thead(tags.tr(*(tags.th(x, scope="col") for x in (t("table.when"), t("table.event"), t("table.alarm"))))),
                        tags.tbody(*rows),
                        class_="data",
                    )
                )
            )
        return sections
