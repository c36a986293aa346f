"""Authentication and authorisation (DESIGN §3 "Auth"): 401 without or with a
bad token (with ``WWW-Authenticate: Bearer``), 403 with valid credentials that
are not this caller's, and what each kind of credential opens."""

from __future__ import annotations

import os
import stat
import time
from typing import Any

import pytest_twisted

from meterd.taxid import make_cpf
from tests.support import LiveServer
from tests.web_support import call, dump_store, local_ts, yesterday

ANA = "12345678909"
BIA = make_cpf("987654321")

CUSTOMER_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/getConsumoHist", {"kind": "M"}),
    ("GET", "/getFatura", {}),
    ("GET", "/getMedidores", {}),
    ("GET", "/getAlarme", {}),
]


async def two_customers(server: LiveServer) -> dict[str, Any]:
    creds: dict[str, Any] = {}
    for cid in (ANA, BIA):
        status, customer, _ = await call(server, "POST", "/cadCliente", json_body={"id": cid, "name": cid})
        assert status == 201
        keys = []
        for _ in range(2):
            status, meter, _ = await call(server, "POST", "/cadMedidor", json_body={"id": cid})
            assert status == 201
            keys.append(meter["key"])
        creds[cid] = {"token": customer["token"], "keys": keys}
    return creds


def a_reading(cid: str, meter: int, valor: float = 1.0, hour: int = 9) -> dict[str, Any]:
    return {"id": cid, "id_medidor": meter, "valor": valor, "timestamp": local_ts(yesterday(), hour)}


def assert_401(status: int, body: Any, response: Any) -> None:
    assert (status, body["error"]["code"]) == (401, "unauthorized"), body
    assert response.headers.getRawHeaders("www-authenticate")[0].startswith("Bearer")


@pytest_twisted.ensureDeferred
async def test_no_token_is_401_everywhere_but_public_routes(server: LiveServer) -> None:
    await two_customers(server)
    before = dump_store(server.data_dir)
    for method, path, kwargs in (
        ("POST", "/cadCliente", {"json_body": {"id": make_cpf("111222333"), "name": "C"}}),
        ("POST", "/cadMedidor", {"json_body": {"id": ANA}}),
        ("POST", "/postConsumo", {"json_body": a_reading(ANA, 1)}),
        ("POST", "/ackAlarme", {"json_body": {"id": ANA, "alarm_id": 1}}),
        *[(m, p, {"params": {"id": ANA, **extra}}) for m, p, extra in CUSTOMER_ROUTES],
    ):
        assert_401(*await call(server, method, path, token=None, **kwargs))
        for bad in ("not-a-token", server.token + "x", server.token[:-1]):
            assert_401(*await call(server, method, path, token=bad, **kwargs))
        for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer ", server.token, f"Token {server.token}"):
            assert_401(*await call(server, method, path, token=None, headers={"Authorization": header}, **kwargs))
    assert dump_store(server.data_dir) == before
    for path in ("/health", "/metrics", "/openapi.json"):
        status, _, _ = await call(server, "GET", path, token=None)
        assert status == 200, path


@pytest_twisted.ensureDeferred
async def test_another_customers_token_is_403(server: LiveServer) -> None:
    creds = await two_customers(server)
    ana, bia = creds[ANA]["token"], creds[BIA]["token"]
    for method, path, extra in CUSTOMER_ROUTES:
        status, body, _ = await call(server, method, path, token=ana, params={"id": ANA, **extra})
        assert status == 200, (path, body)
        status, body, _ = await call(server, method, path, token=ana, params={"id": BIA, **extra})
        assert (status, body["error"]["code"]) == (403, "forbidden"), path
        # the id in a JSON body is checked the same way as in the query string
        status, body, _ = await call(server, method, path, token=bia, json_body={"id": ANA, **extra})
        assert (status, body["error"]["code"]) == (403, "forbidden"), path
    status, body, _ = await call(server, "POST", "/ackAlarme", token=ana, json_body={"id": BIA, "alarm_id": 1})
    assert status == 403
    # a customer's token does not open a customer that does not exist either (no probing)
    status, _, _ = await call(server, "GET", "/getFatura", token=ana, params={"id": make_cpf("111222333")})
    assert status == 403


