"""A billing run killed mid-way (SIGKILL of a real ``twistd``) and run again issues each bill exactly once,
and meterd keeps taking readings and answering while a run runs (issue 30). Data dirs built offline as the bench builds them."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from bench import billing as bench_billing
from bench.common import cpf
from tests.support import LiveServer, Twistd, start_server, until

CUSTOMERS = 8_000  # the run is killed 2,000 in: thousands still to go, even on a fast machine


def request(server: Twistd, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method, headers={"Authorization": f"Bearer {server.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_a_run_killed_mid_way_and_run_again_issues_every_bill_once(tmp_path: Path) -> None:
    prepared = bench_billing.prepare(tmp_path, CUSTOMERS, step_h=240)
    data_dir = tmp_path / "billing"
    server = Twistd(data_dir).start()
    try:
        started = request(server, "POST", "/faturamento", {"periodo": 1})
        assert (started["acao"], started["clientes"]) == ("nova", CUSTOMERS)
        deadline = time.monotonic() + 120
        while (state := request(server, "GET", "/getFaturamento"))["processados"] < 2_000:  # a few batches in
            assert state["estado"] == "executando" and time.monotonic() < deadline, state
            time.sleep(0.01)
    finally:
        server.stop(signal.SIGKILL)
    assert state["processados"] < CUSTOMERS, "the run ended before it could be killed"

    server = Twistd(data_dir).start()
    try:
        cut = request(server, "GET", "/getFaturamento")
        assert (cut["execucao"], cut["estado"]) == (started["execucao"], "interrompida")
        assert cut["emitidas"] >= state["emitidas"]  # what was committed before the kill stays
        resumed = request(server, "POST", "/faturamento", {"periodo": 1})
        assert (resumed["acao"], resumed["execucao"], resumed["iniciada"]) == ("retomada", started["execucao"], started["iniciada"])
        deadline = time.monotonic() + 300
        while (done := request(server, "GET", "/getFaturamento"))["estado"] == "executando":
            assert time.monotonic() < deadline, done
            time.sleep(0.1)
        assert (done["estado"], done["processados"], done["emitidas"], done["ja_emitidas"]) == ("concluida", CUSTOMERS, CUSTOMERS, 0)
        again = request(server, "POST", "/faturamento", {"periodo": 1})
        assert (again["acao"], again["execucao"]) == ("nova", started["execucao"] + 1)
        while (second := request(server, "GET", "/getFaturamento"))["estado"] == "executando":
            assert time.monotonic() < deadline, second
            time.sleep(0.1)
    finally:
        code = server.stop()
    assert code in (0, -15), server.output()

    with sqlite3.connect(data_dir / "meterd.sqlite3") as conn:
        count, customers, low, high = conn.execute("SELECT COUNT(*), COUNT(DISTINCT customer_id), MIN(numero), MAX(numero) FROM bills").fetchone()
        referencias = {r for (r,) in conn.execute("SELECT DISTINCT referencia FROM bills")}
    assert (count, customers, low, high) == (CUSTOMERS, CUSTOMERS, 1, CUSTOMERS)  # each customer once, numbers without a gap
    assert referencias == {prepared["referencia"]}
    assert (second["estado"], second["emitidas"], second["ja_emitidas"]) == ("concluida", 0, CUSTOMERS)  # the run after issued none


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_readings_and_requests_are_served_while_a_run_runs(tmp_path: Path) -> None:
    await deferToThread(bench_billing.prepare, tmp_path, 3_000, 240)
    server = await start_server(tmp_path / "billing")
    try:
        server.core.parts.runs.batch = 100
        status, started, _ = await server.call("POST", "/faturamento", json_body={"periodo": 1})
        assert status == 202
        answered_meanwhile = 0
        now = int(time.time())
        cid = cpf(0)
        for n in range(1, 1000):
            status, _, _ = await server.call("POST", "/postConsumo", json_body={"id": cid, "id_medidor": 1, "valor": 10**6 + n, "timestamp": now - 1000 + n})
            assert status == 201
            status, health, _ = await server.call("GET", "/health")
            assert (status, health["status"]) == (200, "ok")
            status, state, _ = await server.call("GET", "/getFaturamento")
            if state["estado"] != "executando":
                break
            answered_meanwhile += 1
        assert answered_meanwhile > 0 and 0 < state["processados"], state
        done = await until(lambda: _finished(server), timeout=120)
        assert (done["emitidas"], done["processados"]) == (3_000, 3_000)
    finally:
        await server.stop()


async def _finished(server: LiveServer) -> dict[str, Any] | None:
    _, state, _ = await server.call("GET", "/getFaturamento")
    return state if state["estado"] == "concluida" else None
