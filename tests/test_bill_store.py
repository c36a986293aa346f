"""The store's side of the billing run (meterd.store.bill_sql), on every backend: numbering, races, runs.

Uses :mod:`tests.test_store`'s ``store`` fixture: SQLite always, PostgreSQL
when ``METERD_TEST_PG`` names a database.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import pytest_twisted

from meterd import billing_run
from meterd.billing_run import DONE, INTERRUPTED, RUNNING, Counts, Draft
from meterd.readings import Reading
from meterd.store.base import Customer
from meterd.tariff import default_tariff
from tests.test_store import SP, local_us, reopen, store  # noqa: F401 - store is the fixture

C1, C2 = "12345678909", "98765432100"
NOW_MS = local_us(2026, 12, 3, 10) // 1000  # November 2026 is the month one back
EMPRESA = default_tariff().empresa
assert EMPRESA is not None


async def customers(store: Any) -> None:
    for cid in (C1, C2):
        await store.create_customer(Customer(cid, f"name {cid}", "bi", 10_000, 10**9, "America/Sao_Paulo", f"hash-{cid}", 1_700_000_000_000))
        await store.create_meter(cid, "register", "ab" * 32, 1_700_000_000_000)
    readings = [Reading(cid, 1, local_us(2026, month, 1), wh, None) for cid in (C1, C2) for month, wh in ((11, 1000), (12, 51_000))]
    await store.ingest(readings, 1)


async def read(store: Any, after: str = "") -> list[Draft]:
    targets: dict[str, billing_run.Target] = {}
    make = partial(billing_run.draft, tariff=default_tariff(), empresa=EMPRESA, now_ms=NOW_MS)
    last, items = await store.bill_batch(after, 10, partial(billing_run.target_of, NOW_MS, periodo=1, cache=targets), make)
    return [d for _, d in items if d is not None]


def finalize(d: Draft, numero: int) -> billing_run.Issue:
    assert EMPRESA is not None
    return billing_run.finalize(d, numero, EMPRESA)


@pytest_twisted.ensureDeferred
async def test_bills_are_numbered_without_gaps_and_a_draft_read_before_another_run_issued_is_left_out(store: Any) -> None:
    await customers(store)
    _, run = await store.start_run(1, "2026-11", NOW_MS, NOW_MS)
    first, second = await read(store), await read(store)  # two runs read the same customers
    assert [(d.cid, d.referencia, int(d.bill.consumo_kwh)) for d in first] == [(C1, "2026-11", 50), (C2, "2026-11", 50)]
    issued, counts = await store.issue_bills(run.run_id, first[:1], finalize, Counts(processed=1), C1, NOW_MS)
    assert (issued, counts.issued) == ([(C1, "2026-11")], 1)
    issued, counts = await store.issue_bills(run.run_id, second, finalize, Counts(processed=2), C2, NOW_MS)
    assert (issued, counts.issued, counts.already) == ([(C2, "2026-11")], 1, 1)  # C1's was issued meanwhile
    one, two = [orjson.loads(await store.issued_bill(c, "2026-11") or b"") for c in (C1, C2)]
    assert (one["numero"], two["numero"]) == (1, 2)  # the draft left out took no number
    assert [n for n, _ in await store.run_bills(run.run_id, 0, 10)] == [1, 2]
    saved = await store.get_run(run.run_id)
    assert (saved.processed, saved.issued, saved.already, saved.cursor, saved.total_cents) == (
        3, 2, 1, C2, int(first[0].total.scaleb(2)) * 2)
    assert await read(store) == []  # nothing left to issue for the month


@pytest_twisted.ensureDeferred
async def test_a_run_is_resumed_only_when_cut_short_and_a_live_one_is_left_alone(store: Any) -> None:
    action, run = await store.start_run(1, "2026-11", NOW_MS, NOW_MS - 60_000)
    assert (action, run.run_id, run.state, run.customers) == ("nova", 1, RUNNING, 0)
    action, live = await store.start_run(1, "2026-11", NOW_MS + 1000, NOW_MS - 60_000)
    assert (action, live.run_id) == ("ativa", 1)  # moving less than a minute ago: someone runs it
    action, resumed = await store.start_run(1, "2026-11", NOW_MS + 120_000, NOW_MS + 60_000)
    assert (action, resumed.run_id, resumed.now_ms) == ("retomada", 1, NOW_MS)  # its own clock, not this one
    store = await reopen(store)
    await store.interrupt_runs("stopped")
    cut = await store.get_run(None)
    assert (cut.state, cut.message) == (INTERRUPTED, "stopped")
    action, other = await store.start_run(2, "2026-10", NOW_MS, NOW_MS)
    assert (action, other.run_id) == ("nova", 2)  # another periodo: a run of its own
    await store.finish_run(2, DONE, NOW_MS + 5, None)
    done = await store.get_run(2)
    assert (done.state, done.finished_ms) == (DONE, NOW_MS + 5)
    assert await store.get_run(3) is None
