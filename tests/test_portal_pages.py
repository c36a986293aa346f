"""The portal's pages, rendered from fixture data: checked as HTML here, and
in headless Chromium (tests/browser_support.py) served by a tiny twisted.web
site on loopback: no console errors, the Content-Security-Policy obeyed,
every field labelled, every control reachable with Tab, charts with their
text alternative, a phone's width without sideways scrolling, the bill
printing to one A4 page, live alarms and fetch-and-swap navigation.

The fixtures are built with meterd's own modules (``compute_bill`` on the
shipped tariff, real Pix and FEBRABAN codes), so the pages are exercised on
data shaped exactly as the API answers.

Screenshots of every page at 1280×800 and 390×844 (and full-length ones) are
saved to ``$METERD_ARTIFACTS`` (default: a temporary directory).
"""

from __future__ import annotations

import html.parser
import random
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from meterd import arrecadacao, periods, pix, taxid
from meterd.alarm_text import message_for
from meterd.billing import compute_bill
from meterd.portal import routes, sse
from meterd.portal.csrf import CsrfGuard
from meterd.portal.customer_pages import AlarmsPage, BillPage, HistoryPage, OverviewPage, alarm_item_html
from meterd.portal.estimates import all_in_rate, month_projection_kwh
from meterd.portal.fmt import Fmt
from meterd.portal.layout import HTML_CONTENT_TYPE, SECURITY_HEADERS, PageContext, PortalPage, render_bytes
from meterd.portal.login_page import LoginPage
from meterd.portal.message_page import MessagePage
from meterd.portal.sessions import Who
from meterd.portal.staff_pages import CredentialPage, CustomerPage, FleetPage, NewCustomerPage, NewMeterPage, SearchPage
from meterd.portal.static import load_assets
from meterd.tariff import default_tariff
from tests.browser_support import csp_violations, errors, heading, load, wait

TZ = ZoneInfo("America/Sao_Paulo")
CPF = taxid.make_cpf("123456789")
NOW = "2026-12-18T15:20:00-03:00"
NAME = "Ana Beatriz Souza"
TARIFF = default_tariff()
EMPRESA = TARIFF.empresa
CSRF = CsrfGuard(b"k" * 32).token("fixture-session")


# ---------------------------------------------------------------------------
# Fixture data, shaped as the API answers


def _iso(d: datetime) -> str:
    return d.isoformat()


def _history(kind: str, start: datetime, end: datetime, kwh_of: Callable[[int], float], estimated: set[int]) -> dict[str, Any]:
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    edges = periods.bucket_edges(kind, start_ms, end_ms, TZ)
    now = datetime.fromisoformat(NOW)
    buckets = []
    for i, edge in enumerate(edges[:-1]):
        at = datetime.fromtimestamp(edge / 1000, TZ)
        kwh = 0.0 if at >= now else kwh_of(i)
        buckets.append({"start": periods.iso(edge, TZ), "kwh": kwh, "estimated": i in estimated and at < now})
    total = round(sum(b["kwh"] for b in buckets), 3)
    return {
        "id": CPF, "kind": kind, "periodo": 0, "tz": "America/Sao_Paulo",
        "start": periods.iso(start_ms, TZ), "end": periods.iso(end_ms, TZ),
        "total_kwh": total, "estimated": any(b["estimated"] for b in buckets),
        "buckets": buckets,
        "meters": [{"id_medidor": 1, "total_kwh": round(total * 0.8, 3)}, {"id_medidor": 2, "total_kwh": round(total - round(total * 0.8, 3), 3)}],
    }


def month_history() -> dict[str, Any]:
    rng = random.Random(7)
    daily = [round(8 + rng.random() * 6 + (3 if i % 7 in (5, 6) else 0), 3) for i in range(31)]
    return _history("M", datetime(2026, 12, 1, tzinfo=TZ), datetime(2027, 1, 1, tzinfo=TZ), lambda i: daily[i], {6, 7})


def day_history() -> dict[str, Any]:
    shape = [0.3, 0.25, 0.22, 0.2, 0.2, 0.3, 0.6, 0.9, 0.7, 0.5, 0.45, 0.5, 0.8, 0.6, 0.5, 0.55, 0.7, 1.2, 1.6, 1.8, 1.5, 1.1, 0.7, 0.4]
    return _history("D", datetime(2026, 12, 18, tzinfo=TZ), datetime(2026, 12, 19, tzinfo=TZ), lambda i: shape[i], {3})


