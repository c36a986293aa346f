"""The household load model and the simulated meter's register and datagrams."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.meter.device import SimMeter, encode_reading, format_milli
from clients.meter.load import LoadModel
from clients.meter.outbox import Outbox
from meterd.datagram import parse_payload, split_signature, verify
from tests.support import examples

T0 = 1_764_000_000.0  # 2025-11-24 16:00 UTC
DAY = 86400.0
KEY = bytes(range(32))


def test_same_seed_same_household_and_energy() -> None:
    a, b = LoadModel.from_seed(42), LoadModel.from_seed(42)
    assert a.params == b.params
    assert a.energy_wh(T0, T0 + DAY) == b.energy_wh(T0, T0 + DAY)
    assert [a.power_w(T0 + k * 997) for k in range(50)] == [b.power_w(T0 + k * 997) for k in range(50)]


def test_different_seeds_differ() -> None:
    assert LoadModel.from_seed(1).params != LoadModel.from_seed(2).params
    assert LoadModel.from_seed(1).energy_wh(T0, T0 + DAY) != LoadModel.from_seed(2).energy_wh(T0, T0 + DAY)


def test_average_power_is_a_households() -> None:
    # Brazilian homes average roughly 100-500 kWh a month; allow a wide band.
    for seed in range(10):
        watts = LoadModel.from_seed(seed).energy_wh(T0, T0 + 14 * DAY) / (14 * 24)
        assert 100.0 < watts < 1000.0, (seed, watts)


def test_evening_draws_more_than_small_hours() -> None:
    m = LoadModel.from_seed(3)  # offset -3 h: local 19:00-22:00 is 22:00-01:00 UTC
    midnight_utc = 1_764_028_800.0  # 2025-11-25 00:00 UTC = 21:00 local
    evening = sum(m.energy_wh(midnight_utc - 3 * 3600 + d * DAY, midnight_utc + d * DAY) for d in range(7))
    small_hours = sum(m.energy_wh(midnight_utc + 5 * 3600 + d * DAY, midnight_utc + 8 * 3600 + d * DAY) for d in range(7))
    assert evening > 1.5 * small_hours


def test_showers_are_kilowatts_and_counted_exactly() -> None:
    m = LoadModel.from_seed(5)
    day = m._local_day(T0)
    showers = [s for d in range(day, day + 7) for s in m.showers(d)]
    assert showers, "a week without a shower"
    start, end, watts = showers[0]
    assert 4000 <= watts <= 7500
    with_shower = m.energy_wh(start, end)
    assert with_shower >= watts * (end - start) / 3600.0  # at least the shower itself
    assert m.power_w((start + end) / 2) >= watts


def test_fridge_cycles() -> None:
    m = LoadModel.from_seed(9)
    p = m.params
    on_time = m._fridge_on_s(T0 + 10 * p.fridge_period_s) - m._fridge_on_s(T0)
    assert abs(on_time - 10 * p.fridge_period_s * p.fridge_duty) < 1e-6 * p.fridge_period_s * 10 + 1e-3


def test_spike_adds_seven_kilowatts_for_a_minute() -> None:
    m = LoadModel.from_seed(11)
    before = m.energy_wh(T0, T0 + 120)
    m.add_spike(T0 + 30)
    after = m.energy_wh(T0, T0 + 120)
    assert abs((after - before) - 7000 * 60 / 3600) < 1e-9  # 116.67 Wh
    assert m.power_w(T0 + 60) - LoadModel.from_seed(11).power_w(T0 + 60) == 7000
    m.forget_before(T0 + 200)
    assert m.spikes == []


@settings(max_examples=examples(60), deadline=None)
@given(
    seed=st.integers(0, 10**6),
    a=st.floats(0, 5 * DAY),
    b=st.floats(0, 5 * DAY),
    c=st.floats(0, 5 * DAY),
)
def test_energy_is_additive_and_non_negative(seed: int, a: float, b: float, c: float) -> None:
    t0, t1, t2 = sorted((T0 + a, T0 + b, T0 + c))
    m = LoadModel.from_seed(seed)
    e01, e12, e02 = m.energy_wh(t0, t1), m.energy_wh(t1, t2), m.energy_wh(t0, t2)
    assert e01 >= 0 and e12 >= 0
    assert abs(e01 + e12 - e02) <= 1e-9 * max(1.0, e02)
    assert m.energy_wh(t2, t0) == 0.0


def _meter(seed: int = 1, start_wh: int = 0) -> SimMeter:
    return SimMeter("52998224725", 1, KEY, LoadModel.from_seed(seed), Outbox(), T0, start_wh)


@settings(max_examples=examples(30), deadline=None)
@given(steps=st.lists(st.floats(0.0, 3600.0), min_size=1, max_size=40), seed=st.integers(0, 1000))
def test_register_never_decreases_and_timestamps_are_unique_ms(steps: list[float], seed: int) -> None:
    m = _meter(seed, start_wh=1234)
    t = T0
    registers, stamps, seqs = [], [], []
    for dt in steps:
        t += dt
        seq, datagram = m.read(t)
        payload, sig = split_signature(datagram)
        assert sig is not None and verify(payload, sig, KEY)
        body = json.loads(payload)
        registers.append(round(body["valor"] * 1000))
        stamps.append(round(body["timestamp"] * 1000))
        seqs.append(body["seq"])
    assert registers == sorted(registers) and registers[0] >= 1234
    assert all(b > a for a, b in zip(stamps, stamps[1:]))  # strictly: never two readings in one ms
    assert seqs == list(range(1, len(steps) + 1))
    # No energy is lost to integer rounding: the register is the floor of the integral.
    expected = 1234 + m.model.energy_wh(T0, m.last_t)
    assert registers[-1] == m.register_wh
    assert 0 <= expected - m.register_wh < 1.0 + 1e-6


def test_reading_payload_is_exact_json() -> None:
    payload = encode_reading("52998224725", 2, 1_234_567, 1_764_000_000_005, 42)
    assert payload == (
        b'{"id":"52998224725","id_medidor":2,"valor":1234.567,"timestamp":1764000000.005,"seq":42}'
    )
    fields = parse_payload(payload)
    assert fields["valor"] == 1234.567 and fields["seq"] == 42
    assert format_milli(5) == "0.005" and format_milli(1000) == "1.000" and format_milli(0) == "0.000"


def test_same_seed_same_readings() -> None:
    a, b = _meter(77), _meter(77)
    for k in range(1, 30):
        assert a.read(T0 + k * 611.0) == b.read(T0 + k * 611.0)
