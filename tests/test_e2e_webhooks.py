"""Webhooks end to end: a real ``twistd -n meterd`` and a real HTTP receiver on loopback.

The receiver (a twisted.web server in this process) first answers 500, then
is not there at all (refused connections), while readings raise and clear
demand alarms and alarms are acknowledged; meterd is stopped and started
again (cleanly, then killed with SIGKILL) in between; then the receiver
recovers. Every event must arrive, signed with the webhook's secret, in
event order, and an event that arrives twice must be a retry: the same
delivery id and the same event. With PostgreSQL (``METERD_TEST_PG``), two
meterd processes share the database and one webhook: its events come in one
stream, delivered by one process at a time, and when that one stops the
other goes on where it stopped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from meterd.taxid import make_cpf
from tests.support import Twistd, free_port, pg_dsn, reset_pg

pytestmark = pytest.mark.slow

CUSTOMERS = [make_cpf(str(n)) for n in (529982247, 168995350, 111444777)]
WINDOW = ("--alarm-window", "60")  # a demand alarm a minute of readings can raise and clear


@dataclass
class Post:
    received: float
    headers: dict[str, str]
    body: bytes

    @property
    def event_id(self) -> int:
        return int(json.loads(self.body)["event"]["event_id"])

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body)["event"])


class Receiver(Resource):
    """An alarm system on loopback: answers ``status`` to every POST while up; refuses connections while down."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.status = 200
        self.posts: dict[str, list[Post]] = {}
        self.answered: list[int] = []
        self.port_number = free_port()
        self.site = _TrackingSite(self)
        self.port: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port_number}"

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.posts.setdefault(request.path.decode(), []).append(Post(time.time(), headers, request.content.read()))
        self.answered.append(self.status)
        request.setResponseCode(self.status)
        return b"{}"

    def up(self) -> None:
        self.port = reactor.listenTCP(self.port_number, self.site, interface="127.0.0.1")

    async def down(self) -> None:
        """Nothing listens any more, and meterd's kept-alive connections are cut."""
        await self.port.stopListening()
        for protocol in list(self.site.protocols):
            transport = protocol._channel.transport  # behind twisted.web's protocol switcher
            if transport is not None:
                transport.abortConnection()


class _TrackingSite(Site):
    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)
        self.protocols: set[Any] = set()
        self.noisy = False

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self.protocols.add(protocol)
        return protocol


