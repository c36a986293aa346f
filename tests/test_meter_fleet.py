"""The simulator engine on a task.Clock against an in-memory fake server."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from twisted.internet.task import Clock

from clients.meter.device import SimMeter
from clients.meter.faults import FaultInjector
from clients.meter.fleet import Simulator
from clients.meter.load import LoadModel
from clients.meter.outbox import Outbox
from clients.meter.status import RateMeter, StatusLine, fit, progress_bar
from meterd.datagram import encode_acks, parse_payload, split_signature, verify

T0 = 1_764_000_000.0


class FakeServer:
    """Stores readings by (id, meter, ms) like meterd does and acks them after a delay."""

    def __init__(self, clock: Clock, keys: dict[tuple[str, int], bytes], delay: float = 0.03) -> None:
        self.clock = clock
        self.keys = keys
        self.delay = delay
        self.sim: Simulator | None = None
        self.stored: dict[tuple[str, int, int], int] = {}
        self.received = 0
        self.conflicts = 0
        self.forged = 0
        self.up = True

    def receive(self, datagram: bytes) -> None:
        self.received += 1
        if not self.up:
            return
        payload, sig = split_signature(datagram)
        fields = parse_payload(payload)
        route = (fields["id"], fields["id_medidor"])
        key = self.keys.get(route)
        if key is None or sig is None or not verify(payload, sig, key):
            self.forged += 1
            return
        ident = (*route, round(fields["timestamp"] * 1000))
        wh = round(fields["valor"] * 1000)
        if self.stored.setdefault(ident, wh) != wh:
            self.conflicts += 1
            return
        for ack in encode_acks(route[0], route[1], [fields["seq"]], key):
            self.clock.callLater(self.delay, self._deliver, ack)

    def _deliver(self, ack: bytes) -> None:
        assert self.sim is not None
        self.sim.datagram_received(ack)

    def registers(self, route: tuple[str, int]) -> list[int]:
        return [wh for (c, m, _ms), wh in sorted(self.stored.items()) if (c, m) == route]


def _setup(
    n: int = 1,
    *,
    interval: float = 1.0,
    keys_on_server: dict[tuple[str, int], bytes] | None = None,
    loss: float = 0.0,
    dup: float = 0.0,
    reorder: float = 0.0,
    backfill_s: float = 0.0,
    buffer: int = 10_000,
    **kw: Any,
) -> tuple[Simulator, FakeServer, Clock, list[bytes]]:
    clock = Clock()
    clock.advance(T0)
    meters = [
        SimMeter(
            f"5299822472{i}",
            1,
            bytes([i + 1]) * 32,
            LoadModel.from_seed(f"t/{i}"),
            Outbox(capacity=buffer, rng=random.Random(i)),
            T0,
            1000 * i,
            i,
        )
        for i in range(n)
    ]
    keys = {m.route: m.key for m in meters} if keys_on_server is None else keys_on_server
    server = FakeServer(clock, keys)
    out: list[bytes] = []
    faults = FaultInjector(server.receive, clock, loss, dup, reorder, random.Random(99))
    status = StatusLine(lambda b: out.append(b), tty=False, log_every=0.0, wall=clock.seconds)
    sim = Simulator(meters, faults, clock, status, interval=interval, backfill_s=backfill_s, **kw)
    server.sim = sim
    return sim, server, clock, out


def _run(clock: Clock, seconds: float, step: float = 0.01) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


def _text(out: list[bytes]) -> str:
    return b"".join(out).decode()


def test_lossy_network_still_stores_every_reading_once() -> None:
    sim, server, clock, out = _setup(3, interval=0.05, loss=0.3, dup=0.1, reorder=0.1)
    sim.start()
    _run(clock, 5.0)
    done = sim.quit()
    _run(clock, 10.0)
    assert done.called and sim.drained is True
    summary = sim.summary()
    assert summary["totals"]["pending"] == 0 and summary["totals"]["resent"] > 0
    assert server.conflicts == 0 and server.forged == 0
    for m, row in zip(sim.meters, summary["meters"]):
        stored = server.registers(m.route)
        assert len(stored) == m.readings == row["sent"] == row["acked"]
        assert stored == sorted(stored)  # in timestamp order the register never goes back
        assert stored[-1] == m.register_wh == round(row["register_kwh"] * 1000)
        assert stored[-1] - stored[0] == round(row["energy_kwh"] * 1000)
    # about 5 s at 20 readings/s per meter
    assert 95 <= sim.meters[0].readings <= 102


def test_fleet_readings_are_spread_over_the_interval() -> None:
    sim, server, clock, _ = _setup(50, interval=1.0)
    sim.start()
    per_tick = []
    for _ in range(105):
        before = server.received
        clock.advance(0.01)
        per_tick.append(server.received - before)
    assert {m.readings for m in sim.meters} <= {1, 2}  # every meter read once a second...
    assert min(m.readings for m in sim.meters) == 1
    assert max(per_tick) <= 2  # ...50 meters over 100 slices, never one burst


def test_a_late_reactor_catches_up_instead_of_skipping_readings() -> None:
    sim, _server, clock, _ = _setup(10, interval=1.0)
    sim.start()
    clock.advance(0.01)
    clock.advance(3.0)  # the process stalled for 3 s
    # one slice at start, then all ten slices at once (capped at one interval's worth)
    assert sum(m.readings for m in sim.meters) == 11
    assert all(m.readings >= 1 for m in sim.meters)


def test_interval_change_takes_effect_at_once() -> None:
    sim, _server, clock, _ = _setup(1, interval=1.0)
    sim.start()
    _run(clock, 10.0)
    assert sim.meters[0].readings in (10, 11)
    sim.set_interval(0.1)
    _run(clock, 10.0)
    assert 105 <= sim.meters[0].readings <= 112


def test_bad_key_is_reported_after_a_few_seconds() -> None:
    sim, server, clock, out = _setup(1, keys_on_server={})  # the server knows no such meter
    sim.start()
    _run(clock, 4.0)
    assert "no acknowledgement" not in _text(out)
    _run(clock, 1.5)
    assert "no acknowledgement" in _text(out) and "--key" in _text(out)
    assert _text(out).count("no acknowledgement") == 1
    assert server.forged > 0


def test_forged_acks_are_ignored() -> None:
    sim, _server, clock, _ = _setup(1, keys_on_server={})
    sim.start()
    m = sim.meters[0]
    for forged in encode_acks(m.customer_id, 1, [1], b"\x00" * 32):
        sim.datagram_received(forged)
    sim.datagram_received(b'{"id":"x","id_medidor":1,"acks":[1]}')
    sim.datagram_received(b"garbage")
    assert m.outbox.pending == 1 and sim.bad_acks == 3


def test_server_outage_drops_oldest_when_the_buffer_is_full_then_recovers() -> None:
    sim, server, clock, out = _setup(1, interval=0.1, buffer=50)
    server.up = False
    sim.start()
    _run(clock, 10.0)
    m = sim.meters[0]
    assert m.outbox.pending == 50 and m.outbox.dropped >= 45
    server.up = True
    _run(clock, 12.0)  # backoff is capped at 10 s
    assert m.outbox.pending <= 1
    d = sim.quit()
    _run(clock, 3.0)
    assert d.called and sim.drained is True
    assert sim.summary()["meters"][0]["dropped"] == m.outbox.dropped


def test_quit_gives_up_after_the_drain_timeout() -> None:
    sim, server, clock, out = _setup(1, interval=0.5, drain_timeout=2.0)
    server.up = False
    sim.start()
    _run(clock, 3.0)
    results: list[bool] = []
    sim.quit().addCallback(results.append)
    _run(clock, 1.9)
    assert results == []
    _run(clock, 0.2)
    assert results == [False] and sim.drained is False
    assert "gave up" in _text(out)
    readings = sim.meters[0].readings
    _run(clock, 5.0)
    assert sim.meters[0].readings == readings  # nothing sent after quit


def test_backfill_fills_history_paced_then_goes_live() -> None:
    days = 1.0
    sim, server, clock, out = _setup(2, interval=300.0, backfill_s=days * 86400, backfill_rate=1000.0, window=50)
    sim.start()
    max_pending = 0
    for _ in range(300):
        clock.advance(0.01)
        max_pending = max(max_pending, sim.pending_total)
    assert max_pending <= 50  # never more than the window in flight
    assert sim.live
    assert "backfill done" in _text(out)
    for m in sim.meters:
        stamps = sorted(ms for (c, mid, ms) in server.stored if (c, mid) == m.route)
        past = [ms for ms in stamps if ms < T0 * 1000]
        assert len(past) == 86400 // 300  # the past day up to one step ago...
        assert len(stamps) - len(past) <= 1  # ...then live (the second meter's slice comes later)
        assert past[0] == round((T0 - 86400) * 1000)
        assert {b - a for a, b in zip(past, past[1:])} == {300_000}
        regs = server.registers(m.route)
        assert regs == sorted(regs)
        # a household uses something like 3-25 kWh a day
        assert 3000 <= regs[-1] - regs[0] <= 25000
    assert sim.totals()["pending"] == 0


def test_backfill_progress_shows_in_status() -> None:
    sim, _server, clock, out = _setup(1, interval=60.0, backfill_s=86400, backfill_rate=500.0)
    sim.start()
    clock.advance(0.5)
    assert "backfill [" in sim.status_text()


def test_spike_adds_energy_to_one_or_all_meters() -> None:
    sim, _server, clock, _ = _setup(2, interval=1.0)
    sim.start()
    assert "+7 kW for 60 s on 2 meter" in sim.spike(None, None)
    assert "+20 kW for 60 s on 52998224721" in sim.spike(20.0, 2)
    assert "no meter number 3" in sim.spike(None, 3)
    assert len(sim.meters[0].model.spikes) == 1 and len(sim.meters[1].model.spikes) == 2
    assert [s.watts for s in sim.meters[1].model.spikes] == [7000.0, 20000.0]
    e0 = sim.meters[1].register_wh
    _run(clock, 60.0, step=0.1)
    assert sim.meters[1].register_wh - e0 >= (7000 + 20000) / 60  # 450 Wh from the two spikes


def test_steady_load_holds_until_changed_and_keeps_past_energy() -> None:
    sim, _server, clock, _ = _setup(1, interval=1.0)
    sim.start()
    m = sim.meters[0]
    household = LoadModel(m.model.params)  # the same home without the extra load
    _run(clock, 10.0)
    assert "+12 kW steady on 1 meter" in sim.set_load(12.0)
    t0, e0 = clock.seconds(), m.register_wh
    _run(clock, 600.0, step=1.0)  # ten minutes: unlike a spike, the load does not end
    assert m.model.steady_w == 12000.0
    assert m.register_wh - e0 >= 12000 * 600 / 3600  # at least 2 kWh from the load alone
    assert "ended" in sim.set_load(0.0)
    ended = clock.seconds()
    assert m.model.steady_w == 0.0
    # the load's energy up to when it ended stays counted; after it, only the household's
    extra = m.model.energy_wh(t0, ended) - household.energy_wh(t0, ended)
    assert extra == pytest.approx(12000 * (ended - t0) / 3600)
    assert m.model.energy_wh(ended, ended + 600) == pytest.approx(household.energy_wh(ended, ended + 600))


def test_status_text_and_plain_log_lines() -> None:
    sim, _server, clock, out = _setup(1, interval=0.1, status_every=1.0)
    sim.start()
    _run(clock, 3.0)
    text = sim.status_text()
    assert 29 <= int(re.search(r"sent (\d+)", text).group(1)) <= 31  # type: ignore[union-attr]
    assert "acked" in text and "readings/s" in text and "interval 0.1 s" in text
    lines = _text(out).splitlines()
    assert len(lines) >= 2 and all("sent" in line for line in lines)


def test_summary_is_json_serialisable() -> None:
    sim, _server, clock, _ = _setup(2, interval=0.5)
    sim.start()
    _run(clock, 2.0)
    sim.quit()
    _run(clock, 1.0)
    doc = json.loads(json.dumps(sim.summary()))
    assert [row["id"] for row in doc["meters"]] == ["52998224720", "52998224721"]
    assert set(doc["meters"][0]) >= {"id", "id_medidor", "register_kwh", "energy_kwh", "sent", "acked", "resent", "pending"}
    assert doc["meters"][1]["register_kwh"] >= 1.0  # meter 1 started at 1000 Wh


def test_status_line_on_a_terminal_redraws_in_place() -> None:
    out: list[bytes] = []
    s = StatusLine(out.append, tty=True, columns=lambda: 80)
    s.update(["a"])
    s.say("hello")
    s.update(["b", "c"])
    s.finish()
    assert b"".join(out) == b"\ra\x1b[K\r\x1b[Khello\na\x1b[K\rb | c\x1b[K\n"


def test_fit_keeps_the_leading_parts_that_fit() -> None:
    parts = ["sent 10 acked 9", "1.20 kW", "3.000 kWh"]
    assert fit(parts, 80) == "sent 10 acked 9 | 1.20 kW | 3.000 kWh"
    assert fit(parts, 27) == "sent 10 acked 9 | 1.20 kW"  # 25 cells; the next part would make 37
    assert fit(parts, 15) == "sent 10 acked 9"
    assert fit(parts, 8) == "sent 10…"  # even the first part is cut rather than wrapped
    assert fit(["ação"], 3) == "aç…"


def test_status_line_follows_the_terminal_width_and_never_wraps() -> None:
    sim, _server, clock, _ = _setup(1, interval=0.1, backfill_s=86400, backfill_rate=500.0)
    out: list[bytes] = []
    columns = [80]
    sim.status = StatusLine(out.append, tty=True, columns=lambda: columns[0])
    sim.start()
    _run(clock, 2.0)
    full = sim.status_text()
    assert len(full) > 80 and "backfill [" in full  # too long for 80 columns as a whole
    columns[0] = 50
    _run(clock, 2.0)
    redraws = [seg for seg in b"".join(out).decode().replace("\n", "\r").split("\r") if seg.strip()]
    redraws = [seg.removesuffix("\x1b[K") for seg in redraws if not seg.startswith("\x1b[K")]
    assert redraws and all(len(seg) <= 79 for seg in redraws)
    assert any(len(seg) > 49 for seg in redraws)  # used the 80 columns while it had them
    assert all(len(seg) <= 49 for seg in redraws[-3:])  # then the 50
    assert all(seg.startswith("backfill [") for seg in redraws)  # the most important part first


def test_progress_bar_and_rate() -> None:
    assert progress_bar(0.5, width=10) == "[#####-----]  50%"
    assert progress_bar(2.0, width=4) == "[####] 100%"
    r = RateMeter(window=5.0)
    assert r.update(0.0, 0) == 0.0
    assert r.update(1.0, 10) == 10.0
    for t in range(2, 20):
        rate = r.update(float(t), 10 * t)
    assert rate == 10.0


def test_resends_are_capped_so_an_overloaded_server_is_not_buried() -> None:
    sim, server, clock, _ = _setup(100, interval=1.0)
    server.up = False
    sim.start()
    _run(clock, 20.0, step=0.05)
    resent_before = sim.totals()["resent"]
    _run(clock, 10.0, step=0.05)
    resent = sim.totals()["resent"] - resent_before
    # 100 meters at 1 reading/s: resends limited to half that rate, 50/s
    assert 400 <= resent <= 10 * 50 + 5
    server.up = True
    d = sim.quit()
    _run(clock, 10.0, step=0.05)
    assert d.called and sim.drained is True  # the full rate when draining gets it all through
