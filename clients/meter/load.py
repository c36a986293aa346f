"""A household load model: how many watts a Brazilian home draws at a given time.

Pure (stdlib only): a simulator run must be repeatable from its ``--seed``, and
the tests check the physics (energy never negative, averages in a household
range) without a reactor.

The power is the sum of:

* a base load (standby, router, lights) that wanders by up to ±20 % per minute;
* a time-of-day profile: a small morning bump and a larger evening peak;
* short appliance bursts (microwave, iron, kettle), more likely when people are
  awake;
* a refrigerator compressor cycling on and off with its own period and phase;
* electric showers (4.5–7.5 kW, the usual Brazilian ones) for a few minutes,
  a few per day, mostly in the morning and evening;
* manual spikes added at run time (the ``spike`` command), and a steady extra
  load held until changed (``--load-kw`` and the ``load`` command), which is an
  open-ended spike.

The smooth parts are constant within each wall-clock minute and the switched
parts have exact start and end times, so the energy over an interval is an exact
integral: ``energy_wh(a, c) == energy_wh(a, b) + energy_wh(b, c)`` up to float
rounding, whatever the reading interval. That keeps the register independent of
how often the meter happens to read it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

__all__ = ["LoadModel", "Spike", "HouseholdParams", "DEFAULT_SPIKE_KW", "SPIKE_SECONDS"]

#: The ``spike`` command's default: an electric shower's 7 kW, for a minute.
DEFAULT_SPIKE_KW = 7.0
SPIKE_SECONDS = 60.0

_MASK64 = (1 << 64) - 1
_DAY = 86400.0
_MINUTE = 60.0


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a cheap, well-spread hash for per-minute noise.

    ``random.Random(seed)`` per minute would be correct but two orders of
    magnitude slower, and a fleet evaluates thousands of minutes a second.
    """
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _unit(salt: int, k: int) -> float:
    """A deterministic uniform float in [0, 1) for (household, minute)."""
    return _mix64((salt ^ (k * 0xD1B54A32D192ED03)) & _MASK64) / 2.0**64


@dataclass(frozen=True, slots=True)
class Spike:
    """An extra constant load over ``[start, end)`` (unix seconds; ``end`` may be infinite)."""

    start: float
    end: float
    watts: float

    def energy_ws(self, t0: float, t1: float) -> float:
        """Watt-seconds of this spike inside ``[t0, t1)``."""
        overlap = min(t1, self.end) - max(t0, self.start)
        return self.watts * overlap if overlap > 0 else 0.0


@dataclass(frozen=True, slots=True)
class HouseholdParams:
    """What makes one household different from the next; drawn from the seed."""

    base_w: float
    evening_w: float
    evening_center_h: float
    morning_w: float
    fridge_w: float
    fridge_period_s: float
    fridge_duty: float
    fridge_phase_s: float
    showers_per_day: float
    shower_w: float
    appliance_w: float
    salt: int

    @classmethod
    def draw(cls, rng: random.Random) -> HouseholdParams:
        """Parameters of a plausible home (average roughly 150–450 kWh a month)."""
        period = rng.uniform(35 * 60, 55 * 60)
        return cls(
            base_w=rng.uniform(50.0, 140.0),
            evening_w=rng.uniform(250.0, 800.0),
            evening_center_h=rng.uniform(19.0, 20.5),
            morning_w=rng.uniform(80.0, 300.0),
            fridge_w=rng.uniform(90.0, 160.0),
            fridge_period_s=period,
            fridge_duty=rng.uniform(0.3, 0.5),
            fridge_phase_s=rng.uniform(0.0, period),
            showers_per_day=rng.uniform(1.0, 4.0),
            shower_w=rng.uniform(4500.0, 7500.0),
            appliance_w=rng.uniform(800.0, 1500.0),
            salt=rng.getrandbits(64),
        )


