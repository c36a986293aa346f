"""The simulator engine: any number of meters on one reactor and one UDP socket.

Everything is driven by LoopingCalls on the reactor given (a ``task.Clock`` in
tests): readings, resends, backfill pacing and the status line. Acks arrive on
the one socket and are routed by ``(id, id_medidor)`` to their meter, whose key
verifies them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from meterd.datagram import decode_ack, split_signature

from .device import SimMeter
from .load import DEFAULT_SPIKE_KW, SPIKE_SECONDS
from .status import RateMeter, StatusLine, progress_bar

__all__ = ["Simulator", "AckProtocol", "Totals"]

RESEND_TICK = 0.05
BACKFILL_TICK = 0.02
SLICE_MIN = 0.01  # never tick the reading loop faster than this
MAX_SLICES = 100


class Totals(dict[str, int]):
    """Counters summed over meters (a dict so it drops straight into JSON)."""


class AckProtocol(DatagramProtocol):
    """The simulator's UDP socket: acks in (verified by their signature, whoever sent them)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.simulator.datagram_received(datagram)


class Simulator:
    """Meters, their loops and their counters.

    ``transmit`` sends one datagram (already wrapped by the fault injector);
    ``status`` receives the status line and messages; ``target`` names the
    server in messages.
    """

    log = Logger()

    def __init__(
        self,
        meters: list[SimMeter],
        transmit: Callable[[bytes], None],
        clock: IReactorTime,
        status: StatusLine,
        *,
        interval: float = 1.0,
        backfill_s: float = 0.0,
        backfill_rate: float = 5000.0,
        window: int = 2000,
        drain_timeout: float = 10.0,
        ack_warning: float = 5.0,
        status_every: float = 0.5,
        target: str = "the server",
    ) -> None:
        if not meters:
            raise ValueError("no meters to simulate")
        self.meters = meters
        self.routes = {m.route: m for m in meters}
        self._transmit = transmit
        self.clock = clock
        self.status = status
        self.interval = interval
        self.backfill_s = backfill_s
        self.backfill_rate = backfill_rate
        self.window = window
        self.drain_timeout = drain_timeout
        self.ack_warning = ack_warning
        self.status_every = status_every
        self.target = target

        self.pending_total = 0
        self.send_errors = 0
        self.bad_acks = 0
        self.started_at: float | None = None
        self.live = False
        self.quitting = False
        self.drained: bool | None = None
        self._busy: set[int] = set()  # indices of meters with pending readings
        self._slices = 1
        self._tick = 0
        self._resend_cursor = 0
        self._acks_last_tick = 0
        self._read_loop: LoopingCall | None = None
        self._resend_loop = self._loop(self._resend_tick)
        self._status_loop = self._loop(self._status_tick)
        self._backfill_loop: LoopingCall | None = None
        self._bf_next: list[float] = []
        self._bf_total = 0
        self._bf_done = 0
        self._bf_cursor = 0
        self._rate = RateMeter()
        self._warned_no_acks = False
        self._warned_silent = False
        self._done: Deferred[bool] | None = None

    # -- lifecycle -----------------------------------------------------------

    def _loop(self, f: Callable[[], None]) -> LoopingCall:
        loop = LoopingCall(f)
        loop.clock = self.clock
        return loop

    def start(self) -> None:
        """Start reading (after a backfill when asked) and the housekeeping loops."""
        now = self.clock.seconds()
        self.started_at = now
        self._resend_loop.start(RESEND_TICK, now=False)
        self._status_loop.start(self.status_every, now=False)
        if self.backfill_s > 0:
            self._start_backfill(now)
        else:
            self._go_live()

    def _go_live(self) -> None:
        self.live = True
        self._restart_read_loop(now=True)

    def _restart_read_loop(self, now: bool) -> None:
        if self._read_loop is not None and self._read_loop.running:
            self._read_loop.stop()
        # Spread the fleet over the interval in slices so the server sees a
        # steady stream instead of one burst of N datagrams per interval.
        self._slices = max(1, min(len(self.meters), MAX_SLICES, int(self.interval / SLICE_MIN)))
        self._tick = 0
        self._read_loop = LoopingCall.withCount(self._read_tick)
        self._read_loop.clock = self.clock
        if now:
            # Called by hand: withCount's own now=True start can compute a count
            # of 0 at epoch-sized times (float rounding) and skip the first read.
            self._read_tick(1)
        self._read_loop.start(self.interval / self._slices, now=False)

    def set_interval(self, seconds: float) -> None:
        """Change the reading interval now (stdin commands); backfill keeps its step."""
        self.interval = seconds
        if self.live and not self.quitting:
            self._restart_read_loop(now=False)

    def quit(self) -> Deferred[bool]:
        """Stop reading, resend eagerly and fire with ``True`` once nothing is pending.

        Fires with ``False`` if ``drain_timeout`` passes first. Idempotent.
        """
        if self._done is not None:
            return self._done
        self.quitting = True
        self._done = Deferred()
        for loop in (self._read_loop, self._backfill_loop):
            if loop is not None and loop.running:
                loop.stop()
        if self.started_at is None:
            self.drained = True
            self._done.callback(True)
            return self._done
        now = self.clock.seconds()
        for m in self.meters:
            m.outbox.expedite(now, max_rto=1.0)
        if self.pending_total:
            self.say(f"draining: waiting up to {self.drain_timeout:g} s for {self.pending_total} pending readings")
        deadline = now + self.drain_timeout
        self._drain_check(deadline)
        return self._done

    def _drain_check(self, deadline: float) -> None:
        assert self._done is not None
        if self.pending_total == 0 or self.clock.seconds() >= deadline:
            self.drained = self.pending_total == 0
            for loop in (self._resend_loop, self._status_loop):
                if loop.running:
                    loop.stop()
            self._show_status(force=True)
            self.status.finish()
            if not self.drained:
                self.say(f"gave up with {self.pending_total} readings unacknowledged")
            self._done.callback(self.drained)
            return
        self.clock.callLater(RESEND_TICK, self._drain_check, deadline)

    # -- sending ---------------------------------------------------------------

    def _send(self, datagram: bytes) -> None:
        try:
            self._transmit(datagram)
        except OSError as e:
            # A full socket buffer (EAGAIN/ENOBUFS) loses the datagram like the
            # network would; the resend timer recovers it.
            self.send_errors += 1
            if self.send_errors == 1:
                self.say(f"send failed ({e}); will resend")

    def _take_reading(self, m: SimMeter, t: float) -> None:
        seq, datagram = m.read(t)
        before = m.outbox.pending
        m.outbox.add(seq, datagram, self.clock.seconds())
        self.pending_total += m.outbox.pending - before
        self._busy.add(m.index)
        self._send(datagram)

    def _read_tick(self, count: int = 1) -> None:
        """Read the next slice of meters, and any slices a busy reactor made late.

        LoopingCall.withCount reports ticks that were skipped; catching them up
        keeps every meter at one reading per interval when the process lags.
        """
        now = self.clock.seconds()
        k = self._slices
        for _ in range(min(count, k)):
            j = self._tick % k
            self._tick += 1
            for i in range(j, len(self.meters), k):
                self._take_reading(self.meters[i], now)

    def resend_budget(self) -> int:
        """Resends allowed per resend tick.

        Half the rate of new readings (at least 20/s): when the server falls
        behind, unbounded retransmission multiplies its load exactly when it can
        least take it, and the fleet collapses into resending (congestion
        collapse). Draining has no new readings, so it gets the full rate, and
        more as acks come back: each ack of the last tick allows two resends,
        like TCP's slow start, so a backlog drains as fast as the server answers.
        """
        if self.live:
            rate = len(self.meters) / self.interval
        else:
            rate = self.backfill_rate
        if not self.quitting:
            return max(1, int(max(20.0, 0.5 * rate) * RESEND_TICK))
        return max(1, int(max(20.0, rate) * RESEND_TICK), 2 * self._acks_last_tick)

    def _resend_tick(self) -> None:
        now = self.clock.seconds()
        budget = self.resend_budget()
        self._acks_last_tick = 0
        busy = list(self._busy)
        if not busy:
            return
        start = self._resend_cursor % len(busy)
        self._resend_cursor += 1
        for i in busy[start:] + busy[:start]:  # rotate so no meter starves under the budget
            outbox = self.meters[i].outbox
            if outbox.pending == 0:
                self._busy.discard(i)
                continue
            if budget <= 0:
                continue
            for datagram in outbox.due(now, limit=budget):
                self._send(datagram)
                budget -= 1

    # -- backfill ----------------------------------------------------------------

    def _start_backfill(self, now: float) -> None:
        start = now - self.backfill_s
        step = self.interval
        for m in self.meters:
            m.last_t = start
            m.last_ms = -1
        self._bf_step = step
        self._bf_next = [start] * len(self.meters)
        self._bf_total = len(self.meters) * max(1, math.floor(self.backfill_s / step))
        self._bf_done = 0
        self.say(
            f"backfill: {self.backfill_s / 86400:g} days, {self._bf_total} readings "
            f"at {step:g} s, up to {self.backfill_rate:g}/s"
        )
        self._backfill_loop = self._loop(self._backfill_tick)
        self._backfill_loop.start(BACKFILL_TICK, now=True)

    def _backfill_tick(self) -> None:
        """Generate the next readings of the past, within the rate and the window."""
        now = self.clock.seconds()
        budget = max(1, int(self.backfill_rate * BACKFILL_TICK))
        budget = min(budget, self.window - self.pending_total)
        n = len(self.meters)
        idle = 0
        while budget > 0 and idle < n:
            i = self._bf_cursor
            self._bf_cursor = (i + 1) % n
            t = self._bf_next[i]
            if t > now - self._bf_step:  # caught up: the live loop takes over
                idle += 1
                continue
            idle = 0
            self._take_reading(self.meters[i], t)
            self._bf_next[i] = t + self._bf_step
            self._bf_done += 1
            budget -= 1
        if idle >= n:
            assert self._backfill_loop is not None
            self._backfill_loop.stop()
            self.say(f"backfill done: {self._bf_done} readings generated; going live")
            self._go_live()

    # -- acks ----------------------------------------------------------------------

    def datagram_received(self, data: bytes) -> None:
        """Route an ack to its meter and verify it with that meter's key."""
        payload, signature = split_signature(data)
        try:
            body = json.loads(payload)
            route = (str(body["id"]), int(body["id_medidor"]))
        except (ValueError, KeyError, TypeError):
            self.bad_acks += 1
            return
        m = self.routes.get(route)
        if m is None or signature is None:
            self.bad_acks += 1
            return
        decoded = decode_ack(data, m.key)
        if decoded is None:
            self.bad_acks += 1
            return
        before = m.outbox.pending
        m.outbox.ack(decoded[2], self.clock.seconds())
        self._acks_last_tick += before - m.outbox.pending
        self.pending_total -= before - m.outbox.pending
        if self._warned_silent:
            self._warned_silent = False
            self.say("acknowledgements resumed")

    # -- status --------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.status.say(text)

    def totals(self) -> Totals:
        t = Totals(sent=0, acked=0, resent=0, pending=0, dropped=0)
        for m in self.meters:
            o = m.outbox
            t["sent"] += o.sent
            t["acked"] += o.acked
            t["resent"] += o.resent
            t["pending"] += o.pending
            t["dropped"] += o.dropped
        return t

    def status_parts(self) -> list[str]:
        """The status, most important part first (a narrow terminal shows a prefix)."""
        t = self.totals()
        now = self.clock.seconds()
        rate = self._rate.update(now, t["sent"])
        parts = []
        if self._backfill_loop is not None and self._backfill_loop.running:
            frac = self._bf_done / self._bf_total if self._bf_total else 1.0
            parts.append("backfill " + progress_bar(frac, width=12))
        parts.append(
            f"sent {t['sent']} acked {t['acked']} resent {t['resent']} pending {t['pending']}"
            + (f" dropped {t['dropped']}" if t["dropped"] else "")
        )
        if len(self.meters) == 1:
            m = self.meters[0]
            parts.append(f"{m.model.power_w(now) / 1000:.2f} kW")
            parts.append(f"{m.register_wh / 1000:.3f} kWh")
        else:
            parts.append(f"{len(self.meters)} meters")
        parts.append(f"{rate:.1f} readings/s")
        parts.append(f"interval {self.interval:g} s")
        return parts

    def status_text(self) -> str:
        return " | ".join(self.status_parts())

    def _show_status(self, force: bool = False) -> None:
        self.status.update(self.status_parts(), force=force)

    def _status_tick(self) -> None:
        self._check_acks()
        self._show_status()

    def _check_acks(self) -> None:
        """Say once, after a few seconds, when acks are not coming back and why that may be."""
        if self.started_at is None:
            return
        now = self.clock.seconds()
        t = self.totals()
        if t["acked"] == 0:
            if not self._warned_no_acks and t["sent"] and now - self.started_at >= self.ack_warning:
                self._warned_no_acks = True
                self.say(
                    f"error: no acknowledgement from {self.target} after {self.ack_warning:g} s: "
                    "wrong --key, unknown customer or meter, or no meterd listening there"
                )
            return
        last = max((m.outbox.last_ack_at or 0.0) for m in self.meters)
        if t["pending"] and now - last >= max(2 * self.ack_warning, 10.0) and not self._warned_silent:
            self._warned_silent = True
            self.say(f"warning: no acknowledgement for {now - last:.0f} s, {t['pending']} readings pending")
        silent = [m for m in self.meters if m.outbox.acked == 0 and m.outbox.sent]
        if silent and len(silent) < len(self.meters) and not self._warned_no_acks:
            if now - self.started_at >= self.ack_warning * 2:
                self._warned_no_acks = True
                first = silent[0]
                self.say(
                    f"warning: {len(silent)} meters never acknowledged "
                    f"(first: {first.customer_id}/{first.meter_id}); wrong key or unknown meter?"
                )

    def spike(self, kw: float | None, meter_number: int | None) -> str:
        """Add ``kw`` (default 7) for a minute to one meter (1-based) or to all of them."""
        kw = DEFAULT_SPIKE_KW if kw is None else kw
        now = self.clock.seconds()
        if meter_number is None:
            chosen, where = self.meters, f"{len(self.meters)} meter(s)"
        elif 1 <= meter_number <= len(self.meters):
            m = self.meters[meter_number - 1]
            chosen, where = [m], f"{m.customer_id}/{m.meter_id}"
        else:
            return f"no meter number {meter_number} (1..{len(self.meters)})"
        for m in chosen:
            m.model.forget_before(now)
            m.model.add_spike(now, SPIKE_SECONDS, kw * 1000)
        return f"spike: +{kw:g} kW for {SPIKE_SECONDS:g} s on {where}"

    def set_load(self, kw: float, start: float | None = None) -> str:
        """Every meter draws ``kw`` more than its household from ``start`` (now) on."""
        at = self.clock.seconds() if start is None else start
        for m in self.meters:
            m.model.forget_before(self.clock.seconds())
            m.model.set_steady(at, kw * 1000)
        if kw == 0:
            return "load: steady extra demand ended"
        return f"load: +{kw:g} kW steady on {len(self.meters)} meter(s)"

    def summary(self) -> dict[str, Any]:
        """The ``--summary-json`` document (DESIGN §8)."""
        meters = []
        for m in self.meters:
            o = m.outbox
            meters.append(
                {
                    "id": m.customer_id,
                    "id_medidor": m.meter_id,
                    "register_kwh": m.register_wh / 1000,
                    "energy_kwh": m.energy_wh / 1000,
                    "sent": o.sent,
                    "acked": o.acked,
                    "resent": o.resent,
                    "pending": o.pending,
                    "dropped": o.dropped,
                }
            )
        return {
            "meters": meters,
            "totals": dict(self.totals(), send_errors=self.send_errors, bad_acks=self.bad_acks),
            "drained": self.drained,
            "interval": self.interval,
        }
