"""Turn the server's JSON into text a person reads: bill, history, alarms, meters.

Every function returns a string, so the same code serves the interactive menu,
the subcommands and the tests. With ``color=True`` (stdout is a terminal) the
text is drawn by rich with colours and box lines; otherwise it is plain ASCII
that survives pipes, logs and ``grep``.
"""

from __future__ import annotations

import io
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Iterable, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .messages import Messages

__all__ = ["Renderer", "brl", "decimal_of", "format_number"]

_CENT = Decimal("0.01")
_RULE_UNITS = {"demand": "kW", "monthly": "kWh", "anomaly": "kWh", "silent": "s"}
_FLAG_STYLES = {
    "verde": "bold green",
    "amarela": "bold yellow",
    "vermelha1": "bold red",
    "vermelha2": "bold red",
}
_BAR_FULL = "█"
_BAR_PARTS = " ▏▎▍▌▋▊▉"


def decimal_of(value: Any) -> Decimal | None:
    """Money and kWh arrive as strings or numbers; go through str() so a float
    such as 0.1 becomes Decimal('0.1'), not its binary expansion."""
    if value is None or isinstance(value, bool):
        return None
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _group(digits: str, sep: str) -> str:
    out = []
    while len(digits) > 3:
        out.insert(0, digits[-3:])
        digits = digits[:-3]
    out.insert(0, digits)
    return sep.join(out)


def format_number(value: Any, decimals: int, *, decimal_sep: str = ",", thousands_sep: str = ".") -> str:
    """Fixed decimals with locale separators; unparseable input is shown as is."""
    d = decimal_of(value)
    if d is None:
        return "—" if value is None else str(value)
    q = d.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP) if decimals else d.quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    sign = "-" if q < 0 else ""
    text = f"{abs(q):f}"
    whole, _, frac = text.partition(".")
    out = sign + _group(whole, thousands_sep)
    return out + (decimal_sep + frac if frac else "")


def brl(value: Any) -> str:
    """Brazilian money: ``R$ 1.234,56`` (``-R$ 1,00`` when negative)."""
    d = decimal_of(value)
    if d is None:
        return f"R$ {value}"
    q = d.quantize(_CENT, rounding=ROUND_HALF_UP)
    body = format_number(abs(q), 2)
    return ("-R$ " if q < 0 else "R$ ") + body


