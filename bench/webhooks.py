"""The ``webhooks`` phase: alarm events at a steady rate, delivered by meterd to a receiver on loopback.

``python -m bench --only webhooks`` runs it; ``python -m bench.webhooks
receiver PORT`` is the receiver, a bare twisted.web resource in a process of
its own that notes when each delivery arrived (``/hook``), answers plain
POSTs for the baseline (``/plain``) and hands its notes over (``/notes``).

The harness registers ``CUSTOMERS`` customers with a 1 kW demand limit and
one webhook for all of them, then sends signed UDP readings that raise and
clear a demand alarm, round robin over the customers, at ``EVENT_RATE``
events a second: four readings drawing 40 kW at once (a raise), then, 0.2 s
later, one reading 70 s later in meter time with nothing drawn (a clear).
meterd decides alarms after each flush, on the readings it holds then: a
raise and its clear that reach it in one flush (a busy host can hold both
back) are one excursion that raised nothing, so the readings sent are an
upper bound of the events, and what must be delivered is every event meterd
recorded, in order. A delivery's lag is the time from sending the readings
that caused its event to the receiver taking it: ingest, the alarm rules,
the settlement and the delivery together. The baseline is the receiver's own
round trip for a plain POST of the same size, sequential on one keep-alive
connection, measured in the same run. Meanwhile ``/health`` is asked every
50 ms, and its latency compared with the same before any alarm.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import cpf, free_port, metric_values, percentile, python, subprocess_env
from bench.common import http as call
from bench.report import Report, Row, ms, rate, ratio
from bench.server import Child, Meterd

CUSTOMERS = 500
EVENT_RATE = 200.0  # events/s: a raise and a clear per cycle
BURST_RATE = 2_000.0  # events/s, for BURST_S: faster than one webhook delivers, so a backlog builds and drains
BURST_S = 2.0
WINDOW_S = 60  # --alarm-window
STEP_KWH = 0.111  # per 10 s of meter time: 40 kW, against a 1 kW limit
CLEAR_AFTER_S = 0.2  # wall time between a cycle's raise and its clear: several flushes, and well before the next raise
HEALTH_EVERY_S = 0.05
BASELINE_S = 3.0


# -- the receiver (its own process) ------------------------------------------------------


def receiver(port: int) -> None:
    from twisted.internet import reactor
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    notes: list[tuple[float, str, str, str, int, str]] = []

    class Hook(Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            arrived = time.time()
            if request.path == b"/hook":
                body = json.loads(request.content.read())
                notes.append((arrived, body["id"], body["event"]["type"], body["alarm"]["rule"], body["event"]["event_id"],
                               request.getHeader("meterd-delivery") or ""))
            return b"{}"

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(notes).encode()

    site = Site(Hook())
    site.log = lambda request: None  # type: ignore[method-assign]
    reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


class Receiver(Child):
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "webhook-receiver.log"

    def start(self) -> Receiver:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([python(), "-m", "bench.webhooks", "receiver", str(self.port)], env=subprocess_env(),
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_http(self.url + "/notes", 20)
        return self

    def notes(self) -> list[list[Any]]:
        status, notes = call("GET", self.url + "/notes", timeout=30)
        assert status == 200, notes
        return list(notes)


def plain_round_trips(port: int, body: bytes, seconds: float) -> tuple[list[float], float]:
    """Sequential POSTs of ``body`` on one keep-alive connection: each round trip, and the requests per second."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    times: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        conn.request("POST", "/plain", body=body, headers={"Content-Type": "application/json"})
        conn.getresponse().read()
        times.append(time.perf_counter() - t0)
    conn.close()
    return times[10:], len(times) / (time.perf_counter() - started)