def bill_json(year: int, month: int, wh: int, mes: str, estimado: bool = False) -> dict[str, Any]:
    bill = compute_bill(tariff=TARIFF, ligacao="bi", year=year, month=month, consumo_wh=wh, estimado=estimado)
    start, end = periods.month_range(year, month, TZ)
    m1 = wh * 4 // 5
    return {
        "id": CPF, "name": NAME, "status": "previa", "mes": mes,
        "inicio": periods.iso(start, TZ), "fim": periods.iso(end, TZ),
        **bill.to_json(),
        "medidores": [
            {"id_medidor": 1, "consumo_kwh": m1 / 1000, "estimado": estimado},
            {"id_medidor": 2, "consumo_kwh": (wh - m1) / 1000, "estimado": False},
        ],
    }


def issued_bill() -> dict[str, Any]:
    """November 2026 (flag amarela in the shipped tariff), issued with every optional field."""
    assert EMPRESA is not None
    bill = bill_json(2026, 11, 312_457, "fechado")
    numero = 2026110004567
    due = date(2026, 12, 11)
    total = Decimal(bill["total"])
    monthly = [287.3, 301.9, 276.4, 254.8, 240.1, 228.7, 219.5, 231.2, 249.9, 268.4, 295.0]
    historico = [
        {"referencia": f"{y:04d}-{m:02d}", "consumo_kwh": kwh, "estimado": (y, m) == (2026, 4)}
        for (y, m), kwh in zip([(2025, 12)] + [(2026, m) for m in range(1, 11)], monthly, strict=True)
    ]
    historico.append({"referencia": "2026-11", "consumo_kwh": 312.457, "estimado": False})
    return {
        **bill,
        "status": "emitida",
        "mes": "fechado",
        "numero": numero,
        "emissao": "2026-12-01",
        "vencimento": due.isoformat(),
        "empresa": {"nome": EMPRESA.nome, "cnpj": EMPRESA.cnpj, "endereco": EMPRESA.endereco},
        "instalacao": "3001234567",
        "endereco": "Rua das Acácias, 45, ap. 302 - Jardim Primavera, Cidade Fictícia - XX",
        "leituras": [
            {"id_medidor": 1, "data_anterior": "2026-11-01", "leitura_anterior": 18452.31, "data_atual": "2026-12-01", "leitura_atual": 18703.514, "consumo_kwh": 251.204},
            {"id_medidor": 2, "data_anterior": "2026-11-01", "leitura_anterior": 3120.775, "data_atual": "2026-12-01", "leitura_atual": 3182.028, "consumo_kwh": 61.253},
        ],
        "historico": historico,
        "pix": pix.brcode(key=EMPRESA.chave_pix, name=EMPRESA.nome, city=EMPRESA.cidade, amount=total, txid=pix.txid_for_bill(numero)),
        "codigo_barras": arrecadacao.build_barcode(total, EMPRESA.codigo_febraban, arrecadacao.bill_free_field(numero, due)),
    }


def _alarm(alarm_id: int, rule: str, meter: int | None, value: float, threshold: float, raised: str, *, cleared: str | None = None, acked: str | None = None) -> dict[str, Any]:
    return {
        "alarm_id": alarm_id, "rule": rule, "id_medidor": meter,
        "raised_at": raised, "cleared_at": cleared, "acked_at": acked,
        "value": value, "threshold": threshold, "message": message_for(rule, meter, value, threshold),
    }


ACTIVE = [
    _alarm(41, "demand", 1, 7.84, 5.0, "2026-12-18T14:55:12-03:00"),
    _alarm(38, "monthly", None, 312.0, 300.0, "2026-12-15T19:02:40-03:00", acked="2026-12-15T20:10:05-03:00"),
]
PAST = [
    _alarm(35, "silent", 2, 7200, 3600, "2026-12-02T03:00:00-03:00", cleared="2026-12-02T09:15:31-03:00"),
    _alarm(31, "anomaly", None, 21.6, 16.2, "2026-11-27T22:00:00-03:00", cleared="2026-11-28T08:00:00-03:00", acked="2026-11-27T22:31:00-03:00"),
]
LIVE_ALARM = _alarm(42, "anomaly", None, 25.3, 18.0, "2026-12-18T15:21:03-03:00")


