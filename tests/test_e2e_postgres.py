"""Scale-out on PostgreSQL: several stores, and two meterd processes, on one database.

The store's own suite (tests/test_store.py) runs on PostgreSQL too; this file
covers what only appears with more than one writer: two stores racing on the
same meters and the same first migration, and the end-to-end case of
DESIGN §9 -- two ``twistd -n meterd --reuse-port`` processes sharing the UDP port, a
fleet of signed meters spread across both, every reading stored once, and
either process answering the history and the bill.

Needs ``METERD_TEST_PG`` (e.g. ``postgresql:///meterd_test``, a database of
its own: its ``public`` schema is dropped and recreated).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import gatherResults

from meterd.datagram import sign, split_signature, verify
from meterd.readings import Outcome, Reading
from meterd.store import schema
from meterd.store.base import Customer
from tests.support import ROOT, free_port, http, pg_dsn, reset_pg, subprocess_env

DSN = pg_dsn()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(not DSN, reason="METERD_TEST_PG is not set: no PostgreSQL to test against (.ci/run starts one)"),
]

C1 = "12345678909"
T0 = 1_764_000_000_000  # ms, on the hour


def reset_database() -> None:
    reset_pg()


def query(statement: str, *args: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(DSN) as conn:
        return conn.execute(statement, args).fetchall()


def customer(cid: str = C1) -> Customer:
    return Customer(cid, "n", "mono", 10_000, 1_000_000, "America/Sao_Paulo", f"hash-{cid}", 0)


@pytest.fixture
def stores() -> Any:
    from meterd.store.postgres import PostgresStore

    reset_database()
    opened = [PostgresStore(DSN), PostgresStore(DSN)]
    yield opened
    for store in opened:
        store.stop()


# -- several stores on one database -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_first_start_of_two_processes_migrates_once(stores: list[Any]) -> None:
    await gatherResults([s.start() for s in stores])
    assert query("SELECT version FROM schema_version") == [(schema.LATEST,)]


@pytest_twisted.ensureDeferred
async def test_two_writers_receiving_the_same_readings_store_each_once(stores: list[Any]) -> None:
    a, b = stores
    await a.start()
    await b.start()
    await a.create_customer(customer())
    for _ in range(3):
        await a.create_meter(C1, "register", "ab" * 32, 0)
    readings = [Reading(C1, m, T0 + i * 60_000, 1000 * m + 10 * i, i) for m in (1, 2, 3) for i in range(200)]
    # the same readings, in different orders and batches, through both stores at once
    first = a.ingest(readings, T0)
    second = b.ingest(list(reversed(readings)), T0)
    third = a.ingest(readings[::2], T0)
    outcomes = await gatherResults([first, second, third])
    every = Counter(o for batch in outcomes for o in batch)
    assert every[Outcome.STORED] == len(readings)
    assert every[Outcome.DUPLICATE] == len(readings) + len(readings[::2])
    assert query("SELECT COUNT(*) FROM readings") == [(600,)]
    # the meters' newest state and the rollups are those of the readings, counted once
    assert query("SELECT meter_id, last_ts, last_wh FROM meters ORDER BY meter_id") == [
        (m, T0 + 199 * 60_000, 1000 * m + 1990) for m in (1, 2, 3)
    ]
    assert query("SELECT SUM(n) FROM rollups") == [(600,)]


@pytest_twisted.ensureDeferred
async def test_two_processes_deciding_the_same_alarms_store_each_once(stores: list[Any]) -> None:
    from meterd.alarm_book import Transition
    from meterd.alarm_rules import Decision

    a, b = stores
    await a.start()
    await b.start()

    def decided(decision: Decision, meter: int, at: int) -> Transition:
        return Transition(C1, meter, "silent", decision, at, 900, 900, "m")

    # both processes see the same meters go silent and come back, ten times over,
    # settling at the same moments in opposite orders
    for round_ in range(10):
        at = T0 + round_ * 1000
        raises = [decided(Decision.RAISE, m, at) for m in range(1, 6)]
        clears = [decided(Decision.CLEAR, m, at + 500) for m in range(1, 6)]
        await gatherResults([a.settle_alarms(raises), b.settle_alarms(raises[::-1])])
        assert query("SELECT COUNT(*) FROM alarms WHERE cleared_at IS NULL") == [(5,)]
        await gatherResults([b.settle_alarms(clears), a.settle_alarms(clears[::-1])])
        assert query("SELECT COUNT(*) FROM alarms WHERE cleared_at IS NULL") == [(0,)]
    # one alarm per (meter, round), each raised and cleared once; ids dense and in commit order
    assert query("SELECT COUNT(*), COUNT(DISTINCT alarm_id), MAX(alarm_id) FROM alarms") == [(50, 50, 50)]
    events = query("SELECT event_id, alarm_id, event_type FROM alarm_events ORDER BY event_id")
    assert [e[0] for e in events] == list(range(1, 101))
    assert Counter(t for _, _, t in events) == {"raised": 50, "cleared": 50}
    raised_at = {alarm: i for i, alarm, t in events if t == "raised"}
    assert all(raised_at[alarm] < i for i, alarm, t in events if t == "cleared")
    assert query("SELECT next_alarm_id, next_event_id FROM alarm_counters") == [(51, 101)]


@pytest_twisted.ensureDeferred
async def test_concurrent_registrations_get_distinct_meter_ids(stores: list[Any]) -> None:
    a, b = stores
    await a.start()
    await b.start()
    await a.create_customer(customer())
    meters = await gatherResults([s.create_meter(C1, "register", "ab" * 32, 0) for s in (a, b) * 4])
    assert sorted(m.meter_id for m in meters) == list(range(1, 9))


@pytest_twisted.ensureDeferred
async def test_a_customer_registered_concurrently_elsewhere_already_exists(stores: list[Any]) -> None:
    from meterd.store.base import AlreadyExists

    a, b = stores
    await a.start()
    await b.start()
    results = await gatherResults(
        [a.create_customer(customer()).addErrback(lambda f: f.trap(AlreadyExists)),
         b.create_customer(customer()).addErrback(lambda f: f.trap(AlreadyExists))]
    )
    assert sum(isinstance(r, Customer) for r in results) == 1
    assert sum(r is AlreadyExists for r in results) == 1
    assert query("SELECT COUNT(*) FROM customers") == [(1,)]


@pytest_twisted.ensureDeferred
async def test_per_customer_locking_used_on_citus_gives_the_same_outcomes(stores: list[Any]) -> None:
    a, b = stores
    await a.start()
    await b.start()
    a.engine.citus = b.engine.citus = True  # what the engine learns at start when the citus extension is present
    for cid in (C1, "98765432100"):
        await a.create_customer(customer(cid))
        await a.create_meter(cid, "register", "ab" * 32, 0)
    readings = [Reading(cid, 1, T0 + i * 1000, i, None) for cid in (C1, "98765432100") for i in range(50)]
    outcomes = await gatherResults([a.ingest(readings, T0), b.ingest(readings, T0)])
    assert Counter(o for batch in outcomes for o in batch) == {Outcome.STORED: 100, Outcome.DUPLICATE: 100}
    assert query("SELECT COUNT(*) FROM readings") == [(100,)]


@pytest_twisted.ensureDeferred
async def test_relaxed_durability_turns_off_synchronous_commit_on_the_writer() -> None:
    from meterd.store.postgres import PostgresStore

    reset_database()
    store = PostgresStore(DSN, durability="normal")
    await store.start()
    try:
        assert await store._write(lambda txn: store._one(txn, "SHOW synchronous_commit", ())) == ("off",)
        assert await store._read(lambda txn: store._one(txn, "SHOW synchronous_commit", ())) == ("on",)
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_an_unreachable_database_is_a_store_error() -> None:
    from meterd.store.base import StoreError
    from meterd.store.postgres import PostgresStore

    store = PostgresStore(f"postgresql://127.0.0.1:{free_port()}/nothing?connect_timeout=2")
    with pytest.raises(StoreError, match="cannot open the store"):
        await store.start()


# -- two twistd processes sharing the UDP port ----------------------------------


class SharedPortTwistd:
    """``twistd -n meterd --reuse-port`` on a given UDP port, its own HTTP port, one database.

    Twisted's TCP endpoints cannot set SO_REUSEPORT, so each process listens
    for HTTP on a port of its own (docs/scale-out.md puts a proxy in front).
    """

    def __init__(self, name: str, data_dir: Path, udp_port: int, *options: str, http_port: int | None = None) -> None:
        self.name = name
        self.options = options
        self.data_dir = data_dir
        self.http_port = http_port or free_port()
        self.udp_port = udp_port
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = data_dir.parent / f"{name}-twistd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> SharedPortTwistd:
        cmd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "meterd",
               "--http", f"tcp:{self.http_port}:interface=127.0.0.1", "--udp", str(self.udp_port),
               "--udp-interface", "127.0.0.1", "--reuse-port", "--db", DSN, "--data-dir", str(self.data_dir), *self.options]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            if b"Site starting on" not in self.log_path.read_bytes():  # this process, not a sibling on a shared port
                time.sleep(0.1)
                continue
            try:
                status, _ = http("GET", self.url + "/health")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /health in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def metric(self, name: str) -> float:
        with __import__("urllib.request").request.urlopen(self.url + "/metrics", timeout=10) as r:
            text = r.read().decode()
        found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0


class FleetMeter:
    """One signed meter on a socket of its own, resending what is not yet acknowledged."""

    def __init__(self, customer_id: str, meter_id: int, key_hex: str, readings: list[tuple[int, float, float]]) -> None:
        self.customer_id = customer_id
        self.meter_id = meter_id
        self.key = bytes.fromhex(key_hex)
        self.unacked = {seq: (kwh, ts) for seq, kwh, ts in readings}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def send_unacked(self, port: int) -> None:
        for seq, (kwh, ts) in list(self.unacked.items()):
            payload = json.dumps({"id": self.customer_id, "id_medidor": self.meter_id, "valor": kwh,
                                  "timestamp": ts, "seq": seq}).encode()
            try:
                self.sock.sendto(sign(payload, self.key), ("127.0.0.1", port))
            except BlockingIOError:
                return

    def read_acks(self) -> None:
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            payload, signature = split_signature(data)
            assert signature is not None and verify(payload, signature, self.key), data
            ack = json.loads(payload)
            assert (ack["id"], ack["id_medidor"]) == (self.customer_id, self.meter_id)
            for seq in ack["acks"]:
                self.unacked.pop(seq, None)


def deliver(fleet: list[FleetMeter], port: int, timeout: float = 60) -> None:
    """Send until every reading is acknowledged, then close the meters' sockets."""
    deadline = time.monotonic() + timeout
    while any(meter.unacked for meter in fleet) and time.monotonic() < deadline:
        for meter in fleet:
            meter.send_unacked(port)
        until = time.monotonic() + 0.3
        while (left := until - time.monotonic()) > 0:
            ready, _, _ = select.select([meter.sock for meter in fleet], [], [], left)
            for meter in fleet:
                if meter.sock in ready:
                    meter.read_acks()
    for meter in fleet:
        meter.sock.close()
    assert not [m.meter_id for m in fleet if m.unacked], "readings never acknowledged"


