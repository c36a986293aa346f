"""``/getLeituras``: a customer's readings over a period, as JSON pages or as one streamed CSV.

The rows and their rules are :mod:`meterd.exports`'; this module reads the
store for them. JSON answers a page at a time (``limite`` rows, ``cursor``
for the next). CSV is the whole period in one answer, streamed
(:mod:`meterd.web.streaming`): the store is read a page at a time on its
reader threads, keyset by time, each page is made CSV on a thread of the
reactor's pool, and the next page is read only once the client has taken
the one before (one page read ahead). So memory stays flat however many
readings the period holds, and a client that stops reading stops the reads.

The first page is read before the answer begins: anything that fails
before the first byte (the store unavailable, too many exports at once) is
an ordinary JSON error. A store failure after it cuts the CSV short.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from meterd import exports, periods
from meterd.exports import ReadingsPage, Span
from meterd.readings import InvalidField
from meterd.store.base import Store
from meterd.web import routes
from meterd.web.api import ID, METER, Api, Call
from meterd.web.errors import ApiError, bad_request
from meterd.web.exchange import Streamed
from meterd.web.formats import FORMAT, wants_csv
from meterd.web.routes import Field, route

PAGE_ROWS = 4_000  # readings per read of the store, and per chunk of a CSV (~250 KB)
DEFAULT_JSON_ROWS = 1_000
MAX_JSON_ROWS = 10_000
#: CSV exports being sent at once, each holding up to two chunks; past this, 503 ``busy``.
MAX_STREAMS = 64

_WHEN = {"type": "string", "example": "2026-11-01"}
INICIO = Field(
    "inicio", "the first day (2026-11-01) or instant (2026-11-01T08:00, in the customer's zone unless it has an offset)",
    exports.parse_when, _WHEN, _WHEN,
).optional()
FIM = Field(
    "fim", "the last day, included (2026-11-30), or the first instant left out (2026-12-01T00:00)",
    exports.parse_when, _WHEN, _WHEN,
).optional()
_CURSOR = {"type": "string", "example": "1764558000000000-1"}
CURSOR = Field("cursor", "the `cursor` of the previous page", exports.parse_cursor, _CURSOR, _CURSOR).optional()


class Exports:
    """The readings export; ``api`` gives the store, the directory and the clock."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.open = 0  # CSV exports begun and not closed yet

    @route(
        "GET", "/getLeituras", "customer",
        ID,
        METER.optional(description="only this meter (default: all of the customer's)"),
        routes.choice("kind", "a calendar period, as /getConsumoHist takes it: D, M or Y", periods.KINDS, fold=str.upper).optional(),
        routes.integer("periodo", "periods back with `kind` (0 = the current one)", maximum=30_000).optional(),
        INICIO,
        FIM,
        CURSOR,
        routes.integer("limite", "readings per JSON page", minimum=1, maximum=MAX_JSON_ROWS).optional(DEFAULT_JSON_ROWS),
        FORMAT,
        summary="The readings of a period, with the consumption each implies",
        description=(
            "The period is `kind` and `periodo` (a calendar day, month or year, as in /getConsumoHist), or"
            " `inicio` and `fim` (dates or ISO 8601 times in the customer's zone; either may be left out:"
            " no period at all is every reading). Readings come in time order (then by meter), each with"
            " `valor_kwh` as the meter sent it and `consumo_kwh`, the consumption since the meter's previous"
            " reading: the register's difference (register meters, 0 for the first reading ever) or the"
            " value itself (interval meters); it is `estimated` when the two readings are more than an hour"
            " apart. JSON answers a page of `limite` readings; send `cursor` back, with the same period,"
            " for the next (null: there is no next). CSV (`format=csv` or `Accept: text/csv`) is every"
            " reading of the period in one streamed answer (chunked): RFC 4180, UTF-8, columns"
            " `id_medidor,timestamp,valor_kwh,consumo_kwh,estimated`, kWh with exactly 3 decimals, a"
            " `Content-Disposition` file name, and the period's number of readings in `X-Total-Count`;"
            " an answer cut short by a failure ends without its last chunk. 503 `busy` when too many"
            " exports are being sent."
        ),
        tag="customer", ok=((200, "a page of readings", "Readings"),), errors=(404, 503), also=(exports.CSV_MEDIA,),
    )
    async def readings(self, call: Call) -> tuple[int, dict[str, Any]] | Streamed:
        a, api = call.args, self.api
        customer = await api.customer(a["id"])
        meter_ids = await api.meter_ids(customer.id, a["id_medidor"])
        tz = ZoneInfo(customer.tz)
        try:
            span = exports.span(a["kind"], a["periodo"], a["inicio"], a["fim"], api.now_ms(), tz)
        except InvalidField as e:
            raise bad_request(e.code, str(e)) from None
        modes = {m: api.directory.meters[(customer.id, m)].meter.mode for m in meter_ids}
        store = api.store
        if wants_csv(a["format"], call.incoming.accept):
            if self.open >= MAX_STREAMS:
                raise ApiError(503, "busy", "too many exports are being sent; retry shortly")
            self.open += 1  # taken before the first reads, so that requests arriving meanwhile count it
            try:
                first = await store.readings_page(customer.id, meter_ids, span.start, span.end, a["cursor"], PAGE_ROWS)
                total = await store.count_readings(customer.id, meter_ids, span.start, span.end)
            except BaseException:
                self.open -= 1
                raise
            filename = exports.readings_filename(customer.name, customer.id, a["id_medidor"], span.label)
            headers = {"Content-Disposition": exports.attachment(filename), "X-Total-Count": str(total)}
            return Streamed(200, exports.CSV, headers, ReadingsCsv(self, store, customer.id, span, modes, tz, first))
        page = await store.readings_page(customer.id, meter_ids, span.start, span.end, a["cursor"], a["limite"])
        total = await store.count_readings(customer.id, meter_ids, span.start, span.end)
        last = page.rows[-1] if page.more else None
        return 200, {
            "id": customer.id,
            "tz": customer.tz,
            "inicio": None if span.start is None else exports.iso_us(span.start, tz),
            "fim": None if span.end is None else exports.iso_us(span.end, tz),
            "total": total,
            "leituras": [exports.reading_json(row, tz) for row in exports.reading_rows(page, modes)],
            "cursor": None if last is None else exports.cursor_text(last[0], last[1]),
        }