class HealthProbe(threading.Thread):
    """``GET /health`` every ``HEALTH_EVERY_S`` on one keep-alive connection, until stopped."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.times: list[float] = []
        self.halt = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.halt.wait(HEALTH_EVERY_S):
            t0 = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            self.times.append(time.perf_counter() - t0)
        conn.close()


# -- the readings that raise and clear alarms -----------------------------------------------


class Cycles:
    """Per customer, cycle after cycle: four readings 10 s apart drawing 40 kW, then one 70 s later drawing nothing."""

    def __init__(self, meters: list[dict[str, Any]], udp_port: int) -> None:
        from meterd.datagram import sign

        self.sign = sign
        self.meters = meters
        self.address = ("127.0.0.1", udp_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.t0 = int(time.time()) - 2400  # meter time: live data (not backfill), and never ahead of the clock
        self.register = [0.0] * len(meters)
        self.cycle = [0] * len(meters)
        self.raised_sent: dict[str, list[float]] = defaultdict(list)  # customer -> when each raise's readings were sent
        self.cleared_sent: dict[str, list[float]] = defaultdict(list)

    def _send(self, i: int, offset: int, step: float) -> None:
        meter = self.meters[i]
        self.register[i] = round(self.register[i] + step, 3)
        payload = json.dumps({"id": meter["id"], "id_medidor": 1, "valor": self.register[i],
                              "timestamp": self.t0 + 110 * self.cycle[i] + offset}).encode()
        self.sock.sendto(self.sign(payload, bytes.fromhex(meter["key"])), self.address)

    def raise_(self, i: int) -> None:
        for offset in (0, 10, 20, 30):
            self._send(i, offset, STEP_KWH)
        self.raised_sent[self.meters[i]["id"]].append(time.time())

    def clear(self, i: int) -> None:
        self._send(i, 100, 0.0)
        self.cleared_sent[self.meters[i]["id"]].append(time.time())
        self.cycle[i] += 1

    def run(self, event_rate: float, duration: float) -> int:
        """Paced: a raise every 2/event_rate s, each cleared CLEAR_AFTER_S later; the events caused."""
        period = 2.0 / event_rate
        started = time.perf_counter()
        pending: list[tuple[float, int]] = []  # (when to clear, customer index), in time order
        n = 0
        while True:
            now = time.perf_counter() - started
            while pending and pending[0][0] <= now:
                self.clear(pending.pop(0)[1])
            if now < duration and n * period <= now:
                i = n % len(self.meters)
                self.raise_(i)
                pending.append((n * period + CLEAR_AFTER_S, i))
                n += 1
                continue
            if now >= duration and not pending:
                return 2 * n
            due = [pending[0][0]] if pending else []
            if now < duration:
                due.append(n * period)
            time.sleep(max(0.0, min(due) - now))


def arrival_rate(notes: list[list[Any]]) -> float | None:
    """Deliveries a second, from the first arrival to the last."""
    return (len(notes) - 1) / (notes[-1][0] - notes[0][0]) if len(notes) > 1 and notes[-1][0] > notes[0][0] else None


def wait_for(recv: Receiver, events: int, server: Meterd, hook: dict[str, Any], timeout: float = 60) -> tuple[list[list[Any]], int]:
    """The receiver's notes once it took ``events`` deliveries of demand events, or meterd has none left for it and it
    took every one meterd recorded (the readings sent may have caused fewer: see :func:`recorded`), or the timeout passed."""
    deadline = time.monotonic() + timeout
    while True:
        notes = recv.notes()
        delivered = len({n[5] for n in notes if n[3] == "demand"})
        if delivered >= events or time.monotonic() > deadline:
            return notes, delivered
        backlog, events_recorded = recorded(server, hook)
        if backlog == 0 and len({n[5] for n in notes}) >= events_recorded:
            return recv.notes(), delivered
        time.sleep(0.5)


def recorded(server: Meterd, hook: dict[str, Any]) -> tuple[int, int]:
    """The webhook's backlog, and the events meterd recorded since it was registered (event ids follow one another).

    The load's readings are signed UDP sent once, never resent: one the kernel
    drops on a busy host is lost, and its alarm event is never recorded.
    """
    status, body = call("GET", server.url + "/getWebhooks", server.token)
    assert status == 200, body
    (mine,) = [w for w in body["webhooks"] if w["webhook_id"] == hook["webhook_id"]]
    return mine["backlog"], mine["cursor"] + mine["backlog"] - hook["cursor"]


def lags(raised_sent: dict[str, list[float]], cleared_sent: dict[str, list[float]], notes: list[list[Any]]) -> tuple[list[float], int]:
    """Each demand event's lag from the send of its readings; and how many events matched none."""
    seen: set[str] = set()
    arrived: dict[tuple[str, str], list[float]] = defaultdict(list)
    for at, cid, kind, rule, _event_id, delivery in notes:
        if rule != "demand" or delivery in seen:
            continue
        seen.add(delivery)
        arrived[(cid, kind)].append(at)
    out, unmatched = [], 0
    for kind, sent in (("raised", raised_sent), ("cleared", cleared_sent)):
        for cid, times in sent.items():
            got = arrived.get((cid, kind), [])
            out += [b - a for a, b in zip(times, got)]
            unmatched += abs(len(times) - len(got))
    return out, unmatched


