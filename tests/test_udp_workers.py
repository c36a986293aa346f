"""``--udp-workers``: worker processes that read the meters' port beside the reactor.

Both ends of the link are tested with Twisted's helpers first (``Clock``,
``StringTransport``, a fake port): the worker screening datagrams into frames
and signing the acks it is asked for, and meterd's pool turning frames into
ingest, handing acks to a worker, distributing keys, and reading the port itself
while no worker is up. Then end to end, with real worker processes behind an
in-process meterd and behind ``twistd``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ProcessTerminated
from twisted.internet.process import ProcessWriter
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.python.failure import Failure

from meterd.datagram import decode_ack, sign
from meterd.directory import Directory
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.readings import Reading
from meterd.store.base import Customer, Meter
from meterd.udp import MeterProtocol
from meterd.udp_worker import READ_BYTES_PER_TURN, Worker
from meterd.udp_workers import RESTART_DELAY, SETTLED_AFTER, UdpWorkers
from meterd.workers import FIRST_ROWS
from tests.support import LiveServer, frame, frames, gone, start_server, twistd_with_workers, until, worker_pids
from tests.test_e2e_udp import C, FakeMeter, listen, m, register, scrape
from tests.test_udp import RecordingStore

K1_HEX = "11" * 32
K1 = bytes.fromhex(K1_HEX)
NOW = 1_764_000_100.0
ADDR = ("198.51.100.3", 50123)


def reading(seq: int, meter: int = 1, key: bytes = K1) -> bytes:
    body = {"id": C, "id_medidor": meter, "valor": 1 + seq / 1000, "timestamp": 1_764_000_000 + seq, "seq": seq}
    return sign(json.dumps(body).encode(), key)


# -- the worker's side --------------------------------------------------------------------


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []
        self.room: int | None = None  # datagrams the send buffer still takes; None: any number

    def sendto(self, data: bytes, addr: Any) -> None:
        if self.room is not None:
            if self.room == 0:
                raise BlockingIOError("send buffer full")
            self.room -= 1
        self.sent.append((data, addr))


class FakePort:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.reading = True
        self.listening = True
        self.socket = FakeSocket()

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False

    def stopListening(self) -> None:
        self.listening = self.reading = False


class WorkerReactor(Clock):
    running = False

    def __init__(self) -> None:
        super().__init__()
        self.advance(NOW)
        self.ports: list[FakePort] = []

    def adoptDatagramPort(self, fd: int, family: int, protocol: Any) -> FakePort:
        port = FakePort(protocol)
        self.ports.append(port)
        return port


@pytest.fixture
def worker() -> tuple[Worker, WorkerReactor, StringTransport]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    clock = WorkerReactor()
    w = Worker(clock, os.dup(sock.fileno()))
    sock.close()
    transport = StringTransport()
    w.makeConnection(transport)
    return w, clock, transport


def test_the_worker_reads_only_once_it_has_the_keys(worker: Any) -> None:
    w, clock, transport = worker
    assert clock.ports == []
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    assert len(clock.ports) == 1 and transport.producer is w
    assert frames(transport.value()) == [{"ready": True}]


def test_the_worker_waits_for_the_frame_with_the_settings_before_it_reads(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"keys": [[C, 1, K1_HEX, None]]}))
    assert clock.ports == [] and transport.value() == b""
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 2, "22" * 32, None]]}))
    assert frames(transport.value()) == [{"ready": True}]
    transport.clear()
    receiver = clock.ports[0].protocol
    receiver.datagramReceived(reading(1), ADDR)  # a key from the first frame
    receiver.datagramReceived(reading(2, meter=2, key=bytes.fromhex("22" * 32)), ADDR)  # and from the last
    clock.advance(0)
    [message] = frames(transport.value())
    assert [row[:2] for row in message["readings"]] == [[C, 1], [C, 2]]


def test_one_frame_per_turn_with_the_readings_and_the_counted_drops(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    transport.clear()
    receiver = clock.ports[0].protocol
    receiver.datagramReceived(reading(1), ADDR)
    receiver.datagramReceived(reading(2, key=bytes(32)), ADDR)  # forged
    receiver.datagramReceived(reading(3, meter=9), ADDR)  # a meter meterd has not told us of
    receiver.datagramReceived(reading(4), ADDR)
    assert transport.value() == b""  # nothing until the turn ends
    clock.advance(0)
    [message] = frames(transport.value())
    assert message == {
        "readings": [[C, 1, 1_764_000_001_000_000, 1001, 1], [C, 1, 1_764_000_004_000_000, 1004, 4]],
        "from": [list(ADDR), list(ADDR)],
        "received": 4,
        "dropped": {"bad_signature": 1, "unknown_meter": 1},
        "unknown": [[C, 9]],
    }
    transport.clear()
    clock.advance(1)
    assert transport.value() == b""  # no traffic, no frame


def test_a_meter_added_later_is_accepted_once_its_key_arrives(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": []}))
    w.dataReceived(frame({"keys": [[C, 2, K1_HEX, None]]}))
    transport.clear()
    clock.ports[0].protocol.datagramReceived(reading(1, meter=2), ADDR)
    clock.advance(0)
    [message] = frames(transport.value())
    assert [r[:2] for r in message["readings"]] == [[C, 2]]


def test_a_retired_meters_later_readings_are_dropped_by_the_worker_once_told(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    w.dataReceived(frame({"keys": [[C, 1, K1_HEX, 1_764_000_002_000_000]]}))  # retired at reading 2's time
    transport.clear()
    for seq in (1, 2, 3):
        clock.ports[0].protocol.datagramReceived(reading(seq), ADDR)
    clock.advance(0)
    [message] = frames(transport.value())
    assert [row[4] for row in message["readings"]] == [1, 2] and message["dropped"] == {"meter_retired": 1}


def test_acks_are_signed_with_the_meters_key_and_counted(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    transport.clear()
    w.dataReceived(frame({"acks": [[C, 1, [1, 2], *ADDR], [C, 9, [3], *ADDR]]}))  # meter 9: no key, no ack
    [(datagram, addr)] = clock.ports[0].socket.sent
    assert addr == ADDR and decode_ack(datagram, K1) == (C, 1, [1, 2])
    clock.advance(0)
    assert frames(transport.value()) == [{"readings": [], "from": [], "received": 0, "acks_sent": 1}]


def test_acks_the_socket_refuses_are_counted_apart(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    transport.clear()
    clock.ports[0].socket.room = 1
    w.dataReceived(frame({"acks": [[C, 1, list(range(250)), *ADDR]]}))  # three datagrams of at most 100 seqs
    [(datagram, _)] = clock.ports[0].socket.sent
    assert decode_ack(datagram, K1) == (C, 1, list(range(100)))
    clock.advance(0)
    assert frames(transport.value()) == [{"readings": [], "from": [], "received": 0, "acks_sent": 1, "acks_unsent": 2}]


def test_a_full_stdout_pauses_the_socket_and_a_drained_one_resumes_it(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": []}))
    port = clock.ports[0]
    transport.producer.pauseProducing()
    assert not port.reading
    transport.producer.resumeProducing()
    assert port.reading


def test_a_turn_reads_a_bounded_share_of_a_backlog_so_meterds_frames_are_read_between() -> None:
    """The worker's real port (Twisted's reads up to 256 KB a turn) stops at READ_BYTES_PER_TURN."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    w = Worker(reactor, os.dup(server.fileno()))
    w.makeConnection(StringTransport())
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        datagrams = [reading(seq) for seq in range(1, 1001)]
        for datagram in datagrams:
            sender.sendto(datagram, server.getsockname())
        sender.close()
        first_turn = next(k for k in range(1, len(datagrams)) if sum(map(len, datagrams[:k])) >= READ_BYTES_PER_TURN)
        w.port.doRead()
        assert w.received == first_turn < len(datagrams)  # the turn ends at the first datagram past the limit
        w.port.doRead()
        assert first_turn < w.received < len(datagrams)  # the rest waits in the socket for later turns
    finally:
        if w.pending is not None:
            w.pending.cancel()
        port = w.port
        w.stop_port()
        port.socket.close()  # the worker leaves its dup to the process's exit
        server.close()