def alarms_json() -> dict[str, Any]:
    events = [
        {"event_id": 97, "alarm_id": 35, "type": "raised", "at": "2026-12-02T03:00:00-03:00"},
        {"event_id": 98, "alarm_id": 35, "type": "cleared", "at": "2026-12-02T09:15:31-03:00"},
        {"event_id": 101, "alarm_id": 38, "type": "raised", "at": "2026-12-15T19:02:40-03:00"},
        {"event_id": 102, "alarm_id": 38, "type": "acked", "at": "2026-12-15T20:10:05-03:00"},
        {"event_id": 105, "alarm_id": 41, "type": "raised", "at": "2026-12-18T14:55:12-03:00"},
    ]
    return {"id": CPF, "alarme": True, "active": ACTIVE, "events": events, "cursor": 105}


METERS = [
    {"id_medidor": 1, "mode": "register", "last_seen": "2026-12-18T15:19:41-03:00", "last_reading_at": "2026-12-18T15:19:40-03:00", "last_kwh": 18912.337},
    {"id_medidor": 2, "mode": "register", "last_seen": "2026-12-18T15:19:55-03:00", "last_reading_at": "2026-12-18T15:19:55-03:00", "last_kwh": 3230.118},
]
#: The meters as ``/getCliente`` gives them: one reporting, one silent, one retired and the one that replaced it.
DETAIL_METERS = [
    {**METERS[0], "silent": False, "retired_at": None, "replaces": None, "replaced_by": None},
    {**METERS[1], "last_seen": "2026-12-18T11:02:10-03:00", "silent": True, "retired_at": None, "replaces": None, "replaced_by": None},
    {"id_medidor": 3, "mode": "register", "last_seen": "2026-10-02T09:00:00-03:00", "last_reading_at": "2026-10-02T09:00:00-03:00", "last_kwh": 5120.5,
     "silent": False, "retired_at": "2026-10-02T09:00:00-03:00", "replaces": None, "replaced_by": 4},
    {"id_medidor": 4, "mode": "register", "last_seen": None, "last_reading_at": None, "last_kwh": None, "silent": False, "retired_at": None, "replaces": 3, "replaced_by": None},
]


def overview_data() -> dict[str, Any]:
    month = month_history()
    wh = round(month["total_kwh"] * 1000)
    bill = bill_json(2026, 12, wh, "aberto", estimado=month["estimated"])
    projected = month_projection_kwh(month["total_kwh"], month["start"], month["end"], NOW)
    priced = compute_bill(tariff=TARIFF, ligacao="bi", year=2026, month=12, consumo_wh=int(projected * 1000), estimado=False)
    return {
        "customer": {"id": CPF, "name": NAME},
        "now": NOW,
        "month": month,
        "bill": bill,
        "projection": {"consumo_kwh": float(projected), "total": f"{priced.total:.2f}"},
        "previous": bill_json(2026, 11, 312_457, "fechado"),
        "last_year": bill_json(2025, 12, 287_300, "fechado"),
        "alarms": alarms_json(),
    }


def history_data() -> dict[str, Any]:
    data = overview_data()
    return {"history": data["month"], "now": NOW, "meters": METERS, "rate": str(all_in_rate(data["bill"]))}


FLEET = {
    "at": NOW,
    "readings_per_s": 1843.7,
    "customers": 3,
    "meters": 5,
    "silent_meters": 2,
    "silent": [
        {"id": taxid.make_cnpj("112223330001"), "name": "Padaria Pão Quente Ltda.", "id_medidor": 2, "since": "2026-12-17T09:00:00-03:00"},
        {"id": taxid.make_cpf("987654321"), "name": "Carlos Eduardo Lima", "id_medidor": 1, "since": "2026-12-18T11:17:10-03:00"},
    ],
    "alarms": {"demand": 1, "monthly": 1, "anomaly": 0, "silent": 2},
    "drops": {"bad_signature": 12, "kernel": 3, "unknown_meter": 1},
}


def _ctx(lang: str, url: str, who: Who | None, **kw: Any) -> PageContext:
    return PageContext(fmt=Fmt(lang), url=url, who=who, csrf=CSRF, utility=EMPRESA.nome if EMPRESA else "meterd", **kw)


CUSTOMER = Who("customer", CPF)
OPERATOR = Who("operator")