def register_fleet(a: SharedPortTwistd, b: SharedPortTwistd, token: str, n: int, **customer: Any) -> dict[int, str]:
    """A customer and ``n`` meters, registered alternately through both processes: id -> key."""
    status, body = http("POST", a.url + "/cadCliente", token, {"id": C1, "name": "Fleet", **customer})
    assert status == 201, body
    keys: dict[int, str] = {}
    for i in range(n):
        status, body = http("POST", (a, b)[i % 2].url + "/cadMedidor", token, {"id": C1})
        assert status == 201, body
        keys[body["id_medidor"]] = body["key"]
    return keys


@pytest.fixture
def pair(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """Two processes on one database and one UDP port; options from ``@pytest.mark.options(...)``."""
    reset_database()
    marker = request.node.get_closest_marker("options")
    options = marker.args if marker else ()
    data_dir = tmp_path / "data"  # shared: both processes use the same operator.token
    udp_port = free_port(socket.SOCK_DGRAM)
    a = SharedPortTwistd("a", data_dir, udp_port, *options)
    b = SharedPortTwistd("b", data_dir, udp_port, *options)
    try:
        a.start()
        b.start()  # after a: a created the token and migrated; b finds both
        yield a, b
    finally:
        for proc in (b, a):
            proc.stop()


def test_two_processes_share_the_udp_port_and_store_every_reading_once(pair: tuple[SharedPortTwistd, SharedPortTwistd]) -> None:
    a, b = pair
    token = (a.data_dir / "operator.token").read_text().strip()
    keys = register_fleet(a, b, token, 16)
    assert sorted(keys) == list(range(1, 17))  # ids keep counting across the processes

    per_meter = 25
    now = time.time()
    start = int(now) - 2 * 60 * per_meter  # readings every 2 minutes, ending now
    fleet = [
        FleetMeter(C1, m, key, [(seq, (1000 * m + 100 * seq) / 1000, start + 120 * seq) for seq in range(per_meter)])
        for m, key in keys.items()
    ]
    deliver(fleet, a.udp_port)

    # every reading stored exactly once
    assert query("SELECT COUNT(*), COUNT(DISTINCT (meter_id, ts)) FROM readings") == [(16 * per_meter, 16 * per_meter)]
    assert query("SELECT SUM(n) FROM rollups") == [(16 * per_meter,)]
    # both processes took a share of the datagrams (SO_REUSEPORT hashes by source address)
    received = [p.metric("meterd_datagrams_received_total") for p in (a, b)]
    assert all(n > 0 for n in received), received

    # each register grew by 100 Wh per reading after the first
    expected_kwh = round(16 * (per_meter - 1) * 0.1, 3)
    for path, params in (("/getConsumoHist", {"kind": "Y", "periodo": 0}), ("/getFatura", {"periodo": 0})):
        query_string = "&".join(f"{k}={v}" for k, v in {"id": C1, **params}.items())
        answers = [http("GET", f"{p.url}{path}?{query_string}", token) for p in (a, b)]
        assert [status for status, _ in answers] == [200, 200], answers
        assert answers[0][1] == answers[1][1], path
    _, history = http("GET", f"{a.url}/getConsumoHist?id={C1}&kind=Y&periodo=0", token)
    assert history["total_kwh"] == pytest.approx(expected_kwh)
    assert [m["id_medidor"] for m in history["meters"]] == list(range(1, 17))


@pytest.mark.options("--silent-after", "4")
def test_two_processes_raise_each_alarm_once_and_share_one_event_stream(pair: tuple[SharedPortTwistd, SharedPortTwistd]) -> None:
    """Both processes ingest the customer's readings, so both decide its monthly alarm;
    both know some meters that the other one hears, so both judge them silent."""
    a, b = pair
    token = (a.data_dir / "operator.token").read_text().strip()
    keys = register_fleet(a, b, token, 8, limite_kwh=1)
    start = int(time.time()) - 600  # ten minutes ago: live data, not backfill
    fleet = [FleetMeter(C1, m, key, [(seq, m + seq / 10, start + 60 * seq) for seq in range(10)]) for m, key in keys.items()]
    deliver(fleet, a.udp_port)  # 8 meters x 0.9 kWh this month: above 1 kWh
    assert all(p.metric("meterd_datagrams_received_total") > 0 for p in (a, b))

    def view(p: SharedPortTwistd, cursor: int | None = None) -> dict[str, Any]:
        status, body = http("GET", f"{p.url}/getAlarme?id={C1}" + ("" if cursor is None else f"&cursor={cursor}"), token)
        assert status == 200, body
        return body

    # monthly within a few evaluation ticks; then every meter goes silent (4 s without readings)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(view(a)["active"]) < 9:
        time.sleep(0.5)
    time.sleep(3)  # both processes' silent timers run again: nothing more may be raised
    first = view(a)
    assert first == view(b)  # either process answers the same
    assert sorted((x["rule"], x["id_medidor"]) for x in first["active"]) == [("monthly", None)] + [("silent", m) for m in range(1, 9)]
    assert query("SELECT COUNT(*) FROM alarms") == [(9,)]  # one each, though both processes decided them
    events = first["events"]
    assert [e["type"] for e in events] == ["raised"] * 9
    assert [e["event_id"] for e in events] == list(range(1, 10))

    # acknowledged through one process, seen through the other; a cursor from one serves on the other
    monthly = next(x for x in first["active"] if x["rule"] == "monthly")
    status, acked = http("POST", f"{b.url}/ackAlarme", token, {"id": C1, "alarm_id": monthly["alarm_id"]})
    assert status == 200, acked
    after = view(a, first["cursor"])
    assert [(e["type"], e["alarm_id"]) for e in after["events"]] == [("acked", monthly["alarm_id"])]
    assert view(b, after["cursor"])["events"] == []
    assert query("SELECT next_alarm_id, next_event_id FROM alarm_counters") == [(10, 11)]


def test_two_processes_share_the_http_port_too(tmp_path: Path) -> None:
    """One address for the API: the kernel spreads connections, either process answers,
    and when one stops the other takes every connection."""
    reset_database()
    data_dir = tmp_path / "data"
    udp_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    a = SharedPortTwistd("a", data_dir, udp_port, http_port=http_port)
    b = SharedPortTwistd("b", data_dir, udp_port, http_port=http_port)
    try:
        a.start()
        b.start()  # would exit with "address already in use" without SO_REUSEPORT on the HTTP port
        token = (data_dir / "operator.token").read_text().strip()
        status, body = http("POST", a.url + "/cadCliente", token, {"id": C1, "name": "Shared"})
        assert status == 201, body
        for _ in range(20):  # a new connection each time, hashed to either process
            status, body = http("GET", f"{a.url}/getConsumoHist?id={C1}&kind=Y&periodo=0", token)
            assert status == 200, body
        a.stop()
        assert b.proc is not None and b.proc.poll() is None
        for _ in range(10):
            status, _ = http("GET", a.url + "/health")
            assert status == 200
    finally:
        for proc in (b, a):
            proc.stop()
