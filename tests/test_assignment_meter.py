"""The assignment's own programs against ``twistd -n meterd --no-auth``, byte for byte.

The assignment's meter (``cliente_medidor`` of its repository) sends one CSV
datagram per reading, built with an f-string from Python floats::

    request = f'{self.id_cliente},{self.id},{value},{time.time()}'

so an automatic reading (``value = random.triangular(0, 300, 10)``) looks like
``529.982.247-25,1,104.9803105991331,1796588566.0803108``: the CPF as typed,
the meter id as the string typed at its prompt, ~15 decimals of kWh and a
timestamp with microseconds. Its scheduler fires queued jobs about 0.2 ms
apart. A manual reading is ``float(input())`` with a whole-second timestamp,
and may well be lower than the one before: these meters send the energy of
each interval, not a register. Its interface client sends GET requests with a
tab-indented JSON body.

Everything it sends must be stored (a genuine resend once), every valor
rounded half up to the Wh, and the histories and the bill must add up to
exactly that.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from bench.common import metric_values
from tests.support import Twistd, http
from tests.test_legacy_client import legacy_request, tab_json
from tests.web_support import SAO_PAULO, raw_exchange

pytestmark = pytest.mark.slow  # real processes: the full suite's, not the fast loop's

CPF_TYPED = "529.982.247-25"
CPF = "52998224725"

# Values random.triangular(0, 300, 10) may give, among them the halfway cases of the rounding.
AUTOMATIC = [
    104.9803105991331, 37.42093384128412, 12.057416092831005, 88.1503311259745, 5.1134921022736,
    151.70246097310126, 60.00049999999999, 23.8765432109875, 0.0004999999999999, 274.1234565432109,
    9.999500000000001, 42.42424242424242, 131.31313131313132, 0.5005, 77.77777777777777,
    199.99949999999998, 3.14159265358979, 16.18033988749895, 250.0005, 1.4142135623730951,
]
MANUAL = [12.5, 7.25, 20.0]  # float(input()): each lower or higher than the one before


def wh(valor: float) -> int:
    """What meterd must store: the valor as the meter wrote it, half up to the Wh (decimal's own rounding)."""
    return int((Decimal(str(valor)) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def datagram(value: float, timestamp: float) -> bytes:
    """The meter's own f-string."""
    meter_id = "1"  # input("Insira o id do medidor correspondente")
    return f"{CPF_TYPED},{meter_id},{value},{timestamp}".encode()


def get(server: Twistd, path: str, fields: list[tuple[str, object]]) -> tuple[int, dict]:
    """One GET exactly as the interface client writes it (tab-indented JSON body, no token)."""
    host = server.url.removeprefix("http://")
    status, _, body = raw_exchange(server.url, legacy_request("GET", path, host, tab_json(fields)))
    return status, json.loads(body)


def metrics(server: Twistd) -> str:
    status, body = http("GET", server.url + "/metrics")
    assert status == 200
    return body.decode() if isinstance(body, bytes) else str(body)


def test_the_assignment_meter_is_stored_to_the_watt_hour(tmp_path: Path) -> None:
    server = Twistd(tmp_path / "data", "--no-auth").start()
    try:
        assert "meters registered without a mode are interval meters" in server.output()
        host = server.url.removeprefix("http://")
        status, _, _ = raw_exchange(server.url, legacy_request("POST", "/cadCliente", host, tab_json([("id", CPF_TYPED), ("name", "João da Conceição")])))
        assert status == 201
        status, _, raw = raw_exchange(server.url, legacy_request("POST", "/cadMedidor", host, tab_json([("id", CPF_TYPED)])))
        assert status == 201 and b'"mode":"interval"' in raw

        now = time.time()
        sent: list[bytes] = []
        # the automatic readings, in bursts of five jobs fired 0.2 ms apart
        for i, value in enumerate(AUTOMATIC):
            burst, job = divmod(i, 5)
            sent.append(datagram(value, now - 40 + burst * 5 + job * 0.0002))
        # manual readings: whole seconds, as datetime.timestamp() of the typed date gives them
        for j, value in enumerate(MANUAL):
            sent.append(datagram(value, float(int(now) - 30 + j)))
        assert sent[0].startswith(f"{CPF_TYPED},1,104.9803105991331,".encode())
        assert len({d.split(b",")[3] for d in sent}) == len(sent)  # every timestamp its own
        resent = sent[3]  # the network or the meter repeats one: a genuine duplicate
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for d in [*sent, resent]:
                sock.sendto(d, ("127.0.0.1", server.udp_port))

        expected_wh = sum(wh(v) for v in AUTOMATIC + MANUAL)
        rounded = sum(1 for v in AUTOMATIC + MANUAL if wh(v) != Decimal(str(v)) * 1000)
        deadline = time.monotonic() + 30
        while True:
            readings = metric_values(metrics(server), "meterd_readings_total")
            if sum(readings.values()) >= len(sent) + 1:
                break
            assert time.monotonic() < deadline, (readings, server.output())
            time.sleep(0.1)
        text = metrics(server)
        outcomes = {k: v for k, v in metric_values(text, "meterd_readings_total").items() if v}
        assert outcomes == {'{outcome="stored"}': len(sent), '{outcome="duplicate"}': 1}
        assert metric_values(text, "meterd_datagrams_dropped_total") == {}
        # every automatic reading needed it (the resent one too, before it was found a duplicate), no manual one
        assert rounded == len(AUTOMATIC)
        assert metric_values(text, "meterd_readings_rounded_total") == {'{transport="udp"}': rounded + 1}

        # The assignment's client reads the year, the month and the bill of the readings' month.
        taken = datetime.fromtimestamp(now - 40, SAO_PAULO)
        today = datetime.now(SAO_PAULO)
        months_back = (today.year - taken.year) * 12 + today.month - taken.month
        status, year = get(server, "/getConsumoHist", [("id", CPF_TYPED), ("id_medidor", "1"), ("kind", "Y"), ("periodo", today.year - taken.year)])
        assert status == 200 and round(year["total_kwh"] * 1000) == expected_wh, year
        status, month = get(server, "/getConsumoHist", [("id", CPF_TYPED), ("id_medidor", "1"), ("kind", "M"), ("periodo", months_back)])
        assert status == 200 and round(month["total_kwh"] * 1000) == expected_wh
        assert round(month["buckets"][taken.day - 1]["kwh"] * 1000) == expected_wh
        status, bill = get(server, "/getFatura", [("id", CPF_TYPED), ("periodo", months_back)])
        assert status == 200 and round(bill["consumo_kwh"] * 1000) == expected_wh and bill["name"] == "João da Conceição"
        status, alarm = get(server, "/getAlarme", [("id", CPF_TYPED)])
        assert status == 200 and alarm["alarme"] in (True, False) and alarm["id"] == CPF
    finally:
        assert server.stop() in (0, -15), server.output()