#: (name, path, builder(lang) -> page): every page of the portal, with its URL.
PAGES: list[tuple[str, str, Callable[[str], PortalPage]]] = [
    ("login", routes.LOGIN, lambda lang: LoginPage(_ctx(lang, routes.LOGIN, None), {"error": "failed", "id": "123.456.789-09"})),
    ("overview", routes.OVERVIEW, lambda lang: OverviewPage(_ctx(lang, routes.OVERVIEW, CUSTOMER), overview_data())),
    ("history", routes.HISTORY, lambda lang: HistoryPage(_ctx(lang, routes.HISTORY, CUSTOMER), history_data())),
    ("bill", routes.BILL, lambda lang: BillPage(_ctx(lang, routes.BILL, CUSTOMER), issued_bill())),
    ("alarms", routes.ALARMS, lambda lang: AlarmsPage(_ctx(lang, routes.ALARMS, CUSTOMER), {"alarms": alarms_json(), "past": PAST})),
    (
        "search",
        routes.STAFF_SEARCH,
        lambda lang: SearchPage(
            _ctx(lang, routes.STAFF_SEARCH, OPERATOR),
            {"q": "sou", "results": [{"id": CPF, "name": NAME, "ligacao": "bi", "meters": 2}, {"id": taxid.make_cpf("555666777"), "name": "Marina Souza Prado", "ligacao": "mono", "meters": 1}]},
        ),
    ),
    (
        "customer",
        routes.STAFF_CUSTOMER,
        lambda lang: CustomerPage(
            _ctx(lang, routes.STAFF_CUSTOMER, OPERATOR),
            {
                "id": CPF, "name": NAME, "ligacao": "bi", "limite_kw": 5.0, "limite_kwh": 300.0, "tz": "America/Sao_Paulo",
                "created_at": "2025-03-02T10:14:00-03:00", "meters": DETAIL_METERS, "active": ACTIVE,
            },
        ),
    ),
    (
        "new-customer",
        routes.STAFF_NEW_CUSTOMER,
        lambda lang: NewCustomerPage(
            _ctx(lang, routes.STAFF_NEW_CUSTOMER, OPERATOR),
            {"values": {"id": "123.456.789-00", "name": "Rafael Alves", "ligacao": "tri"}, "errors": {"id": "Dígitos verificadores do CPF não conferem."}},
        ),
    ),
    (
        "new-customer-done",
        routes.STAFF_NEW_CUSTOMER,
        lambda lang: NewCustomerPage(
            _ctx(lang, routes.STAFF_NEW_CUSTOMER, OPERATOR),
            {"created": {"id": CPF, "name": NAME, "ligacao": "bi", "limite_kw": 5.0, "limite_kwh": 300.0, "tz": "America/Sao_Paulo", "token": "q8Zr3kV0mJ1xW7tYb2NcLp5sHd9fGa4eRu6iOy0wQzE"}},
        ),
    ),
    ("new-meter", routes.STAFF_NEW_METER, lambda lang: NewMeterPage(_ctx(lang, routes.STAFF_NEW_METER, OPERATOR), {"values": {"id": CPF}})),
    (
        "new-meter-done",
        routes.STAFF_NEW_METER,
        lambda lang: NewMeterPage(_ctx(lang, routes.STAFF_NEW_METER, OPERATOR), {"created": {"id": CPF, "id_medidor": 3, "mode": "register", "key": "9f" * 32}}),
    ),
    ("fleet", routes.STAFF_FLEET, lambda lang: FleetPage(_ctx(lang, routes.STAFF_FLEET, OPERATOR), FLEET)),
    (
        "new-token",
        routes.STAFF_NEW_TOKEN,
        lambda lang: CredentialPage(_ctx(lang, routes.STAFF_NEW_TOKEN, OPERATOR), {"kind": "token", "customer": {"id": CPF, "name": NAME}}),
    ),
    (
        "new-key-done",
        routes.STAFF_NEW_KEY,
        lambda lang: CredentialPage(
            _ctx(lang, routes.STAFF_NEW_KEY, OPERATOR),
            {"kind": "key", "customer": {"id": CPF, "name": NAME}, "meter": 2, "issued": {"id": CPF, "id_medidor": 2, "key": "7a" * 32}},
        ),
    ),
    ("forbidden", "/portal/proibido", lambda lang: MessagePage(_ctx(lang, "/portal/proibido", CUSTOMER), {"status": 403})),
]


def all_pages() -> Iterator[tuple[str, str, PortalPage]]:
    for name, _, build in PAGES:
        for lang in ("pt", "en"):
            yield name, lang, build(lang)