class Renderer:
    """Text views of API answers in one language and one output style."""

    def __init__(self, msgs: Messages, *, color: bool = False, width: int = 100) -> None:
        self.m = msgs
        self.color = color
        self.width = max(40, width)

    # -- low level ----------------------------------------------------------

    def _render(self, *items: RenderableType) -> str:
        buf = io.StringIO()
        console = Console(
            file=buf,
            width=self.width,
            force_terminal=self.color,
            color_system="standard" if self.color else None,
            no_color=not self.color,
            highlight=False,
            emoji=False,
            markup=False,
            soft_wrap=False,
        )
        for item in items:
            console.print(item)
        text = buf.getvalue()
        if not self.color:
            text = "\n".join(line.rstrip() for line in text.split("\n"))
        return text.rstrip("\n") + "\n"

    def _table(self, title: str | None = None, **kw: Any) -> Table:
        return Table(
            title=title,
            box=box.ROUNDED if self.color else box.ASCII,
            title_justify="left",
            title_style="bold" if self.color else "",
            header_style="bold" if self.color else "",
            **kw,
        )

    def _grid(self) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold" if self.color else "")
        grid.add_column()
        return grid

    def num(self, value: Any, decimals: int) -> str:
        return format_number(
            value, decimals, decimal_sep=self.m("num.decimal"), thousands_sep=self.m("num.thousands")
        )

    def kwh(self, value: Any) -> str:
        return self.num(value, 3)

    def _rate(self, value: Any) -> str:
        """Tariffs keep their own precision (R$ 0,018850/kWh is not R$ 0,02)."""
        d = decimal_of(value)
        if d is None:
            return str(value)
        exp = d.as_tuple().exponent
        decimals = max(2, -exp if isinstance(exp, int) else 2)
        return self.num(d, min(decimals, 6))

    def _percent(self, fraction: Any) -> str:
        d = decimal_of(fraction)
        if d is None:
            return str(fraction)
        text = self.num(d * 100, 2)
        zero_tail = self.m("num.decimal") + "00"
        if text.endswith(zero_tail):
            text = text[: -len(zero_tail)]
        return text + "%"

    # -- dates --------------------------------------------------------------

    @staticmethod
    def zone(tz: str | None) -> tzinfo | None:
        if not tz:
            return None
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            return None

    @staticmethod
    def parse_time(value: Any) -> datetime | None:
        if not isinstance(value, str) or not value:
            return None
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return dt

    def _local(self, value: Any, tz: str | None) -> datetime | None:
        dt = self.parse_time(value)
        if dt is None:
            return None
        zone = self.zone(tz)
        if zone is not None and dt.tzinfo is not None:
            dt = dt.astimezone(zone)
        return dt

    def when(self, value: Any, tz: str | None = None) -> str:
        """A server time shown on the customer's wall clock."""
        dt = self._local(value, tz)
        if dt is None:
            return "—" if value is None else str(value)
        return self.m("date.time", d=dt.day, m=dt.month, y=dt.year, H=dt.hour, M=dt.minute)

    def day(self, value: Any, tz: str | None = None) -> str:
        dt = self._local(value, tz)
        if dt is None:
            return "—" if value is None else str(value)
        return self.m("date.day", d=dt.day, m=dt.month, y=dt.year)

    def bucket_label(self, kind: str, value: Any, tz: str | None) -> str:
        dt = self._local(value, tz)
        if dt is None:
            return str(value)
        if kind == "D":
            return self.m("date.hour", H=dt.hour)
        if kind == "M":
            return self.m("date.daymonth", d=dt.day, m=dt.month, mon=self.m.month_name(dt.month))
        return self.m("date.month", y=dt.year, mon=self.m.month_name(dt.month))

    def _reference(self, ref: Any) -> str:
        """``"2026-11"`` → ``nov/2026`` (pt) or ``Nov 2026`` (en)."""
        try:
            year, month = (int(p) for p in str(ref).split("-"))
            return self.m("date.month", y=year, mon=self.m.month_name(month))
        except (ValueError, IndexError):
            return str(ref)

    # -- bill ---------------------------------------------------------------

    def bill(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        """An itemised "conta de luz": header, priced lines, taxes, total."""
        m = self.m
        parts: list[RenderableType] = []
        title = Text(m("bill.title"), style="bold reverse" if self.color else "")
        parts.append(title)

        head = self._grid()
        name = doc.get("name")
        cid = str(doc.get("id", ""))
        head.add_row(m("bill.customer"), f"{name} ({_taxid(cid)})" if name else _taxid(cid))
        status = doc.get("status")
        ref = self._reference(doc.get("referencia"))
        if status:
            ref += f" — {m('bill.status.' + str(status))}"
        head.add_row(m("bill.reference"), ref)
        if doc.get("inicio") or doc.get("fim"):
            head.add_row(m("bill.period"), f"{self.day(doc.get('inicio'), tz)} – {self._end_day(doc.get('fim'), tz)}")
        lig = str(doc.get("ligacao", ""))
        if lig:
            head.add_row(m("bill.ligacao"), m("ligacao." + lig))
        flag = str(doc.get("bandeira", ""))
        if flag:
            head.add_row(m("bill.flag"), Text(m("flag." + flag), style=_FLAG_STYLES.get(flag, "") if self.color else ""))
        consumo = doc.get("consumo_kwh")
        faturado = doc.get("faturado_kwh")
        head.add_row(m("bill.measured"), f"{self.kwh(consumo)} kWh")
        billed = f"{self.kwh(faturado)} kWh"
        c, f = decimal_of(consumo), decimal_of(faturado)
        if c is not None and f is not None and f > c:
            billed = m("bill.minimum", kwh=billed, ligacao=m("ligacao." + lig) if lig else "")
        head.add_row(m("bill.billed"), billed)
        meters = _meter_totals(doc.get("medidores"))
        if meters:
            head.add_row(
                m("bill.meters"),
                ", ".join(f"{m('hist.meter', id_medidor=i)}: {self.kwh(v)} kWh" for i, v in meters),
            )
        parts.append(head)

        table = self._table(show_footer=False)
        table.add_column(m("col.description"), ratio=None)
        table.add_column(m("col.quantity"), justify="right")
        table.add_column(m("col.rate"), justify="right")
        table.add_column(m("col.amount"), justify="right")
        subtotal = Decimal("0.00")
        for item in doc.get("itens") or []:
            valor = decimal_of(item.get("valor"))
            if valor is not None:
                subtotal += valor
            table.add_row(
                str(item.get("descricao", "")),
                self.kwh(item.get("quantidade_kwh")),
                self._rate(item.get("tarifa")),
                brl(item.get("valor")),
            )
        table.add_section()
        table.add_row(Text(m("bill.subtotal"), style="italic" if self.color else ""), "", "", brl(subtotal))
        tributos = doc.get("tributos") or {}
        rates = tributos.get("aliquotas") if isinstance(tributos.get("aliquotas"), Mapping) else {}
        for key, label in (("icms", "ICMS"), ("pis", "PIS"), ("cofins", "COFINS")):
            if key not in tributos:
                continue
            name_ = m("bill.tax", name=label, rate=self._percent(rates[key])) if key in rates else label
            table.add_row(name_, "", "", brl(tributos[key]))
        if "valor" in tributos:
            table.add_row(Text(m("bill.taxes"), style="italic" if self.color else ""), "", "", brl(tributos["valor"]))
        table.add_section()
        total_style = "bold" if self.color else ""
        table.add_row(Text(m("bill.total"), style=total_style), "", "", Text(brl(doc.get("total")), style=total_style))
        parts.append(table)
        if doc.get("estimado"):
            parts.append(Text(m("bill.estimated"), style="yellow" if self.color else ""))
        return self._render(*parts)

    def _end_day(self, value: Any, tz: str | None) -> str:
        """``fim`` is exclusive (the next month's first instant); people expect
        the last day of the month."""
        dt = self._local(value, tz)
        if dt is None:
            return self.day(value, tz)
        from datetime import timedelta

        last = dt - timedelta(milliseconds=1)
        return self.m("date.day", d=last.day, m=last.month, y=last.year)

    # -- history ------------------------------------------------------------

    def history(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        """A summary table and a horizontal bar chart of the buckets."""
        m = self.m
        tz = doc.get("tz") or tz
        kind = str(doc.get("kind", "D")).upper()
        start = doc.get("start")
        if kind == "D":
            label = self.day(start, tz)
        elif kind == "M":
            dt = self._local(start, tz)
            label = self.m("date.month", y=dt.year, mon=m.month_name(dt.month)) if dt else str(start)
        else:
            dt = self._local(start, tz)
            label = str(dt.year) if dt else str(start)
        parts: list[RenderableType] = []

        parts.append(Text(m(f"hist.title.{kind}", label=label), style="bold" if self.color else ""))
        summary = self._table()
        summary.add_column(m("hist.col.meter"))
        summary.add_column(m("hist.col.kwh"), justify="right")
        for i, v in _meter_totals(doc.get("meters")):
            summary.add_row(m("hist.meter", id_medidor=i), self.kwh(v))
        summary.add_section()
        star = " *" if doc.get("estimated") else ""
        summary.add_row(m("hist.total"), self.kwh(doc.get("total_kwh")) + star)
        parts.append(summary)

        buckets = list(doc.get("buckets") or [])
        if not buckets:
            parts.append(Text(m("hist.empty")))
        else:
            parts.append(Text(m("hist.chart", unit=m(f"hist.unit.{kind}")), style="bold" if self.color else ""))
            parts.append(self._chart(kind, buckets, tz))
        if any(b.get("estimated") for b in buckets) or doc.get("estimated"):
            parts.append(Text(m("hist.estimated"), style="yellow" if self.color else ""))
        if tz:
            parts.append(Text(m("hist.tz", tz=tz), style="dim" if self.color else ""))
        return self._render(*parts)

    def _chart(self, kind: str, buckets: Iterable[Mapping[str, Any]], tz: str | None) -> RenderableType:
        rows = []
        for b in buckets:
            d = decimal_of(b.get("kwh")) or Decimal(0)
            rows.append((self.bucket_label(kind, b.get("start"), tz), d, self.kwh(b.get("kwh")), bool(b.get("estimated"))))
        label_w = max(len(r[0]) for r in rows)
        value_w = max(len(r[2]) for r in rows) + 2
        bar_w = max(10, min(60, self.width - label_w - value_w - 6))
        top = max((r[1] for r in rows), default=Decimal(0))
        text = Text()
        for i, (label, d, shown, est) in enumerate(rows):
            text.append(label.rjust(label_w) + " |")
            bar = self._bar(d, top, bar_w)
            text.append(bar, style=("yellow" if est else "cyan") if self.color else "")
            text.append(" " + shown + (" *" if est else ""))
            if i < len(rows) - 1:
                text.append("\n")
        return text

    def _bar(self, value: Decimal, top: Decimal, width: int) -> str:
        if top <= 0 or value <= 0:
            return ""
        cells = value / top * width
        if not self.color:
            n = int(cells.to_integral_value(rounding=ROUND_HALF_UP))
            return "#" * max(1, n)
        eighths = int((cells * 8).to_integral_value(rounding=ROUND_HALF_UP))
        full, rest = divmod(max(1, eighths), 8)
        return _BAR_FULL * full + (_BAR_PARTS[rest] if rest else "")

    # -- alarms -------------------------------------------------------------

    def rule(self, rule: Any) -> str:
        return self.m(f"rule.{rule}") if f"rule.{rule}" != self.m(f"rule.{rule}") else str(rule)

    def measure(self, rule: Any, value: Any) -> str:
        unit = _RULE_UNITS.get(str(rule), "")
        decimals = 0 if unit == "s" else 2
        shown = self.num(value, decimals)
        return f"{shown} {unit}".strip()

    def alarms(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        m = self.m
        parts: list[RenderableType] = []
        active = list(doc.get("active") or [])
        if not active:
            parts.append(Text(m("alarms.none"), style="green" if self.color else ""))
        else:
            t = self._table(title=m("alarms.active"))
            for key in ("id", "rule", "meter", "value", "limit", "raised", "acked"):
                t.add_column(
                    m(f"alarms.col.{key}"), justify="right" if key in ("id", "value", "limit") else "left", no_wrap=True
                )
            for a in active:
                t.add_row(
                    str(a.get("alarm_id", "")),
                    Text(self.rule(a.get("rule")), style="bold red" if self.color and not a.get("acked_at") else ""),
                    str(a["id_medidor"]) if a.get("id_medidor") is not None else m("alarms.all"),
                    self.measure(a.get("rule"), a.get("value")),
                    self.measure(a.get("rule"), a.get("threshold")),
                    self.when(a.get("raised_at"), tz),
                    self.when(a.get("acked_at"), tz) if a.get("acked_at") else m("alarms.no"),
                )
            parts.append(t)
        events = list(doc.get("events") or [])[-10:]
        if events:
            t = self._table(title=m("alarms.events"))
            for key in ("event", "id", "type", "at"):
                t.add_column(m(f"alarms.col.{key}"))
            for e in events:
                t.add_row(
                    str(e.get("event_id", "")),
                    str(e.get("alarm_id", "")),
                    m(f"event.{e.get('type')}"),
                    self.when(e.get("at"), tz),
                )
            parts.append(t)
        return self._render(*parts)

    def banner(self, event: Mapping[str, Any], alarm: Mapping[str, Any] | None, tz: str | None = None) -> str | None:
        """One loud line for a raised or cleared event (acks are the user's own doing)."""
        kind = event.get("type")
        if kind not in ("raised", "cleared"):
            return None
        alarm = alarm or {}
        meter = (
            self.m("banner.meter", id_medidor=alarm["id_medidor"]) if alarm.get("id_medidor") is not None else ""
        )
        rule = self.rule(alarm.get("rule")) if alarm.get("rule") else "?"
        fields = {
            "alarm_id": event.get("alarm_id"),
            "rule": rule,
            "meter": meter,
            "at": self.when(event.get("at"), tz),
            "value": self.measure(alarm.get("rule"), alarm.get("value")),
            "limit": self.measure(alarm.get("rule"), alarm.get("threshold")),
        }
        line = self.m(f"banner.{kind}", **fields)
        if self.color:
            style = "bold white on red" if kind == "raised" else "bold black on green"
            return self._render(Text(f" {line} ", style=style))
        return f"*** {line} ***\n"

    # -- meters and registrations ------------------------------------------

    def meters(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        m = self.m
        cid = _taxid(str(doc.get("id", "")))
        meters = list(doc.get("meters") or [])
        if not meters:
            return m("meters.none", id=cid) + "\n"
        t = self._table(title=m("meters.title", id=cid))
        t.add_column(m("meters.col.meter"), justify="right")
        t.add_column(m("meters.col.mode"))
        t.add_column(m("meters.col.last_seen"))
        t.add_column(m("meters.col.last_kwh"), justify="right")
        for row in meters:
            t.add_row(
                str(row.get("id_medidor", "")),
                str(row.get("mode", "")),
                self.when(row.get("last_seen"), tz) if row.get("last_seen") else m("never"),
                self.kwh(row.get("last_kwh")) if row.get("last_kwh") is not None else "—",
            )
        return self._render(t)

    def customer_created(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        lig = str(doc.get("ligacao", ""))
        summary = m(
            "result.customer_created",
            id=_taxid(str(doc.get("id", ""))),
            name=doc.get("name", ""),
            ligacao=m("ligacao." + lig) if lig else "?",
            limite_kw=self.num(doc.get("limite_kw"), 2),
            limite_kwh=self.num(doc.get("limite_kwh"), 0),
            tz=doc.get("tz", ""),
        )
        return self._secret(summary, m("result.customer_token", token=doc.get("token", "")), m("result.token_once"))

    def meter_created(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        summary = m(
            "result.meter_created",
            id=_taxid(str(doc.get("id", ""))),
            id_medidor=doc.get("id_medidor", "?"),
            mode=doc.get("mode", "?"),
        )
        return self._secret(summary, m("result.meter_key", key=doc.get("key", "")), m("result.key_once"))

    def _secret(self, summary: str, secret_line: str, warning: str) -> str:
        """A secret on a line of its own, never wrapped, so it can be copied."""
        if self.color:
            bar = "━" * min(self.width, max(len(secret_line), len(warning)))
            # Written around rich, not through it: rich crops to the width.
            return (
                self._render(Text(summary), Text(bar, style="yellow"))
                + f"\x1b[1;33m{secret_line}\x1b[0m\n"
                + self._render(Text(warning, style="yellow"), Text(bar, style="yellow"))
            )
        bar = "=" * min(self.width, max(len(secret_line), len(warning)))
        return f"{summary}\n{bar}\n{secret_line}\n{warning}\n{bar}\n"


def _taxid(digits: str) -> str:
    try:
        from meterd.taxid import format_taxid

        return format_taxid(digits)
    except (ImportError, ValueError):
        return digits


def _meter_totals(value: Any) -> list[tuple[Any, Any]]:
    """``medidores``/``meters`` as (id_medidor, kWh) pairs, whatever the key name."""
    out: list[tuple[Any, Any]] = []
    if not isinstance(value, list):
        return out
    for row in value:
        if not isinstance(row, Mapping):
            continue
        kwh = next((row[k] for k in ("total_kwh", "consumo_kwh", "kwh") if k in row), None)
        out.append((row.get("id_medidor", "?"), kwh))
    return out
