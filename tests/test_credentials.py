"""Lost credentials are recoverable: the operator gives a customer a new token, a meter a new key.

The old credential stops opening anything from the answer on (HTTP, datagrams,
and polls an HTTP worker would otherwise repeat); the new one is shown once.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from meterd.datagram import decode_ack, sign
from meterd.directory import Directory
from meterd.store.base import Customer, Meter
from meterd.taxid import make_cpf
from tests.support import LiveServer, http_workers_ready, pg_dsn, reset_pg, start_server, until
from tests.web_support import call

A = make_cpf("529982247")


async def registered(server: LiveServer) -> tuple[str, str]:
    status, customer, _ = await call(server, "POST", "/cadCliente", json_body={"id": A, "name": "Ana"})
    assert status == 201
    status, meter, _ = await call(server, "POST", "/cadMedidor", json_body={"id": A})
    assert status == 201
    return customer["token"], meter["key"]


def test_the_directory_forgets_a_replaced_credential() -> None:
    d = Directory()
    d.add_customer(Customer(A, "Ana", "mono", 1, 1, "UTC", "old-hash", 0))
    d.add_meter(Meter(A, 1, "register", "ab" * 32, 0))
    from meterd.credentials import token_hash

    assert d._tokens.get("old-hash") is not None and d.principal("ab" * 32) is not None
    d.add_customer(Customer(A, "Ana", "mono", 1, 1, "UTC", "new-hash", 0))
    d.add_meter(Meter(A, 1, "register", "cd" * 32, 0))
    assert d._tokens.get("old-hash") is None and d._tokens.get("new-hash") is not None
    assert d.principal("ab" * 32) is None and d.principal("cd" * 32) is not None
    assert token_hash("cd" * 32) in d._tokens


@pytest_twisted.ensureDeferred
async def test_a_new_token_opens_the_customer_and_the_old_one_nothing(server: LiveServer) -> None:
    old, _ = await registered(server)
    assert (await call(server, "GET", "/getFatura", token=old, params={"id": A}))[0] == 200
    status, answer, _ = await call(server, "POST", "/novoToken", json_body={"id": A})
    assert status == 200 and answer["id"] == A and answer["token"] != old
    new = answer["token"]
    status, body, _ = await call(server, "GET", "/getFatura", token=old, params={"id": A})
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await call(server, "GET", "/getFatura", token=new, params={"id": A}))[0] == 200
    unknown = make_cpf("987654321")
    status, body, _ = await call(server, "POST", "/novoToken", json_body={"id": unknown})
    assert (status, body["error"]["code"]) == (404, "unknown_customer")


@pytest_twisted.ensureDeferred
async def test_a_new_key_signs_and_posts_and_the_old_one_nothing(server: LiveServer) -> None:
    _, old = await registered(server)
    status, answer, _ = await call(server, "POST", "/novaChave", json_body={"id": A, "id_medidor": 1})
    assert status == 200 and answer["key"] != old and len(answer["key"]) == 64
    new = answer["key"]
    now = time.time()
    reading = {"id": A, "id_medidor": 1, "valor": 1.5, "timestamp": now - 30}
    status, body, _ = await call(server, "POST", "/postConsumo", token=old, json_body=reading)
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    assert (await call(server, "POST", "/postConsumo", token=new, json_body=reading))[0] == 201

    def exchange() -> bytes:
        """Seq 1 signed with the old key, then seq 2 with the new one, from one socket: the first answer."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(15)
            for key, seq in ((old, 1), (new, 2)):
                payload = json.dumps({"id": A, "id_medidor": 1, "valor": 2.0 + seq, "timestamp": now - 20 + seq, "seq": seq}).encode()
                sock.sendto(sign(payload, bytes.fromhex(key)), ("127.0.0.1", server.udp_port))
            return sock.recv(4096)

    # Had the old key still worked, the first answer would acknowledge seq 1 (alone or with 2).
    assert decode_ack(await deferToThread(exchange), bytes.fromhex(new)) == (A, 1, [2])
    assert server.core.api.metrics.registry.get_sample_value("meterd_datagrams_dropped_total", {"reason": "bad_signature"}) == 1


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_poll_a_worker_kept_is_not_repeated_once_the_token_is_renewed(tmp_path: Any) -> None:
    server = await start_server(tmp_path / "data", "--http-workers", "1")
    try:
        await http_workers_ready(server, 1)
        old, _ = await registered(server)
        for _ in range(3):  # kept by the worker
            assert (await server.call("GET", "/getAlarme", token=old, params={"id": A}))[0] == 200
        assert (await server.call("POST", "/novoToken", json_body={"id": A}))[0] == 200
        assert (await server.call("GET", "/getAlarme", token=old, params={"id": A}))[0] == 401
    finally:
        await server.stop()


PG = pg_dsn()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not PG, reason="METERD_TEST_PG is not set: no PostgreSQL to test against (.ci/run starts one)")
@pytest_twisted.ensureDeferred
async def test_a_credential_renewed_by_one_process_stops_working_in_the_others(tmp_path: Any) -> None:
    reset_pg()
    one = await start_server(tmp_path / "one", "--db", PG)
    two = await start_server(tmp_path / "two", "--db", PG)
    try:
        old, _ = await registered(one)
        assert (await two.call("GET", "/getMedidores", token=old, params={"id": A}))[0] == 200  # learnt from the store
        assert (await one.call("POST", "/novoToken", json_body={"id": A}))[0] == 200

        async def refused_by_two() -> bool:
            return (await two.call("GET", "/getMedidores", token=old, params={"id": A}))[0] == 401

        await until(refused_by_two, timeout=20)
    finally:
        await one.stop()
        await two.stop()
        await deferLater(reactor, 0, lambda: None)