def page_named(name: str, lang: str) -> PortalPage:
    return next(build(lang) for n, _, build in PAGES if n == name)


# ---------------------------------------------------------------------------
# The HTML itself (no browser needed)


class _Scan(html.parser.HTMLParser):
    """What the checks below need from a page: tags with their attributes, and text inside <script>/<style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.open: list[str] = []
        self.inline_code: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.open and self.open[-1] == tag:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        if self.open and self.open[-1] in ("script", "style") and data.strip():
            self.inline_code.append(data)


def _scan(page: PortalPage) -> _Scan:
    scan = _Scan()
    scan.feed(render_bytes(page).decode("utf-8"))
    return scan


@pytest.mark.parametrize(("name", "lang"), [(n, lang) for n, _, _ in PAGES for lang in ("pt", "en")])
def test_page_has_no_inline_code_and_labels_every_field(name: str, lang: str) -> None:
    scan = _scan(page_named(name, lang))
    attrs_seen = [(tag, a) for tag, a in scan.elements]
    assert scan.inline_code == []
    assert [a for _, a in attrs_seen if "style" in a] == []
    assert [(t, k) for t, a in attrs_seen for k in a if k.startswith("on")] == []
    assert [a["src"] for t, a in attrs_seen if t == "script"] == [routes.SCRIPT]
    labelled = {a["for"] for t, a in attrs_seen if t == "label" and "for" in a}
    fields = [a for t, a in attrs_seen if t in ("input", "select", "textarea") and a.get("type") != "hidden"]
    unlabelled = [a for a in fields if a.get("id") not in labelled and "aria-label" not in a]
    assert unlabelled == []
    # One language per page: the document says which.
    html_attrs = next(a for t, a in attrs_seen if t == "html")
    assert html_attrs["lang"] == {"pt": "pt-BR", "en": "en"}[lang]
    # Every POST form carries the CSRF token.
    text = render_bytes(page_named(name, lang)).decode()
    for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", text, re.S):
        assert f'name="csrf" value="{CSRF}"' in form


def test_pages_in_english_use_no_portuguese_catalog_text() -> None:
    """The English pages show the English catalog (a fixture's own data, names and addresses, aside)."""
    for name, lang, page in all_pages():
        if lang != "en":
            continue
        text = render_bytes(page).decode()
        for leaked in ("Visão geral", "Fatura de energia", "Alarmes ativos", "Vencimento", "Medidor "):
            assert leaked not in text, (name, leaked)


def test_bill_shows_payment_codes_that_parse_back() -> None:
    bill = issued_bill()
    text = render_bytes(page_named("bill", "pt")).decode()
    line = arrecadacao.format_linha_digitavel(arrecadacao.linha_digitavel(bill["codigo_barras"]))
    assert line in text
    assert arrecadacao.parse_code(line).value == Decimal(bill["total"])
    assert pix.parse_brcode(bill["pix"]).amount == Decimal(bill["total"])
    assert bill["pix"] in text
    assert Fmt("pt").money(bill["total"]) in text
    assert "11/12/2026" in text  # the due date
    assert "nov/2026" in text


def test_open_bill_without_issue_fields_still_renders() -> None:
    """A bill as /getFatura answers today (no number, dates or codes) is a preview."""
    page = BillPage(_ctx("pt", routes.BILL, CUSTOMER), bill_json(2026, 12, 194_812, "aberto", estimado=True))
    text = render_bytes(page).decode()
    assert "Prévia" in text and "a emitir" in text
    assert "linha" not in text and "pix-code" not in text


def test_alarm_item_html_is_the_list_item_of_the_page() -> None:
    ctx = _ctx("pt", routes.ALARMS, CUSTOMER)
    fragment = alarm_item_html(ACTIVE[0], ctx)
    page = render_bytes(AlarmsPage(ctx, {"alarms": alarms_json()})).decode()
    assert fragment.startswith('<li class="alarm alarm-active" id="alarm-41">')
    assert fragment in page


# ---------------------------------------------------------------------------
# In the browser


class PortalFixtureSite(Resource):
    """Serves every fixture page at its portal path (``?fixture=`` picks a variant sharing it)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.events: list[Request] = []

    def render_GET(self, request: Request) -> bytes | int:
        path = request.path.decode()
        if path == "/favicon.ico":
            request.setResponseCode(204)
            return b""
        if path == routes.ALARM_EVENTS:
            return self._events(request)
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        lang = args.get("lang", "pt")
        if path == "/portal/csp-probe":
            body = b'<!DOCTYPE html><html lang="en"><head><title>probe</title></head><body><p style="color:red">x</p><script>document.title = "inline ran";</script></body></html>'
        else:
            wanted = args.get("fixture")
            match = [build for n, p, build in PAGES if (n == wanted if wanted else p == path)]
            if not match:
                request.setResponseCode(404)
                return b"not found"
            body = render_bytes(match[0](lang))
        request.setHeader(b"content-type", HTML_CONTENT_TYPE.encode())
        for key, value in SECURITY_HEADERS.items():
            request.setHeader(key.encode(), value.encode())
        return body

    def _events(self, request: Request) -> int:
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        # A session knows its language; this site reads the subscribing page's.
        referer = (request.getHeader(b"referer") or b"").decode()
        ctx = _ctx("en" if "lang=en" in referer else "pt", routes.ALARMS, CUSTOMER)
        request.write(sse.event("alarm", alarm_item_html(LIVE_ALARM, ctx), 106))
        self.events.append(request)
        return NOT_DONE_YET


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from tests.browser_support import chromium

    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def artifacts() -> Path:
    from tests.browser_support import artifacts_dir

    return artifacts_dir()


class _Static(Resource):
    """The portal's two files, as meterd answers them."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.assets = load_assets()

    def render_GET(self, request: Request) -> bytes:
        asset = self.assets[request.postpath[-1].decode()]
        request.setHeader(b"content-type", asset.content_type)
        return asset.body


@pytest_twisted.async_yield_fixture
async def site() -> Any:
    root = Resource()
    portal = Resource()
    pages = PortalFixtureSite()
    root.putChild(b"portal", portal)
    root.putChild(b"favicon.ico", pages)
    portal.putChild(b"static", _Static())
    portal.getChild = lambda name, request: pages  # type: ignore[method-assign]
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")  # type: ignore[attr-defined]
    yield f"http://127.0.0.1:{port.getHost().port}", pages
    for request in pages.events:
        if not request.finished and not request._disconnected:
            request.finish()
    await port.stopListening()


def in_thread(fn: Callable[[], Any]) -> Deferred[Any]:
    """Selenium blocks: run it in a thread while the reactor serves the pages."""
    return deferToThread(fn)


#: Bucket counts of each page's charts in the fixtures.
CHART_BUCKETS = {"overview": [31], "history": [31], "bill": [12]}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "path"), [(n, p) for n, p, _ in PAGES])
@pytest_twisted.ensureDeferred
async def test_page_in_browser(browser: Any, site: Any, artifacts: Path, name: str, path: str) -> None:
    from tests.browser_support import assert_page_passes, audit_page

    base, _ = site
    for lang in ("pt", "en"):
        url = routes.href(base + path, fixture=name, lang=lang)
        result = await in_thread(lambda url=url, lang=lang: audit_page(browser, url, f"{name}-{lang}", artifacts, keyboard=lang == "pt"))
        assert_page_passes(result, f"{name} ({lang})")
        assert [c["rows"] for c in result["charts"]] == CHART_BUCKETS.get(name, [])


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_csp_violation_is_seen_in_the_console(browser: Any, site: Any) -> None:
    """The console check above can fail: inline code on a page under the CSP is reported and blocked."""
    base, _ = site

    def probe() -> tuple[list[str], str]:
        browser.read_console()
        load(browser, base + "/portal/csp-probe")
        return csp_violations(browser.read_console()), browser.driver.title

    violations, title = await in_thread(probe)
    assert title == "probe"  # the inline script did not run
    assert any("inline script" in v for v in violations)
    assert any("inline style" in v for v in violations)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_bill_prints_to_one_a4_page(browser: Any, site: Any, artifacts: Path) -> None:
    base, _ = site

    def print_bill() -> bytes:
        load(browser, base + routes.BILL)
        return browser.print_pdf()

    pdf = await in_thread(print_bill)
    (artifacts / "bill-pt.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF-")
    pages = re.findall(rb"/Type\s*/Page(?!s)", pdf)
    assert len(pages) == 1
    boxes = {tuple(round(float(x)) for x in box.split()) for box in re.findall(rb"/MediaBox\s*\[([\d.\s]+)\]", pdf)}
    assert boxes == {(0, 0, 595, 842)}  # A4 in points


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_live_alarm_is_inserted_without_reload(browser: Any, site: Any) -> None:
    base, _ = site

    def watch() -> tuple[str, bool, bool]:
        driver = browser.driver
        load(browser, base + routes.ALARMS)
        driver.execute_script("window.loadedOnce = true")
        text = wait(driver, lambda d: d.execute_script("const li = document.querySelector('#active-alarms > #alarm-42'); return li && li.textContent"))
        first = driver.execute_script("return document.querySelector('#active-alarms').firstElementChild.id")
        return first, driver.execute_script("return window.loadedOnce === true"), "Consumo" in text

    first, same_page, text = await in_thread(watch)
    assert first == "alarm-42"
    assert same_page
    assert text


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_navigation_swaps_main_without_reload_and_back_works(browser: Any, site: Any) -> None:
    from selenium.webdriver.common.by import By

    base, _ = site

    def navigate() -> dict[str, Any]:
        driver = browser.driver
        load(browser, base + routes.OVERVIEW)
        driver.execute_script("window.loadedOnce = true")
        driver.find_element(By.CSS_SELECTOR, f'.site-nav a[href="{routes.HISTORY}"]').click()
        wait(driver, lambda d: heading(d).startswith("Consumo"))
        after = {
            "url": driver.current_url,
            "same_page": driver.execute_script("return window.loadedOnce === true"),
            "current": driver.find_element(By.CSS_SELECTOR, '.site-nav a[aria-current="page"]').get_attribute("href"),
            "focused": driver.execute_script("return document.activeElement.id"),
        }
        driver.back()
        wait(driver, lambda d: heading(d).startswith("Olá"))
        after["back_same_page"] = driver.execute_script("return window.loadedOnce === true")
        after["errors"] = errors(browser.read_console())
        return after

    result = await in_thread(navigate)
    assert result["url"] == base + routes.HISTORY
    assert result["same_page"] and result["back_same_page"]
    assert result["current"] == base + routes.HISTORY
    assert result["focused"] == "main"
    assert result["errors"] == []


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_copy_button_appears_and_reports(browser: Any, site: Any) -> None:
    from selenium.webdriver.common.by import By

    base, _ = site

    def copy() -> str:
        driver = browser.driver
        load(browser, base + routes.BILL)
        button = driver.find_element(By.CSS_SELECTOR, "[data-copy=pix-code]")
        button.click()
        return wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".pay-pix .copy-status").text)

    assert await in_thread(copy) == "Copiado."


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_without_javascript_links_and_forms_still_work(site: Any) -> None:
    """With scripting off the copy button stays hidden and a link is an ordinary page load."""
    from tests.browser_support import chromium, missing

    if missing():
        pytest.skip(missing())

    base, _ = site

    def plain() -> dict[str, Any]:
        from selenium.webdriver.common.by import By

        with chromium(javascript=False) as b:
            load(b, base + routes.BILL)
            hidden = b.driver.find_element(By.CSS_SELECTOR, "[data-copy=pix-code]").is_displayed()
            b.driver.find_element(By.CSS_SELECTOR, f'.site-nav a[href="{routes.ALARMS}"]').click()
            wait(b.driver, lambda d: heading(d) == "Alarmes")
            return {"copy_visible": hidden, "url": b.driver.current_url}

    result = await in_thread(plain)
    assert result["copy_visible"] is False
    assert result["url"] == base + routes.ALARMS


def test_an_issued_bill_as_meterd_writes_it_shows_its_adjustments_credit_and_tax_base() -> None:
    """The page renders the billing run's own document: adjustment lines and a credit add up to the total."""
    from tests.console_fakes import issued_bill as meterd_issued_bill

    bill = meterd_issued_bill()
    bill["credito_anterior"] = {"numero": 99, "valor": "-5.00"}
    text = render_bytes(BillPage(_ctx("pt", routes.BILL, CUSTOMER), bill)).decode()
    fmt = Fmt("pt")
    [ajuste] = bill["ajustes"]
    assert "Ajuste de faturamento ref. 10/2026" in text and fmt.money(ajuste["valor"]) in text
    assert "Crédito da fatura nº 99" in text and fmt.money("-5.00") in text
    assert fmt.money(bill["tributos"]["base"]) in text  # each tax's base is the gross, not the amount due
    assert "Prévia" not in text
