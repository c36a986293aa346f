"""The property of issue 30: nothing billed twice, nothing lost.

Over any sequence of readings arriving in any order (late ones included),
meters registered late, and billing runs of any month, once a last bill has
been issued after them: for every issued month, its bill's consumption plus
every adjustment later bills carried for it is exactly the month's true
consumption (what all the readings say), to the Wh; and its money is exactly
the bill the month would have had with every reading on time, at that month's
rates, to the cent. Real store (SQLite), real billing runs, a clock set per run.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from itertools import accumulate
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from greenlet import greenlet
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from meterd import periods
from meterd.bill_cache import BillCache
from meterd.billing import Rates, price
from meterd.faturamento import BillingRuns
from meterd.readings import US_PER_MS, Reading
from meterd.registers import Sample, interval_sums, registers_at
from meterd.store.base import Customer
from meterd.store.sqlite import SqliteStore
from meterd.tariff import default_tariff
from meterd.taxid import make_cpf
from tests.support import examples

TZ = "America/Sao_Paulo"
SP = ZoneInfo(TZ)
MONTHS = [(2026, m) for m in range(1, 7)]  # billed during the sequence, in any order
FINAL = (2026, 7)  # billed last: carries whatever the sequence left to adjust
EDGES = [periods.month_range(y, m, SP) for y, m in [*MONTHS, FINAL]]
FIRST_MIN = (EDGES[0][0] - 10 * 86_400_000) // 60_000  # readings from ten days before January...
LAST_MIN = EDGES[-1][0] // 60_000 - 1  # ... to the end of June (so July measures what June's end leaves)
CUSTOMERS = [make_cpf("135792468"), make_cpf("975318642")]
# (customer index, meter id, mode); meter 3 is registered during the sequence
METERS = [(0, 1, "register"), (0, 2, "interval"), (1, 1, "register"), (0, 3, "register")]
LATE_METER = (0, 3)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def seconds(self) -> float:
        return self.now


@st.composite
def readings_of(draw: Any, meter: tuple[int, int, str]) -> list[tuple[int, int, int, int]]:
    """(customer index, meter, ts in us, Wh): a register rising from any start, or interval energies."""
    c, m, mode = meter
    minutes = sorted(draw(st.lists(st.integers(FIRST_MIN, LAST_MIN), max_size=7, unique=True)))
    if mode == "register":
        start = draw(st.integers(0, 10**7))
        values = list(accumulate(draw(st.lists(st.integers(0, 400_000), min_size=len(minutes), max_size=len(minutes))), initial=start))[1:]
    else:
        values = draw(st.lists(st.integers(0, 90_000), min_size=len(minutes), max_size=len(minutes)))
    return [(c, m, t * 60 * 1_000_000, v) for t, v in zip(minutes, values)]


@st.composite
def scenarios(draw: Any) -> list[tuple[str, Any]]:
    """Readings in a random order, the late meter registered somewhere before its own, runs anywhere."""
    early = [r for meter in METERS if meter[:2] != LATE_METER for r in draw(readings_of(meter))]
    late = draw(readings_of(METERS[-1]))
    ops: list[tuple[str, Any]] = [("reading", r) for r in draw(st.permutations(early))]
    cut = draw(st.integers(0, len(ops)))
    ops[cut:cut] = [("meter", LATE_METER), *(("reading", r) for r in draw(st.permutations(late)))]
    for _ in range(draw(st.integers(0, 8))):
        ops.insert(draw(st.integers(0, len(ops))), ("run", draw(st.sampled_from(MONTHS))))
    return ops


def true_wh(readings: list[tuple[int, int, int, int]], customer: int, month: tuple[int, int]) -> int:
    """The month's consumption from every reading, as DESIGN §5 defines it."""
    start, end = (t * US_PER_MS for t in periods.month_range(*month, SP))
    total = 0
    for c, m, mode in METERS:
        if c != customer:
            continue
        samples = [Sample(ts, wh) for rc, rm, ts, wh in readings if (rc, rm) == (c, m)]
        if mode == "register":
            (a, _), (b, _) = registers_at([start, end], samples)
            total += b - a
        else:
            total += interval_sums([start, end], samples)[0]
    return total