@pytest.mark.slow
def test_when_stdin_closes_the_worker_sends_what_it_holds_and_ends(worker: Any) -> None:
    w, clock, transport = worker
    w.dataReceived(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
    transport.clear()
    clock.ports[0].protocol.datagramReceived(reading(1), ADDR)
    w.readConnectionLost()
    [message] = frames(transport.value())
    assert message["readings"][0][4] == 1 and message["from"] == [list(ADDR)]
    assert not clock.ports[0].reading and transport.disconnecting and clock.getDelayedCalls() == []  # the socket closes on exit


# -- meterd's side ---------------------------------------------------------------------


class SocketPort(FakeDatagramTransport):
    """The reactor's UDP port as the pool sees it: a descriptor to share, reading on or off."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True

    def fileno(self) -> int:
        return 42

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


class ProcessTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.stdin_closed = False
        self.signals: list[str] = []
        self.pipes: dict[int, Any] = {}  # written at once: a StringTransport has no pipe to wait for

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class PoolReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.advance(NOW)
        self.spawned: list[tuple[Any, dict[int, Any]]] = []
        self.writers: set[Any] = set()  # descriptors with data waiting for the next poll

    def addWriter(self, writer: Any) -> None:
        self.writers.add(writer)

    def removeWriter(self, writer: Any) -> None:
        self.writers.discard(writer)

    def addReader(self, reader: Any) -> None:
        pass

    def removeReader(self, reader: Any) -> None:
        pass

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: dict[str, str], childFDs: dict[int, Any]) -> None:
        self.spawned.append((protocol, childFDs))


class PipedProcess(ProcessTransport):
    """A worker's stdin as meterd has it: a real pipe behind Twisted's own ``ProcessWriter``.

    Its writes wait for the reactor's next poll, as they do in meterd;
    ``poll`` does what the reactor does then.
    """

    def __init__(self, reactor: PoolReactor) -> None:
        super().__init__()
        self.reactor = reactor
        self.read_end, write_end = os.pipe()
        os.set_blocking(self.read_end, False)
        self.pipes = {0: ProcessWriter(reactor, self, 0, write_end)}

    def write(self, data: bytes) -> None:
        self.pipes[0].write(data)

    def poll(self) -> None:
        for writer in list(self.reactor.writers):
            writer.doWrite()

    def in_pipe(self) -> list[Any]:
        """The frames the worker could read now."""
        try:
            return frames(os.read(self.read_end, 1 << 20))
        except BlockingIOError:
            return []

    def close(self) -> None:
        os.close(self.read_end)
        os.close(self.pipes[0].fileno())


class Pool:
    def __init__(self, meters: int = 1) -> None:
        self.reactor = PoolReactor()
        self.metrics = Metrics()
        self.store = RecordingStore()
        self.directory = Directory()
        self.directory.add_customer(Customer(C, "Ana", "mono", 1, 1, "America/Sao_Paulo", "hash", 0))
        for meter_id in range(1, meters + 1):
            self.directory.add_meter(Meter(C, meter_id, "register", K1_HEX, 0))
        self.ingest = Ingest(self.store, self.reactor, self.metrics)  # type: ignore[arg-type]
        self.ingest.startService()
        self.protocol = MeterProtocol(self.directory, self.ingest, self.metrics, self.reactor, require_signature=True)
        self.port = SocketPort()
        self.protocol.makeConnection(self.port)
        self.pool = UdpWorkers(1, self.protocol, self.directory, self.ingest, self.metrics, self.reactor)
        self.ingest.send_acks = self.pool.send_acks  # as meterd.service.connect wires it
        self.directory.meter_listeners.append(self.pool.meter_added)
        self.pool.startService()

    def connect(self, index: int = -1) -> tuple[Any, ProcessTransport]:
        link, _ = self.reactor.spawned[index]
        transport = ProcessTransport()
        link.makeConnection(transport)
        return link, transport

    def gauge(self) -> float:
        return self.metrics.registry.get_sample_value("meterd_udp_workers", {}) or 0.0


def test_a_worker_gets_the_socket_and_every_key_then_the_port_stops_reading() -> None:
    p = Pool()
    [(_, fds)] = p.reactor.spawned
    assert fds[3] == 42
    link, transport = p.connect()
    assert frames(transport.value()) == [{"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}]
    assert p.port.reading  # until the worker says it reads
    link.childDataReceived(1, frame({"ready": True}))
    assert not p.port.reading and p.gauge() == 1


def test_a_worker_gets_many_keys_in_frames_of_a_few_thousand_and_the_settings_last() -> None:
    p = Pool(meters=FIRST_ROWS + 2)
    _, transport = p.connect()
    sent = frames(transport.value())
    assert [len(message["keys"]) for message in sent] == [FIRST_ROWS, 2]
    assert ["require_signature" in message for message in sent] == [False, True]
    assert sorted(row[1] for message in sent for row in message["keys"]) == list(range(1, FIRST_ROWS + 3))


def test_readings_from_a_worker_are_ingested_and_acked_through_a_worker() -> None:
    p = Pool()
    link, transport = p.connect()
    link.childDataReceived(1, frame({"ready": True}))
    transport.clear()
    data = frame({"readings": [[C, 1, 1_764_000_001_000_000, 1001, 5]], "from": [list(ADDR)], "received": 3,
                  "dropped": {"bad_signature": 2}, "acks_sent": 4, "acks_unsent": 2})
    link.childDataReceived(1, data[:7])  # frames may arrive in pieces
    link.childDataReceived(1, data[7:])
    assert p.ingest.pending == 1
    p.reactor.advance(1)  # the flush commits and its acks go to the worker at once
    assert p.store.readings == [Reading(C, 1, 1_764_000_001_000_000, 1001, 5)]
    assert frames(transport.value()) == [{"acks": [[C, 1, [5], *ADDR]]}]
    assert p.port.written == []  # not sent by the reactor
    get = p.metrics.registry.get_sample_value
    assert get("meterd_datagrams_received_total", {}) == 3
    assert get("meterd_acks_sent_total", {}) == 4
    assert get("meterd_acks_unsent_total", {}) == 2
    assert get("meterd_datagrams_dropped_total", {"reason": "bad_signature"}) == 2


@pytest.fixture
def piped() -> Iterator[tuple[Pool, Any, PipedProcess, list[Any]]]:
    """A pool whose worker's stdin is a real pipe; the worker's first frames, already read off it."""
    p = Pool()
    link, _ = p.reactor.spawned[-1]
    transport = PipedProcess(p.reactor)
    try:
        link.makeConnection(transport)
        transport.poll()
        yield p, link, transport, transport.in_pipe()
    finally:
        transport.close()


def test_a_flush_acks_are_in_the_workers_pipe_before_its_observers_run(piped: Any) -> None:
    """The observers (alarm rules) are the rest of that reactor turn; a meter's ack does not wait for them."""
    p, link, transport, first = piped
    assert first[-1]["require_signature"] is True
    link.childDataReceived(1, frame({"ready": True}))
    in_pipe_when_observed: list[Any] = []
    p.ingest.observers.append(lambda *_: in_pipe_when_observed.append(transport.in_pipe()))
    rows = [[C, 1, 1_764_000_001_000_000 + i, 1001 + i, i] for i in range(3)]
    link.childDataReceived(1, frame({"readings": rows, "from": [list(ADDR)] * 3, "received": 3}))
    p.reactor.advance(1)
    assert in_pipe_when_observed == [[{"acks": [[C, 1, [0, 1, 2], *ADDR]]}]]
    link.send({"keys": [[C, 2, K1_HEX, None]]})  # any other frame waits for the reactor's poll, as Twisted's writes do
    assert transport.in_pipe() == []
    transport.poll()
    assert transport.in_pipe() == [{"keys": [[C, 2, K1_HEX, None]]}]


def test_once_the_workers_stdin_is_closing_even_acks_are_left_to_the_reactor(piped: Any) -> None:
    """The reactor closes the pipe on what the last write returns; a write made here would lose that."""
    p, link, transport, _ = piped
    transport.pipes[0].loseConnection()
    link.send({"acks": [[C, 1, [7], *ADDR]]}, at_once=True)
    assert transport.in_pipe() == []
    assert transport.pipes[0] in p.reactor.writers  # the reactor writes it, then closes the pipe


def test_a_meter_registered_later_is_sent_to_the_workers() -> None:
    p = Pool()
    link, transport = p.connect()
    transport.clear()
    p.directory.add_meter(Meter(C, 2, "register", "22" * 32, 0))
    assert frames(transport.value()) == [{"keys": [[C, 2, "22" * 32, None]]}]
    transport.clear()
    p.directory.add_meter(Meter(C, 2, "register", "22" * 32, 0, retired_ts=1_764_000_002_000_000))  # and retired
    assert frames(transport.value()) == [{"keys": [[C, 2, "22" * 32, 1_764_000_002_000_000]]}]


def test_while_no_worker_is_up_the_reactor_reads_and_acks_and_a_new_worker_is_started() -> None:
    p = Pool()
    link, _ = p.connect()
    link.childDataReceived(1, frame({"ready": True}))
    link.processEnded(Failure(ProcessTerminated(signal=9)))
    assert p.port.reading and p.gauge() == 0
    p.protocol.datagramReceived(reading(1), ADDR)  # the reactor's own port
    p.reactor.advance(0.05)
    assert decode_ack(p.port.written[0][0], K1) == (C, 1, [1])
    assert len(p.reactor.spawned) == 1
    p.reactor.advance(RESTART_DELAY)
    assert len(p.reactor.spawned) == 2
    new, _ = p.connect()
    new.childDataReceived(1, frame({"ready": True}))
    assert not p.port.reading and p.gauge() == 1


def test_a_worker_that_keeps_dying_young_is_restarted_ever_more_slowly() -> None:
    p = Pool()

    def dies_after(seconds: float) -> None:
        link, _ = p.connect()
        p.reactor.advance(seconds)
        link.processEnded(Failure(ProcessTerminated(exitCode=1)))

    delays = []
    for lifetime in (0.1, 0.1, 0.1, 0.1, SETTLED_AFTER, 0.1):
        dies_after(lifetime)
        spawned = len(p.reactor.spawned)
        [call] = p.reactor.getDelayedCalls()
        delays.append(call.getTime() - p.reactor.seconds())
        p.reactor.advance(delays[-1])
        assert len(p.reactor.spawned) == spawned + 1
    assert delays == [RESTART_DELAY, 2 * RESTART_DELAY, 4 * RESTART_DELAY, 8 * RESTART_DELAY, RESTART_DELAY, 2 * RESTART_DELAY]


def test_stopping_closes_the_workers_stdin_and_kills_one_that_lingers() -> None:
    p = Pool()
    link, transport = p.connect()
    stopped = p.pool.stopService()
    assert transport.stdin_closed and not stopped.called
    p.reactor.advance(60)
    assert transport.signals == ["KILL"]
    link.processEnded(Failure(ProcessTerminated(signal=9)))
    assert stopped.called
    p.reactor.advance(RESTART_DELAY)
    assert len(p.reactor.spawned) == 1  # a stopping pool starts no one


# -- end to end ------------------------------------------------------------------------


async def workers_up(server: LiveServer, n: int) -> bool:
    return m(await scrape(server), "meterd_udp_workers") == n


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_real_worker_reads_acks_survives_a_crash_and_stops_with_meterd(tmp_path: Path) -> None:
    server = await start_server(tmp_path / "data", "--udp-workers", "1")
    pids: list[int] = []
    try:
        key = await register(server)
        await until(lambda: workers_up(server, 1))
        meter = FakeMeter(server.udp_port, key)
        port = await listen(meter)
        try:
            now = time.time()
            meter.send(meter.reading(now - 60, 10.0, 1))
            meter.send(meter.reading(now - 50, 10.5, 2, key=bytes(32)))  # forged: dropped by the worker
            await meter.acks_for(1)
            assert all(decode_ack(d, bytes.fromhex(key)) for d in meter.received)  # signed by the worker

            # A meter registered while the worker runs: its key reaches the worker.
            status, second, _ = await server.call("POST", "/cadMedidor", json_body={"id": C})
            assert status == 201
            meter2 = FakeMeter(server.udp_port, second["key"])
            port2 = await listen(meter2)
            try:
                datagram = meter2.reading(now - 40, 1.0, 3, meter=second["id_medidor"])
                await until(lambda: succeed_after(meter2, datagram, 3))
            finally:
                await port2.stopListening()

            [pid] = pids = worker_pids(server.core.workers)
            os.kill(pid, signal.SIGKILL)
            await until(lambda: workers_up(server, 0))
            meter.send(meter.reading(now - 30, 11.0, 4))  # read by the reactor meanwhile
            await meter.acks_for(4)
            await until(lambda: workers_up(server, 1))
            [new] = worker_pids(server.core.workers)
            assert new != pid
            pids.append(new)
            meter.send(meter.reading(now - 20, 11.5, 5))
            await meter.acks_for(5)

            samples = await scrape(server)
            assert m(samples, "meterd_datagrams_dropped_total", reason="bad_signature") == 1
            assert m(samples, "meterd_readings_total", outcome="stored") == 4
        finally:
            await port.stopListening()
    finally:
        await server.stop()
    await until(lambda: all_gone(pids))


async def succeed_after(meter: FakeMeter, datagram: bytes, seq: int) -> bool:
    """Send (again) until acked: the first may reach the worker before the key."""
    if seq in meter.acked:
        return True
    meter.send(datagram)
    await deferLater(reactor, 0.1, lambda: None)
    return seq in meter.acked


async def all_gone(pids: list[int]) -> bool:
    return all(gone(pid) for pid in pids)


@pytest.mark.slow
def test_twistd_with_two_workers_stops_them_on_sigterm(tmp_path: Path) -> None:
    with twistd_with_workers(tmp_path / "data", "udp", 2):
        pass


@pytest.mark.slow
def test_a_worker_ignores_sigterm_and_ends_when_its_stdin_closes(tmp_path: Path) -> None:
    """A service manager signals the whole group; the worker waits for meterd to close its stdin."""
    import subprocess
    import sys

    from tests.support import subprocess_env

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    proc = subprocess.Popen([sys.executable, "-m", "meterd.udp_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=subprocess_env(), close_fds=False,
                            preexec_fn=lambda: os.dup2(sock.fileno(), 3))
    assert proc.stdin is not None and proc.stdout is not None

    def next_frame() -> dict[str, Any]:
        assert proc.stdout is not None
        (n,) = struct.unpack("!I", proc.stdout.read(4))
        return orjson.loads(proc.stdout.read(n))

    try:
        proc.stdin.write(frame({"require_signature": True, "keys": [[C, 1, K1_HEX, None]]}))
        proc.stdin.flush()
        assert next_frame() == {"ready": True}
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.sendto(reading(1), sock.getsockname())
        message = next_frame()
        assert message["readings"] == [[C, 1, 1_764_000_001_000_000, 1001, 1]] and message["from"] == [["127.0.0.1", sender.getsockname()[1]]]
        sender.close()
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()


def test_the_workers_log_lines_are_logged_at_their_level() -> None:
    from twisted.logger import LogLevel, globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        p = Pool()
        link, _ = p.connect()
        link.childDataReceived(2, b"error Unhandled Error\nTraceback (most recent call last):\n")
        link.childDataReceived(2, b"  boom\ninfo Main loop terminated.\n")
    finally:
        globalLogPublisher.removeObserver(events.append)
    relayed = [(e["log_level"], e["line"]) for e in events if e.get("log_namespace") == "meterd.workers" and "line" in e]
    assert relayed == [
        (LogLevel.error, "Unhandled Error"),
        (LogLevel.error, "Traceback (most recent call last):"),
        (LogLevel.error, "  boom"),
        (LogLevel.info, "Main loop terminated."),
    ]