class Meterd:
    """An HTTP client of one meterd (any of the processes, on PostgreSQL), without blocking the receiver's reactor."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, expected: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        if method == "GET":
            response = await treq.request(method, self.url + path, params=body, headers=headers, persistent=False)
        else:
            response = await treq.request(method, self.url + path, json=body, headers=headers, persistent=False)
        answer = json.loads(await response.content())
        assert response.code == expected, (path, answer)
        return answer

    async def metric(self, name: str) -> float:
        response = await treq.get(self.url + "/metrics", persistent=False)
        for line in (await response.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


class Readings:
    """Readings that raise and clear a demand alarm of each customer's meter, cycle after cycle.

    Each cycle: four readings 10 s apart drawing 36 kW (above the customers'
    1 kW), then one 70 s later with nothing drawn (the minute's average is
    0: cleared). Timestamps start 40 minutes back, so that every reading is
    live data (backfill raises nothing) and the clock never needs to pass.
    """

    def __init__(self) -> None:
        self.t0 = int(time.time()) - 2400
        self.register: dict[str, float] = {}
        self.cycles = 0

    async def cycle(self, clients: list[Meterd]) -> None:
        start = self.t0 + 110 * self.cycles
        for i, cid in enumerate(CUSTOMERS):
            client = clients[i % len(clients)]
            for offset, step in ((0, 0.1), (10, 0.1), (20, 0.1), (30, 0.1), (100, 0.0)):
                self.register[cid] = round(self.register.get(cid, 0.0) + step, 3)
                await client.call("POST", "/postConsumo", {"id": cid, "id_medidor": 1, "valor": self.register[cid],
                                                           "timestamp": start + offset}, expected=201)
        self.cycles += 1

    @staticmethod
    async def acknowledge_latest(client: Meterd) -> None:
        """Each customer acknowledges their latest alarm (cleared by now, which an acknowledgement does not mind)."""
        for cid in CUSTOMERS:
            events = (await client.call("GET", "/getAlarme", {"id": cid}))["events"]
            raised = [e["alarm_id"] for e in events if e["type"] == "raised"]
            if raised:
                await client.call("POST", "/ackAlarme", {"id": cid, "alarm_id": raised[-1]})


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"{what}: not in {timeout:g} s"
        await deferLater(reactor, 0.1, lambda: None)
    return result


async def provision(client: Meterd) -> None:
    for cid in CUSTOMERS:
        await client.call("POST", "/cadCliente", {"id": cid, "name": f"Cliente {cid[:3]}", "limite_kw": 1}, expected=201)
        await client.call("POST", "/cadMedidor", {"id": cid}, expected=201)


async def every_event(client: Meterd, customers: list[str] = CUSTOMERS) -> list[dict[str, Any]]:
    """Every alarm event of these customers, as /getAlarme lists them, in id order."""
    events = []
    for cid in customers:
        events += (await client.call("GET", "/getAlarme", {"id": cid, "cursor": 0}))["events"]
    return sorted(events, key=lambda e: e["event_id"])


def check_stream(posts: list[Post], secret: str, webhook_id: int, expected: list[dict[str, Any]]) -> int:
    """Every expected event arrived, first times in id order, each signed; a repeat is a retry. The repeats."""
    firsts: dict[int, Post] = {}
    repeats = 0
    for post in posts:
        fields = dict(part.split("=", 1) for part in post.headers["Meterd-Signature"].split(","))
        mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + post.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(mac, fields["v1"]), post
        assert abs(post.received - int(fields["t"])) < 60  # signed when it was sent
        assert post.headers["Meterd-Delivery"] == f"{webhook_id}-{post.event_id}"
        seen = firsts.get(post.event_id)
        if seen is None:
            assert not firsts or post.event_id > max(firsts), f"event {post.event_id} came after {max(firsts)}: out of order"
            firsts[post.event_id] = post
        else:
            repeats += 1
            assert post.event == seen.event  # the same event, sent again
    assert [firsts[i].event for i in sorted(firsts)] == expected, "events lost or invented"
    return repeats


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    if r.port is not None and r.port.connected:
        r.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_receiver_that_fails_then_recovers_across_meterd_restarts_gets_every_event_in_order(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 500
    receiver.up()
    server = Twistd(tmp_path / "data", *WINDOW, "--webhook-max-backoff", "0.5")
    await deferToThread(server.start)
    try:
        client = Meterd(server.url, server.token)
        await provision(client)
        everyone = await client.call("POST", "/cadWebhook", {"url": receiver.url + "/all"}, expected=201)
        only_one = await client.call("POST", "/cadWebhook", {"url": receiver.url + "/one", "id": CUSTOMERS[0]}, expected=201)
        readings = Readings()

        # 1. the receiver answers 500: nothing is delivered, every attempt is retried
        for _ in range(2):
            await readings.cycle([client])
        await Readings.acknowledge_latest(client)

        async def failing(error: str) -> bool:
            listed = (await client.call("GET", "/getWebhooks"))["webhooks"]
            return all(w["last_error"] == error and w["failures"] > 0 and w["backlog"] > 0 for w in listed)

        await until(lambda: failing("HTTP 500"), 20, "both webhooks failing with HTTP 500")
        assert set(receiver.answered) == {500}

        # 2. the receiver is gone: connections refused; meterd stopped and started again meanwhile
        await receiver.down()
        await until(lambda: failing("connection refused"), 20, "both webhooks failing with refused connections")
        await readings.cycle([client])
        assert await deferToThread(server.stop) in (0, -15)
        await deferToThread(server.start)
        await readings.cycle([client])
        await Readings.acknowledge_latest(client)

        # 3. it recovers: everything so far arrives, in order
        receiver.status = 200
        receiver.up()
        expected = await every_event(client)
        assert len(expected) >= 12 and {e["type"] for e in expected} == {"raised", "cleared", "acked"}

        async def caught_up() -> bool:
            return {p.event_id for p in receiver.posts.get("/all", [])} >= {e["event_id"] for e in expected}

        await until(caught_up, 30, "every event delivered after the recovery")

        # 4. killed while delivering, restarted: what it had not saved comes again, with its delivery id
        await readings.cycle([client])
        os.kill(server.proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
        await deferToThread(server.proc.wait)  # type: ignore[union-attr]
        await deferToThread(server.start)
        await readings.cycle([client])
        expected = await every_event(client)
        last = expected[-1]["event_id"]

        async def settled() -> bool:
            listed = {w["webhook_id"]: w for w in (await client.call("GET", "/getWebhooks"))["webhooks"]}
            return listed[everyone["webhook_id"]]["cursor"] == last and all(w["backlog"] == 0 for w in listed.values())

        await until(settled, 30, "both webhooks caught up after the kill")
        listed = {w["webhook_id"]: w for w in (await client.call("GET", "/getWebhooks"))["webhooks"]}
        assert listed[everyone["webhook_id"]]["failures"] == 0 and listed[everyone["webhook_id"]]["last_success"] is not None
        assert "secret" not in listed[everyone["webhook_id"]]
        repeats = check_stream(receiver.posts["/all"], everyone["secret"], everyone["webhook_id"], expected)
        mine = [e for e in expected if e["event_id"] in {e2["event_id"] for e2 in await every_event(client, CUSTOMERS[:1])}]
        check_stream(receiver.posts["/one"], only_one["secret"], only_one["webhook_id"], mine)
        assert repeats <= len(expected)  # retries of what a killed meterd had not saved, at most
        print(f"\nwebhooks e2e: {len(expected)} events, {len(receiver.answered)} attempts "
              f"({receiver.answered.count(500)} answered 500), {repeats} repeated after the kill")
    finally:
        await deferToThread(server.stop)


# -- two processes on PostgreSQL ------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.skipif(not pg_dsn(), reason="METERD_TEST_PG is not set: no PostgreSQL to test against")
@pytest_twisted.ensureDeferred
async def test_two_processes_on_postgresql_deliver_one_webhook_as_one_stream(tmp_path: Path, receiver: Receiver) -> None:
    from tests.test_e2e_postgres import SharedPortTwistd

    reset_pg()
    receiver.up()
    data_dir = tmp_path / "data"
    udp_port = free_port(socket.SOCK_DGRAM)
    a = SharedPortTwistd("a", data_dir, udp_port, *WINDOW)
    b = SharedPortTwistd("b", data_dir, udp_port, *WINDOW)
    try:
        await deferToThread(a.start)
        await deferToThread(b.start)
        token = (data_dir / "operator.token").read_text().strip()
        clients = [Meterd(a.url, token), Meterd(b.url, token)]
        await provision(clients[0])
        hook = await clients[1].call("POST", "/cadWebhook", {"url": receiver.url + "/shared"}, expected=201)
        readings = Readings()
        for _ in range(3):
            await readings.cycle(clients)  # the customers' readings (and so their alarms) through both processes
        await Readings.acknowledge_latest(clients[0])
        expected = await every_event(clients[1])

        async def delivered() -> bool:
            return {p.event_id for p in receiver.posts.get("/shared", [])} >= {e["event_id"] for e in expected}

        await until(delivered, 30, "every event delivered")
        label = f'meterd_webhook_deliveries_total{{webhook="{hook["webhook_id"]}"}}'
        counts = [await c.metric(label) for c in clients]
        assert sorted(counts) == [0.0, len(expected)], counts  # one process delivered them all, once each
        holder, other = (a, b) if counts[0] else (b, a)

        # the holder stops: it saves its cursor and releases the lease; the other goes on from there
        holder.stop()
        survivor = clients[1] if holder is a else clients[0]
        for _ in range(2):
            await readings.cycle([survivor])
        expected = await every_event(survivor)

        await until(delivered, 30, "every event delivered after the holder stopped")
        assert check_stream(receiver.posts["/shared"], hook["secret"], hook["webhook_id"], expected) == 0
        assert await survivor.metric(label) == len(expected) - max(counts)
        assert other.proc is not None and other.proc.poll() is None
    finally:
        for proc in (b, a):
            await deferToThread(proc.stop)
