"""The rules of an export, as plain functions: rows, CSV, periods, cursors, file names, the format asked for."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest

from meterd import exports
from meterd.exports import ReadingsPage, Row, Span
from meterd.readings import InvalidField
from meterd.registers import MAX_GAP_US, Sample
from meterd.web.formats import wants_csv

UTC = ZoneInfo("UTC")
SP = ZoneInfo("America/Sao_Paulo")
NY = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
MIN = 60_000_000
T0 = 1_764_558_000_000_000  # 2025-12-01T03:00:00Z, midnight in São Paulo


def us(*args: int, tz: ZoneInfo = UTC) -> int:
    return int(datetime(*args, tzinfo=tz).timestamp()) * 1_000_000


# -- a reading's row --------------------------------------------------------------------


def test_a_register_reading_implies_the_consumption_since_the_meters_previous_one() -> None:
    page = ReadingsPage([(T0, 1, 1000), (T0 + MIN, 2, 50), (T0 + 2 * MIN, 1, 1250), (T0 + 3 * MIN, 2, 80)], {1: Sample(T0 - MIN, 900), 2: None}, False)
    assert list(exports.reading_rows(page, {1: "register", 2: "register"})) == [
        Row(1, T0, 1000, 100, False),  # from the reading before the page
        Row(2, T0 + MIN, 50, 0, False),  # the meter's first reading ever: nothing measured before it
        Row(1, T0 + 2 * MIN, 1250, 250, False),
        Row(2, T0 + 3 * MIN, 80, 30, False),
    ]


def test_consumption_across_more_than_an_hour_is_estimated_as_in_the_history() -> None:
    page = ReadingsPage([(T0 + MAX_GAP_US, 1, 10), (T0 + 2 * MAX_GAP_US + 1, 1, 20)], {1: Sample(T0, 0)}, False)
    rows = list(exports.reading_rows(page, {1: "register"}))
    assert [r.estimated for r in rows] == [False, True]  # exactly an hour is not a guess; a microsecond more is


def test_an_interval_reading_is_its_own_consumption_never_estimated() -> None:
    page = ReadingsPage([(T0, 1, 7), (T0 + 5 * MAX_GAP_US, 1, 9)], {1: Sample(T0 - MIN, 1000)}, False)
    assert [(r.used_wh, r.estimated) for r in exports.reading_rows(page, {1: "interval"})] == [(7, False), (9, False)]


@pytest.mark.parametrize("wh, text", [(0, "0.000"), (1, "0.001"), (999, "0.999"), (1000, "1.000"), (1234567, "1234.567"), (-5, "-0.005"), (10**15, "1000000000000.000")])
def test_kwh_have_exactly_three_decimals(wh: int, text: str) -> None:
    assert exports.kwh_text(wh) == text


@pytest.mark.parametrize(
    "ts, tz, text",
    [
        (T0, SP, "2025-12-01T00:00:00-03:00"),
        (T0, UTC, "2025-12-01T03:00:00+00:00"),
        (T0, KOLKATA, "2025-12-01T08:30:00+05:30"),
        (T0 + 250_000, UTC, "2025-12-01T03:00:00.250+00:00"),
        (T0 + 1, UTC, "2025-12-01T03:00:00.000001+00:00"),
        (us(2026, 3, 8, 6, 59, 59, tz=UTC), NY, "2026-03-08T01:59:59-05:00"),  # the last second before DST...
        (us(2026, 3, 8, 7, 0, 0, tz=UTC), NY, "2026-03-08T03:00:00-04:00"),  # ... and the first after it
    ],
)
def test_times_are_iso_8601_in_the_customers_zone_with_its_offset(ts: int, tz: ZoneInfo, text: str) -> None:
    assert exports.iso_us(ts, tz) == text
    assert datetime.fromisoformat(text).timestamp() * 1_000_000 == pytest.approx(ts, abs=1)


def test_readings_csv_is_rfc_4180_and_reads_back_with_pythons_csv_module() -> None:
    page = ReadingsPage([(T0, 1, 1_000_500), (T0 + 2 * MAX_GAP_US, 1, 1_002_000)], {1: None}, False)
    body = exports.readings_csv(page, {1: "register"}, SP, header=True)
    assert body.count(b"\r\n") == 3 and body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert rows == [
        ["id_medidor", "timestamp", "valor_kwh", "consumo_kwh", "estimated"],
        ["1", "2025-12-01T00:00:00-03:00", "1000.500", "0.000", "false"],
        ["1", "2025-12-01T02:00:00-03:00", "1002.000", "1.500", "true"],
    ]
    assert exports.readings_csv(page, {1: "register"}, SP, header=False) == body.split(b"\r\n", 1)[1]


def test_fields_are_quoted_where_rfc_4180_needs_it() -> None:
    text = exports.csv_text([["a,b", 'say "hi"', "two\r\nlines", "João"]])
    assert text == '"a,b","say ""hi""","two\r\nlines",João\r\n'
    assert list(csv.reader(io.StringIO(text, newline=""))) == [["a,b", 'say "hi"', "two\r\nlines", "João"]]


