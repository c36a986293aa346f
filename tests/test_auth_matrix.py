"""Who may do what: every route × every kind of credential, every portal page ×
every kind of session, and signed datagrams.

The HTTP matrix asks each route of DESIGN §3 for customer A's data with six
credentials and expects exactly the status the table of §3 gives: 401 (with
``WWW-Authenticate: Bearer``) without valid credentials, 403 for valid ones
that are not enough, success for the operator and for A's own token (or, on
``/postConsumo``, A's meter key). The portal's matrix asks each page about A
with no session, A's, B's and the operator's: no session gets the login page,
B's gets 403, and a POST with a wrong CSRF token is refused whoever sends it.
The UDP part proves that a datagram an attacker forged, truncated or replayed
never changes a stored row, and that acknowledgements are signed with the
meter's key.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from meterd.credentials import new_token, token_hash
from meterd.datagram import decode_ack, sign
from meterd.portal import routes
from meterd.taxid import make_cpf
from tests.portal_support import PortalClient, open_stream
from tests.support import LiveServer, http_workers_ready, start_server, until
from tests.web_support import dump_store

A = make_cpf("529982247")
B = make_cpf("168995350")
SPARE = make_cpf("111444777")  # whose credentials the operator's cells renew: A's and B's must keep working
PRINCIPALS = ("none", "bad", "other_customer", "own_customer", "meter_key", "operator")
_fresh = (make_cpf(str(n)) for n in itertools.count(200_000_001))
HOOK_URL = "http://127.0.0.1:9/discard"  # the discard port: nothing listens, deliveries are refused and retried


@dataclass
class World:
    server: LiveServer
    tokens: dict[str, str | None] = field(default_factory=dict)
    key1: str = ""
    key2: str = ""
    b_key: str = ""
    base_ts: int = 0
    alarm_ids: list[int] = field(default_factory=list)
    webhook_ids: list[int] = field(default_factory=list)  # one for the operator's cell of /removeWebhook to remove
    seq: itertools.count = field(default_factory=lambda: itertools.count(1))


async def _ok(server: LiveServer, method: str, path: str, body: dict[str, Any], expected: int = 201) -> Any:
    status, answer, _ = await server.call(method, path, json_body=body)
    assert status == expected, answer
    return answer


@pytest_twisted.async_yield_fixture(scope="module", params=["reactor", pytest.param("http-workers", marks=pytest.mark.slow)])
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """Served by meterd's reactor, then by two HTTP workers (which repeat meterd's answers to /getAlarme polls)."""
    if request.param == "reactor":
        server = await start_server(tmp_path_factory.mktemp("auth") / "data")
    else:
        server = await start_server(tmp_path_factory.mktemp("auth") / "data", "--http-workers", "2")
        await http_workers_ready(server, 2)
    w = World(server)
    # Tiny limits so that A's readings raise alarms to acknowledge.
    a = await _ok(server, "POST", "/cadCliente", {"id": A, "name": "Ana", "limite_kw": 0.001, "limite_kwh": 0.001})
    b = await _ok(server, "POST", "/cadCliente", {"id": B, "name": "Bruno"})
    w.key1 = (await _ok(server, "POST", "/cadMedidor", {"id": A}))["key"]
    w.key2 = (await _ok(server, "POST", "/cadMedidor", {"id": A}))["key"]
    w.b_key = (await _ok(server, "POST", "/cadMedidor", {"id": B}))["key"]
    await _ok(server, "POST", "/cadCliente", {"id": SPARE, "name": "Sobra"})
    for _ in range(3):  # 1 gets new keys, 2 is retired by the operator's cell, 3 is retired here and replaced by it
        await _ok(server, "POST", "/cadMedidor", {"id": SPARE})
    w.webhook_ids = [(await _ok(server, "POST", "/cadWebhook", {"url": HOOK_URL, "id": SPARE}))["webhook_id"]]
    w.tokens = {
        "none": None,
        "bad": new_token(),
        "other_customer": b["token"],
        "own_customer": a["token"],
        "meter_key": w.key1,
        "operator": server.token,
    }
    now = int(time.time())
    await _ok(server, "POST", "/retiraMedidor", {"id": SPARE, "id_medidor": 3, "valor": 0, "timestamp": now - 300}, 200)
    w.base_ts = now - 240
    for ts, valor in ((now - 250, 0), (now - 245, 5)):
        await _ok(server, "POST", "/postConsumo", {"id": A, "id_medidor": 2, "valor": valor, "timestamp": ts})
    async def alarmed() -> tuple[int, Any] | None:  # alarms are evaluated after the commit
        status, body, _ = await server.call("GET", "/getAlarme", params={"id": A})
        return (status, body) if status != 200 or body.get("active") else None

    status, body = await until(alarmed, 30)
    if status == 200:
        w.alarm_ids = [alarm["alarm_id"] for alarm in body["active"]]
        assert w.alarm_ids, f"A's readings should have raised an alarm to acknowledge: {body}"
    # A's bill of last month issued, for /getFaturaCodigo: a reading in that month makes A a customer then
    last_month = now - 40 * 86_400
    await _ok(server, "POST", "/postConsumo", {"id": A, "id_medidor": 1, "valor": 0, "timestamp": last_month})
    await _ok(server, "POST", "/faturamento", {"periodo": 1}, 202)
    async def ran() -> Any:
        _, run, _ = await server.call("GET", "/getFaturamento")
        return run if run["estado"] != "executando" else None

    run = await until(ran, 60)
    assert run["estado"] == "concluida" and run["emitidas"] >= 1, run
    yield w
    await server.stop()


def _request(w: World, route: str, principal: str) -> tuple[str, dict[str, Any] | None, dict[str, str] | None]:
    """(method, JSON body, query) of a request about customer A on ``route``."""
    if route == "/cadCliente":
        return "POST", {"id": next(_fresh), "name": "Nova"}, None
    if route == "/cadMedidor":
        return "POST", {"id": A}, None
    if route == "/novoToken":
        return "POST", {"id": SPARE}, None
    if route == "/novaChave":
        return "POST", {"id": SPARE, "id_medidor": 1}, None
    if route == "/alteraCliente":
        return "POST", {"id": SPARE, "name": f"Sobra {principal}"}, None
    if route == "/retiraMedidor":
        return "POST", {"id": SPARE, "id_medidor": 2, "valor": 0, "timestamp": w.base_ts}, None
    if route == "/substituiMedidor":
        return "POST", {"id": SPARE, "id_medidor": 3, "valor": 0, "timestamp": w.base_ts}, None
    if route == "/buscaClientes":
        return "GET", None, {"q": "ana"}
    if route in ("/getCliente", "/getAuditoria"):
        return "GET", None, {"id": A}
    if route == "/cadWebhook":
        return "POST", {"url": HOOK_URL, "id": A}, None
    if route == "/removeWebhook":
        return "POST", {"webhook_id": w.webhook_ids[0]}, None
    if route == "/postConsumo":
        n = next(w.seq)  # each one a new, later reading of a rising register
        return "POST", {"id": A, "id_medidor": 1, "valor": n / 1000, "timestamp": w.base_ts + n}, None
    if route == "/getConsumoHist":
        return "GET", None, {"id": A, "kind": "M", "periodo": "0"}
    if route == "/getLeituras":
        return "GET", None, {"id": A, "format": "csv"}
    if route in ("/getFatura", "/getAlarme", "/getMedidores"):
        return "GET", None, {"id": A}
    if route == "/getFaturaCodigo":
        return "GET", None, {"id": A, "periodo": "1", "codigo": "pix"}
    if route == "/faturamento":
        return "POST", {"periodo": 1}, None
    if route == "/getFaturamentoResultado":
        return "GET", None, {"execucao": "1", "formato": "csv"}
    if route == "/ackAlarme":
        ids = w.alarm_ids or [1]
        return "POST", {"id": A, "alarm_id": ids[0] if principal != "operator" else ids[-1]}, None
    return "GET", None, None


# DESIGN §3, one row per route: the status for each of PRINCIPALS.
DENIED_TO_ALL_BUT_OPERATOR = (401, 401, 403, 403, 403)
CUSTOMER_ROUTE = (401, 401, 403, 200, 403, 200)
MATRIX: dict[str, tuple[int, ...]] = {
    "/cadCliente": (*DENIED_TO_ALL_BUT_OPERATOR, 201),
    "/cadMedidor": (*DENIED_TO_ALL_BUT_OPERATOR, 201),
    "/novoToken": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/novaChave": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/buscaClientes": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/getCliente": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/alteraCliente": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/getAuditoria": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/retiraMedidor": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/substituiMedidor": (*DENIED_TO_ALL_BUT_OPERATOR, 201),
    "/cadWebhook": (*DENIED_TO_ALL_BUT_OPERATOR, 201),
    "/getWebhooks": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/removeWebhook": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/postConsumo": (401, 401, 403, 403, 201, 201),
    "/getConsumoHist": CUSTOMER_ROUTE,
    "/getFatura": CUSTOMER_ROUTE,
    "/getFaturaCodigo": CUSTOMER_ROUTE,
    "/faturamento": (*DENIED_TO_ALL_BUT_OPERATOR, 202),
    "/getFaturamento": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/getFaturamentoResultado": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/getAlarme": CUSTOMER_ROUTE,
    "/ackAlarme": CUSTOMER_ROUTE,
    "/getMedidores": CUSTOMER_ROUTE,
    "/getLeituras": CUSTOMER_ROUTE,
    "/getFrota": (*DENIED_TO_ALL_BUT_OPERATOR, 200),
    "/health": (200,) * 6,
    "/metrics": (200,) * 6,
    "/openapi.json": (200,) * 6,
    "/no/such/route": (404,) * 6,
}
CELLS = [(route, who, statuses[i]) for route, statuses in MATRIX.items() for i, who in enumerate(PRINCIPALS)]
ALARM_ROUTES = ("/getAlarme", "/ackAlarme")


@pytest.mark.parametrize("route, who, expected", CELLS, ids=[f"{r}-{w}" for r, w, _ in CELLS])
@pytest_twisted.ensureDeferred
async def test_route_answers_each_credential_as_designed(world: World, route: str, who: str, expected: int) -> None:
    method, body, query = _request(world, route, who)
    status, answer, response = await world.server.call(method, route, token=world.tokens[who], json_body=body, params=query)
    if status == 501 and route in ALARM_ROUTES:
        pytest.xfail(f"{route} is not implemented yet (501)")
    assert status == expected, answer
    if status == 401:
        assert (response.headers.getRawHeaders(b"www-authenticate") or [b""])[0].startswith(b"Bearer")
    if status >= 400:
        assert answer["error"]["code"] in {401: {"unauthorized"}, 403: {"forbidden"}, 404: {"unknown_route"}}[status]


def test_matrix_covers_every_route_of_the_api(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert set(world.server.core.api.routes) == set(MATRIX) - {"/no/such/route"}
    with capsys.disabled():
        print(f"\nauth matrix: {len(MATRIX)} routes x {len(PRINCIPALS)} credentials = {len(CELLS)} cells, {len(FORGERIES)} kinds of forged datagram")


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Basic dXNlcjpwYXNz", 401),
        ("Bearer", 401),
        ("Bearer    ", 401),
        ("Token {own}", 401),
        ("Bearer {own}x", 401),
        ("Bearer {own_truncated}", 401),
        ("Bearer {own_hash}", 401),  # the stored hash is not a credential
        ("bearer {own}", 200),  # the scheme is case-insensitive (RFC 7235)
        ("Bearer   {own}  ", 200),
    ],
)
@pytest_twisted.ensureDeferred
async def test_odd_authorization_headers(world: World, header: str, expected: int) -> None:
    own = world.tokens["own_customer"]
    assert own is not None
    value = header.format(own=own, own_truncated=own[:-1], own_hash=token_hash(own))
    status, answer, _ = await world.server.call("GET", "/getMedidores", token=None, params={"id": A}, headers={"Authorization": value})
    assert status == expected, answer


@pytest.mark.parametrize(
    "key, customer, meter, expected",
    [
        ("key2", A, 1, 403),  # A's other meter
        ("key1", A, 2, 403),
        ("key1", B, 1, 403),  # another customer's meter
        ("b_key", A, 1, 403),
        ("key1", A, 1, 201),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_meter_key_posts_only_its_own_meter(world: World, key: str, customer: str, meter: int, expected: int) -> None:
    n = next(world.seq)
    body = {"id": customer, "id_medidor": meter, "valor": n / 1000, "timestamp": world.base_ts + n}
    before = dump_store(world.server.data_dir)
    status, answer, _ = await world.server.call("POST", "/postConsumo", token=getattr(world, key), json_body=body)
    assert status == expected, answer
    if expected == 403:
        assert dump_store(world.server.data_dir) == before


# -- the portal's pages --------------------------------------------------------------

SESSIONS = ("none", "own_customer", "other_customer", "operator")
LOGIN = "login"  # sent to the login page
STREAM = "stream"  # a live stream from meterd's port (200); from an HTTP worker, which cannot hold one, 503
_STAFF_ONLY = (LOGIN, 403, 403)
_A_ONLY = (LOGIN, 200, 403, 200)

#: (method, page) -> what each of SESSIONS gets, asking about customer A.
PAGE_MATRIX: dict[tuple[str, str], tuple[int | str, ...]] = {
    ("GET", "/"): (302,) * 4,
    ("GET", routes.PREFIX): (301,) * 4,
    ("GET", routes.LOGIN): (200, 303, 303, 303),
    ("POST", routes.LOGIN): (303,) * 4,
    ("POST", routes.LOGIN_STAFF): (303,) * 4,
    ("POST", routes.LOGOUT): (LOGIN, 303, 303, 303),
    ("GET", routes.OVERVIEW): _A_ONLY,
    ("GET", routes.HISTORY): _A_ONLY,
    ("GET", routes.HISTORY_CSV): _A_ONLY,
    ("GET", routes.BILL): _A_ONLY,
    ("GET", routes.ALARMS): _A_ONLY,
    ("GET", routes.ALARM_EVENTS): (403, STREAM, 403, STREAM),
    ("POST", routes.ALARM_ACK): (LOGIN, 303, 403, 303),
    ("GET", routes.STAFF_SEARCH): (*_STAFF_ONLY, 200),
    ("GET", routes.STAFF_CUSTOMER): (*_STAFF_ONLY, 200),
    ("GET", routes.STAFF_NEW_CUSTOMER): (*_STAFF_ONLY, 200),
    ("POST", routes.STAFF_NEW_CUSTOMER): (*_STAFF_ONLY, 201),
    ("GET", routes.STAFF_NEW_METER): (*_STAFF_ONLY, 200),
    ("POST", routes.STAFF_NEW_METER): (*_STAFF_ONLY, 201),
    ("GET", routes.STAFF_NEW_TOKEN): (*_STAFF_ONLY, 200),
    ("POST", routes.STAFF_NEW_TOKEN): (*_STAFF_ONLY, 200),
    ("GET", routes.STAFF_NEW_KEY): (*_STAFF_ONLY, 200),
    ("POST", routes.STAFF_NEW_KEY): (*_STAFF_ONLY, 200),
    ("GET", routes.STAFF_FLEET): (*_STAFF_ONLY, 200),
    ("GET", routes.STYLESHEET): (200,) * 4,
}
PAGE_CELLS = [(method, page, who, expected[i]) for (method, page), expected in PAGE_MATRIX.items() for i, who in enumerate(SESSIONS)]


def _page_request(w: World, method: str, page: str, who: str) -> tuple[str, dict[str, Any]]:
    """(path with query, form fields) of a request about customer A on ``page``."""
    about_a = {"id": A}
    if page in (routes.OVERVIEW, routes.HISTORY, routes.BILL, routes.ALARMS, routes.ALARM_EVENTS, routes.STAFF_CUSTOMER):
        return routes.href(page, **about_a), {}
    if page == routes.HISTORY_CSV:
        return routes.href(page, id=A, kind="M"), {}
    if page == routes.STAFF_SEARCH:
        return routes.href(page, q=A), {}
    if page == routes.ALARM_ACK:
        ids = w.alarm_ids or [1]
        return page, {"id": A, "alarm_id": ids[0] if who != "operator" else ids[-1]}
    if page == routes.LOGIN and method == "POST":
        return page, {"id": A, "token": w.tokens["own_customer"]}
    if page == routes.LOGIN_STAFF:
        return page, {"operator_token": w.tokens["operator"]}
    if page == routes.STAFF_NEW_CUSTOMER and method == "POST":
        return page, {"id": next(_fresh), "name": "Nova"}
    if page == routes.STAFF_NEW_METER:
        return routes.href(page, **about_a), about_a
    if page in (routes.STAFF_NEW_TOKEN, routes.STAFF_NEW_KEY):
        params = {"id": SPARE, "medidor": 1}
        return routes.href(page, **params), params
    return page, {}


async def _visitor(w: World, who: str) -> PortalClient:
    """A browser with a fresh session of ``who`` (``none``: only the login page's cookie), and a page's CSRF token."""
    client = PortalClient(w.server)
    if who == "operator":
        await client.login_operator(w.server.token)
    elif who != "none":
        cid = A if who == "own_customer" else B
        reply = await client.login(cid, w.tokens[who])
        assert reply.status == 303, reply.text
    else:
        await client.get(routes.LOGIN)
    return client


@pytest.mark.parametrize("method, page, who, expected", PAGE_CELLS, ids=[f"{m}-{p}-{w}" for m, p, w, _ in PAGE_CELLS])
@pytest_twisted.ensureDeferred
async def test_page_answers_each_session_as_designed(world: World, method: str, page: str, who: str, expected: int | str) -> None:
    client = await _visitor(world, who)
    path, form = _page_request(world, method, page, who)
    if page == routes.ALARM_EVENTS:
        stream = await open_stream(client, path)
        await until(lambda: _done(stream.status != 0))
        stream.transport.loseConnection()  # type: ignore[union-attr]
        status: int | str = stream.status
        if expected == STREAM:
            expected = 503 if world.server.core.http_workers is not None else 200
    else:
        if method == "POST":
            home = routes.STAFF_SEARCH if who == "operator" else routes.OVERVIEW if who != "none" else routes.LOGIN
            form = {**form, "csrf": (await client.get(home)).csrf()}
        reply = await client.request(method, path, form=form if method == "POST" else None)
        status = reply.status
        if who == "none" and status == 303 and (reply.location or "").startswith(routes.LOGIN):
            status = LOGIN
    assert status == expected, (method, path, who)


async def _done(value: bool) -> bool:
    return value


@pytest.mark.parametrize("method, page", [k for k in PAGE_MATRIX if k[0] == "POST"], ids=[f"{m}-{p}" for m, p in PAGE_MATRIX if m == "POST"])
@pytest_twisted.ensureDeferred
async def test_a_post_with_a_wrong_csrf_token_is_refused(world: World, method: str, page: str) -> None:
    for who in SESSIONS:
        client = await _visitor(world, who)
        other = await _visitor(world, "none")
        path, form = _page_request(world, method, page, who)
        before = dump_store(world.server.data_dir, except_last_seen=True)
        for csrf in (None, "", (await other.get(routes.LOGIN)).csrf()):
            sent = form if csrf is None else {**form, "csrf": csrf}
            reply = await client.request(method, path, form=sent)
            assert reply.status == 403, (page, who, csrf)
        assert dump_store(world.server.data_dir, except_last_seen=True) == before


def test_page_matrix_covers_every_page_of_the_portal(world: World) -> None:
    portal = world.server.core.parts.portal
    served = {(m, p) for p, page in portal.pages.items() for m in page.methods}
    assert served == {k for k in PAGE_MATRIX if k[1] != routes.STYLESHEET}


# -- datagrams ----------------------------------------------------------------------


class Meter:
    """A UDP socket speaking for one meter, reading acks without blocking the reactor."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(3)

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, ("127.0.0.1", self.server.udp_port))

    async def ack(self) -> bytes:
        data, _ = await deferToThread(self.sock.recvfrom, 4096)
        return data

    def close(self) -> None:
        self.sock.close()


