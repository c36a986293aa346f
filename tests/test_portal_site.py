"""The portal served by a real meterd (in this process, real sockets): sessions,
CSRF, throttling, headers, every page with the API's data, the live alarm
stream, the operator's forms. What each kind of session may open is the auth
matrix's (tests/test_auth_matrix.py); the pages in a browser are
tests/test_portal_browser.py's."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from meterd.portal import routes
from meterd.portal.sessions import SessionStore
from meterd.portal.site import Portal
from meterd.portal.throttle import LoginThrottle
from meterd.taxid import make_cpf
from meterd.web.exchange import Incoming
from tests.portal_support import PortalClient, open_stream, raise_demand_alarm
from tests.support import LiveServer, pg_dsn, reset_pg, start_server, until, zone_at_midday

A = make_cpf("529982247")
B = make_cpf("168995350")


async def register(server: LiveServer, cid: str, name: str, **extra: Any) -> str:
    status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": cid, "name": name, **extra})
    assert status == 201, body
    status, meter, _ = await server.call("POST", "/cadMedidor", json_body={"id": cid})
    assert status == 201, meter
    return str(body["token"])


def portal(server: LiveServer) -> Portal:
    return server.core.parts.portal


def h1(reply: Any) -> str:
    found = re.search(r"<h1[^>]*>(.*?)</h1>", reply.text, re.S)
    return found.group(1) if found else ""


# -- the door ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pages_ask_the_api_with_its_own_parsing_and_authorisation(server: LiveServer) -> None:
    from meterd.directory import OPERATOR, Principal
    from meterd.web.errors import ApiError

    await register(server, A, "Ana")
    api = server.core.api
    ana, bruno = Principal("customer", A), Principal("customer", B)
    bill = await api.call_as(ana, "GET", "/getFatura", {"id": A, "periodo": "0"})
    status, over_http, _ = await server.call("GET", "/getFatura", params={"id": A})
    assert bill == over_http
    for principal, method, path, params, status in (
        (bruno, "GET", "/getFatura", {"id": A}, 403),  # another customer's: the API's rule
        (ana, "POST", "/cadCliente", {"id": B, "name": "x"}, 403),  # the operator's route
        (ana, "GET", "/getFatura", {"id": A, "periodo": "-1"}, 400),  # the route's own parsing
        (OPERATOR, "GET", "/getFatura", {"id": B}, 404),
        (OPERATOR, "POST", "/getFatura", {"id": A}, 404),  # no such route with that method
    ):
        with pytest.raises(ApiError) as refused:
            await api.call_as(principal, method, path, params)
        assert refused.value.status == status, (principal, path, params)




@pytest_twisted.ensureDeferred
async def test_a_browser_at_the_root_is_sent_to_the_portal_and_the_api_is_untouched(server: LiveServer) -> None:
    browser = PortalClient(server)
    root = await browser.get("/")
    assert (root.status, root.location) == (302, routes.OVERVIEW)
    bare = await browser.get(routes.PREFIX)
    assert (bare.status, bare.location) == (301, routes.OVERVIEW)
    overview = await browser.get(routes.OVERVIEW)
    assert overview.status == 303 and overview.location == routes.href(routes.LOGIN, next=routes.OVERVIEW)
    # The API's own answers for everything else, "/" with another method included.
    status, body, response = await server.call("POST", "/", token=None)
    assert status == 404 and body["error"]["code"] == "unknown_route"
    status, body, _ = await server.call("GET", "/health", token=None)
    assert status == 200 and body["status"] == "ok"


@pytest_twisted.ensureDeferred
async def test_the_login_page_binds_its_forms_to_a_prelogin_cookie(server: LiveServer) -> None:
    browser = PortalClient(server)
    page = await browser.get(routes.LOGIN)
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    [cookie] = page.cookies
    assert re.fullmatch(r"meterd_portal=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; SameSite=Strict", cookie)
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r"portal;dur=[0-9.]+", page.headers["server-timing"])
    # Both forms carry the token; the same cookie gets the same token, another cookie another.
    assert len(set(re.findall(r'name="csrf" value="([0-9a-f]{64})"', page.text))) == 1
    again = await browser.get(routes.LOGIN)
    assert again.cookies == [] and again.csrf() == page.csrf()
    other = PortalClient(server)
    assert (await other.get(routes.LOGIN)).csrf() != page.csrf()
    # A form posted without the page's cookie (another site's) is refused, and logs nobody in.
    token = await register(server, A, "Ana")
    forged = await other.request("POST", routes.LOGIN, form={"csrf": page.csrf(), "id": A, "token": token})
    assert forged.status == 403 and "expirou" in forged.text and not any("Max-Age" in c for c in forged.cookies)
    assert (await other.get(routes.OVERVIEW)).status == 303


# -- sessions -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_customer_logs_in_with_a_new_session_id_and_sees_its_pages(server: LiveServer) -> None:
    token = await register(server, A, "Ana Beatriz Souza", ligacao="bi")
    browser = PortalClient(server)
    prelogin = (await browser.get(routes.LOGIN, next=routes.BILL)).cookies[0].split(";")[0]
    logged = await browser.login(A[:3] + "." + A[3:6] + "." + A[6:9] + "-" + A[9:], token, next=routes.BILL)  # typed with punctuation
    assert logged.status == 303 and logged.location == routes.BILL
    [cookie] = logged.cookies
    assert cookie.split(";")[0] != prelogin  # never the id a visitor had before logging in
    assert len(portal(server).sessions) == 1
    overview = await browser.get(routes.OVERVIEW)
    assert overview.status == 200 and h1(overview) == "Olá, Ana Beatriz Souza"
    assert 'class="chart"' in overview.text and "Previsão para o fim do mês" in overview.text
    history = await browser.get(routes.HISTORY, kind="D")
    assert history.status == 200 and h1(history).startswith("Consumo · ")
    bill = await browser.get(routes.BILL)
    assert bill.status == 200 and "Fatura de energia elétrica" in bill.text and "Bifásica" in bill.text
    assert "Prévia" in bill.text and "Faturas anteriores" in bill.text
    assert (await browser.get(routes.ALARMS)).status == 200
    head = await browser.request("HEAD", routes.OVERVIEW)
    assert head.status == 200 and head.body == b""
    # The login page is for people without a session.
    assert (await browser.get(routes.LOGIN)).location == routes.OVERVIEW


@pytest.mark.parametrize(
    "target, lands",
    [
        (routes.href(routes.HISTORY, kind="D"), routes.href(routes.HISTORY, kind="D")),
        ("https://evil.example/portal/", routes.OVERVIEW),
        ("//evil.example/portal/", routes.OVERVIEW),
        ("/\\evil.example/portal/", routes.OVERVIEW),
        ("/getFatura?id=1", routes.OVERVIEW),
        (routes.LOGOUT, routes.OVERVIEW),
        ("", routes.OVERVIEW),
    ],
)
@pytest_twisted.ensureDeferred
async def test_after_login_only_a_page_of_the_portal_is_a_destination(server: LiveServer, target: str, lands: str) -> None:
    token = await register(server, A, "Ana")
    browser = PortalClient(server)
    assert (await browser.login(A, token, next=target)).location == lands


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session_and_forgets_the_cookie(server: LiveServer) -> None:
    token = await register(server, A, "Ana")
    browser = PortalClient(server)
    await browser.login(A, token)
    session_cookie = browser.cookie
    out = await browser.post(routes.LOGOUT, {}, csrf_from=routes.OVERVIEW)
    assert out.status == 303 and out.location == routes.LOGIN
    assert any("Max-Age=0" in c for c in out.cookies) and browser.cookie is None
    browser.cookie = session_cookie  # a copy of the cookie kept from before opens nothing
    assert (await browser.get(routes.OVERVIEW)).status == 303
    assert len(portal(server).sessions) == 0


@pytest_twisted.ensureDeferred
async def test_wrong_credentials_are_refused_and_repeated_failures_are_throttled(server: LiveServer) -> None:
    from twisted.internet import reactor

    # A minute's wait after the free failures, so that no slow moment of the machine lets a try through.
    portal(server).throttle = LoginThrottle(reactor.seconds, free_failures=5, base_delay=60)
    token = await register(server, A, "Ana")
    await register(server, B, "Bruno")
    browser = PortalClient(server)
    for wrong in ({"id": A, "token": token + "x"}, {"id": B, "token": token}, {"id": "123", "token": token}, {"id": A, "token": ""}):
        page = await browser.get(routes.LOGIN)
        failed = await browser.request("POST", routes.LOGIN, form={"csrf": page.csrf(), **wrong})
        assert failed.status == 200 and "CPF/CNPJ ou token incorretos." in failed.text, wrong
    page = await browser.get(routes.LOGIN)
    operator = await browser.request("POST", routes.LOGIN_STAFF, form={"csrf": page.csrf(), "operator_token": "nope"})
    assert operator.status == 200 and "incorretos" in operator.text
    # Five failures from this address: the next try waits, even with the right token.
    throttled = await browser.request("POST", routes.LOGIN, form={"csrf": page.csrf(), "id": A, "token": token})
    assert throttled.status == 429 and 55 <= int(throttled.headers["retry-after"]) <= 60
    assert "Muitas tentativas. Tente de novo em" in throttled.text
    assert (await browser.get(routes.OVERVIEW)).status == 303
    # Another address is not held back for the id alone until the id has failed five times.
    assert portal(server).throttle.retry_after("192.0.2.1", A) == 0


@pytest_twisted.ensureDeferred
async def test_every_post_needs_the_forms_csrf_token(server: LiveServer) -> None:
    token = await register(server, A, "Ana", limite_kw=0.001)
    await raise_demand_alarm(server, A)
    browser = PortalClient(server)
    await browser.login(A, token)
    alarms = await until(lambda: _active_alarm(server, A))
    other = PortalClient(server)
    await other.get(routes.LOGIN)
    foreign = (await other.get(routes.LOGIN)).csrf()  # a valid token, of another cookie
    for csrf in (None, "", foreign, "0" * 64):
        form = {"alarm_id": alarms} if csrf is None else {"alarm_id": alarms, "csrf": csrf}
        refused = await browser.request("POST", routes.ALARM_ACK, form=form)
        assert refused.status == 403 and "O formulário expirou" in refused.text
        out = await browser.request("POST", routes.LOGOUT, form={} if csrf is None else {"csrf": csrf})
        assert out.status == 403
    status, view, _ = await server.call("GET", "/getAlarme", params={"id": A})
    assert view["active"][0]["acked_at"] is None  # nothing was done
    assert (await browser.get(routes.OVERVIEW)).status == 200  # still logged in


async def _active_alarm(server: LiveServer, cid: str) -> int | None:
    status, view, _ = await server.call("GET", "/getAlarme", params={"id": cid})
    return view["active"][0]["alarm_id"] if status == 200 and view["active"] else None


@pytest_twisted.ensureDeferred
async def test_an_idle_session_expires(server: LiveServer) -> None:
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    site = portal(server)
    site.sessions = site.live.sessions = SessionStore(clock, idle=600, absolute=3600)
    token = await register(server, A, "Ana")
    browser = PortalClient(server)
    await browser.login(A, token)
    clock.now += 599
    assert (await browser.get(routes.OVERVIEW)).status == 200
    clock.now += 600
    expired = await browser.get(routes.OVERVIEW)
    assert expired.status == 303 and expired.location.startswith(routes.LOGIN)


@pytest_twisted.ensureDeferred
async def test_a_new_token_ends_the_customers_portal_sessions(server: LiveServer) -> None:
    token = await register(server, A, "Ana")
    token_b = await register(server, B, "Bruno")
    ana, ana_phone, bruno = PortalClient(server), PortalClient(server), PortalClient(server)
    for browser, cid, secret in ((ana, A, token), (ana_phone, A, token), (bruno, B, token_b)):
        await browser.login(cid, secret)
    stream = await open_stream(ana, routes.ALARM_EVENTS)
    await until(lambda: _true(b"retry:" in stream.data))
    status, body, _ = await server.call("POST", "/novoToken", json_body={"id": A})
    assert status == 200
    for browser in (ana, ana_phone):
        assert (await browser.get(routes.OVERVIEW)).status == 303
    await until(lambda: _true(stream.ended))  # the open page's live stream ended too
    assert (await bruno.get(routes.OVERVIEW)).status == 200
    # The old token logs nobody in; the new one does.
    assert (await ana.login(A, token)).status == 200
    assert (await ana.login(A, body["token"])).status == 303


async def _true(value: bool) -> bool:
    return value


@pytest_twisted.ensureDeferred
async def test_the_language_chosen_sticks_to_the_session(server: LiveServer) -> None:
    token = await register(server, A, "Ana")
    browser = PortalClient(server)
    login = await browser.get(routes.LOGIN, lang="en")
    assert '<html lang="en">' in login.text and "Log in" in login.text
    await browser.request("POST", routes.LOGIN, form={"csrf": login.csrf(), "id": A, "token": token, "lang": "en"})
    assert h1(await browser.get(routes.OVERVIEW)) == "Hello, Ana"
    assert h1(await browser.get(routes.OVERVIEW, lang="pt")) == "Olá, Ana"
    assert h1(await browser.get(routes.ALARMS)) == "Alarmes"


# -- the customer's pages -----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_history_views_and_their_csv(server: LiveServer) -> None:
    now = int(time.time())
    token = await register(server, A, "Ana", tz=zone_at_midday(now))  # both readings in one local day
    await server.call("POST", "/cadMedidor", json_body={"id": A})
    for meter, (first, last) in ((1, (100.0, 101.5)), (2, (7.0, 7.25))):
        for ts, valor in ((now - 7200, first), (now - 60, last)):
            status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": A, "id_medidor": meter, "valor": valor, "timestamp": ts})
            assert status == 201, body
    browser = PortalClient(server)
    await browser.login(A, token)
    for kind in ("D", "M", "Y"):
        page = await browser.get(routes.HISTORY, kind=kind, periodo=0)
        assert page.status == 200 and 'aria-current="page"' in page.text
        reply = await browser.get(routes.HISTORY_CSV, kind=kind, periodo=0)
        assert reply.status == 200 and reply.headers["content-type"].startswith("text/csv")
        assert reply.headers["content-disposition"].startswith("attachment;")
        assert "default-src 'self'" in reply.headers["content-security-policy"]
        status, api_csv, _ = await server.call("GET", "/getConsumoHist", params={"id": A, "kind": kind, "periodo": 0, "format": "csv"})
        assert reply.body == api_csv  # the API's own CSV
        rows = list(csv.DictReader(io.StringIO(reply.text)))
        assert sum(float(r["kwh"]) for r in rows) == pytest.approx(1.75)
    one = await browser.get(routes.HISTORY_CSV, kind="Y", medidor=2)
    assert sum(float(r["kwh"]) for r in csv.DictReader(io.StringIO(one.text))) == pytest.approx(0.25)
    earlier = await browser.get(routes.HISTORY, kind="M", periodo=1)
    assert 'rel="next"' in earlier.text
    bad = await browser.get(routes.HISTORY, kind="W")
    assert bad.status == 400 and "Pedido inválido" in bad.text
    missing = await browser.get(routes.HISTORY, kind="D", medidor=9)
    assert missing.status == 404 and "o cliente não tem este medidor" in missing.text


@pytest_twisted.ensureDeferred
async def test_the_bill_page_lists_the_months_before_it(server: LiveServer) -> None:
    token = await register(server, A, "Ana")
    browser = PortalClient(server)
    await browser.login(A, token)
    page = await browser.get(routes.BILL, periodo=2)
    assert page.status == 200
    others = page.text.split('class="bill-others no-print"')[1].split("</nav>")[0]
    assert re.findall(r'href="/portal/fatura\?periodo=(\d+)"', others) == [str(p) for p in range(13)]  # this month and the 12 before
    assert re.search(r'<a href="/portal/fatura\?periodo=2" aria-current="page">', page.text)
    assert 'id="bill-months-chart"' in page.text  # the 12 months up to the bill
    assert "Prévia" not in page.text.split('class="bill"')[1].split("</article>")[0]  # a closed month


@pytest_twisted.ensureDeferred
async def test_an_alarm_is_acknowledged_with_the_button_without_script(server: LiveServer) -> None:
    token = await register(server, A, "Ana", limite_kw=0.001)
    await raise_demand_alarm(server, A)
    alarm_id = await until(lambda: _active_alarm(server, A))
    browser = PortalClient(server)
    await browser.login(A, token)
    page = await browser.get(routes.ALARMS)
    assert f'id="alarm-{alarm_id}"' in page.text and "Reconhecer" in page.text
    done = await browser.request("POST", routes.ALARM_ACK, form={"csrf": page.csrf(), "alarm_id": alarm_id})
    assert done.status == 303 and done.location == routes.ALARMS
    status, view, _ = await server.call("GET", "/getAlarme", params={"id": A})
    assert view["active"][0]["acked_at"] is not None
    after = await browser.get(routes.ALARMS)
    assert "reconhecido em" in after.text and "Reconhecer</button>" not in after.text
    unknown = await browser.request("POST", routes.ALARM_ACK, form={"csrf": page.csrf(), "alarm_id": 999})
    assert unknown.status == 404


# -- live alarms -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_new_alarm_is_pushed_to_the_open_page(server: LiveServer) -> None:
    token = await register(server, A, "Ana", limite_kw=0.001)
    browser = PortalClient(server)
    await browser.login(A, token)
    page = await browser.get(routes.ALARMS)
    live = re.search(r'data-live="([^"]+)"', page.text)
    assert live is not None
    stream = await open_stream(browser, live.group(1).replace("&amp;", "&"))
    await until(lambda: _true(b"retry: 3000" in stream.data))
    assert stream.status == 200 and b"content-type: text/event-stream" in stream.data.lower()
    await raise_demand_alarm(server, A)
    await until(lambda: _true(b"event: alarm" in stream.data))
    event = stream.data.split(b"event: alarm", 1)[1]
    alarm_id = await _active_alarm(server, A)
    assert b'id: ' in event and f'<li class="alarm alarm-active" id="alarm-{alarm_id}">'.encode() in event
    assert b"Demanda alta" in event
    # Acknowledged elsewhere (the API): the open page gets the item again, acknowledged.
    await server.call("POST", "/ackAlarme", json_body={"id": A, "alarm_id": alarm_id})
    await until(lambda: _true(stream.data.count(b"event: alarm") == 2))
    assert b"reconhecido em" in stream.data.rsplit(b"event: alarm", 1)[1]
    # A page reconnecting with the last event id it saw misses nothing and repeats nothing.
    last = int(re.findall(rb"id: (\d+)", stream.data)[0])
    again = await open_stream(browser, routes.ALARM_EVENTS, last_event_id=last)
    await until(lambda: _true(b"event: alarm" in again.data))
    assert again.data.count(b"event: alarm") == 1
    # Logout ends the session's streams.
    await browser.post(routes.LOGOUT, {}, csrf_from=routes.ALARMS)
    await until(lambda: _true(stream.ended and again.ended))


@pytest_twisted.ensureDeferred
async def test_live_streams_are_bounded_and_need_a_session(server: LiveServer) -> None:
    token = await register(server, A, "Ana")
    nobody = await open_stream(PortalClient(server), routes.ALARM_EVENTS)
    await until(lambda: _true(nobody.status != 0))
    assert nobody.status == 403
    browser = PortalClient(server)
    await browser.login(A, token)
    live = portal(server).live
    streams = [await open_stream(browser, routes.ALARM_EVENTS) for _ in range(live.max_per_session)]
    await until(lambda: _true(all(b"retry:" in s.data for s in streams)))
    assert len(live.streams) == live.max_per_session
    extra = await open_stream(browser, routes.ALARM_EVENTS)
    await until(lambda: _true(extra.status != 0))
    assert extra.status == 503 and b"retry-after: 60" in extra.data.lower()
    streams[0].transport.loseConnection()  # type: ignore[union-attr]
    await until(lambda: _true(len(live.streams) == live.max_per_session - 1))  # the stream is dropped with its connection
    # A heartbeat keeps an idle stream open and says so.
    live.beat()
    await until(lambda: _true(b"\n: \n" in streams[1].data))


# -- the operator's pages ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_operator_registers_a_customer_and_a_meter_and_sees_each_secret_once(server: LiveServer) -> None:
    desk = PortalClient(server)
    logged = await desk.login_operator(server.token)
    assert logged.location == routes.STAFF_SEARCH
    form = await desk.get(routes.STAFF_NEW_CUSTOMER)
    bad = await desk.request(
        "POST", routes.STAFF_NEW_CUSTOMER, form={"csrf": form.csrf(), "id": "529.982.247-26", "name": "", "limite_kw": "-1", "tz": "Marte/Olimpo"}
    )
    assert bad.status == 400
    for field, text in (("id", "CPF/CNPJ inválido"), ("name", "falta um campo obrigatório"), ("tz", "fuso horário desconhecido")):
        assert re.search(rf'id="f-{field}-error" class="error">{text}', bad.text), field
    assert 'value="529.982.247-26"' in bad.text  # what was typed is shown again
    created = await desk.request("POST", routes.STAFF_NEW_CUSTOMER, form={"csrf": form.csrf(), "id": A, "name": "João Gonçalves", "ligacao": "tri"})
    assert created.status == 201 and "Anote agora" in created.text
    token = re.search(r'<textarea id="new-token"[^>]*>([^<]+)</textarea>', created.text)
    assert token is not None
    again = await desk.request("POST", routes.STAFF_NEW_CUSTOMER, form={"csrf": form.csrf(), "id": A, "name": "Outro"})
    assert again.status == 409 and "já existe um cliente com este CPF/CNPJ" in again.text
    meter_form = await desk.get(routes.STAFF_NEW_METER, id=A)
    assert f'value="{A}"' in meter_form.text
    meter = await desk.request("POST", routes.STAFF_NEW_METER, form={"csrf": meter_form.csrf(), "id": A, "mode": "interval"})
    assert meter.status == 201
    key = re.search(r'<textarea id="new-key"[^>]*>([0-9a-f]{64})</textarea>', meter.text)
    assert key is not None
    nobody = await desk.request("POST", routes.STAFF_NEW_METER, form={"csrf": meter_form.csrf(), "id": B})
    assert nobody.status == 404 and "não há cliente cadastrado" in nobody.text
    # What the pages showed are the real credentials.
    customer = PortalClient(server)
    assert (await customer.login(A, token.group(1))).status == 303
    status, body, _ = await server.call(
        "POST", "/postConsumo", token=key.group(1), json_body={"id": A, "id_medidor": 1, "valor": 0.5, "timestamp": int(time.time())}
    )
    assert status == 201, body
    status, meters, _ = await server.call("GET", "/getMedidores", params={"id": A})
    assert [m["mode"] for m in meters["meters"]] == ["interval"]


@pytest_twisted.ensureDeferred
async def test_the_operator_finds_a_customer_by_name_or_cpf_and_sees_its_pages(server: LiveServer) -> None:
    await register(server, A, "João Gonçalves")
    for n in range(21):  # more than a page of results (20)
        status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": make_cpf(f"{700_000_000 + n}"), "name": f"Maria Joana {n}"})
        assert status == 201, body
    desk = PortalClient(server)
    await desk.login_operator(server.token)
    for q in ("joao", "JOÃO gonç", "529.982"):
        found = await desk.get(routes.STAFF_SEARCH, q=q)
        assert f'href="/portal/operador/cliente?id={A}"' in found.text and "João Gonçalves" in found.text, q
    for q in ("ninguém", "000", "...", B):
        assert "Nenhum cliente encontrado" in (await desk.get(routes.STAFF_SEARCH, q=q)).text, q
    first = await desk.get(routes.STAFF_SEARCH, q="maria")
    more = re.search(r'<a href="([^"]+)" rel="next">Mais resultados</a>', first.text)
    assert more is not None and first.text.count('href="/portal/operador/cliente?id=') == 20
    second = await desk.request("GET", more.group(1).replace("&amp;", "&"))
    assert second.text.count('href="/portal/operador/cliente?id=') == 1 and 'rel="next"' not in second.text
    record = await desk.get(routes.STAFF_CUSTOMER, id=A)
    assert record.status == 200 and h1(record) == "João Gonçalves" and "Nunca comunicou" in record.text
    for path in (routes.OVERVIEW, routes.HISTORY, routes.BILL, routes.ALARMS):
        page = await desk.get(path, id=A)
        assert page.status == 200, path
        assert f'href="/portal/operador/cliente?id={A}"' in page.text  # the way back to the record
    assert (await desk.get(routes.OVERVIEW)).location == routes.STAFF_SEARCH  # whose? the operator must say
    assert (await desk.get(routes.OVERVIEW, id=B)).status == 404


@pytest_twisted.ensureDeferred
async def test_what_the_operator_does_in_the_portal_is_in_the_audit_log_with_the_browsers_address(server: LiveServer) -> None:
    desk = PortalClient(server)
    await desk.login_operator(server.token)
    form = await desk.get(routes.STAFF_NEW_CUSTOMER)
    created = await desk.request("POST", routes.STAFF_NEW_CUSTOMER, form={"csrf": form.csrf(), "id": A, "name": "Ana"})
    assert created.status == 201
    status, log, _ = await server.call("GET", "/getAuditoria", params={"id": A})
    assert status == 200, log
    [entry] = log["entries"]
    assert entry["who"] == "operator" and entry["address"] == "127.0.0.1" and entry["action"], entry


@pytest_twisted.ensureDeferred
async def test_the_operator_reissues_a_token_and_a_key(server: LiveServer) -> None:
    token = await register(server, A, "Ana")
    customer = PortalClient(server)
    await customer.login(A, token)
    desk = PortalClient(server)
    await desk.login_operator(server.token)
    confirm = await desk.get(routes.STAFF_NEW_TOKEN, id=A)
    assert confirm.status == 200 and "deixará de funcionar" in confirm.text
    assert (await customer.get(routes.OVERVIEW)).status == 200  # asking changed nothing
    issued = await desk.request("POST", routes.STAFF_NEW_TOKEN, form={"csrf": confirm.csrf(), "id": A})
    new_token = re.search(r'<textarea id="new-token"[^>]*>([^<]+)</textarea>', issued.text)
    assert issued.status == 200 and new_token is not None
    assert (await customer.get(routes.OVERVIEW)).status == 303  # the customer's session ended with the old token
    assert (await customer.login(A, new_token.group(1))).status == 303
    confirm = await desk.get(routes.STAFF_NEW_KEY, id=A, medidor=1)
    issued = await desk.request("POST", routes.STAFF_NEW_KEY, form={"csrf": confirm.csrf(), "id": A, "medidor": 1})
    key = re.search(r'<textarea id="new-key"[^>]*>([0-9a-f]{64})</textarea>', issued.text)
    assert key is not None
    status, _, _ = await server.call("POST", "/postConsumo", token=key.group(1), json_body={"id": A, "id_medidor": 1, "valor": 1, "timestamp": int(time.time())})
    assert status == 201
    assert (await desk.get(routes.STAFF_NEW_KEY, id=A, medidor=7)).status == 404


@pytest_twisted.ensureDeferred
async def test_the_fleet_page_shows_what_the_fleet_route_answers(server: LiveServer) -> None:
    await register(server, A, "Ana", limite_kw=0.001)
    await raise_demand_alarm(server, A)
    await until(lambda: _active_alarm(server, A))
    fleet = server.core.parts.fleet
    fleet.sample()
    status, body, _ = await server.call("GET", "/getFrota")
    assert status == 200
    assert body["customers"] == 1 and body["meters"] == 1 and body["alarms"]["demand"] == 1 and body["silent_meters"] == 0
    desk = PortalClient(server)
    await desk.login_operator(server.token)
    page = await desk.get(routes.STAFF_FLEET)
    assert page.status == 200 and 'data-refresh="5"' in page.text
    assert re.search(r"Demanda alta</th><td class=\"num\">1</td>", page.text)
    assert "Todos os medidores estão comunicando." in page.text


# -- the bits around -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_stylesheet_and_script_are_served_and_revalidated(server: LiveServer) -> None:
    browser = PortalClient(server)
    for path, kind in ((routes.STYLESHEET, "text/css"), (routes.SCRIPT, "text/javascript")):
        first = await browser.get(path)
        assert first.status == 200 and first.headers["content-type"].startswith(kind) and first.body
        assert first.headers["cache-control"] == "no-cache" and first.headers["x-content-type-options"] == "nosniff"
        cached = await browser.request("GET", path, headers={"If-None-Match": first.headers["etag"]})
        assert cached.status == 304 and cached.body == b""
    assert (await browser.get(routes.STATIC + "/nada.js")).status == 404
    assert (await browser.get("/portal/nada")).status == 404
    wrong = await browser.request("DELETE", routes.OVERVIEW)
    assert wrong.status == 405 and wrong.headers["allow"] == "GET, HEAD"


@pytest_twisted.ensureDeferred
async def test_over_tls_the_cookie_is_secure_and_host_only(server: LiveServer) -> None:
    from twisted.internet import reactor

    site = Portal(server.core.api, reactor, secure=True)
    answer = await site.respond(Incoming("GET", routes.LOGIN, b"", None, None, b""))
    cookie = answer.headers["Set-Cookie"]
    assert re.fullmatch(r"__Host-meterd_portal=[A-Za-z0-9_-]{43}; Path=/; HttpOnly; SameSite=Strict; Secure", cookie)
    # The plain cookie's name is not read over TLS: a subdomain could have planted it.
    value = cookie.split(";")[0].split("=", 1)[1]
    again = await site.respond(Incoming("GET", routes.LOGIN, b"", None, None, b"", f"meterd_portal={value}"))
    assert "Set-Cookie" in again.headers


# -- several processes on one PostgreSQL database ---------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not pg_dsn(), reason="METERD_TEST_PG is not set: no PostgreSQL to test against (.ci/run starts one)")
@pytest_twisted.ensureDeferred
async def test_on_a_shared_store_the_portal_learns_what_another_process_did(tmp_path: Path) -> None:
    """A customer registered by one meterd logs in on another; an alarm settled by the first reaches a page open on the second."""
    reset_pg()
    first = await start_server(tmp_path / "one", "--db", pg_dsn())
    second = await start_server(tmp_path / "two", "--db", pg_dsn())
    try:
        token = await register(first, A, "Ana", limite_kw=0.001)
        browser = PortalClient(second)
        assert (await browser.login(A, token)).location == routes.OVERVIEW
        stream = await open_stream(browser, routes.href(routes.ALARM_EVENTS, cursor=0))
        await until(lambda: _true(b"retry:" in stream.data))
        await raise_demand_alarm(first, A)
        await until(lambda: _true(b"event: alarm" in stream.data))  # by the second's poll of the database
        assert b"Demanda alta" in stream.data
    finally:
        await second.stop()
        await first.stop()


@pytest_twisted.ensureDeferred
async def test_an_issued_bill_is_shown_as_issued_with_its_payment_codes(server: LiveServer) -> None:
    from meterd import arrecadacao
    from tests.test_billing_run import HOUR_MS, month_back, reading, run

    token = await register(server, A, "Ana Conceição")
    _, start, end = month_back(server, 1)
    await reading(server, start + HOUR_MS, "1000", A)
    await reading(server, end - HOUR_MS, "1312.5", A)
    await run(server, 1)
    status, issued, _ = await server.call("GET", "/getFatura", params={"id": A, "periodo": 1})
    assert status == 200 and issued["status"] == "emitida"
    browser = PortalClient(server)
    await browser.login(A, token)
    page = await browser.get(routes.BILL, periodo=1)
    assert page.status == 200
    bill = page.text.split('class="bill"')[1].split("</article>")[0]
    assert "Ana Conceição" in bill and "Prévia" not in bill
    line = arrecadacao.format_linha_digitavel(issued["linha_digitavel"])
    assert line in bill  # the barcode's line, as printed on paper
    assert f">{issued['pix']}</textarea>" in bill  # copia e cola, ready to copy
    assert "<svg" in bill.split('class="qr"')[1].split("</div>")[0]  # the QR code drawn inline
    assert "312,5" in bill  # the month's kWh, Brazilian style