def test_history_csv_has_a_row_per_bucket_and_a_column_per_meter() -> None:
    edges = [T0 // 1000, T0 // 1000 + 3_600_000, T0 // 1000 + 7_200_000]
    body = exports.history_csv(edges, [(1, [(1500, False), (0, True)]), (3, [(250, False), (10, False)])], SP)
    assert list(csv.reader(io.StringIO(body.decode(), newline=""))) == [
        ["start", "end", "kwh", "estimated", "medidor_1_kwh", "medidor_3_kwh"],
        ["2025-12-01T00:00:00-03:00", "2025-12-01T01:00:00-03:00", "1.750", "false", "1.500", "0.250"],
        ["2025-12-01T01:00:00-03:00", "2025-12-01T02:00:00-03:00", "0.010", "true", "0.000", "0.010"],
    ]


# -- periods ----------------------------------------------------------------------------

NOW_MS = us(2026, 11, 15, 12, tz=SP) // 1000


def test_a_period_as_the_history_gives_it() -> None:
    assert exports.span("M", 0, None, None, NOW_MS, SP) == Span(us(2026, 11, 1, tz=SP), us(2026, 12, 1, tz=SP), "2026-11")
    assert exports.span("M", 1, None, None, NOW_MS, SP).label == "2026-10"
    assert exports.span("D", 0, None, None, NOW_MS, SP) == Span(us(2026, 11, 15, tz=SP), us(2026, 11, 16, tz=SP), "2026-11-15")
    assert exports.span("Y", 2, None, None, NOW_MS, SP) == Span(us(2024, 1, 1, tz=SP), us(2025, 1, 1, tz=SP), "2024")


def test_dates_are_whole_days_of_the_customer_and_fim_is_included() -> None:
    got = exports.span(None, None, date(2026, 11, 1), date(2026, 11, 30), NOW_MS, KOLKATA)
    assert got == Span(us(2026, 11, 1, tz=KOLKATA), us(2026, 12, 1, tz=KOLKATA), "2026-11-01_2026-11-30")


def test_times_are_the_customers_wall_clock_unless_they_carry_an_offset() -> None:
    local = exports.parse_when("inicio", "2026-11-05T14:30")
    aware = exports.parse_when("fim", "2026-11-05T18:00:00Z")
    got = exports.span(None, None, local, aware, NOW_MS, SP)
    assert (got.start, got.end) == (us(2026, 11, 5, 14, 30, tz=SP), us(2026, 11, 5, 18, tz=UTC))


def test_either_bound_may_be_open() -> None:
    assert exports.span(None, None, None, None, NOW_MS, SP) == Span(None, None, "")
    assert exports.span(None, None, date(2026, 1, 1), None, NOW_MS, SP) == Span(us(2026, 1, 1, tz=SP), None, "desde-2026-01-01")
    assert exports.span(None, None, None, date(2026, 1, 1), NOW_MS, SP) == Span(None, us(2026, 1, 2, tz=SP), "ate-2026-01-01")


@pytest.mark.parametrize(
    "kind, periodo, inicio, fim, code",
    [
        ("M", 0, date(2026, 1, 1), None, "conflicting_parameter"),
        (None, 1, None, None, "missing_field"),
        (None, None, date(2026, 2, 1), date(2026, 1, 31), "out_of_range"),
        (None, None, datetime(2026, 2, 1, 10), datetime(2026, 2, 1, 10), "out_of_range"),
        ("Y", 100, None, None, "out_of_range"),
        (None, None, date.max, None, "out_of_range"),
    ],
)
def test_what_is_not_a_period_is_refused_with_its_code(kind: str | None, periodo: int | None, inicio: date | None, fim: date | None, code: str) -> None:
    with pytest.raises(InvalidField) as e:
        exports.span(kind, periodo, inicio, fim, NOW_MS, SP)
    assert e.value.code == code


@pytest.mark.parametrize("text", ["2026-13-01", "ontem", "05/11/2026", "1969-12-31T23:00", "", "2026-11-05 14:30:00+99:00"])
def test_a_bound_that_is_neither_a_date_nor_a_time_is_refused(text: str) -> None:
    with pytest.raises(InvalidField):
        exports.parse_when("inicio", text)


def test_cursors_go_back_to_where_they_came_from_and_nothing_else_is_one() -> None:
    assert exports.parse_cursor("cursor", exports.cursor_text(T0, 3)) == (T0, 3)
    for bad in ("", "12", "a-1", "1-b", "-1-1", "1-1-1", str(2**63) + "-1", 5):
        with pytest.raises(InvalidField):
            exports.parse_cursor("cursor", bad)


# -- file names -------------------------------------------------------------------------


def test_a_file_name_says_what_whose_and_when_with_the_name_as_written() -> None:
    name = exports.readings_filename("João d'Ávila / Souza", "12345678909", 2, "2026-11")
    assert name == "leituras-João-d-Ávila-Souza-12345678909-medidor-2-2026-11.csv"
    header = exports.attachment(name)
    assert header.startswith('attachment; filename="leituras-Joao-d-Avila-Souza-12345678909-medidor-2-2026-11.csv"; ')
    assert unquote(header.split("filename*=UTF-8''")[1]) == name
    assert header.isascii()
    assert exports.history_filename("Ana", "12345678909", None, "M", NOW_MS, SP) == "historico-Ana-12345678909-2026-11.csv"


def test_a_name_cannot_make_a_file_name_a_path_or_too_long() -> None:
    name = exports.readings_filename("../../etc/passwd" + "x" * 300, "12345678909", None, "")
    assert "/" not in name and ".." not in name and len(name) < 100


# -- the format asked for --------------------------------------------------------------


@pytest.mark.parametrize(
    "format, accept, csv_wanted",
    [
        (None, None, False),
        (None, "*/*", False),
        (None, "application/json", False),
        (None, "text/csv", True),
        (None, "text/csv; charset=utf-8", True),
        (None, "TEXT/CSV", True),
        (None, "text/csv, */*", True),  # named beats a wildcard
        (None, "application/json, text/csv", False),  # a tie goes to JSON
        (None, "application/json;q=0.5, text/csv", True),
        (None, "text/csv;q=0.4, application/json;q=0.9", False),
        (None, "text/*", True),
        (None, "text/csv;q=0", False),
        (None, "text/csv;q=nan", False),
        (None, "text/html", False),  # neither: JSON
        ("csv", None, True),
        ("csv", "application/json", True),  # format= decides
        ("json", "text/csv", False),
    ],
)
def test_csv_is_chosen_by_format_or_else_by_accept(format: str | None, accept: str | None, csv_wanted: bool) -> None:
    assert wants_csv(format, accept) is csv_wanted


# -- the fast way to write times ----------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.support import examples  # noqa: E402

#: Zones with DST, half-hour and 45-minute offsets, a 30-minute DST shift (Lord Howe), and old local mean times.
FAST_ZONES = ["UTC", "America/Sao_Paulo", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe",
              "Europe/Dublin", "Pacific/Apia", "America/St_Johns", "Africa/Monrovia"]


@settings(max_examples=examples(500), deadline=None)
@given(
    zone=st.sampled_from(FAST_ZONES),
    start=st.integers(0, 4_102_444_800_000_000),  # 1970 to 2100
    steps=st.lists(st.sampled_from([1, 999, 1000, 1_000_000, 60_000_000, 900_000_000, 3_600_000_000, 86_400_000_000]), max_size=60),
)
def test_local_times_write_what_iso_us_writes(zone: str, start: int, steps: list[int]) -> None:
    tz = ZoneInfo(zone)
    times = exports.LocalTimes(tz)
    ts = start
    for step in [0, *steps]:
        ts += step
        assert times.text(ts) == exports.iso_us(ts, tz), ts


@pytest.mark.parametrize("zone", FAST_ZONES)
def test_local_times_agree_around_every_offset_change_of_a_zone(zone: str) -> None:
    tz = ZoneInfo(zone)
    times = exports.LocalTimes(tz)
    hour = 3_600_000_000
    checked = 0
    day = 24 * hour
    for year in range(1970, 2040):
        for month in range(1, 13):
            first = us(year, month, 1, tz=UTC)
            if exports.iso_us(first, tz)[-6:] == exports.iso_us(first + 31 * day, tz)[-6:]:
                continue  # the offset does not change this month
            changed = next(d for d in range(32) if exports.iso_us(first + d * day, tz)[-6:] != exports.iso_us(first, tz)[-6:])
            for t in range(first + (changed - 2) * day, first + (changed + 1) * day, 15 * 60_000_000):
                assert times.text(t) == exports.iso_us(t, tz)
                checked += 1
    assert checked > 0 or zone in ("UTC", "Asia/Kolkata", "Africa/Monrovia", "Asia/Kathmandu")
