"""Turn the server's JSON into text a person reads: bill, history, alarms, meters.

Every function returns a string, so the same code serves the interactive menu,
the subcommands and the tests. With ``color=True`` (stdout is a terminal) the
text is drawn by rich with colours and box lines; otherwise it is plain ASCII
that survives pipes, logs and ``grep``.

Views are laid out for the renderer's ``width`` and, when it is drawing on a
terminal, its ``height``: tables pick their columns by width and wrap text
rather than cut it, and a chart spreads its bars over columns so that a
month fits on one screen. Both can change between views (the console follows
a terminal resize).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .choices import LIGACAO, METER_MODE
from .messages import SERVER_TEXT_LANG, Messages

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
#: meterd's descriptions of the bill lines every bill has (the flag's aside).
_BILL_ITEMS = {"Energia (TE)": "bill.item.te", "Uso do sistema (TUSD)": "bill.item.tusd"}
#: Below this many cells the alarm message column is too narrow to read, and
#: the alarms table folds value/limit and raised/acknowledged into one column each.
_MESSAGE_MIN_WIDTH = 24
#: Lines a view leaves free under itself on a terminal: the next prompt, and
#: the question above the view, so the view's first line stays on screen.
_PROMPT_LINES = 2


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
    out: list[str] = []
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


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Renderer:
    """Text views of API answers in one language and one output style.

    ``height`` is the terminal's height when the views go to one (``None``
    for pipes and files, which have no screen to fit); ``now`` tells which
    periods of a history are still in the future.
    """

    def __init__(
        self,
        msgs: Messages,
        *,
        color: bool = False,
        width: int = 100,
        height: int | None = None,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.m = msgs
        self.color = color
        self.resize(width, height)
        self.now = now

    def resize(self, width: int, height: int | None) -> None:
        """Lay the next views out for a terminal of this size."""
        self.width = max(40, width)
        self.height = height

    # -- low level ----------------------------------------------------------

    def _console(self, file: io.StringIO | None = None) -> Console:
        return Console(
            file=file or io.StringIO(),
            width=self.width,
            force_terminal=self.color,
            color_system="standard" if self.color else None,
            no_color=not self.color,
            highlight=False,
            emoji=False,
            markup=False,
            soft_wrap=False,
        )

    def _render(self, *items: RenderableType) -> str:
        buf = io.StringIO()
        console = self._console(buf)
        for item in items:
            console.print(item)
        text = buf.getvalue()
        if not self.color:
            text = "\n".join(line.rstrip() for line in text.split("\n"))
        return text.rstrip("\n") + "\n"

    def _lines(self, *items: RenderableType) -> int:
        """How many lines ``items`` take at the current width."""
        return self._render(*items).count("\n")

    def _fits(self, table: Table, spare: int = 0) -> bool:
        """Whether ``table`` fits the width unwrapped, with ``spare`` cells left over."""
        return self._console().measure(table).maximum + spare <= self.width

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

    def _rate(self, value: Any, most: int = 6) -> str:
        """Tariffs keep their own precision (R$ 0,018850/kWh is not R$ 0,02), up to ``most`` decimals."""
        d = decimal_of(value)
        if d is None:
            return str(value)
        exp = d.as_tuple().exponent
        decimals = max(2, -exp if isinstance(exp, int) else 2)
        return self.num(d, min(decimals, most))

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

    def reference(self, ref: Any) -> str:
        """``"2026-11"`` → ``nov/2026`` (pt) or ``Nov 2026`` (en)."""
        try:
            year, month = (int(p) for p in str(ref).split("-"))
            return self.m("date.month", y=year, mon=self.m.month_name(month))
        except (ValueError, IndexError):
            return str(ref)

    # -- bill ---------------------------------------------------------------

    def bill(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        """An itemised "conta de luz": header, priced lines, taxes, total.

        An issued bill is the whole document (:meth:`issued_bill`); a preview
        fits one screen.
        """
        if doc.get("status") == "emitida":
            return self.issued_bill(doc, tz)
        m = self.m
        parts: list[RenderableType] = []
        title = Text(m("bill.title"), style="bold reverse" if self.color else "")
        parts.append(title)

        head = self._grid()
        name = doc.get("name")
        cid = str(doc.get("id", ""))
        head.add_row(m("bill.customer"), f"{name} ({_taxid(cid)})" if name else _taxid(cid))
        head.add_row(m("bill.reference"), self.reference(doc.get("referencia")) + self._status(doc))
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
        measured = f"{self.kwh(consumo)} kWh"
        meters = _meter_totals(doc.get("medidores"))
        if len(meters) > 1:  # each meter's share; one meter's is the whole
            measured += " (" + "; ".join(m("bill.meter_share", id_medidor=i, kwh=self.kwh(v)) for i, v in meters) + ")"
        head.add_row(m("bill.measured"), measured)
        billed = f"{self.kwh(faturado)} kWh"
        c, f = decimal_of(consumo), decimal_of(faturado)
        if c is not None and f is not None and f > c:
            billed = m("bill.minimum", kwh=billed, ligacao=m("ligacao." + lig) if lig else "")
        head.add_row(m("bill.billed"), billed)
        parts.append(head)

        # No outer edge: the bill stays within a 24-line screen with its prompt.
        table = self._table(show_footer=False, show_edge=False)
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
                self._item(item, doc),
                self.kwh(item.get("quantidade_kwh")),
                self._rate(item.get("tarifa")),
                brl(item.get("valor")),
            )
        table.add_section()
        table.add_row(Text(m("bill.subtotal"), style="italic" if self.color else ""), "", "", brl(subtotal))
        tributos = doc.get("tributos") or {}
        aliquotas = tributos.get("aliquotas")
        rates: Mapping[str, Any] = aliquotas if isinstance(aliquotas, Mapping) else {}
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

    def _status(self, doc: Mapping[str, Any]) -> str:
        status = doc.get("status")
        if not status:
            return ""
        key = f"bill.status.previa.{doc.get('mes')}" if status == "previa" else f"bill.status.{status}"
        return f" — {self.m(key)}"

    def issued_bill(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        """The whole issued document, section after section (a view that scrolls): who and
        where, the readings, the quantities, the lines and taxes, adjustments, the total,
        the history and the payment codes. Fits 80 columns."""
        m, dim = self.m, "dim" if self.color else ""
        tz = doc.get("tz") or tz
        parts: list[RenderableType] = []
        title = Text(m("bill.title"), style="bold reverse" if self.color else "")
        title.append("  " + m("bill.number", numero=doc.get("numero")), style="bold" if self.color else "")
        parts.append(title)
        empresa = doc.get("empresa")
        if isinstance(empresa, Mapping):
            parts.append(Text(m("bill.company", nome=empresa.get("nome"), cnpj=_taxid(str(empresa.get("cnpj", ""))))))
            parts.append(Text(str(empresa.get("endereco", "")), style=dim))

        head = self._grid()
        cid = str(doc.get("id", ""))
        head.add_row(m("bill.customer"), f"{doc.get('name')} ({_taxid(cid)})")
        lig = str(doc.get("ligacao", ""))
        head.add_row(m("bill.class"), m("bill.class_value", classe=doc.get("classe", ""), ligacao=m("ligacao." + lig) if lig else ""))
        head.add_row(m("bill.reference"), self.reference(doc.get("referencia")) + self._status(doc))
        period = f"{self.day(doc.get('inicio'), tz)} – {self._end_day(doc.get('fim'), tz)}"
        head.add_row(m("bill.period"), m("bill.days", period=period, dias=doc.get("dias")))
        head.add_row(m("bill.issued"), self.day(doc.get("emissao")))
        head.add_row(m("bill.due"), Text(self.day(doc.get("vencimento")), style="bold" if self.color else ""))
        parts += [head, Text("")]

        readings = self._table(m("bill.readings"), show_edge=False)
        leituras = [r for r in doc.get("leituras") or [] if isinstance(r, Mapping)]
        first = leituras[0] if leituras else {}
        readings.add_column(m("col.meter"), justify="right")
        readings.add_column(m("col.previous", date=self.day(first.get("data_anterior"), tz)), justify="right")
        readings.add_column(m("col.current", date=self.day(first.get("data_atual"), tz)), justify="right")
        readings.add_column(m("col.constant"), justify="right")
        readings.add_column(m("col.consumption"), justify="right")
        for r in leituras:
            readings.add_row(
                str(r.get("id_medidor")),
                self.kwh(r.get("leitura_anterior")) + (" *" if r.get("estimada_anterior") else ""),
                self.kwh(r.get("leitura_atual")) + (" *" if r.get("estimada_atual") else ""),
                str(r.get("constante")),
                self.kwh(r.get("consumo_kwh")),
            )
        parts += [readings, Text("")]

        quantities = self._grid()
        quantities.add_row(m("bill.measured"), f"{self.kwh(doc.get('consumo_kwh'))} kWh, "
                           + m("bill.average", kwh=self.kwh(doc.get("media_diaria_kwh"))))
        billed = f"{self.kwh(doc.get('faturado_kwh'))} kWh"
        minimo = doc.get("minimo")
        if isinstance(minimo, Mapping) and minimo.get("aplicado"):
            billed = m("bill.minimum", kwh=billed, ligacao=m("ligacao." + lig) if lig else "")
        quantities.add_row(m("bill.billed"), billed)
        flag = str(doc.get("bandeira", ""))
        quantities.add_row(m("bill.flag"), Text(m("flag." + flag), style=_FLAG_STYLES.get(flag, "") if self.color else ""))
        parts += [quantities, Text("")]

        items = self._table(show_edge=False)
        items.add_column(m("col.description"))
        items.add_column("kWh", justify="right")
        items.add_column(m("col.tariff"), justify="right")
        items.add_column(m("col.rate_taxes"), justify="right")
        items.add_column(m("col.amount"), justify="right")
        for item in doc.get("itens") or []:
            items.add_row(self._item(item, doc), self.kwh(item.get("quantidade_kwh")), self._rate(item.get("tarifa")),
                          self._rate(item.get("tarifa_com_tributos"), 8), brl(item.get("valor")))
        parts += [items, Text("")]

        tributos = doc.get("tributos") or {}
        aliquotas = tributos.get("aliquotas")
        rates: Mapping[str, Any] = aliquotas if isinstance(aliquotas, Mapping) else {}
        taxes = self._table(show_edge=False)
        for name, justify in ((m("col.tax"), "left"), (m("col.base"), "right"), (m("col.tax_rate"), "right"), (m("col.amount"), "right")):
            taxes.add_column(name, justify=justify)  # type: ignore[arg-type]
        for key, label in (("icms", "ICMS"), ("pis", "PIS"), ("cofins", "COFINS")):
            taxes.add_row(label, brl(tributos.get("base")), self._percent(rates.get(key)), brl(tributos.get(key)))
        taxes.add_section()
        taxes.add_row(Text(m("bill.taxes"), style="italic" if self.color else ""), "", "", brl(tributos.get("valor")))
        parts += [taxes, Text("")]

        totals = self._table(show_edge=False, show_header=False)
        totals.add_column(ratio=1)
        totals.add_column(justify="right")
        totals.add_column(justify="right")
        totals.add_row(m("bill.month_total"), "", brl(doc.get("total_mes")))
        for a in doc.get("ajustes") or []:
            label = a.get("descricao") if self.m.lang == SERVER_TEXT_LANG else m("bill.adjustment", month=self.reference(a.get("referencia")))
            change = m("bill.adjustment_kwh", billed=self.kwh(a.get("consumo_faturado_kwh")), now=self.kwh(a.get("consumo_corrigido_kwh")))
            totals.add_row(str(label), change, brl(a.get("valor")))
        credito = doc.get("credito_anterior")
        if isinstance(credito, Mapping):
            totals.add_row(m("bill.credit", numero=credito.get("numero")), "", brl(credito.get("valor")))
        totals.add_section()
        total_style = "bold" if self.color else ""
        totals.add_row(Text(m("bill.total"), style=total_style), "", Text(brl(doc.get("total")), style=total_style))
        parts.append(totals)
        if doc.get("estimado"):
            parts.append(Text(m("bill.estimated"), style="yellow" if self.color else ""))

        parts.append(Text(""))
        parts.append(Text(m("bill.history"), style="bold" if self.color else ""))
        parts.append(self._months(doc.get("historico") or [], str(doc.get("referencia"))))

        parts.append(Text(""))
        parts.append(Text(m("bill.pay", due=self.day(doc.get("vencimento"))), style="bold" if self.color else ""))
        if doc.get("linha_digitavel"):
            line = str(doc["linha_digitavel"])
            parts.append(Text(f"{m('bill.linha')}:", style=dim))
            parts.append(Text(" ".join(f"{line[i:i + 11]}-{line[i + 11]}" for i in range(0, len(line), 12))))
            parts.append(Text(f"{m('bill.pix')}:", style=dim))
            pix = str(doc.get("pix", ""))
            parts.append(Text("\n".join(pix[i : i + self.width] for i in range(0, len(pix), self.width))))
            parts.append(Text(m("bill.codes_hint", id=cid), style=dim))
        else:
            parts.append(Text(m("bill.nothing_to_pay")))
        return self._render(*parts)

    def billing_run(self, doc: Mapping[str, Any]) -> str:
        """A billing run's summary: its month, its state, what it did."""
        m = self.m
        title = m("billing.title", referencia=self.reference(doc.get("referencia")), execucao=doc.get("execucao"),
                  estado=m(f"billing.state.{doc.get('estado')}"))
        grid = self._grid()
        for key in ("clientes", "processados", "emitidas", "ja_emitidas", "ignoradas", "ajustes", "erros"):
            grid.add_row(m(f"billing.{key}"), self.num(doc.get(key), 0))
        grid.add_row(m("billing.valor_total"), brl(doc.get("valor_total")))
        grid.add_row(m("billing.started"), self.when(doc.get("iniciada")))
        if doc.get("concluida"):
            grid.add_row(m("billing.finished"), self.when(doc.get("concluida")))
        parts: list[RenderableType] = [Text(title, style="bold" if self.color else ""), grid]
        if doc.get("mensagem"):
            parts.append(Text(m("billing.message", message=doc["mensagem"]), style="yellow" if self.color else ""))
        return self._render(*parts)

    def _months(self, months: Iterable[Mapping[str, Any]], current: str) -> RenderableType:
        """The history: a bar per month, its kWh and its daily average; months not billed say so."""
        rows = []
        for month in months:
            label = self.reference(month.get("referencia"))
            kwh = decimal_of(month.get("consumo_kwh"))
            rows.append((label, kwh, month, month.get("referencia") == current))
        top = max((k for _, k, _, _ in rows if k is not None), default=Decimal(0))
        label_w = max((len(r[0]) for r in rows), default=0)
        bar_w = max(10, min(30, self.width - label_w - 40))
        lines = []
        for label, kwh, month, this in rows:
            line = Text(label.rjust(label_w) + " |")
            if kwh is None:
                line.append(" " + self.m("bill.history_none"), style="dim" if self.color else "")
            else:
                line.append(self._bar(kwh, top, bar_w).ljust(bar_w), style=("bold cyan" if this else "cyan") if self.color else "")
                line.append(f" {self.kwh(month.get('consumo_kwh')):>11}  "
                            + self.m("bill.history_day", kwh=self.kwh(month.get("media_diaria_kwh"))))
            lines.append(line)
        return Text("\n").join(lines)

    def _item(self, item: Mapping[str, Any], bill: Mapping[str, Any]) -> str:
        """A bill line's description in the screen's language.

        meterd writes them in :data:`~clients.console.messages.SERVER_TEXT_LANG`;
        elsewhere the three lines every bill has (energy, distribution, the
        month's flag) come from the catalog, and any other is shown as written.
        """
        text = str(item.get("descricao", ""))
        if self.m.lang == SERVER_TEXT_LANG:
            return text
        flag = f"flag.{bill.get('bandeira')}"
        if text.startswith("Bandeira ") and self.m.has(flag):
            return self.m("bill.item.flag", flag=self.m(flag))
        key = _BILL_ITEMS.get(text)
        return self.m(key) if key else text

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
        """The total, and a bar per hour, day or month; periods to come are left blank.

        On a terminal the bars are spread over as many columns as it takes for
        the whole view to fit its height (a month's 31 days in two columns at
        24 lines); elsewhere they are one column.
        """
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
        head: list[RenderableType] = []
        head.append(Text(m(f"hist.title.{kind}", label=label), style="bold" if self.color else ""))
        totals = self._grid()
        meters = _meter_totals(doc.get("meters"))
        if len(meters) > 1:
            for i, v in meters:
                totals.add_row(m("hist.meter", id_medidor=i), f"{self.kwh(v)} kWh")
        star = " *" if doc.get("estimated") else ""
        totals.add_row(m("hist.total"), f"{self.kwh(doc.get('total_kwh'))} kWh{star}")
        head.append(totals)

        buckets = list(doc.get("buckets") or [])
        tail: list[RenderableType] = []
        if any(b.get("estimated") for b in buckets) or doc.get("estimated"):
            tail.append(Text(m("hist.estimated"), style="yellow" if self.color else ""))
        if tz:
            tail.append(Text(m("hist.tz", tz=tz), style="dim" if self.color else ""))
        if not buckets:
            return self._render(*head, Text(m("hist.empty")), *tail)
        chart_title = Text(m("hist.chart", unit=m(f"hist.unit.{kind}")), style="bold" if self.color else "")
        rows = None
        if self.height is not None:
            rows = self.height - _PROMPT_LINES - self._lines(*head, chart_title, *tail)
        return self._render(*head, chart_title, self._chart(kind, buckets, tz, rows), *tail)

    def _chart(
        self, kind: str, buckets: Iterable[Mapping[str, Any]], tz: str | None, rows: int | None
    ) -> RenderableType:
        """Horizontal bars in as few columns as fit ``rows`` lines (one if ``None``)."""
        now = self.now()
        entries: list[tuple[str, Decimal | None, str, bool]] = []
        for b in buckets:
            start = self._local(b.get("start"), tz)
            label = self.bucket_label(kind, b.get("start"), tz)
            if start is not None and start.tzinfo is not None and start > now:
                entries.append((label, None, "", False))  # not there yet: nothing measured, not zero
                continue
            amount = decimal_of(b.get("kwh")) or Decimal(0)
            est = bool(b.get("estimated"))
            entries.append((label, amount, self.kwh(b.get("kwh")) + (" *" if est else ""), est))
        gap = 3
        columns = 1 if rows is None else max(1, math.ceil(len(entries) / max(1, rows)))
        label_w = max(len(e[0]) for e in entries)
        value_w = max(len(e[2]) for e in entries)
        # Never so many columns that a bar has no room; the view then scrolls.
        while columns > 1 and (self.width - gap * (columns - 1)) // columns - label_w - value_w - 3 < 4:
            columns -= 1
        column_w = (self.width - gap * (columns - 1)) // columns
        bar_w = max(4 if columns > 1 else 10, min(60, column_w - label_w - value_w - 4))
        top = max((e[1] for e in entries if e[1] is not None), default=Decimal(0))
        cells: list[Text] = []
        for label, d, shown, est in entries:
            cell = Text(label.rjust(label_w) + " |")
            if d is not None:
                cell.append(self._bar(d, top, bar_w), style=("yellow" if est else "cyan") if self.color else "")
                cell.append(" " + shown)
            cells.append(cell)
        if columns == 1:
            return Text("\n").join(cells)
        per_column = math.ceil(len(cells) / columns)
        grid = Table.grid(padding=(0, gap))
        for _ in range(columns):
            grid.add_column(width=column_w, no_wrap=True)
        for r in range(per_column):
            grid.add_row(*[cells[c * per_column + r] if c * per_column + r < len(cells) else "" for c in range(columns)])
        return grid

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
        key = f"rule.{rule}"
        return self.m(key) if self.m.has(key) else str(rule)

    def measure(self, rule: Any, value: Any) -> str:
        """An alarm's value or limit with its unit (a duration for a silent meter)."""
        unit = _RULE_UNITS.get(str(rule), "")
        if unit == "s":
            return self.duration(value)
        return f"{self.num(value, 2)} {unit}".strip()

    def duration(self, seconds: Any) -> str:
        """``900`` → ``15 min``: the largest unit that keeps at least two of it."""
        d = decimal_of(seconds)
        if d is None:
            return "—" if seconds is None else str(seconds)
        s = int(d)
        for unit, size in (("days", 86_400), ("h", 3_600), ("min", 60)):
            if s >= 2 * size:
                return self.m(f"duration.{unit}", n=s // size)
        return self.m("duration.s", n=s)

    def alarm_message(self, alarm: Mapping[str, Any]) -> str:
        """What the alarm is about, in the screen's language.

        The server's ``message`` is written for people in
        :data:`~clients.console.messages.SERVER_TEXT_LANG`; on a screen in
        another language the catalog says the same from the rule, value and limit.
        """
        message = alarm.get("message")
        if isinstance(message, str) and message and self.m.lang == SERVER_TEXT_LANG:
            return message
        rule = alarm.get("rule")
        fields = {
            "rule": self.rule(rule),
            "value": self.measure(rule, alarm.get("value")),
            "limit": self.measure(rule, alarm.get("threshold")),
        }
        key = f"alarm.message.{rule}"
        return self.m(key if self.m.has(key) else "alarm.message.other", **fields)

    def alarms(self, doc: Mapping[str, Any], tz: str | None = None) -> str:
        """Active alarms with their message, then the latest events.

        All columns side by side when they fit the width with room for the
        message; otherwise value and limit, raised and acknowledged, share a
        column each, and the message goes under the rule's name.
        """
        m = self.m
        parts: list[RenderableType] = []
        active = [a for a in doc.get("active") or [] if isinstance(a, Mapping)]
        if not active:
            parts.append(Text(m("alarms.none"), style="green" if self.color else ""))
        else:
            wide = self._alarms_wide(active, tz, with_message=False)
            if self._fits(wide, spare=_MESSAGE_MIN_WIDTH + 3):
                parts.append(self._alarms_wide(active, tz, with_message=True))
            else:
                parts.append(self._alarms_folded(active, tz))
        events = [e for e in doc.get("events") or [] if isinstance(e, Mapping)][-10:]
        if events:
            t = self._table(title=m("alarms.events"))
            for key in ("event", "id", "type", "at"):
                t.add_column(m(f"alarms.col.{key}"), no_wrap=True)
            for e in events:
                kind = f"event.{e.get('type')}"
                t.add_row(
                    str(e.get("event_id", "")),
                    str(e.get("alarm_id", "")),
                    m(kind) if m.has(kind) else str(e.get("type")),
                    self.when(e.get("at"), tz),
                )
            parts.append(t)
        return self._render(*parts)

    def _alarm_cells(self, a: Mapping[str, Any], tz: str | None) -> dict[str, Any]:
        m = self.m
        rule = a.get("rule")
        return {
            "id": str(a.get("alarm_id", "")),
            "rule": Text(self.rule(rule), style="bold red" if self.color and not a.get("acked_at") else ""),
            "meter": str(a["id_medidor"]) if a.get("id_medidor") is not None else m("alarms.all"),
            "value": self.measure(rule, a.get("value")),
            "limit": self.measure(rule, a.get("threshold")),
            "raised": self.when(a.get("raised_at"), tz),
            "acked": self.when(a.get("acked_at"), tz) if a.get("acked_at") else m("alarms.no"),
            "message": self.alarm_message(a),
        }

    def _alarms_wide(self, active: list[Mapping[str, Any]], tz: str | None, *, with_message: bool) -> Table:
        m = self.m
        t = self._table(title=m("alarms.active"))
        keys = ["id", "rule", "meter", "value", "limit", "raised", "acked"]
        for key in keys:
            t.add_column(m(f"alarms.col.{key}"), justify="right" if key in ("id", "value", "limit") else "left", no_wrap=True)
        if with_message:
            keys.append("message")
            t.add_column(m("alarms.col.message"), ratio=1, overflow="fold")
        for a in active:
            cells = self._alarm_cells(a, tz)
            t.add_row(*(cells[k] for k in keys))
        return t

    def _alarms_folded(self, active: list[Mapping[str, Any]], tz: str | None) -> Table:
        m = self.m
        t = self._table(title=m("alarms.active"))
        t.add_column(m("alarms.col.id"), justify="right", no_wrap=True)
        t.add_column(m("alarms.col.alarm"), ratio=1, overflow="fold")
        t.add_column(m("alarms.col.meter"), no_wrap=True)
        t.add_column(m("alarms.col.value") + "\n" + m("alarms.col.limit"), justify="right", no_wrap=True)
        t.add_column(m("alarms.col.raised") + "\n" + m("alarms.col.acked"), no_wrap=True)
        for a in active:
            c = self._alarm_cells(a, tz)
            alarm = Text.assemble(c["rule"], "\n", c["message"])
            t.add_row(c["id"], alarm, c["meter"], f"{c['value']}\n{c['limit']}", f"{c['raised']}\n{c['acked']}")
        return t

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
                METER_MODE.label(m, str(row.get("mode", ""))),
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
            mode=METER_MODE.label(m, str(doc.get("mode", "?"))),
        )
        return self._secret(summary, m("result.meter_key", key=doc.get("key", "")), m("result.key_once"))

    def new_token(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        summary = m("result.new_token", id=_taxid(str(doc.get("id", ""))))
        return self._secret(summary, m("result.customer_token", token=doc.get("token", "")), m("result.token_once"))

    def new_key(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        summary = m("result.new_key", id=_taxid(str(doc.get("id", ""))), id_medidor=doc.get("id_medidor", "?"))
        return self._secret(summary, m("result.meter_key", key=doc.get("key", "")), m("result.key_once"))

    # -- operations (the operator's management) ------------------------------

    def search(self, doc: Mapping[str, Any], more: str | None = None) -> str:
        """A page of customers found; ``more`` is the line that says how to ask the next page (if any)."""
        m = self.m
        results = [r for r in doc.get("results") or [] if isinstance(r, Mapping)]
        if not results:
            return m("search.none", q=doc.get("q", "")) + "\n"
        t = self._table(title=m("search.title", q=doc.get("q", "")))
        rows = [
            (_taxid(str(r.get("id", ""))), str(r.get("name", "")), LIGACAO.label(m, str(r.get("ligacao", ""))), str(r.get("meters", "")))
            for r in results
        ]

        def fixed(i: int, header: str) -> int:  # the columns but the name's are never cut
            return max(len(header), *(len(row[i]) for row in rows))

        widths = [fixed(0, m("search.col.id")), fixed(2, m("search.col.ligacao")), fixed(3, m("search.col.meters"))]
        name_width = max(10, self.width - sum(widths) - 13)  # 13: the borders and padding of four columns
        t.add_column(m("search.col.id"), no_wrap=True, min_width=widths[0])
        # one line a customer, so that a page fits its screen
        t.add_column(m("search.col.name"), no_wrap=True, overflow="ellipsis", max_width=name_width)
        t.add_column(m("search.col.ligacao"), no_wrap=True, min_width=widths[1])
        t.add_column(m("search.col.meters"), justify="right", no_wrap=True, min_width=widths[2])
        for row in rows:
            t.add_row(*row)
        return self._render(t, *([Text(more)] if more and doc.get("cursor") else []))

    def record(self, doc: Mapping[str, Any]) -> str:
        """A customer's record: details, the meters with their state, the active alarms."""
        m = self.m
        cid = _taxid(str(doc.get("id", "")))
        parts: list[RenderableType] = [Text(m("record.title", id=cid), style="bold" if self.color else "")]
        head = self._grid()
        lig = str(doc.get("ligacao", ""))
        head.add_row(m("record.name"), str(doc.get("name", "")))
        head.add_row(m("record.ligacao"), m("ligacao." + lig) if lig else "—")
        head.add_row(m("record.limits"), m("record.limits_value", kw=self.num(doc.get("limite_kw"), 2), kwh=self.num(doc.get("limite_kwh"), 0)))
        head.add_row(m("record.tz"), str(doc.get("tz", "")))
        head.add_row(m("record.since"), self.day(doc.get("created_at")))
        parts.append(head)
        meters = [row for row in doc.get("meters") or [] if isinstance(row, Mapping)]
        if meters:
            t = self._table(title=m("record.meters"))
            t.add_column(m("meters.col.meter"), justify="right", no_wrap=True)
            t.add_column(m("meters.col.mode"), no_wrap=True)
            t.add_column(m("meters.col.last_seen"), no_wrap=True)
            t.add_column(m("meters.col.last_kwh"), justify="right", no_wrap=True)
            t.add_column(m("record.col.state"), ratio=1, overflow="fold")
            for row in meters:
                t.add_row(
                    str(row.get("id_medidor", "")),
                    METER_MODE.label(m, str(row.get("mode", ""))),
                    self.when(row.get("last_reading_at")) if row.get("last_reading_at") else m("never"),
                    self.kwh(row.get("last_kwh")) if row.get("last_kwh") is not None else "—",
                    self._meter_state(row),
                )
            parts.append(t)
        else:
            parts.append(Text(m("meters.none", id=cid)))
        return self._render(*parts) + self.alarms({"active": doc.get("active") or []})

    def _meter_state(self, row: Mapping[str, Any]) -> str:
        m = self.m
        if row.get("retired_at"):
            states = [m("state.retired", at=self.when(row.get("retired_at")))]
        else:
            states = [m("state.silent" if row.get("silent") else "state.in_service")]
        if row.get("replaces") is not None:
            states.append(m("state.replaces", n=row["replaces"]))
        if row.get("replaced_by") is not None:
            states.append(m("state.replaced_by", n=row["replaced_by"]))
        return "; ".join(states)

    def updated(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        cid = _taxid(str(doc.get("id", "")))
        changed = [str(f) for f in doc.get("changed") or []]
        if not changed:
            return m("result.unchanged", id=cid) + "\n"
        return m("result.updated", id=cid, fields=", ".join(m(f"fieldname.{f}") if m.has(f"fieldname.{f}") else f for f in changed)) + "\n"

    def retired(self, doc: Mapping[str, Any]) -> str:
        return self.m(
            "result.retired", id=_taxid(str(doc.get("id", ""))), id_medidor=doc.get("id_medidor", "?"),
            kwh=self.kwh(doc.get("valor")), at=self.when(doc.get("retired_at")),
        ) + "\n"

    def replaced(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        summary = m(
            "result.replaced", id=_taxid(str(doc.get("id", ""))), id_medidor=doc.get("id_medidor", "?"),
            replaces=doc.get("replaces", "?"), mode=METER_MODE.label(m, str(doc.get("mode", "?"))),
            kwh=self.kwh(doc.get("valor")), at=self.when(doc.get("installed_at")),
        )
        return self._secret(summary, m("result.meter_key", key=doc.get("key", "")), m("result.key_once"))

    def audit(self, doc: Mapping[str, Any], more: str | None = None) -> str:
        """A page of the audit log, newest first: two lines an entry (who and when, then what), cut to the width."""
        m = self.m
        entries = [e for e in doc.get("entries") or [] if isinstance(e, Mapping)]
        if not entries:
            return m("audit.none") + "\n"
        title = m("audit.title_of", id=_taxid(str(doc["id"]))) if doc.get("id") else m("audit.title")
        parts: list[RenderableType] = [Text(title, style="bold" if self.color else "")]
        number = max(len(str(e.get("audit_id", ""))) for e in entries)
        for e in entries:
            head = [f"{str(e.get('audit_id', '')).rjust(number)}", self.when(e.get("at"))]
            if not doc.get("id"):
                head.append(_taxid(str(e.get("id", ""))))
            head.append(m("audit.who", who=e.get("who", ""), address=e.get("address", "")))
            for line, style in (("  ".join(head), "dim"), (" " * (number + 2) + self._audit_action(e), "")):
                text = Text(line, style=style if self.color else "")
                text.truncate(self.width, overflow="ellipsis")
                parts.append(text)
        if more and doc.get("cursor"):
            parts.append(Text(more))
        return self._render(*parts)

    def _audit_action(self, e: Mapping[str, Any]) -> str:
        m = self.m
        action = str(e.get("action", ""))
        raw_new = e.get("new")
        new: Mapping[str, Any] = raw_new if isinstance(raw_new, Mapping) else {}
        key = f"audit.action.{action}"
        if not m.has(key):
            return m("audit.action.other", action=action)
        field = str(e.get("field") or "")
        return m(
            key,
            n=e.get("id_medidor", ""),
            field=m(f"fieldname.{field}") if m.has(f"fieldname.{field}") else field,
            old=self._audit_value(field, e.get("old")),
            new=self._audit_value(field, e.get("new")),
            kwh=self.kwh(new.get("valor")),
            at=self.when(new.get("timestamp")),
            replaces=new.get("replaces", ""),
        )

    def _audit_value(self, field: str, value: Any) -> str:
        if value is None:
            return "—"
        if field == "ligacao":
            return self.m(f"ligacao.{value}") if self.m.has(f"ligacao.{value}") else str(value)
        if field in ("limite_kw", "limite_kwh"):
            return self.num(value, 3).rstrip("0").rstrip(self.m("num.decimal"))
        if isinstance(value, Mapping):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    # -- alarm webhooks (operator) -------------------------------------------

    def webhook_created(self, doc: Mapping[str, Any]) -> str:
        m = self.m
        whom = _taxid(str(doc["id"])) if doc.get("id") else m("webhooks.everyone")
        summary = m("result.webhook_created", webhook_id=doc.get("webhook_id", "?"), whom=whom, url=doc.get("url", ""))
        return self._secret(summary, m("result.webhook_secret", secret=doc.get("secret", "")), m("result.secret_once"))

    def webhook_removed(self, doc: Mapping[str, Any]) -> str:
        return self.m("result.webhook_removed", webhook_id=doc.get("webhook_id", "?"), url=doc.get("url", "")) + "\n"

    def webhooks(self, doc: Mapping[str, Any]) -> str:
        """Each webhook: where it sends, whose events, how far it got, and whether it is failing.

        Two figures share a column (cursor over backlog, last delivery over
        last failure) and a failing webhook's error goes under its URL, so the
        table fits 80 columns with room for the URL, which wraps rather than
        being cut.
        """
        m = self.m
        hooks = [w for w in doc.get("webhooks") or [] if isinstance(w, Mapping)]
        if not hooks:
            return m("webhooks.none") + "\n"
        t = self._table(title=m("webhooks.title"))
        t.add_column(m("webhooks.col.id"), justify="right", no_wrap=True)
        t.add_column(m("webhooks.col.url"), ratio=1, overflow="fold")
        t.add_column(m("webhooks.col.whom"), no_wrap=True)
        t.add_column(m("webhooks.col.position"), justify="right", no_wrap=True)
        t.add_column(m("webhooks.col.times"), no_wrap=True)
        for w in hooks:
            url = Text(str(w.get("url", "")))
            if w.get("failures"):
                failing = m("webhooks.failing", error=w.get("last_error") or "?", n=w["failures"])
                url.append("\n" + failing, style="bold red" if self.color else "")
            t.add_row(
                str(w.get("webhook_id", "")),
                url,
                _taxid(str(w["id"])) if w.get("id") else m("webhooks.all"),
                f"{w.get('cursor', '—')}\n{self.num(w.get('backlog'), 0)}",
                f"{self.when(w['last_success']) if w.get('last_success') else m('never')}\n"
                f"{self.when(w['last_failure']) if w.get('last_failure') else '—'}",
            )
        return self._render(t)

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
