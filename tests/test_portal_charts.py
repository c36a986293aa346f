"""meterd.portal.charts: the SVG parsed back with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meterd.portal.charts import Bar, bar_chart, bill_months_chart, history_bars, history_chart, nice_ticks
from meterd.portal.fmt import Fmt

NS = {"s": "http://www.w3.org/2000/svg"}
PT = Fmt("pt")


def _history(kind: str, starts: list[str], kwh: list[float], estimated: set[int]) -> dict[str, Any]:
    return {
        "kind": kind,
        "start": starts[0],
        "buckets": [{"start": s, "kwh": k, "estimated": i in estimated} for i, (s, k) in enumerate(zip(starts, kwh, strict=True))],
    }


def _day(values: list[float], estimated: set[int] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    starts = [f"2026-12-18T{h:02d}:00:00-03:00" for h in range(24)]
    return _history("D", starts, values, set(estimated))


def _drawn(svg: ET.Element) -> list[ET.Element]:
    return svg.findall("s:g[@class='bars']/s:rect", NS)


def _parse(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert all("style" not in el.attrib for el in root.iter())
    return root


def test_nice_ticks_examples() -> None:
    assert nice_ticks(Decimal(0)) == [0, 1]
    assert nice_ticks(Decimal("7.3")) == [0, 2, 4, 6, 8]
    assert nice_ticks(Decimal("194.8")) == [0, 50, 100, 150, 200]
    assert nice_ticks(Decimal("0.37")) == [Decimal("0"), Decimal("0.1"), Decimal("0.2"), Decimal("0.3"), Decimal("0.4")]
    assert nice_ticks(Decimal("9")) == [0, Decimal("2.5"), 5, Decimal("7.5"), 10]


@given(st.decimals(min_value=Decimal("0.001"), max_value=Decimal(10**9), places=3))
def test_nice_ticks_cover_the_maximum_in_round_equal_steps(maximum: Decimal) -> None:
    ticks = nice_ticks(maximum)
    assert ticks[0] == 0 and ticks[-1] >= maximum
    assert 3 <= len(ticks) <= 5
    steps = {b - a for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1
    (step,) = steps
    mantissa = step.scaleb(-step.adjusted()).normalize()
    assert mantissa in {1, 2, Decimal("2.5"), 5}


def test_future_buckets_are_blank_not_zero() -> None:
    values = [0.5] * 24
    values[3] = 0.0  # a real zero: drawn, with no height
    svg = _parse(history_chart(_day(values), PT, now="2026-12-18T15:20:00-03:00"))
    bars = _drawn(svg)
    assert len(bars) == 16  # 00h..15h; 16h..23h have not happened
    assert [float(b.get("height")) for b in bars].count(0) == 1
    slots = [float(b.get("x")) for b in bars]
    assert slots == sorted(slots)
    # The text alternative says so.
    desc = svg.find("s:desc", NS)
    assert desc is not None and "8 período(s) ainda por vir" in (desc.text or "")


def test_estimated_bars_are_hatched_and_explained_in_the_legend() -> None:
    svg = _parse(history_chart(_day([1.0] * 24, {2, 5}), PT, now="2026-12-19T00:00:00-03:00"))
    estimated = [b for b in _drawn(svg) if b.get("class") == "bar-est"]
    assert len(estimated) == 2
    hatch = svg.find("s:defs/s:pattern", NS)
    assert hatch is not None
    assert all(b.get("fill") == f"url(#{hatch.get('id')})" for b in estimated)
    legend = [t.text for t in svg.findall("s:g[@class='legend']/s:text", NS)]
    assert legend == ["Medido", "Estimado"]
    # Without an estimated bar there is nothing to explain.
    plain = _parse(history_chart(_day([1.0] * 24), PT, now="2026-12-19T00:00:00-03:00"))
    assert plain.find("s:g[@class='legend']", NS) is None


def test_chart_is_an_image_named_and_described() -> None:
    svg = _parse(history_chart(_day([1.0] * 24), Fmt("en"), now="2026-12-19T00:00:00-03:00", chart_id="c1"))
    assert svg.get("role") == "img"
    title = svg.find("s:title", NS)
    desc = svg.find("s:desc", NS)
    assert title is not None and desc is not None
    assert svg.get("aria-labelledby") == title.get("id") == "c1-title"
    assert svg.get("aria-describedby") == desc.get("id") == "c1-desc"
    assert title.text == "Consumption by hour on 18 Dec 2026"
    assert desc.text == "Total 24.00\u00a0kWh; the highest consumption was 00:00, 1.00\u00a0kWh."
    axis = [t.text for t in svg.findall("s:text[@class='axis-title']", NS)]
    assert axis == ["kWh", "Hour"]


def test_axis_ticks_are_round_and_localised() -> None:
    svg = _parse(history_chart(_day([0.37] + [0.1] * 23), PT, now="2026-12-19T00:00:00-03:00"))
    labels = [t.text for t in svg.findall("s:g[@class='tick-labels y']/s:text", NS)]
    assert labels == ["0,0", "0,1", "0,2", "0,3", "0,4"]
    hours = [t.text for t in svg.findall("s:g[@class='tick-labels x']/s:text", NS)]
    assert hours == ["0h", "3h", "6h", "9h", "12h", "15h", "18h", "21h"]


def test_month_and_year_histories_label_their_buckets() -> None:
    days = [f"2026-02-{d:02d}T00:00:00-03:00" for d in range(1, 29)]
    month = history_bars(_history("M", days, [1.0] * 28, set()), PT, now="2026-03-01T00:00:00-03:00")
    assert [b.tick for b in month if b.tick] == ["1", "5", "10", "15", "20", "25"]
    assert month[0].label == "01/02"
    months = [f"2026-{m:02d}-01T00:00:00-03:00" for m in range(1, 13)]
    year = history_bars(_history("Y", months, [1.0] * 12, set()), PT, now="2026-06-15T00:00:00-03:00")
    assert [b.tick for b in year][:3] == ["jan", "fev", "mar"]
    assert [b.kwh is None for b in year] == [False] * 6 + [True] * 6


def test_bill_months_chart_highlights_its_month_and_skips_unknown_ones() -> None:
    months = [{"referencia": f"2026-{m:02d}", "consumo_kwh": 100 + m} for m in range(1, 13)]
    months[0]["consumo_kwh"] = None  # before the customer existed
    months[4]["estimado"] = True
    svg = _parse(bill_months_chart(months, PT, current="2026-12"))
    bars = _drawn(svg)
    assert len(bars) == 11
    assert [b.get("class") for b in bars].count("bar current") == 1
    assert bars[-1].get("class") == "bar current"
    assert [b.get("class") for b in bars].count("bar-est") == 1
    ticks = [t.text for t in svg.findall("s:g[@class='tick-labels x']/s:text", NS)]
    assert len(ticks) == 12  # every month keeps its label, drawn or not


def test_labels_are_escaped_by_construction() -> None:
    text = bar_chart([Bar('<script>"x"&', "<b>", Decimal(1))], PT, chart_id="x", title="</svg>", description="&amp;", x_label="<")
    svg = _parse(text)
    assert svg.find("s:title", NS).text == "</svg>"  # type: ignore[union-attr]
    assert svg.find("s:desc", NS).text == "&amp;"  # type: ignore[union-attr]
    assert "<script>" not in text