class ReadingsCsv:
    """The body of a CSV export (:class:`~meterd.web.exchange.Chunks`): a page of the store per chunk.

    It holds one of the exports' places (:attr:`Exports.open`), taken by the handler, until it is closed.
    """

    def __init__(
        self, exports_: Exports, store: Store, customer_id: str, span: Span, modes: dict[int, str], tz: ZoneInfo, first: ReadingsPage,
    ) -> None:
        self.exports = exports_
        self.store = store
        self.customer_id = customer_id
        self.span = span
        self.modes = modes
        self.meter_ids = sorted(modes)
        self.tz = tz
        self.first: ReadingsPage | None = first
        self.after: tuple[int, int] | None = None  # where the next page starts; None: no next page
        self.closed = False
        exports_.api.metrics.exports_streaming.inc()

    def next_chunk(self) -> Deferred[bytes | None]:
        if self.first is not None:
            page, self.first = self.first, None
            return self._csv(page, header=True)
        if self.after is None or self.closed:
            return succeed(None)
        start, end = self.span.start, self.span.end
        reading = self.store.readings_page(self.customer_id, self.meter_ids, start, end, self.after, PAGE_ROWS)
        return reading.addCallbacks(self._csv, self._failed, callbackKeywords={"header": False})

    def _csv(self, page: ReadingsPage, *, header: bool) -> Deferred[bytes | None]:
        last = page.rows[-1] if page.more else None
        self.after = None if last is None else (last[0], last[1])
        return deferToThread(exports.readings_csv, page, self.modes, self.tz, header=header)

    def _failed(self, failure: Failure) -> Failure:
        self.exports.api.metrics.exports_cut.inc()
        return failure

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.first = None
            self.exports.open -= 1
            self.exports.api.metrics.exports_streaming.dec()
