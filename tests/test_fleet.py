"""``/getFrota`` (meterd.web.fleet): the rate of stored readings, the silent meters, alarms by rule, drops by reason."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import pytest_twisted

from meterd.taxid import make_cpf
from meterd.web.fleet import ReadingRate
from tests.support import start_server, until
from tests.web_support import assert_documented

A = make_cpf("529982247")


def test_the_rate_spans_the_last_samples() -> None:
    rate = ReadingRate(window=3)
    assert rate.per_second() is None
    rate.sample(100.0, 0)
    assert rate.per_second() is None  # one sample is no rate
    for t, total in ((101.0, 500), (102.0, 1500), (103.0, 1500), (104.0, 4500)):
        rate.sample(t, total)
    assert rate.per_second() == pytest.approx((4500 - 500) / 3)  # the oldest of the window is dropped
    rate.sample(105.0, 10)  # the counter started over: so does the rate
    assert rate.per_second() is None
    rate.sample(105.0, 20)
    assert rate.per_second() is None  # no time between the samples


@pytest_twisted.ensureDeferred
async def test_the_fleet_names_silent_meters_counts_alarms_and_drops(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", "--silent-after", "0.5")
    try:
        status, body, _ = await server.call("POST", "/cadCliente", json_body={"id": A, "name": "Ana Souza"})
        assert status == 201
        for _ in range(2):
            await server.call("POST", "/cadMedidor", json_body={"id": A})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # an unsigned datagram: dropped, and counted
            sock.sendto(b'{"id": "%s", "id_medidor": 1, "valor": 1, "timestamp": 1}' % A.encode(), ("127.0.0.1", server.udp_port))

        async def answer() -> dict | None:
            status, body, response = await server.call("GET", "/getFrota")
            assert status == 200, body
            assert_documented("/getFrota", "GET", status, body)
            return body if body["silent_meters"] == 2 and body["drops"] else None

        fleet = await until(answer)
        assert fleet["customers"] == 1 and fleet["meters"] == 2
        assert [(m["id"], m["name"], m["id_medidor"]) for m in fleet["silent"]] == [(A, "Ana Souza", 1), (A, "Ana Souza", 2)]
        assert fleet["alarms"] == {"demand": 0, "monthly": 0, "anomaly": 0, "silent": 2}
        assert fleet["drops"] == {"unsigned": 1}
        assert fleet["readings_per_s"] is None or fleet["readings_per_s"] == 0  # nothing stored, once measured
        status, _, _ = await server.call("GET", "/getFrota", token=body["token"])
        assert status == 403
    finally:
        await server.stop()
