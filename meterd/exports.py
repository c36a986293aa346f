"""What an export holds: a customer's readings and history as rows, CSV or JSON.

Pure: no Twisted. The web layer (:mod:`meterd.web.exports`) reads the store
in pages and streams what this module makes of each page.

**A reading's row.** A reading is measured: its time and its value are what
the meter sent. The consumption it implies is counted since the meter's
previous reading (wherever that one lies, also before the export's start):
for a register meter the register's difference, for an interval meter the
value itself. As in the history (DESIGN §5), that consumption is
``estimated`` when the two readings are more than an hour apart (nothing
says when in the gap the energy was used), and a register meter's first
reading ever implies no consumption (nothing was measured before it). So a
spreadsheet's sum of ``consumo_kwh`` is the register's difference between
the last reading exported and the one before the first.

**Times** are ISO 8601 in the customer's zone, with its offset, to the second
(to the millisecond or microsecond when the reading has a fraction). **kWh**
have exactly three decimals: they are whole Wh. **CSV** is RFC 4180: a header
row, comma-separated, CRLF line ends, fields quoted where needed, UTF-8.

**Periods** are given either as the history gives them (``kind`` and
``periodo``: a calendar day, month or year of the customer) or as ``inicio``
and ``fim``: a date (the day's first instant; for ``fim``, the day is
included) or a time (the customer's wall clock unless it carries an offset;
``fim`` is then the first instant left out). Either bound may be left open.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote
from zoneinfo import ZoneInfo

from meterd import periods
from meterd.readings import HOUR_US, US_PER_MS, InvalidField
from meterd.registers import MAX_GAP_US, Sample

__all__ = [
    "CSV",
    "CSV_MEDIA",
    "LocalTimes",
    "READING_COLUMNS",
    "ReadingsPage",
    "Row",
    "Span",
    "When",
    "attachment",
    "csv_text",
    "cursor_text",
    "history_csv",
    "history_filename",
    "iso_us",
    "kwh_text",
    "parse_cursor",
    "parse_when",
    "reading_json",
    "reading_rows",
    "readings_csv",
    "readings_filename",
    "span",
]

CSV_MEDIA = "text/csv"
CSV = b"text/csv; charset=utf-8"
READING_COLUMNS = ("id_medidor", "timestamp", "valor_kwh", "consumo_kwh", "estimated")
HISTORY_COLUMNS = ("start", "end", "kwh", "estimated")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
DAY_US = 86_400_000_000
_MAX_US = 2**63 - 1
MAX_NAME_IN_FILENAME = 60  # characters of the customer's name in a file name


class ReadingsPage(NamedTuple):
    """A page of a customer's stored readings, as the store reads it.

    ``rows`` are ``(ts, meter_id, wh)`` in ``(ts, meter_id)`` order;
    ``previous`` is, for each meter asked about, its stored reading just
    before the first one this page could hold (None: there is none), which
    the first row's consumption is counted from; ``more`` says whether
    readings follow the last row.
    """

    rows: list[tuple[int, int, int]]
    previous: dict[int, Sample | None]
    more: bool


class Row(NamedTuple):
    """One reading as exported: values in Wh, the time in microseconds."""

    meter_id: int
    ts: int
    wh: int  # the register, or the interval's energy
    used_wh: int  # the consumption since the meter's previous reading
    estimated: bool


def reading_rows(page: ReadingsPage, modes: Mapping[int, str]) -> Iterator[Row]:
    """Each reading of ``page`` with the consumption it implies (the module's rule)."""
    last = dict(page.previous)
    for ts, meter, wh in page.rows:
        if modes[meter] == "interval":
            used, estimated = wh, False
        else:
            before = last.get(meter)
            used, estimated = (0, False) if before is None else (wh - before.wh, ts - before.ts > MAX_GAP_US)
        last[meter] = Sample(ts, wh)
        yield Row(meter, ts, wh, used, estimated)


# -- values as text ---------------------------------------------------------------------


_TWO = [f"{n:02d}" for n in range(60)]
_THREE = [f"{n:03d}" for n in range(1000)]


def kwh_text(wh: int) -> str:
    """Whole Wh as kWh with exactly three decimals: 1234567 -> ``1234.567``."""
    if wh < 0:
        return "-" + kwh_text(-wh)
    whole, frac = divmod(wh, 1000)
    return f"{whole}.{_THREE[frac]}"


def iso_us(ts: int, tz: ZoneInfo) -> str:
    """A reading's time in ``tz`` with its offset: to the second, or to the ms or us it has."""
    local = (_EPOCH + ts * _ONE_US).astimezone(tz)
    us = local.microsecond
    return local.isoformat(timespec="seconds" if not us else "milliseconds" if not us % 1000 else "microseconds")


class LocalTimes:
    """:func:`iso_us` for the many readings of a page, without a time-zone lookup and a datetime each.

    The zone's offset is looked up once per hour of UTC and the date written
    once per local day; the rest is arithmetic. An hour in which the offset
    changes (a DST transition) is written reading by reading by
    :func:`iso_us`. (No zone changes its offset twice within one hour.)
    """

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._hour: int | None = None
        self._offset = 0  # us, in the current hour
        self._suffix = ""  # the offset as isoformat writes it
        self._day: int | None = None
        self._date = ""  # "YYYY-MM-DDT" of the current local day

    def text(self, ts: int) -> str:
        hour = ts // HOUR_US
        if hour != self._hour:
            start = (_EPOCH + hour * HOUR_US * _ONE_US).astimezone(self.tz)
            end = (_EPOCH + ((hour + 1) * HOUR_US - 1) * _ONE_US).astimezone(self.tz)
            offset = start.utcoffset()
            if offset != end.utcoffset() or offset is None:
                return iso_us(ts, self.tz)
            self._hour, self._offset = hour, offset // _ONE_US
            self._suffix = start.isoformat(timespec="seconds")[19:]
        day, of_day = divmod(ts + self._offset, DAY_US)
        if day != self._day:
            self._day, self._date = day, (_EPOCH + timedelta(days=day)).date().isoformat() + "T"
        seconds, us = divmod(of_day, 1_000_000)
        minutes, second = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        fraction = "" if not us else f".{_THREE[us // 1000]}" if not us % 1000 else f".{us:06d}"
        return f"{self._date}{_TWO[hours]}:{_TWO[minute]}:{_TWO[second]}{fraction}{self._suffix}"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def csv_text(rows: Iterable[Sequence[Any]]) -> str:
    """RFC 4180: comma-separated, CRLF after every row, quoted where a field needs it."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


def readings_csv(page: ReadingsPage, modes: Mapping[int, str], tz: ZoneInfo, *, header: bool) -> bytes:
    """A page's rows as CSV (``header``: the column names first)."""
    when = LocalTimes(tz).text
    lines = ((r.meter_id, when(r.ts), kwh_text(r.wh), kwh_text(r.used_wh), _flag(r.estimated)) for r in reading_rows(page, modes))
    text = csv_text(lines)
    return ((csv_text([READING_COLUMNS]) if header else "") + text).encode("utf-8")


def reading_json(row: Row, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "id_medidor": row.meter_id,
        "timestamp": iso_us(row.ts, tz),
        "valor_kwh": row.wh / 1000,
        "consumo_kwh": row.used_wh / 1000,
        "estimated": row.estimated,
    }


def history_csv(edges: Sequence[int], meters: Sequence[tuple[int, Sequence[tuple[int, bool]]]], tz: ZoneInfo) -> bytes:
    """One row per bucket: its start and end, kWh and ``estimated`` of all ``meters``, then a kWh column per meter.

    ``edges`` in ms (:mod:`meterd.periods`); ``meters`` are ``(meter_id, [(wh, estimated) per bucket])``.
    """
    header = [*HISTORY_COLUMNS, *(f"medidor_{m}_kwh" for m, _ in meters)]
    rows: list[list[str]] = [header]
    for i in range(len(edges) - 1):
        buckets = [b[i] for _, b in meters]
        rows.append([
            periods.iso(edges[i], tz), periods.iso(edges[i + 1], tz),
            kwh_text(sum(wh for wh, _ in buckets)), _flag(any(e for _, e in buckets)),
            *(kwh_text(wh) for wh, _ in buckets),
        ])
    return csv_text(rows).encode("utf-8")


# -- periods ------------------------------------------------------------------------------

When = date | datetime  # a calendar date, or a time: naive is the customer's wall clock


def parse_when(name: str, value: Any) -> When:
    """``YYYY-MM-DD`` or an ISO 8601 time (``2026-11-05T14:30``, ``...-03:00``, ``...Z``)."""
    if not isinstance(value, str):
        raise InvalidField("invalid_type", f"{name} must be a date or an ISO 8601 time, as a string")
    text = value.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField("invalid_value", f"{name} must be a date (2026-11-05) or an ISO 8601 time (2026-11-05T14:30:00-03:00)") from None
    if when.year < periods.FIRST_YEAR:
        raise InvalidField("out_of_range", f"{name} is before {periods.FIRST_YEAR}")
    return when


def _instant_us(when: When, tz: ZoneInfo, *, end: bool) -> int:
    """The first instant of a date (of the day after it for an ``end``), or the instant a time names."""
    if isinstance(when, datetime):
        aware = when if when.tzinfo is not None else when.replace(tzinfo=tz)
        return (aware - _EPOCH) // _ONE_US
    if when.year < periods.FIRST_YEAR or when == date.max:
        raise InvalidField("out_of_range", "the date is out of range")
    return periods.day_start(date.fromordinal(when.toordinal() + 1) if end else when, tz) * US_PER_MS


class Span(NamedTuple):
    """``[start, end)`` in microseconds; None is open. ``label`` names it in a file name."""

    start: int | None
    end: int | None
    label: str


def span(kind: str | None, periodo: int | None, inicio: When | None, fim: When | None, now_ms: int, tz: ZoneInfo) -> Span:
    """The readings asked for (see the module's docstring). Raises InvalidField for a span that is not one."""
    if kind is not None:
        if inicio is not None or fim is not None:
            raise InvalidField("conflicting_parameter", "give either kind (and periodo) or inicio and fim, not both")
        try:
            start, end = periods.period_range(kind, periodo or 0, now_ms, tz)
        except ValueError:
            raise InvalidField("out_of_range", f"periodo reaches before {periods.FIRST_YEAR}") from None
        first = periods.local_date(start, tz)
        label = {"D": first.isoformat(), "M": first.isoformat()[:7], "Y": str(first.year)}[kind]
        return Span(start * US_PER_MS, end * US_PER_MS, label)
    if periodo is not None:
        raise InvalidField("missing_field", "periodo needs kind")
    start_us = None if inicio is None else _instant_us(inicio, tz, end=False)
    end_us = None if fim is None else _instant_us(fim, tz, end=True)
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise InvalidField("out_of_range", "fim must come after inicio")
    for bound in (start_us, end_us):
        if bound is not None and not 0 <= bound <= _MAX_US:
            raise InvalidField("out_of_range", "the period is out of range")
    first_day = None if start_us is None else _local_day(start_us, tz)
    last_day = None if end_us is None else _local_day(end_us - 1, tz)
    if first_day and last_day:
        label = f"{first_day}_{last_day}"
    else:
        label = f"desde-{first_day}" if first_day else f"ate-{last_day}" if last_day else ""
    return Span(start_us, end_us, label)


def _local_day(ts: int, tz: ZoneInfo) -> str:
    return (_EPOCH + ts * _ONE_US).astimezone(tz).date().isoformat()


# -- paging -------------------------------------------------------------------------------

_CURSOR = re.compile(r"([0-9]{1,19})-([0-9]{1,10})")


def cursor_text(ts: int, meter_id: int) -> str:
    """The position after a reading, for the next page: opaque to clients."""
    return f"{ts}-{meter_id}"


def parse_cursor(name: str, value: Any) -> tuple[int, int]:
    """A :func:`cursor_text` back as ``(ts, meter_id)``."""
    match = _CURSOR.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1]) > _MAX_US:
        raise InvalidField("invalid_value", f"{name} must be the cursor of a previous answer")
    return int(match[1]), int(match[2])


# -- file names ---------------------------------------------------------------------------


def readings_filename(name: str, customer_id: str, meter_id: int | None, label: str) -> str:
    return _filename("leituras", name, customer_id, meter_id, label)


def history_filename(name: str, customer_id: str, meter_id: int | None, kind: str, start_ms: int, tz: ZoneInfo) -> str:
    first = periods.local_date(start_ms, tz).isoformat()
    return _filename("historico", name, customer_id, meter_id, {"D": first, "M": first[:7], "Y": first[:4]}[kind])


def _filename(what: str, name: str, customer_id: str, meter_id: int | None, label: str) -> str:
    words = re.sub(r"[^\w.]+", "-", unicodedata.normalize("NFC", name)).strip("-.")[:MAX_NAME_IN_FILENAME].rstrip("-.")
    meter = f"medidor-{meter_id}" if meter_id is not None else ""
    return "-".join(filter(None, (what, words, customer_id, meter, label))) + ".csv"


def attachment(filename: str) -> str:
    """``Content-Disposition`` for a download: an ASCII ``filename`` and the UTF-8 one (RFC 6266, RFC 8187)."""
    folded = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode("ascii")
    ascii_name = re.sub(r"[^A-Za-z0-9._-]+", "-", folded)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
