"""UDP ingest end to end: real loopback datagrams into a running meterd.

A Twisted ``DatagramProtocol`` plays the meter: it sends signed readings from
its own port and collects the server's acks, which it checks with the meter's
key exactly as a real meter must (``decode_ack``).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater

from meterd.datagram import decode_ack, sign
from tests.support import LiveServer, Twistd, http, start_server

C = "12345678909"
SP = ZoneInfo("America/Sao_Paulo")
ASSIGNMENT_CSV = b"12345678909,1,57.53,1764000000.12"


class FakeMeter(DatagramProtocol):
    """Sends datagrams to the server and keeps every datagram it gets back."""

    def __init__(self, server_port: int, key_hex: str) -> None:
        self.server = ("127.0.0.1", server_port)
        self.key = bytes.fromhex(key_hex)
        self.received: list[bytes] = []
        self.acked: list[int] = []
        self._waiting: list[tuple[set[int], Deferred[None]]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        decoded = decode_ack(data, self.key)
        if decoded is not None:
            self.acked.extend(decoded[2])
        for seqs, d in self._waiting[:]:
            if seqs <= set(self.acked):
                self._waiting.remove((seqs, d))
                d.callback(None)

    def send(self, data: bytes) -> None:
        self.transport.write(data, self.server)

    def reading(self, ts_s: float, kwh: float, seq: int | None, meter: int = 1, key: bytes | None = None) -> bytes:
        body: dict[str, Any] = {"id": C, "id_medidor": meter, "valor": kwh, "timestamp": ts_s}
        if seq is not None:
            body["seq"] = seq
        return sign(json.dumps(body).encode(), key or self.key)

    def acks_for(self, *seqs: int, timeout: float = 5) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if set(seqs) <= set(self.acked):
            d.callback(None)
        else:
            self._waiting.append((set(seqs), d))
        d.addTimeout(timeout, reactor)
        return d


async def listen(meter: FakeMeter) -> Any:
    return reactor.listenUDP(0, meter, interface="127.0.0.1")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5) -> None:
    """For effects that have no reply to wait for (datagrams without seq)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.02, lambda: None)