@dataclass(slots=True)
class LoadModel:
    """Power and energy of one household as functions of unix time.

    ``utc_offset_h`` places the daily profile in local time (Brasília is UTC−3
    all year since 2019, so a fixed offset is exact there and keeps this pure).
    """

    params: HouseholdParams
    utc_offset_h: float = -3.0
    spikes: list[Spike] = field(default_factory=list)
    _showers: dict[int, tuple[tuple[float, float, float], ...]] = field(default_factory=dict)

    @classmethod
    def from_seed(cls, seed: int | str, utc_offset_h: float = -3.0) -> LoadModel:
        """The household that ``seed`` describes; same seed, same household."""
        return cls(HouseholdParams.draw(random.Random(str(seed))), utc_offset_h)

    # -- run-time changes ---------------------------------------------------

    def add_spike(self, start: float, duration: float = SPIKE_SECONDS, watts: float = DEFAULT_SPIKE_KW * 1000) -> Spike:
        """Add a load (default: 7 kW for a minute, the ``spike`` command)."""
        spike = Spike(start, start + duration, watts)
        self.spikes.append(spike)
        return spike

    @property
    def steady_w(self) -> float:
        """The steady extra load in force (0 when none)."""
        return sum(s.watts for s in self.spikes if s.end == math.inf)

    def set_steady(self, start: float, watts: float) -> None:
        """From ``start`` on, draw ``watts`` more than the household, until set again.

        The load in force until then ends at ``start``, so the energy before
        it is unchanged, whenever the next reading integrates it.
        """
        self.spikes = [replace(s, end=start) if s.end == math.inf else s for s in self.spikes]
        if watts > 0:
            self.spikes.append(Spike(start, math.inf, watts))

    def forget_before(self, t: float) -> None:
        """Drop spikes that ended before ``t`` so a long run does not accumulate them."""
        self.spikes = [s for s in self.spikes if s.end > t]

    # -- the model ---------------------------------------------------------

    def _local_hour(self, t: float) -> float:
        return ((t / 3600.0 + self.utc_offset_h) % 24.0 + 24.0) % 24.0

    def _smooth_w(self, minute: int) -> float:
        """Base + daily profile + appliance bursts, constant over one minute."""
        p = self.params
        t_mid = minute * _MINUTE + 30.0
        h = self._local_hour(t_mid)
        noise = _unit(p.salt, minute)
        base = p.base_w * (0.8 + 0.4 * noise)
        dh = min(abs(h - p.evening_center_h), 24.0 - abs(h - p.evening_center_h))
        evening = p.evening_w * math.exp(-0.5 * (dh / 1.6) ** 2)
        dm = abs(h - 7.0)
        morning = p.morning_w * math.exp(-0.5 * (dm / 0.8) ** 2)
        awake = 6.0 <= h < 23.5
        burst_p = 0.04 if awake else 0.003
        burst = p.appliance_w if _unit(p.salt ^ 0x5A5A, minute) < burst_p else 0.0
        return base + evening + morning + burst

    def _fridge_on_s(self, t: float) -> float:
        """Compressor on-time from the epoch to ``t`` (a square wave's integral)."""
        p = self.params
        x = t + p.fridge_phase_s
        on = p.fridge_period_s * p.fridge_duty
        cycles = math.floor(x / p.fridge_period_s)
        return cycles * on + min(x - cycles * p.fridge_period_s, on)

    def showers(self, day: int) -> tuple[tuple[float, float, float], ...]:
        """The showers of local day ``day`` as ``(start, end, watts)``, seeded by the day.

        Seeding per day (not from one stream) means any day can be computed
        without generating the ones before it, which backfill relies on.
        """
        cached = self._showers.get(day)
        if cached is not None:
            return cached
        p = self.params
        rng = random.Random(f"{p.salt}/{day}")
        n = int(p.showers_per_day) + (1 if rng.random() < p.showers_per_day % 1.0 else 0)
        local_midnight = day * _DAY - self.utc_offset_h * 3600.0
        events = []
        for _ in range(n):
            if rng.random() < 0.35:
                hour = rng.uniform(5.5, 8.5)
            else:
                hour = rng.uniform(17.5, 22.5)
            start = local_midnight + hour * 3600.0
            duration = rng.uniform(5 * 60, 14 * 60)
            events.append((start, start + duration, p.shower_w * rng.uniform(0.9, 1.0)))
        result = tuple(sorted(events))
        if len(self._showers) > 64:
            self._showers.clear()
        self._showers[day] = result
        return result

    def _local_day(self, t: float) -> int:
        return math.floor((t + self.utc_offset_h * 3600.0) / _DAY)

    def power_w(self, t: float) -> float:
        """Instantaneous power at ``t`` (for the status line and tests)."""
        p = self.params
        watts = self._smooth_w(math.floor(t / _MINUTE))
        x = (t + p.fridge_phase_s) % p.fridge_period_s
        if x < p.fridge_period_s * p.fridge_duty:
            watts += p.fridge_w
        for day in (self._local_day(t) - 1, self._local_day(t)):
            for start, end, w in self.showers(day):
                if start <= t < end:
                    watts += w
        for s in self.spikes:
            if s.start <= t < s.end:
                watts += s.watts
        return watts

    def energy_wh(self, t0: float, t1: float) -> float:
        """Energy in Wh drawn over ``[t0, t1)``; 0 for an empty or reversed interval."""
        if t1 <= t0:
            return 0.0
        p = self.params
        ws = 0.0
        # smooth parts: whole and partial minutes
        m0 = math.floor(t0 / _MINUTE)
        m1 = math.floor(t1 / _MINUTE)
        for m in range(m0, m1 + 1):
            a = max(t0, m * _MINUTE)
            b = min(t1, (m + 1) * _MINUTE)
            if b > a:
                ws += self._smooth_w(m) * (b - a)
        ws += p.fridge_w * (self._fridge_on_s(t1) - self._fridge_on_s(t0))
        # showers may start late on the day before and run past midnight
        for day in range(self._local_day(t0) - 1, self._local_day(t1) + 1):
            for start, end, w in self.showers(day):
                overlap = min(t1, end) - max(t0, start)
                if overlap > 0:
                    ws += w * overlap
        for s in self.spikes:
            ws += s.energy_ws(t0, t1)
        return ws / 3600.0