def histogram_quantile(text: str, name: str, labels: str, q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (Prometheus buckets are cumulative)."""
    buckets = metric_values(text, name + "_bucket")
    rows = sorted((float(k.split('le="')[1].split('"')[0]), v) for k, v in buckets.items() if labels in k)
    if not rows or rows[-1][1] == 0:
        return None
    total = rows[-1][1]
    return next(le for le, count in rows if count >= q * total)


# -- the phase --------------------------------------------------------------------------------


def steady(server: Meterd, cycles: Cycles, duration: float) -> tuple[int, list[float], float, float]:
    """EVENT_RATE events/s for ``duration`` with /health asked meanwhile: events caused, /health's times, CPU seconds, wall seconds."""
    probe = HealthProbe(server.http_port)
    s0 = server.sample()
    probe.start()
    t0 = time.perf_counter()
    caused = cycles.run(EVENT_RATE, duration)
    time.sleep(1.0)  # the last events settle (and, with a webhook, go out)
    wall = time.perf_counter() - t0
    probe.halt.set()
    probe.join()
    return caused, probe.times, server.sample().cpu_s - s0.cpu_s, wall


def phase(report: Report, work: Path, *, quick: bool, log: Any) -> None:
    duration = 3.0 if quick else 30.0
    report.section(f"webhooks: {EVENT_RATE:,.0f} alarm events/s for {duration:g} s, {CUSTOMERS} customers, one webhook to a local receiver")
    recv = Receiver(work).start()
    server: Meterd | None = None
    try:
        baseline_s = BASELINE_S / 3 if quick else BASELINE_S
        log(f"webhook baseline: sequential plain POSTs to the receiver for {baseline_s:g} s")
        base_times, base_rps = plain_round_trips(recv.port, SAMPLE_BODY, baseline_s)
        data_dir = work / "webhooks"
        data_dir.mkdir()
        server = Meterd(data_dir, "--alarm-window", str(WINDOW_S)).start()
        token = server.token
        log(f"webhooks: registering {CUSTOMERS} customers with a meter each")
        meters = []
        for n in range(CUSTOMERS):
            cid = cpf(500_000 + n)
            status, body = call("POST", server.url + "/cadCliente", token, {"id": cid, "name": f"Webhook {n}", "limite_kw": 1})
            assert status == 201, body
            status, body = call("POST", server.url + "/cadMedidor", token, {"id": cid})
            assert status == 201, body
            meters.append({"id": cid, "key": body["key"]})
        cycles = Cycles(meters, server.udp_port)
        log(f"webhooks: {EVENT_RATE:,.0f} events/s for {duration:g} s, no webhook registered yet")
        _, bare_health, bare_cpu, bare_wall = steady(server, cycles, duration)
        status, hook = call("POST", server.url + "/cadWebhook", token, {"url": recv.url + "/hook"})
        assert status == 201, hook
        log(f"webhooks: {EVENT_RATE:,.0f} events/s for {duration:g} s, delivered to the receiver")
        sent = {kind: {c: len(t) for c, t in times.items()} for kind, times in (("raised", cycles.raised_sent), ("cleared", cycles.cleared_sent))}
        caused, health, cpu, wall = steady(server, cycles, duration)
        notes, _ = wait_for(recv, caused, server, hook)
        steady_notes = len(notes)
        upto = {kind: {c: len(t) for c, t in times.items()} for kind, times in (("raised", cycles.raised_sent), ("cleared", cycles.cleared_sent))}
        metrics = server.metrics()  # the lag histogram of the steady run alone
        burst_s = BURST_S / 2 if quick else BURST_S
        log(f"webhooks: a burst of {BURST_RATE:,.0f} events/s for {burst_s:g} s")
        burst = cycles.run(BURST_RATE, burst_s)
        notes, _ = wait_for(recv, caused + burst, server, hook)
        _, events_recorded = recorded(server, hook)
    finally:
        if server is not None:
            server.stop()
        recv.stop()
    # the steady run's events: those each customer's cycles caused after the webhook was registered, until the burst
    # (a customer first cycled in the burst has none of them)
    raised = {c: t[sent["raised"].get(c, 0) : upto["raised"].get(c, 0)] for c, t in cycles.raised_sent.items()}
    cleared = {c: t[sent["cleared"].get(c, 0) : upto["cleared"].get(c, 0)] for c, t in cycles.cleared_sent.items()}
    delays, unmatched = lags(raised, cleared, notes[:steady_notes])
    steady_rate, drain_rate = arrival_rate(notes[:steady_notes]), arrival_rate(notes[steady_notes:])
    firsts = list(dict.fromkeys(n[4] for n in notes))  # each event id once, in the order it first arrived
    in_order = all(a < b for a, b in zip(firsts, firsts[1:]))
    label = f'webhook="{hook["webhook_id"]}"'
    failures = metric_values(metrics, "meterd_webhook_failures_total").get("{" + label + "}", 0.0)
    delivered = len(firsts)  # every rule's events: a customer's month may reach its limite_kwh too
    report.add(Row("alarm events caused / recorded / delivered", f"{caused + burst:,} / {events_recorded:,} / {delivered:,}",
                   target="all recorded, in order", ok=delivered >= events_recorded > 0 and in_order))
    report.add(Row("delivered events/s, steady", rate(steady_rate), rate(base_rps) + " plain POSTs", ratio(steady_rate, base_rps)))
    report.add(Row(f"delivered events/s, a backlog of {burst:,}", rate(drain_rate), rate(base_rps) + " plain POSTs", ratio(drain_rate, base_rps)))
    for q in (50, 99):
        mine, theirs = percentile(delays, q), percentile(base_times, q)
        report.add(Row(f"delivery lag p{q}", ms(mine), ms(theirs) + " plain POST", ratio(mine, theirs)))
    ours = [histogram_quantile(metrics, "meterd_webhook_lag_seconds", label, q) for q in (0.5, 0.99)]
    report.add(Row("  event to 2xx (meterd's histogram)", " / ".join("n/a" if v is None else f"<= {v * 1000:g} ms" for v in ours)))
    report.add(Row("/health p50 / p99 meanwhile", f"{ms(percentile(health, 50))} / {ms(percentile(health, 99))}",
                   f"{ms(percentile(bare_health, 50))} / {ms(percentile(bare_health, 99))} no webhook",
                   ratio(percentile(health, 99), percentile(bare_health, 99))))
    report.add(Row("server CPU", f"{cpu / wall:.0%}", f"{bare_cpu / bare_wall:.0%} no webhook", ratio(cpu / wall, bare_cpu / bare_wall)))
    report.note(f"webhooks: {failures:.0f} failed attempts, ids {'in order' if in_order else 'OUT OF ORDER'}; {unmatched} of the "
                f"steady run's raises and clears caused no event (met their pair in one flush, or a datagram was lost); "
                f"lag is from sending the readings that caused an event (signed UDP, 4 at once to raise, 1 to clear "
                f"{CLEAR_AFTER_S:g} s later) to the receiver taking its POST, so it includes ingest's flush and the alarm "
                f"settlement; the rates are from a run's first delivery to its last; the baseline is sequential POSTs "
                f"of a {len(SAMPLE_BODY)}-byte body to the same receiver on one keep-alive connection ({len(base_times):,} of them); "
                f"'no webhook' is the same load on the same server before the webhook was registered; meterd runs with its "
                f"defaults and --alarm-window {WINDOW_S}")


SAMPLE_BODY = json.dumps({
    "delivery_id": "1-123456", "webhook_id": 1, "id": "12345678909",
    "event": {"event_id": 123456, "alarm_id": 6789, "type": "raised", "at": "2026-11-24T19:02:11-03:00"},
    "alarm": {"alarm_id": 6789, "rule": "demand", "id_medidor": 1, "raised_at": "2026-11-24T19:02:11-03:00", "cleared_at": None,
              "acked_at": None, "value": 26.64, "threshold": 1.0, "message": "Demanda média de 26,640 kW acima do limite de 1,000 kW"},
}).encode()  # the size of a delivery, for the baseline


if __name__ == "__main__":
    if sys.argv[1:2] == ["receiver"]:
        receiver(int(sys.argv[2]))
