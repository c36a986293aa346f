"""Bar charts of consumption as inline SVG, drawn on the server.

No chart library runs in the browser: a chart is a few dozen ``<rect>`` and
``<text>`` elements the server writes once, so it prints, works without
JavaScript and costs the phone nothing. The SVG is built with ElementTree, so
every label is escaped by construction, and returned as a string that
``meterd.portal.layout.svg`` embeds in a page (the same way the bill embeds
the Pix QR code and the barcode).

What a chart promises:

* ``role="img"`` named by its ``<title>`` and described by its ``<desc>``
  (``aria-labelledby``/``aria-describedby``), and the page puts the same
  :class:`Bar` list in a visually hidden table: the numbers are readable
  without the picture;
* axis labels (unit, and what a bar is) and round tick values (1, 2, 2.5 or 5
  times a power of ten);
* a bucket that has not happened yet is *blank* (no bar), never a zero bar;
  an estimated bucket is hatched (``class="bar-est"``) and the legend says
  what the hatching means;
* no ``style`` attributes: colours come from the stylesheet's classes, so the
  page's ``Content-Security-Policy`` needs no ``'unsafe-inline'``.

Pure module: standard library and :mod:`meterd.portal.fmt`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any, Final

from meterd.portal.fmt import Fmt, decimal_of

__all__ = ["Bar", "bar_chart", "bill_months_bars", "bill_months_chart", "history_bars", "history_chart", "nice_ticks"]

SVG_NS: Final = "http://www.w3.org/2000/svg"

# Geometry, in SVG user units (the stylesheet scales the whole drawing).
# Narrow enough that 12-unit text stays legible on a phone; the stylesheet
# enlarges the text on narrow screens.
_WIDTH: Final = 480
_HEIGHT: Final = 240
_LEFT: Final = 50  # tick labels
_RIGHT: Final = 8
_TOP: Final = 34  # the unit and the legend
_BOTTOM: Final = 48  # tick labels and the axis title
_BAR_SHARE: Final = Decimal("0.7")  # of each slot; the rest is the gap
_NICE_STEPS: Final = (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10))


@dataclass(frozen=True)
class Bar:
    """One bucket: what the text alternative says and what the chart draws.

    ``kwh`` None is a bucket that has not happened yet (drawn blank);
    ``tick`` is the label under the bar, None where the axis would be crowded;
    ``current`` marks the bucket the page is about (the bill's own month).
    """

    label: str
    tick: str | None
    kwh: Decimal | None
    estimated: bool = False
    current: bool = False


def nice_ticks(maximum: Decimal, count: int = 4) -> list[Decimal]:
    """Round axis values from 0 to at least ``maximum``, about ``count`` steps.

    The step is 1, 2, 2.5 or 5 times a power of ten, so labels read
    ``0 5 10 15`` or ``0 0,25 0,5``, never ``0 3,7 7,4``. An empty chart
    (``maximum`` 0) still gets an axis from 0 to 1.
    """
    if maximum <= 0:
        return [Decimal(0), Decimal(1)]
    raw = maximum / count
    magnitude = Decimal(1).scaleb(raw.adjusted())
    step = next(s * magnitude for s in _NICE_STEPS if s * magnitude >= raw)
    steps = int((maximum / step).to_integral_value(rounding=ROUND_CEILING))
    return [(step * i).normalize() for i in range(steps + 1)]


def _places(ticks: Sequence[Decimal]) -> int:
    return max(max(0, -t.as_tuple().exponent) for t in ticks)  # type: ignore[operator]


def _num(value: Decimal | float | int) -> str:
    """A coordinate: at most two decimals, no exponent, no trailing zeros."""
    text = f"{Decimal(value).quantize(Decimal('0.01')):f}".rstrip("0").rstrip(".")
    return text or "0"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def bar_chart(
    bars: Sequence[Bar],
    fmt: Fmt,
    *,
    chart_id: str,
    title: str,
    description: str,
    x_label: str,
    places: int = 1,
) -> str:
    """The SVG of ``bars`` (kWh), named ``title`` and described by ``description``.

    ``chart_id`` prefixes the ids inside (title, desc, hatch pattern), so two
    charts can share a page. ``places`` is the precision of the per-bar
    tooltips.
    """
    values = [b.kwh for b in bars if b.kwh is not None]
    ticks = nice_ticks(max(values, default=Decimal(0)))
    top = ticks[-1]
    plot_w = Decimal(_WIDTH - _LEFT - _RIGHT)
    plot_h = Decimal(_HEIGHT - _TOP - _BOTTOM)
    base_y = Decimal(_HEIGHT - _BOTTOM)

    svg = ET.Element(
        "svg",
        {
            "xmlns": SVG_NS,
            "viewBox": f"0 0 {_WIDTH} {_HEIGHT}",
            "class": "chart",
            "role": "img",
            "aria-labelledby": f"{chart_id}-title",
            "aria-describedby": f"{chart_id}-desc",
            "id": chart_id,
        },
    )
    _sub(svg, "title", title, id=f"{chart_id}-title")
    _sub(svg, "desc", description, id=f"{chart_id}-desc")

    hatch_id = f"{chart_id}-hatch"
    defs = _sub(svg, "defs")
    pattern = _sub(
        defs,
        "pattern",
        id=hatch_id,
        width="6",
        height="6",
        patternUnits="userSpaceOnUse",
        patternTransform="rotate(45)",
    )
    _sub(pattern, "rect", width="6", height="6", class_="hatch-bg")
    _sub(pattern, "line", x1="0", y1="0", x2="0", y2="6", class_="hatch-line")

    # The grid and the value axis.
    tick_places = _places(ticks)
    grid = _sub(svg, "g", class_="grid")
    labels = _sub(svg, "g", class_="tick-labels y", text_anchor="end")
    for tick in ticks:
        y = base_y - plot_h * tick / top
        _sub(grid, "line", x1=_num(_LEFT), x2=_num(_WIDTH - _RIGHT), y1=_num(y), y2=_num(y))
        _sub(labels, "text", fmt.number(tick, tick_places), x=_num(_LEFT - 6), y=_num(y + 4))
    _sub(svg, "text", "kWh", class_="axis-title", x="4", y="14")
    _sub(svg, "text", x_label, class_="axis-title", x=_num(_LEFT + plot_w / 2), y=_num(_HEIGHT - 6), text_anchor="middle")

    # The bars and their ticks.
    slot = plot_w / max(len(bars), 1)
    width = slot * _BAR_SHARE
    drawn = _sub(svg, "g", class_="bars")
    ticks_x = _sub(svg, "g", class_="tick-labels x", text_anchor="middle")
    for i, bar in enumerate(bars):
        x = _LEFT + slot * i + (slot - width) / 2
        if bar.tick is not None:
            _sub(ticks_x, "text", bar.tick, x=_num(x + width / 2), y=_num(base_y + 18))
        if bar.kwh is None:
            continue
        height = plot_h * bar.kwh / top
        classes = "bar-est" if bar.estimated else "bar"
        attrs = {"class": classes + (" current" if bar.current else "")}
        if bar.estimated:
            attrs["fill"] = f"url(#{hatch_id})"
        rect = _sub(drawn, "rect", x=_num(x), y=_num(base_y - height), width=_num(width), height=_num(height), **attrs)
        note = f" ({fmt.t('chart.estimated')})" if bar.estimated else ""
        _sub(rect, "title", f"{bar.label}: {fmt.kwh(bar.kwh, places)}{note}")
    _sub(svg, "line", class_="baseline", x1=_num(_LEFT), x2=_num(_WIDTH - _RIGHT), y1=_num(base_y), y2=_num(base_y))

    # The legend explains the hatching whenever a hatched bar is drawn.
    if any(b.estimated and b.kwh is not None for b in bars):
        legend = _sub(svg, "g", class_="legend")
        x0 = _WIDTH - _RIGHT - 220
        _sub(legend, "rect", x=_num(x0), y="4", width="14", height="14", class_="bar")
        _sub(legend, "text", fmt.t("chart.measured"), x=_num(x0 + 20), y="16")
        _sub(legend, "rect", x=_num(x0 + 105), y="4", width="14", height="14", class_="bar-est", fill=f"url(#{hatch_id})")
        _sub(legend, "text", fmt.t("chart.estimated"), x=_num(x0 + 125), y="16")
    return ET.tostring(svg, encoding="unicode")


def _describe(bars: Sequence[Bar], fmt: Fmt, places: int) -> str:
    """The ``<desc>``: the total, the largest bucket, and what is estimated or still to come."""
    measured = [b for b in bars if b.kwh is not None]
    if not measured:
        return fmt.t("chart.desc.empty")
    total = sum((b.kwh for b in measured if b.kwh is not None), Decimal(0))
    peak = max(measured, key=lambda b: b.kwh or 0)
    parts = [fmt.t("chart.desc", total=fmt.kwh(total, places), peak=peak.label, peak_kwh=fmt.kwh(peak.kwh or 0, places))]
    estimated = sum(1 for b in measured if b.estimated)
    if estimated:
        parts.append(fmt.t("chart.desc.estimated", count=estimated))
    future = len(bars) - len(measured)
    if future:
        parts.append(fmt.t("chart.desc.future", count=future))
    return " ".join(parts)


_KIND_PLACES: Final = {"D": 2, "M": 1, "Y": 0}


def history_bars(history: Mapping[str, Any], fmt: Fmt, *, now: str | datetime) -> list[Bar]:
    """The buckets of an API ``History`` as bars; those starting after ``now`` are blank.

    Hourly buckets are labelled every third hour, daily ones on the 1st and
    every fifth day, monthly ones all twelve: what fits a phone's width.
    """
    moment = now if isinstance(now, datetime) else datetime.fromisoformat(now)
    kind = history["kind"]
    bars = []
    for bucket in history["buckets"]:
        start = datetime.fromisoformat(bucket["start"])
        if kind == "D":
            label, tick = fmt.hour(start), (fmt.hour(start) if start.hour % 3 == 0 else None)
        elif kind == "M":
            label, tick = fmt.day(start), (str(start.day) if start.day == 1 or start.day % 5 == 0 else None)
        else:
            label, tick = fmt.month(start), fmt.month_name(start)
        future = start >= moment
        bars.append(Bar(label, tick, None if future else decimal_of(bucket["kwh"]), bool(bucket["estimated"]) and not future))
    return bars


def history_chart(history: Mapping[str, Any], fmt: Fmt, *, now: str | datetime, chart_id: str = "history-chart") -> str:
    """The chart of an API ``History`` (kind D, M or Y) as of ``now``."""
    bars = history_bars(history, fmt, now=now)
    kind = history["kind"]
    places = _KIND_PLACES[kind]
    return bar_chart(
        bars,
        fmt,
        chart_id=chart_id,
        title=fmt.t(f"chart.history.{kind}", period=fmt.period(kind, history["start"])),
        description=_describe(bars, fmt, places),
        x_label=fmt.t(f"chart.x.{kind}"),
        places=places,
    )


def bill_months_bars(months: Sequence[Mapping[str, Any]], fmt: Fmt, *, current: str) -> list[Bar]:
    """A bill's consumption history (``referencia``, ``consumo_kwh`` or None, optional ``estimado``)."""
    return [
        Bar(
            fmt.month(m["referencia"]),
            fmt.month_name(m["referencia"]),
            None if m.get("consumo_kwh") is None else decimal_of(m["consumo_kwh"]),
            bool(m.get("estimado", False)),
            m["referencia"] == current,
        )
        for m in months
    ]


def bill_months_chart(months: Sequence[Mapping[str, Any]], fmt: Fmt, *, current: str, chart_id: str = "bill-months-chart") -> str:
    """The bill's bar chart of the last months' consumption, its own month highlighted."""
    bars = bill_months_bars(months, fmt, current=current)
    return bar_chart(
        bars,
        fmt,
        chart_id=chart_id,
        title=fmt.t("chart.bill.title"),
        description=_describe(bars, fmt, 0),
        x_label=fmt.t("chart.x.Y"),
        places=0,
    )