@pytest_twisted.ensureDeferred
async def test_customer_tokens_do_not_open_operator_routes(server: LiveServer) -> None:
    creds = await two_customers(server)
    before = dump_store(server.data_dir)
    ana = creds[ANA]["token"]
    for credential in (ana, creds[ANA]["keys"][0]):
        status, body, _ = await call(server, "POST", "/cadCliente", token=credential, json_body={"id": make_cpf("111222333"), "name": "C"})
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body, _ = await call(server, "POST", "/cadMedidor", token=credential, json_body={"id": ANA})
        assert (status, body["error"]["code"]) == (403, "forbidden")
    assert dump_store(server.data_dir) == before


@pytest_twisted.ensureDeferred
async def test_meter_keys_post_only_their_own_meters_readings(server: LiveServer) -> None:
    creds = await two_customers(server)
    key1, key2 = creds[ANA]["keys"]
    bia_key = creds[BIA]["keys"][0]
    before = dump_store(server.data_dir)
    for credential, body in (
        (key1, a_reading(ANA, 2)),  # the customer's other meter
        (key2, a_reading(ANA, 1)),
        (bia_key, a_reading(ANA, 1)),  # another customer's meter
        (key1, a_reading(BIA, 1)),
        (creds[ANA]["token"], a_reading(ANA, 1)),  # the customer is not the meter
    ):
        status, answer, _ = await call(server, "POST", "/postConsumo", token=credential, json_body=body)
        assert (status, answer["error"]["code"]) == (403, "forbidden"), body
    assert dump_store(server.data_dir) == before
    # a meter key opens nothing but /postConsumo
    for method, path, extra in CUSTOMER_ROUTES:
        status, _, _ = await call(server, method, path, token=key1, params={"id": ANA, **extra})
        assert status == 403, path
    status, answer, _ = await call(server, "POST", "/postConsumo", token=key1, json_body=a_reading(ANA, 1))
    assert (status, answer) == (201, {"status": "stored"})
    status, answer, _ = await call(server, "POST", "/postConsumo", token=key2, json_body=a_reading(ANA, "2"))
    assert status == 201
    status, answer, _ = await call(server, "POST", "/postConsumo", json_body=a_reading(BIA, 2, hour=10))  # operator
    assert status == 201


@pytest_twisted.ensureDeferred
async def test_operator_token_file_and_reach(server: LiveServer) -> None:
    path = server.data_dir / "operator.token"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(server.token) >= 40
    await two_customers(server)
    for method, path_, extra in CUSTOMER_ROUTES:
        for cid in (ANA, BIA):
            status, _, _ = await call(server, method, path_, params={"id": cid, **extra})
            assert status == 200


@pytest_twisted.ensureDeferred
async def test_no_auth_mode_opens_everything(open_server: LiveServer) -> None:
    await call(open_server, "POST", "/cadCliente", token=None, json_body={"id": ANA, "name": "Ana"})
    status, _, _ = await call(open_server, "POST", "/cadMedidor", token=None, json_body={"id": ANA})
    assert status == 201
    status, _, _ = await call(open_server, "POST", "/postConsumo", token=None,
                              json_body={"id": ANA, "id_medidor": 1, "valor": 1, "timestamp": time.time() - 10})
    assert status == 201
    for method, path, extra in CUSTOMER_ROUTES:
        status, _, _ = await call(open_server, method, path, token=None, params={"id": ANA, **extra})
        assert status == 200, path
        # a stray token is ignored rather than refused
        status, _, _ = await call(open_server, method, path, token="whatever", params={"id": ANA, **extra})
        assert status == 200, path