async def scrape(server: LiveServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, body, response = await server.call("GET", "/metrics", token=None)
    assert status == 200
    assert response.headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    text = body.decode() if isinstance(body, bytes) else json.dumps(body)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def m(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def register(server: LiveServer, token: str | None = "operator") -> str:
    status, body, _ = await server.call("POST", "/cadCliente", token=token, json_body={"id": C, "name": "Ana"})
    assert status == 201, body
    status, meter, _ = await server.call("POST", "/cadMedidor", token=token, json_body={"id": C})
    assert status == 201, meter
    return meter["key"]


def months_back_to(year: int, month: int) -> int:
    today = datetime.now(SP)
    return (today.year - year) * 12 + today.month - month


# -- auth on -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_signed_readings_stored_acked_replayed_and_forged(server: LiveServer):
    key = await register(server)
    meter = FakeMeter(server.udp_port, key)
    port = await listen(meter)
    try:
        # Readings spread over today so far (São Paulo time), register rising.
        day_start = datetime.now(SP).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        span = time.time() - day_start
        times = [round(day_start + span * i / 7, 3) for i in range(1, 6)]
        values = [100.0, 100.5, 101.25, 102.0, 103.125]
        datagrams = [meter.reading(t, v, seq) for seq, (t, v) in enumerate(zip(times, values), start=1)]
        for d in datagrams:
            meter.send(d)
        await meter.acks_for(1, 2, 3, 4, 5)
        assert sorted(meter.acked) == [1, 2, 3, 4, 5]
        ack = meter.received[0]
        assert decode_ack(ack, bytes.fromhex(key)) is not None
        assert decode_ack(ack, bytes(32)) is None  # signed with this meter's key, not any key

        # A replayed datagram: stored once, acknowledged again.
        meter.send(datagrams[2])
        await meter.acks_for(3)
        await eventually(lambda: _acked_twice(meter, 3))

        # A forged one (wrong key) gets no answer; a valid one sent after it does.
        meter.send(meter.reading(times[-1] + 1, 200.0, 99, key=bytes.fromhex("00" * 32)))
        meter.send(meter.reading(times[-1] + 2, 104.0, 100))
        await meter.acks_for(100)
        assert 99 not in meter.acked
        undecodable = [d for d in meter.received if decode_ack(d, bytes.fromhex(key)) is None]
        assert undecodable == []

        # The assignment's unsigned CSV is dropped with auth on, silently.
        meter.send(ASSIGNMENT_CSV)
        meter.send(meter.reading(times[-1] + 3, 104.5, 101))
        await meter.acks_for(101)

        # The history route sees the UDP readings (and not the forged one).
        status, hist, _ = await server.call("GET", "/getConsumoHist", params={"id": C, "kind": "D", "periodo": 0})
        assert status == 200, hist
        assert hist["total_kwh"] == pytest.approx(104.5 - 100.0, abs=1e-9)
        assert hist["meters"] == [{"id_medidor": 1, "total_kwh": hist["total_kwh"]}]
        status, meters, _ = await server.call("GET", "/getMedidores", params={"id": C})
        assert status == 200 and meters["meters"][0]["last_kwh"] == 104.5

        samples = await scrape(server)
        assert m(samples, "meterd_datagrams_received_total") == 10
        assert m(samples, "meterd_readings_total", outcome="stored") == 7
        assert m(samples, "meterd_readings_total", outcome="duplicate") == 1
        assert m(samples, "meterd_datagrams_dropped_total", reason="bad_signature") == 1
        assert m(samples, "meterd_datagrams_dropped_total", reason="unsigned") == 1
        assert m(samples, "meterd_acks_sent_total") == len(meter.received)
        assert m(samples, "meterd_flushes_total") >= 4
        assert m(samples, "meterd_flush_seconds_count") == m(samples, "meterd_flushes_total")
        assert m(samples, "meterd_flush_seconds_sum") > 0
        assert ("meterd_pending_readings", frozenset()) in samples
        assert m(samples, "meterd_pending_readings") == 0
        assert m(samples, "meterd_http_requests_total", route="/cadCliente", status="201") == 1
        assert m(samples, "meterd_http_requests_total", route="/getConsumoHist", status="200") == 1
    finally:
        await port.stopListening()


async def _acked_twice(meter: FakeMeter, seq: int) -> bool:
    return meter.acked.count(seq) >= 2


@pytest_twisted.ensureDeferred
async def test_many_readings_in_one_flush_get_acks_of_at_most_100(server: LiveServer):
    key = await register(server)
    server.core.ingest.flush_interval = 0.3  # let the burst gather into one flush
    meter = FakeMeter(server.udp_port, key)
    port = await listen(meter)
    try:
        now = time.time()
        for seq in range(1, 231):
            meter.send(meter.reading(now - 300 + seq, round(1 + seq / 1000, 3), seq))
        await meter.acks_for(*range(1, 231))
        sizes = [len(decode_ack(d, bytes.fromhex(key))[2]) for d in meter.received]  # type: ignore[index]
        assert max(sizes) <= 100 and sum(sizes) == 230
    finally:
        await port.stopListening()


# -- --no-auth: the assignment's meters ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_assignment_csv_without_auth(open_server: LiveServer):
    await register(open_server, token=None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.sendto(ASSIGNMENT_CSV, ("127.0.0.1", open_server.udp_port))
        sock.sendto(b"12345678909,1,2.47,1764000060", ("127.0.0.1", open_server.udp_port))
        sock.sendto(b"12345678909,1,5,1764003600", ("127.0.0.1", open_server.udp_port))  # the next hour
        periodo = months_back_to(2025, 11)

        async def stored() -> bool:
            samples = await scrape(open_server)
            return m(samples, "meterd_readings_total", outcome="stored") == 3

        await eventually(stored)
        status, hist, _ = await open_server.call("GET", "/getConsumoHist", token=None,
                                                 json_body={"id": C, "kind": "M", "periodo": periodo})
        assert status == 200, hist
        assert hist["start"].startswith("2025-11-01T00:00:00")
        assert hist["total_kwh"] == 65.0
        nov24 = [b for b in hist["buckets"] if b["start"].startswith("2025-11-24")]
        assert nov24 == [{"start": "2025-11-24T00:00:00-03:00", "kwh": 65.0, "estimated": False}]
        status, day, _ = await open_server.call("GET", "/getConsumoHist", token=None,
                                                params={"id": C, "kind": "D", "periodo": (datetime.now(SP).date() - datetime(2025, 11, 24).date()).days})
        assert status == 200, day
        # 1764000000 is 13:00 in São Paulo: 60 kWh in that hour, 5 kWh at 14:00.
        by_hour = {b["start"][11:16]: b["kwh"] for b in day["buckets"] if b["kwh"]}
        assert by_hour == {"13:00": 60.0, "14:00": 5.0}
        # No seq, no ack: the socket has nothing to read.
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(2048)
    finally:
        sock.close()


# -- stopping with readings pending ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stop_with_readings_pending_stores_them_all(tmp_path: Path):
    data = tmp_path / "data"
    server = await start_server(data)
    meter = FakeMeter(server.udp_port, "")
    port = await listen(meter)
    try:
        key = await register(server)
        meter.key = bytes.fromhex(key)
        server.core.ingest.flush_interval = 3600
        now = time.time()
        datagrams = [meter.reading(now - 200 + i, round(10 + i / 100, 2), i) for i in range(1, 51)]
        for d in datagrams:
            meter.send(d)

        async def all_pending() -> bool:
            return server.core.ingest.pending == 50

        await eventually(all_pending)
        assert meter.acked == []
    finally:
        await server.stop()
    await port.stopListening()

    server = await start_server(data)
    try:
        status, meters, _ = await server.call("GET", "/getMedidores", params={"id": C})
        assert status == 200
        assert meters["meters"][0]["last_kwh"] == 10.5
        # The meter never got its acks (the port closed first); resending costs nothing.
        meter = FakeMeter(server.udp_port, key)
        port = await listen(meter)
        for d in datagrams:
            meter.send(d)
        await meter.acks_for(*range(1, 51))
        samples = await scrape(server)
        assert m(samples, "meterd_readings_total", outcome="duplicate") == 50
        assert m(samples, "meterd_readings_total", outcome="stored") == 0
        await port.stopListening()
    finally:
        await server.stop()


# -- the real twistd, as the assignment's clients see it -----------------------------------------


@pytest.mark.slow
def test_twistd_no_auth_csv(tmp_path: Path):
    server = Twistd(tmp_path / "data", "--no-auth", "--meter-mode", "interval").start()
    try:
        assert http("POST", server.url + "/cadCliente", body={"id": C, "name": "Ana"})[0] == 201
        assert http("POST", server.url + "/cadMedidor", body={"id": C})[0] == 201
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(ASSIGNMENT_CSV, ("127.0.0.1", server.udp_port))
        periodo = months_back_to(2025, 11)
        deadline = time.monotonic() + 10
        while True:
            status, hist = http("GET", server.url + f"/getConsumoHist?id={C}&kind=M&periodo={periodo}")
            if status == 200 and hist["total_kwh"] == 57.53:
                break
            assert time.monotonic() < deadline, (status, hist)
            time.sleep(0.05)
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_a_replayed_datagram_never_takes_the_meters_acks(server: LiveServer):
    """Someone replaying one captured datagram every 2 ms gets only that datagram's seq acked;
    the meter, sending new readings meanwhile, gets every one of its own."""
    key = await register(server)
    meter, replayer = FakeMeter(server.udp_port, key), FakeMeter(server.udp_port, key)
    ports = [await listen(meter), await listen(replayer)]
    try:
        start = time.time() - 100
        captured = meter.reading(start, 100.0, 0)
        meter.send(captured)
        await meter.acks_for(0)
        meter.acked.clear()

        async def replay() -> None:
            for _ in range(300):
                replayer.send(captured)
                await deferLater(reactor, 0.002, lambda: None)

        replaying = Deferred.fromCoroutine(replay())
        for seq in range(1, 21):
            meter.send(meter.reading(start + seq, 100.0 + seq, seq))
            await deferLater(reactor, 0.01, lambda: None)
        await meter.acks_for(*range(1, 21))
        await replaying
        assert sorted(set(meter.acked)) == list(range(1, 21))
        assert replayer.acked and set(replayer.acked) == {0}  # its own seq, and nothing else
    finally:
        for port in ports:
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_what_the_kernel_drops_before_meterd_reads_is_counted(server: LiveServer):
    """With the reactor kept from reading, a burst overflows the socket's buffer: /metrics shows the kernel's count."""
    await register(server)
    sock = server.core.udp_port.socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny buffer: the kernel must drop
    before = m(await scrape(server), "meterd_udp_kernel_drops_total")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(2000):  # sent while this reactor turn runs: nobody reads
            sender.sendto(b"x" * 200, ("127.0.0.1", server.udp_port))
    after = m(await scrape(server), "meterd_udp_kernel_drops_total")
    assert after - before > 0