def _dropped(server: LiveServer, reason: str) -> float:
    return server.core.api.metrics.registry.get_sample_value("meterd_datagrams_dropped_total", {"reason": reason}) or 0.0


async def _until_dropped(server: LiveServer, reason: str, before: float) -> None:
    async def dropped() -> bool:
        return _dropped(server, reason) > before

    await until(dropped, 30)


def _payload(w: World, seq: int, **changes: Any) -> bytes:
    n = next(w.seq)
    body = {"id": A, "id_medidor": 1, "valor": n / 1000, "timestamp": w.base_ts + n, "seq": seq, **changes}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest_twisted.ensureDeferred
async def test_a_signed_datagram_is_stored_and_acked_with_a_signature(world: World) -> None:
    meter = Meter(world.server)
    try:
        key = bytes.fromhex(world.key1)
        meter.send(sign(_payload(world, 41), key))
        ack = await meter.ack()
        assert decode_ack(ack, key) == (A, 1, [41])
        assert decode_ack(ack, bytes.fromhex(world.key2)) is None  # signed with this meter's key, not any key
        assert decode_ack(ack.rsplit(b"\n", 1)[0], key) is None  # and the signature is really there
    finally:
        meter.close()


@pytest_twisted.ensureDeferred
async def test_a_replayed_datagram_is_acked_again_and_changes_no_reading(world: World) -> None:
    meter = Meter(world.server)
    try:
        key = bytes.fromhex(world.key1)
        datagram = sign(_payload(world, 77), key)
        meter.send(datagram)
        assert decode_ack(await meter.ack(), key) == (A, 1, [77])
        stored = dump_store(world.server.data_dir, except_last_seen=True)
        for _ in range(5):
            meter.send(datagram)
            assert decode_ack(await meter.ack(), key) == (A, 1, [77])
        # Only the meter's last_seen may move: a replay is indistinguishable from
        # a meter resending a reading whose ack it lost (see docs/reliability.md).
        assert dump_store(world.server.data_dir, except_last_seen=True) == stored
    finally:
        meter.close()


