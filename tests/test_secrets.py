"""Secrets stay secret: on disk, in the logs, in the store and on the wire.

- the operator token file is created mode 0600;
- no token or key is ever written to the log, in this process (every
  twisted.logger event, formatted and raw) or by a real ``twistd`` (its log file);
- customer tokens are stored only as a SHA-256 hash;
- a meter key is returned once, by ``/cadMedidor``, and by no route after that;
- a token sent with a request is never echoed back in an error.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from meterd.credentials import new_token, token_hash
from meterd.datagram import sign
from meterd.taxid import make_cpf
from tests.support import LiveServer, Twistd, http, start_server

CID = make_cpf("529982247")


def _secrets_in(text: str, secrets: list[str]) -> list[str]:
    """The secrets (or their upper-case hex form) that occur in ``text``."""
    return [s for s in secrets if s in text or s.upper() in text]


def _store_text(data_dir: Path) -> str:
    connection = sqlite3.connect(f"file:{data_dir / 'meterd.sqlite3'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for t in tables for row in connection.execute(f'SELECT * FROM "{t}"'))
    finally:
        connection.close()


@pytest_twisted.async_yield_fixture
async def logged(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, list[dict[str, Any]]]]:
    """A server whose every log event, from its start on, is kept."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server = await start_server(tmp_path / "data")
        yield server, events
        if server.core.running:
            await server.stop()
    finally:
        globalLogPublisher.removeObserver(events.append)


RECEIVER_KEY = "xoxb-receivers-own-credential-9f8e7d"


async def _exercise(server: LiveServer) -> dict[str, str]:
    """Register, authenticate every way (well and badly), post over HTTP and UDP."""
    status, customer, _ = await server.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana"})
    assert status == 201
    status, meter, _ = await server.call("POST", "/cadMedidor", json_body={"id": CID})
    assert status == 201
    # a receiver's own credential in its URL (as chat services' incoming webhooks have) stays out of the log too
    status, webhook, _ = await server.call("POST", "/cadWebhook", json_body={"url": "http://127.0.0.1:9/T0/B0/" + RECEIVER_KEY, "id": CID})
    assert status == 201
    bad = new_token()
    now = int(time.time())
    calls = [
        ("GET", "/getWebhooks", server.token, None),
        ("POST", "/removeWebhook", customer["token"], {"webhook_id": webhook["webhook_id"]}),
        ("POST", "/postConsumo", meter["key"], {"id": CID, "id_medidor": 1, "valor": 1, "timestamp": now - 60}),
        ("POST", "/postConsumo", customer["token"], {"id": CID, "id_medidor": 1, "valor": 2, "timestamp": now - 50}),
        ("GET", "/getFatura", bad, {"id": CID}),
        ("GET", "/getFatura", customer["token"], {"id": CID}),
        ("GET", "/getMedidores", meter["key"], {"id": CID}),
        ("POST", "/cadCliente", customer["token"], {"id": CID, "name": "again"}),
        ("POST", "/cadCliente", server.token, {"id": CID, "name": "again"}),
        ("GET", "/getAlarme", customer["token"] + "x", {"id": CID}),
    ]
    for method, path, token, body in calls:
        status, answer, _ = await server.call(method, path, token=token, json_body=body)
        assert status != 500
        if status >= 400:  # an error never echoes the credentials it was given
            assert not _secrets_in(json.dumps(answer), [token, server.token, customer["token"], meter["key"]]), answer
        assert webhook["secret"] not in json.dumps(answer)  # shown by /cadWebhook only
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        key = bytes.fromhex(meter["key"])
        s.sendto(sign(f"{CID},1,3,{now - 40}".encode(), key), ("127.0.0.1", server.udp_port))
        s.sendto(sign(f"{CID},1,4,{now - 30}".encode(), bytes(32)), ("127.0.0.1", server.udp_port))  # forged
    for _ in range(200):
        status, body, _ = await server.call("GET", "/getMedidores", params={"id": CID})
        if body["meters"][0]["last_kwh"] == 3:
            break
        await deferLater(reactor, 0.01, lambda: None)
    return {"operator": server.token, "customer": customer["token"], "meter_key": meter["key"], "bad": bad, "webhook": webhook["secret"],
            "receiver_key": RECEIVER_KEY}