async def play(path: str, ops: list[tuple[str, Any]]) -> None:
    store = SqliteStore(path)
    await store.start()
    clock = Clock()
    runs = BillingRuns(store, default_tariff(), clock, TZ, BillCache(), batch=1)
    try:
        for i, cid in enumerate(CUSTOMERS):
            await store.create_customer(Customer(cid, f"C{i}", "mono", 10_000, 10**9, TZ, f"hash{i}", 1_700_000_000_000))
        for c, m, mode in METERS:
            if (c, m) != LATE_METER:
                await store.create_meter(CUSTOMERS[c], mode, "ab" * 32, 1_700_000_000_000)
        for kind, arg in [*ops, ("run", FINAL)]:
            if kind == "meter":
                await store.create_meter(CUSTOMERS[arg[0]], "register", "cd" * 32, 1_700_000_000_000)
            elif kind == "reading":
                c, m, ts, wh = arg
                [outcome] = await store.ingest([Reading(CUSTOMERS[c], m, ts, wh, None)], 1)
                assert outcome.value == "stored", (arg, outcome)
            else:
                clock.now = periods.month_range(*arg, SP)[1] / 1000 + 3_600  # an hour into the next month
                await runs.start(1)
                assert runs.task is not None
                await runs.task
    finally:
        await store.stop()


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=scenarios())
def issued_bills_and_their_adjustments_add_up_to_every_reading(ops: list[tuple[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/meterd.sqlite3"
        pytest_twisted.blockon(Deferred.fromCoroutine(play(path, ops)))
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT customer_id, referencia, numero, document FROM bills ORDER BY numero").fetchall()
    readings = [arg for kind, arg in ops if kind == "reading"]
    assert [numero for _, _, numero, _ in rows] == list(range(1, len(rows) + 1))  # gapless, once each
    bills = {(cid, ref): orjson.loads(doc) for cid, ref, _, doc in rows}
    assert len(bills) == len(rows)
    adjusted_wh: dict[tuple[str, str], int] = defaultdict(int)
    adjusted_money: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for (cid, _), doc in bills.items():
        for a in doc["ajustes"]:
            adjusted_wh[(cid, a["referencia"])] += round(a["consumo_kwh"] * 1000)
            adjusted_money[(cid, a["referencia"])] += Decimal(a["valor"])
        credito = Decimal(doc["credito_anterior"]["valor"]) if doc["credito_anterior"] else Decimal(0)
        assert Decimal(doc["total"]) == Decimal(doc["total_mes"]) + sum((Decimal(a["valor"]) for a in doc["ajustes"]), Decimal(0)) + credito
    for i, cid in enumerate(CUSTOMERS):
        assert (cid, "2026-07") in bills  # the final bill is always issued
        for month in [*MONTHS, FINAL]:
            ref = f"{month[0]:04d}-{month[1]:02d}"
            if (cid, ref) not in bills:
                continue
            truth = true_wh(readings, i, month)
            issued_wh = round(bills[(cid, ref)]["consumo_kwh"] * 1000)
            assert issued_wh + adjusted_wh[(cid, ref)] == truth, (cid, ref)
            on_time = price(Rates.of(default_tariff(), "mono", *month), ref, truth, False)
            assert Decimal(bills[(cid, ref)]["total_mes"]) + adjusted_money[(cid, ref)] == on_time.total, (cid, ref)


@pytest_twisted.ensureDeferred
async def test_issued_bills_and_their_adjustments_add_up_to_every_reading() -> None:
    """Hypothesis runs its examples in a greenlet of its own: each one blocks on the store while the reactor turns."""
    done: Deferred[None] = Deferred()

    def body() -> None:
        try:
            issued_bills_and_their_adjustments_add_up_to_every_reading()
        except BaseException:
            reactor.callLater(0, done.errback, Failure())
        else:
            reactor.callLater(0, done.callback, None)

    reactor.callLater(0, greenlet(body).switch)
    await done


def test_the_months_are_what_the_property_assumes() -> None:
    """January to July 2026 in São Paulo, readings within January's eve and June."""
    assert datetime.fromtimestamp(EDGES[0][0] / 1000, SP).isoformat() == "2026-01-01T00:00:00-03:00"
    assert FIRST_MIN * 60_000 < EDGES[0][0] and LAST_MIN * 60_000 < EDGES[-1][0] <= (LAST_MIN + 1) * 60_000