def _other_hex_digit(data: bytes) -> bytes:
    """The same datagram with its last signature digit changed to another hex digit."""
    return data[:-1] + (b"0" if data[-1:] != b"0" else b"1")


FORGERIES: list[tuple[str, Any, str]] = [
    ("signed with another meter's key", lambda w, p: sign(p, bytes.fromhex(w.key2)), "bad_signature"),
    ("signed with another customer's key", lambda w, p: sign(p, bytes.fromhex(w.b_key)), "bad_signature"),
    ("signed with the key's hex text, not its bytes", lambda w, p: sign(p, w.key1.encode()), "bad_signature"),
    ("one digit of the signature changed", lambda w, p: _other_hex_digit(sign(p, bytes.fromhex(w.key1))), "bad_signature"),
    ("valor changed after signing", lambda w, p: sign(p, bytes.fromhex(w.key1)).replace(b'"valor":', b'"valor":9', 1), "bad_signature"),
    ("signature of an empty payload", lambda w, p: p + b"\n" + sign(b"", bytes.fromhex(w.key1)).split(b"\n")[1], "bad_signature"),
    ("truncated signature", lambda w, p: sign(p, bytes.fromhex(w.key1))[:-1], "unsigned"),
    ("signature in upper case", lambda w, p: p + b"\n" + sign(p, bytes.fromhex(w.key1)).split(b"\n")[1].upper(), "unsigned"),
    ("unsigned", lambda w, p: p, "unsigned"),
    ("first bytes cut off", lambda w, p: sign(p, bytes.fromhex(w.key1))[5:], "bad_csv"),
    ("signature twice", lambda w, p: sign(sign(p, bytes.fromhex(w.key1)), bytes.fromhex(w.key2)), "bad_json"),
]


@pytest.mark.parametrize("forge, reason", [(f, r) for _, f, r in FORGERIES], ids=[n for n, _, _ in FORGERIES])
@pytest_twisted.ensureDeferred
async def test_forged_or_truncated_datagrams_never_change_stored_data(world: World, forge: Any, reason: str) -> None:
    server = world.server
    meter = Meter(server)
    try:
        before_rows, before_count = dump_store(server.data_dir), _dropped(server, reason)
        meter.send(forge(world, _payload(world, 5)))
        await _until_dropped(server, reason, before_count)
        meter.sock.settimeout(0.2)
        with pytest.raises(TimeoutError):  # a forged datagram is never answered
            await meter.ack()
        assert dump_store(server.data_dir) == before_rows
    finally:
        meter.close()