def test_a_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """After ``--token`` on a command line a leading "-" reads as an option (CI met one: 1 token in 64)."""
    import secrets

    draws = iter(["-starts-like-an-option", "_fine-token"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(draws))
    assert new_token() == "_fine-token"
    monkeypatch.undo()
    assert not any(new_token().startswith("-") for _ in range(2_000))


@pytest.mark.slow
def test_operator_token_file_is_created_0600(tmp_path: Path) -> None:
    server = Twistd(tmp_path / "data").start()
    try:
        path = tmp_path / "data" / "operator.token"
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, oct(mode)
        assert len(server.token) >= 43  # 32 random bytes, URL-safe base64
    finally:
        server.stop()


def test_operator_token_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    from meterd.credentials import operator_token

    old = os.umask(0)
    try:
        token, path, created = operator_token(tmp_path)
    finally:
        os.umask(old)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert operator_token(tmp_path) == (token, path, False)  # read back, not replaced


@pytest_twisted.ensureDeferred
async def test_no_token_or_key_reaches_the_log(logged: tuple[LiveServer, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]) -> None:
    server, events = logged
    secrets = await _exercise(server)
    await server.stop()  # the shutdown messages too
    texts = [formatEvent(e) for e in events] + [repr({k: v for k, v in e.items() if k != "log_logger"}) for e in events]
    leaks = {name: [t for t in texts if _secrets_in(t, [secret])] for name, secret in secrets.items()}
    assert not any(leaks.values()), leaks
    assert any("operator.token" in t for t in texts)  # the log says where the token is, not what it is
    with capsys.disabled():
        print(f"\nsecrets: {len(events)} log events of an in-process server hold none of {len(secrets)} secrets")


@pytest.mark.slow
def test_twistd_log_holds_no_token_or_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = Twistd(tmp_path / "data").start()
    try:
        status, customer = http("POST", server.url + "/cadCliente", server.token, {"id": CID, "name": "Ana"})
        assert status == 201
        status, meter = http("POST", server.url + "/cadMedidor", server.token, {"id": CID})
        assert status == 201
        bad = new_token()
        now = int(time.time())
        assert http("POST", server.url + "/postConsumo", meter["key"], {"id": CID, "id_medidor": 1, "valor": 1, "timestamp": now - 60})[0] == 201
        assert http("GET", server.url + f"/getFatura?id={CID}", bad)[0] == 401
        assert http("GET", server.url + f"/getFatura?id={CID}", customer["token"])[0] == 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(sign(f"{CID},1,2,{now - 30}".encode(), bytes.fromhex(meter["key"])), ("127.0.0.1", server.udp_port))
            s.sendto(sign(f"{CID},1,3,{now - 20}".encode(), bytes(32)), ("127.0.0.1", server.udp_port))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and http("GET", server.url + f"/getMedidores?id={CID}", server.token)[1]["meters"][0]["last_kwh"] != 2:
            time.sleep(0.05)
        secrets = {"operator": server.token, "customer": customer["token"], "meter_key": meter["key"], "bad": bad}
    finally:
        server.stop()
    output = server.output()
    assert "operator.token" in output
    assert not {name: s for name, s in secrets.items() if _secrets_in(output, [s])}, output[-3000:]
    with capsys.disabled():
        print(f"\nsecrets: {len(output.splitlines())} lines of twistd's log hold none of {len(secrets)} secrets")


@pytest_twisted.ensureDeferred
async def test_customer_tokens_are_stored_only_as_a_hash(server: LiveServer) -> None:
    status, customer, _ = await server.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana"})
    assert status == 201
    stored = _store_text(server.data_dir)
    assert customer["token"] not in stored
    assert token_hash(customer["token"]) in stored
    connection = sqlite3.connect(f"file:{server.data_dir / 'meterd.sqlite3'}?mode=ro", uri=True)
    try:
        (hashed,) = connection.execute("SELECT token_hash FROM customers WHERE id = ?", (CID,)).fetchone()
    finally:
        connection.close()
    assert hashed == token_hash(customer["token"]) and len(hashed) == 64
    # and the hash is not itself a credential
    status, _, _ = await server.call("GET", "/getMedidores", token=hashed, params={"id": CID})
    assert status == 401


@pytest_twisted.ensureDeferred
async def test_a_meter_key_is_returned_once_and_never_again(server: LiveServer) -> None:
    status, customer, _ = await server.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana"})
    assert status == 201
    keys = []
    for mode in ("register", "interval"):
        status, meter, _ = await server.call("POST", "/cadMedidor", json_body={"id": CID, "mode": mode})
        assert status == 201 and len(meter["key"]) == 64 and int(meter["key"], 16) >= 0
        keys.append(meter["key"])
    assert keys[0] != keys[1]
    now = int(time.time())
    status, _, _ = await server.call("POST", "/postConsumo", token=keys[0], json_body={"id": CID, "id_medidor": 1, "valor": 1, "timestamp": now - 60})
    assert status == 201
    answers: list[Any] = []
    for token in (server.token, customer["token"], keys[0]):
        for method, path, params in [
            ("GET", "/getMedidores", {"id": CID}),
            ("GET", "/getFatura", {"id": CID}),
            ("GET", "/getConsumoHist", {"id": CID, "kind": "D"}),
            ("GET", "/getConsumoHist", {"id": CID, "kind": "M", "id_medidor": "1"}),
            ("GET", "/getAlarme", {"id": CID}),
            ("GET", "/health", None),
            ("GET", "/metrics", None),
            ("GET", "/openapi.json", None),
            ("POST", "/cadMedidor", {"id": "00000000000"}),  # an error
            ("POST", "/postConsumo", {"id": CID, "id_medidor": "1", "valor": "1", "timestamp": str(now - 60)}),  # duplicate
        ]:
            status, body, _ = await server.call(method, path, token=token, params=params)
            assert status != 500
            answers.append(body)
    text = "\n".join(a.decode("latin-1") if isinstance(a, bytes) else json.dumps(a) for a in answers)
    assert not _secrets_in(text, keys)
    assert not _secrets_in(text, [server.token, customer["token"]])


def _modes(data_dir: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in [data_dir, *data_dir.iterdir()]}


@pytest_twisted.ensureDeferred
async def test_the_data_dir_and_everything_in_it_are_private_from_creation(tmp_path: Path) -> None:
    """The data dir holds the operator token and every meter's key: 0700, and 0600 files, also -wal and -shm."""
    from tests.support import start_server

    data_dir = tmp_path / "data"
    server = await start_server(data_dir)
    try:
        status, _, _ = await server.call("POST", "/cadCliente", json_body={"id": "12345678909", "name": "Ana"})
        assert status == 201
        await server.call("POST", "/cadMedidor", json_body={"id": "12345678909"})
        modes = _modes(data_dir)
        assert {"meterd.sqlite3", "meterd.sqlite3-wal", "meterd.sqlite3-shm", "operator.token"} <= set(modes)
        assert modes.pop("data") == 0o700
        assert all(mode == 0o600 for mode in modes.values()), modes
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_data_dir_left_readable_is_tightened_with_a_warning_naming_each_path(tmp_path: Path) -> None:
    from twisted.logger import formatEvent, globalLogPublisher

    from tests.support import start_server

    data_dir = tmp_path / "data"
    server = await start_server(data_dir)
    await server.stop()
    data_dir.chmod(0o755)
    for path in data_dir.iterdir():
        path.chmod(0o644)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server = await start_server(data_dir)
    finally:
        globalLogPublisher.removeObserver(events.append)
    try:
        warned = [formatEvent(e) for e in events if "readable or writable by others" in formatEvent(e)]
        assert any(str(data_dir) + " was" in w for w in warned) and any("meterd.sqlite3 was" in w for w in warned)
        modes = _modes(data_dir)
        assert modes.pop("data") == 0o700 and all(mode == 0o600 for mode in modes.values()), modes
    finally:
        await server.stop()
