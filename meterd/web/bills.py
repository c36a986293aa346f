"""The bill's routes: a month's bill, its payment codes, and the billing run.

``/getFatura`` answers an issued month with the bytes the billing run stored
(the same bytes every time) and any other month with a preview computed from
the readings as they are (``"status": "previa"``). The operator starts and
follows billing runs with ``/faturamento`` and ``/getFaturamento`` and takes
what a run issued, streamed, as JSON Lines or CSV.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread

from meterd import arrecadacao, bill_document, exports, periods, pix
from meterd.bill_document import ABERTO, FECHADO
from meterd.billing import compute_bill, money
from meterd.faturamento import AlreadyRunning, BillingRuns, IssuedBills, NoCompany
from meterd.store.base import Store
from meterd.web import routes
from meterd.web.api import ID, JSON, Api, Call
from meterd.web.errors import ApiError, bad_request, not_found
from meterd.web.exchange import Answer, Streamed
from meterd.web.routes import route

__all__ = ["Bills", "CSV_COLUMNS"]

MAX_BILL_MONTHS = 1_200
#: Bills read from the store for each chunk of a run's result: the most its body holds at once (two chunks).
PAGE = 1_000
SVG = b"image/svg+xml"
JSON_LINES = b"application/jsonl; charset=utf-8"
#: The CSV of a run's bills, one row per bill: what another system (a bank's
#: collection file, an accounting import) needs to match payments to bills.
CSV_COLUMNS = (
    "numero", "referencia", "id", "nome", "emissao", "vencimento", "consumo_kwh", "faturado_kwh",
    "total_mes", "ajustes", "total", "codigo_barras", "linha_digitavel", "pix",
)

RUN = routes.integer("execucao", "the billing run", minimum=1, maximum=2**62)
MONTHS_BACK = "months back in each customer's zone (1 = the last closed month); no month before 1970"


class Bills:
    """``/getFatura``, ``/getFaturaCodigo``, ``/faturamento``, ``/getFaturamento``, ``/getFaturamentoResultado``."""

    tags: ClassVar[list[dict[str, str]]] = [{"name": "billing", "description": "operator: billing runs, which issue the month's bills"}]

    def __init__(self, api: Api, runs: BillingRuns, issued: IssuedBills) -> None:
        self.api = api
        self.tariff = api.tariff
        self.runs = runs
        self.issued = issued

    @route(
        "GET", "/getFatura", "customer",
        ID,
        routes.integer("periodo", "months back (0 = the current month); no month before 1970", maximum=MAX_BILL_MONTHS).optional(0),
        summary="The bill of a calendar month",
        description=(
            "An issued month (`\"status\": \"emitida\"`) is answered with the document the billing run stored, byte for"
            " byte the same every time: number, issue and due dates, readings, adjustments, history and payment codes."
            " Any other month, the current one (`\"mes\": \"aberto\"`) or a closed one not issued yet (`\"fechado\"`),"
            " is a preview (`\"status\": \"previa\"`) computed from the readings as they are: a Brazilian group-B bill,"
            " energy (TE, TUSD) and bandeira lines on `faturado_kwh = max(consumo_kwh, disponibilidade)`, taxes"
            " 'por dentro'. Money is a string with exactly 2 decimals, kWh a number."
        ),
        ok=((200, "the bill", "Bill"),), errors=(404, 503),
    )
    async def bill(self, call: Call) -> tuple[int, dict[str, Any]] | Answer:
        api = self.api
        customer = await api.customer(call.args["id"])
        periodo = call.args["periodo"]
        tz = ZoneInfo(customer.tz)
        year, month = _month(api.now_ms(), tz, periodo)
        mes = ABERTO if periodo == 0 else FECHADO
        cached = api.bills.get(customer.id, year, month)
        if cached is not None and cached["mes"] == mes:  # a month cached while open is closed now
            return 200, cached
        if mes == FECHADO:
            stored = await self.issued.get(customer.id, f"{year:04d}-{month:02d}")
            if stored is not None:
                return Answer(200, JSON, stored, {})
        begun = api.bills.begin()
        start, end = periods.month_range(year, month, tz)
        usages = await api.usage(customer, await api.meter_ids(customer.id, None), [start, end])
        bill = compute_bill(
            tariff=self.tariff, ligacao=customer.ligacao, year=year, month=month,
            consumo_wh=sum(u.buckets[0][0] for u in usages), estimado=any(u.buckets[0][1] for u in usages),
        )
        body = bill_document.preview(
            cid=customer.id, name=customer.name, tz_name=customer.tz, bill=bill, inicio_ms=start, fim_ms=end,
            aberto=mes == ABERTO, medidores=[(u.meter_id, *u.buckets[0]) for u in usages], empresa=self.tariff.empresa,
        )
        api.bills.put(customer.id, year, month, body, {u.meter_id: u.spans for u in usages}, begun)
        return 200, body

    @route(
        "GET", "/getFaturaCodigo", "customer",
        ID,
        routes.integer("periodo", MONTHS_BACK, minimum=1, maximum=MAX_BILL_MONTHS).optional(1),
        routes.choice("codigo", "pix: the Pix QR code; barras: the arrecadação barcode's bars (ITF)", ("pix", "barras")),
        summary="A payment code of an issued bill, as SVG",
        description=(
            "The QR code of the bill's Pix copia-e-cola, or the interleaved-2-of-5 bars of its FEBRABAN barcode, as an"
            " SVG image to print or show. 404 `bill_not_issued` for a month not issued, `nothing_to_pay` for a bill"
            " whose total is not positive (it has no payment codes)."
        ),
        media="image/svg+xml", ok=((200, "the code as SVG", None),), errors=(404, 503),
    )
    async def payment_code(self, call: Call) -> Answer:
        customer = await self.api.customer(call.args["id"])
        year, month = _month(self.api.now_ms(), ZoneInfo(customer.tz), call.args["periodo"])
        stored = await self.issued.get(customer.id, f"{year:04d}-{month:02d}")
        if stored is None:
            raise not_found("bill_not_issued", f"the bill of {year:04d}-{month:02d} of customer {customer.id} is not issued")
        doc = orjson.loads(stored)
        pix_code = call.args["codigo"] == "pix"
        code = doc["pix"] if pix_code else doc["codigo_barras"]
        if code is None:
            raise not_found("nothing_to_pay", f"bill {doc['numero']} has nothing to pay, so no payment code")
        return Answer(200, SVG, (pix.qr_svg(code) if pix_code else arrecadacao.itf_svg(code)).encode(), {})

    @route(
        "POST", "/faturamento", "operator",
        routes.integer("periodo", MONTHS_BACK, minimum=1, maximum=MAX_BILL_MONTHS),
        summary="Start a billing run (operator token)",
        description=(
            "Issues the bill of the month `periodo` months back for every customer who has none for it, in batches,"
            " while the server keeps serving; follow it with `/getFaturamento`. A run cut short (the server was stopped"
            " or killed) is resumed by the next start of the same `periodo`, with its own month and dates; no bill is"
            " ever issued twice. 409 `billing_run_active` while one runs, 422 `company_not_configured` when the tariff"
            " file has no `[empresa]` section (a bill needs its issuer and payment codes)."
        ),
        tag="billing", ok=((202, "the run, started or resumed", "BillingRun"),), errors=(409, 422, 503),
    )
    async def start_run(self, call: Call) -> tuple[int, dict[str, Any]]:
        try:
            action, run = await self.runs.start(call.args["periodo"])
        except NoCompany:
            raise ApiError(
                422, "company_not_configured",
                "the tariff file has no [empresa] section: bills need the utility's name, CNPJ, address, Pix key, city,"
                " FEBRABAN code and due-date days (see README)",
            ) from None
        except AlreadyRunning as e:
            which = "a billing run is being started" if e.run is None else f"billing run {e.run.run_id} is running"
            raise ApiError(409, "billing_run_active", f"{which}; follow it with /getFaturamento") from None
        except ValueError:
            raise bad_request("out_of_range", f"periodo reaches before {periods.FIRST_YEAR}") from None
        return 202, {"acao": action, **run.to_json(self.runs.tz)}

    @route(
        "GET", "/getFaturamento", "operator",
        RUN.optional(description="the billing run (default: the latest)"),
        summary="A billing run's state and counts (operator token)",
        description="`estado` is `executando`, `concluida` or `interrompida` (resumed by the next start of its `periodo`).",
        tag="billing", ok=((200, "the run", "BillingRun"),), errors=(404, 503),
    )
    async def get_run(self, call: Call) -> tuple[int, dict[str, Any]]:
        run = await self.api.store.get_run(call.args["execucao"])
        if run is None:
            raise not_found("unknown_run", "no such billing run")
        return 200, run.to_json(self.runs.tz)

    @route(
        "GET", "/getFaturamentoResultado", "operator",
        RUN,
        routes.choice("formato", "jsonl: each bill's document, one per line; csv: one row per bill", ("jsonl", "csv")).optional("jsonl"),
        routes.integer("depois", "only bills numbered after this one (to take up a transfer cut short)", maximum=2**62).optional(0),
        summary="The bills a run issued, as JSON Lines or CSV (operator token)",
        description=(
            "Every bill of the run by number, streamed: read from the store a page at a time, only as fast as the client"
            f" takes it. CSV columns: {', '.join(CSV_COLUMNS)}."
        ),
        tag="billing", media="application/jsonl", also=(exports.CSV_MEDIA,), ok=((200, "the run's bills", None),), errors=(404, 503),
    )
    async def run_result(self, call: Call) -> Streamed:
        a = call.args
        run = await self.api.store.get_run(a["execucao"])
        if run is None:
            raise not_found("unknown_run", "no such billing run")
        csv_ = a["formato"] == "csv"
        name = f"faturamento-{run.run_id}-{run.referencia}.{a['formato']}"
        return Streamed(200, exports.CSV if csv_ else JSON_LINES, {"Content-Disposition": exports.attachment(name)},
                        RunBills(self.api.store, run.run_id, a["depois"], csv=csv_))


class RunBills:
    """A run's result as a streamed body (:class:`~meterd.web.exchange.Chunks`): a page of its bills per chunk.

    JSON Lines are the stored documents as they are; CSV rows are encoded on
    a thread, off the reactor.
    """

    def __init__(self, store: Store, run_id: int, after: int, *, csv: bool) -> None:
        self.store = store
        self.run_id = run_id
        self.after = after
        self.csv = csv
        self.header = csv  # the CSV's header goes first, even before no rows
        self.done = False

    def next_chunk(self) -> Deferred[bytes | None]:
        if self.done:
            return succeed(None)
        return self.store.run_bills(self.run_id, self.after, PAGE).addCallback(self._encode)

    def _encode(self, page: list[tuple[int, bytes]]) -> Deferred[bytes | None]:
        self.done = len(page) < PAGE
        if page:
            self.after = page[-1][0]
        header, self.header = self.header, False
        if self.csv and (page or header):
            return deferToThread(_csv, [doc for _, doc in page], header=header)
        return succeed(b"".join(doc + b"\n" for _, doc in page) if page else None)

    def close(self) -> None:
        self.done = True


def _month(now_ms: int, tz: ZoneInfo, periodo: int) -> tuple[int, int]:
    try:
        return periods.months_back(now_ms, tz, periodo)
    except ValueError:
        raise bad_request("out_of_range", f"periodo reaches before {periods.FIRST_YEAR}") from None


def _csv(documents: list[bytes], *, header: bool) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for d in map(orjson.loads, documents):
        ajustes = sum((Decimal(a["valor"]) for a in d["ajustes"]), Decimal("0.00"))
        writer.writerow([
            d["numero"], d["referencia"], d["id"], d["name"], d["emissao"], d["vencimento"], d["consumo_kwh"], d["faturado_kwh"],
            d["total_mes"], money(ajustes), d["total"], d["codigo_barras"] or "",
            d["linha_digitavel"] or "", d["pix"] or "",
        ])
    return out.getvalue().encode()

