"""The store's operations on customers and meters (migration 7), on every backend of tests/test_store.py.

Search by name words and tax-id prefix with keyset pages that hold still
under inserts; updates and their audit rows; retiring a meter at a final
reading and replacing it, across a restart.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from meterd.names import parse_query
from meterd.readings import Outcome
from meterd.store import schema
from meterd.store.base import (
    Actor,
    AlreadyReplaced,
    Customer,
    MeterRetired,
    MeterStatus,
    NotFound,
    NotRetired,
    ReadingRefused,
    ReadingsAfter,
)
from meterd.taxid import make_cpf
from tests.test_store import BACKENDS, C1, D0, HOUR, KEY, MIN, UNDO_MIGRATION_7, customer, rd, reopen, setup_meters, store, usage_of

__all__ = ["store"]  # the fixture, imported

OPERATOR = Actor("operator", "192.0.2.10", 1_700_000_000_000)


def person(n: int, name: str) -> Customer:
    cid = make_cpf(f"{200_000_000 + n:09d}")
    return Customer(cid, name, "mono", 10_000, 1_000_000, "America/Sao_Paulo", f"hash-{cid}", 1_700_000_000_000)


async def find(store: Any, text: str, limit: int = 100, driver: int | None = None, after: tuple[str, ...] | None = None) -> list[str]:
    found, _ = await store.search_customers(parse_query(text), driver, after, limit)
    return [f.customer.name for f in found]


async def everyone(store: Any, text: str, page: int) -> list[str]:
    """Every name a query finds, a page at a time, as a client pages with cursors."""
    query = parse_query(text)
    names, driver, after = [], None, None
    while True:
        found, driver = await store.search_customers(query, driver, after, page)
        names += [f.customer.name for f in found]
        if len(found) < page:
            return names
        after = found[-1].position


# -- search ------------------------------------------------------------------------------


NAMES = [
    "João da Silva", "Joana D'Ávila", "MARIA CONCEIÇÃO Souza", "Maria da Silva Santos", "José Antônio",
    "Conceição Maria", "Joãozinho Pereira", "Ana Maria Maria", "Padaria São João Ltda",
]


@pytest_twisted.ensureDeferred
async def test_names_are_found_by_words_without_accents_or_case(store):
    for n, name in enumerate(NAMES):
        await store.create_customer(person(n, name))
    assert await find(store, "joao") == ["João da Silva", "Padaria São João Ltda", "Joãozinho Pereira"]
    assert await find(store, "conceicao") == ["Conceição Maria", "MARIA CONCEIÇÃO Souza"]
    assert await find(store, "CONCEIÇÃO souza") == ["MARIA CONCEIÇÃO Souza"]
    assert await find(store, "silva maria") == ["Maria da Silva Santos"]
    assert await find(store, "d avila") == ["Joana D'Ávila"]
    assert await find(store, "maria") == ["Ana Maria Maria", "Conceição Maria", "MARIA CONCEIÇÃO Souza", "Maria da Silva Santos"]
    assert await find(store, "jo") == [  # by the matching word, then by name; each customer once
        "Joana D'Ávila", "João da Silva", "Padaria São João Ltda", "Joãozinho Pereira", "José Antônio",
    ]
    assert await find(store, "xavier") == [] and await find(store, "joao xavier") == []


@pytest_twisted.ensureDeferred
async def test_tax_ids_are_found_by_their_first_digits(store):
    a, b = person(1, "A"), person(2, "B")
    for c in (a, b, customer(C1)):
        await store.create_customer(c)
    common = 0
    while a.id[common] == b.id[common]:
        common += 1
    found, driver = await store.search_customers(parse_query(a.id[:common]), None, None, 10)
    assert driver is None and [f.customer.id for f in found] == sorted([a.id, b.id])
    assert [f.customer.id for f in (await store.search_customers(parse_query(a.id), None, None, 10))[0]] == [a.id]
    assert (await store.search_customers(parse_query(a.id[:common] + "x"), None, None, 10)) == ([], 0)  # a name query now


@pytest_twisted.ensureDeferred
async def test_pages_hold_still_while_customers_are_registered_between_them(store):
    def name(n: int) -> str:
        return f"João {n:02d} Souza"

    for n in range(0, 40, 2):
        await store.create_customer(person(n, name(n)))
    query = parse_query("souza joao")
    seen: list[str] = []
    behind: set[str] = set()  # registered where the pages already went: never shown, and shift nothing
    ahead: set[str] = set()  # registered where the pages are going: shown in their place
    driver, after = None, None
    while True:
        found, driver = await store.search_customers(query, driver, after, 7)
        seen += [f.customer.name for f in found]
        if len(found) < 7:
            break
        after = found[-1].position
        last = int(found[-1].customer.name.split()[1])
        for n, where in ((last - 1, behind), (last + 5, ahead)):
            if n % 2 and n < 40 and name(n) not in behind | ahead:
                where.add(name(n))
                await store.create_customer(person(n, name(n)))
    assert len(seen) == len(set(seen))  # nothing repeated
    assert seen == sorted(seen)  # in order
    assert set(seen) == {name(n) for n in range(0, 40, 2)} | ahead  # nothing skipped, nothing from behind
    assert behind and ahead


@pytest_twisted.ensureDeferred
async def test_a_renamed_customer_is_found_by_its_new_name_only(store):
    c = person(1, "João da Silva")
    await store.create_customer(c)
    updated, changed = await store.update_customer(c.id, {"name": "Maria Conceição"}, OPERATOR)
    assert changed == ["name"] and updated.name == "Maria Conceição"
    assert await find(store, "joao") == [] and await find(store, "conceicao") == ["Maria Conceição"]
    store = await reopen(store)
    assert await find(store, "maria") == ["Maria Conceição"]
    assert (await store.get_customer(c.id)).name == "Maria Conceição"


@pytest_twisted.ensureDeferred
async def test_migration_7_finds_the_customers_registered_before_it(store):
    backend = BACKENDS[id(store)]
    for n, name in enumerate(NAMES):
        await store.create_customer(person(n, name))
    await store.stop()
    for statement in UNDO_MIGRATION_7:
        backend.execute(statement)
    backend.execute("UPDATE schema_version SET version = 6")
    fresh = backend.new()
    await fresh.start()
    BACKENDS[id(fresh)] = backend
    assert await find(fresh, "joao") == ["João da Silva", "Padaria São João Ltda", "Joãozinho Pereira"]
    assert await fresh.audit_log(None, None, 10) == []  # a log starts empty: what was done before is not invented


# -- updates and the audit log ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_update_changes_what_differs_and_logs_each_field(store):
    await store.create_customer(customer(), OPERATOR)
    changes = {"name": "Ana Luíza", "ligacao": "mono", "limit_w": 5_500, "tz": "America/Manaus"}
    updated, changed = await store.update_customer(C1, changes, OPERATOR)
    assert changed == ["name", "limit_w", "tz"]  # ligacao was mono already
    assert updated == Customer(C1, "Ana Luíza", "mono", 5_500, 1_000_000, "America/Manaus", f"hash-{C1}", 1_700_000_000_000)
    assert await store.get_customer(C1) == updated
    again, nothing = await store.update_customer(C1, changes, OPERATOR)
    assert again == updated and nothing == []
    log = await store.audit_log(C1, None, 10)
    assert [(e.action, e.field, e.old, e.new) for e in log] == [
        ("customer_updated", "tz", "America/Sao_Paulo", "America/Manaus"),
        ("customer_updated", "limit_w", 10_000, 5_500),
        ("customer_updated", "name", f"name {C1}", "Ana Luíza"),
        ("customer_registered", None, None,
         {"name": f"name {C1}", "ligacao": "mono", "limit_w": 10_000, "limit_wh": 1_000_000, "tz": "America/Sao_Paulo"}),
    ]
    assert {(e.actor, e.address, e.at_ms, e.customer_id) for e in log} == {("operator", "192.0.2.10", OPERATOR.at_ms, C1)}
    with pytest.raises(NotFound):
        await store.update_customer("11144477735", {"name": "x"}, OPERATOR)


@pytest_twisted.ensureDeferred
async def test_the_audit_log_pages_newest_first_and_by_customer(store):
    other = person(1, "Bruno")
    await store.create_customer(customer(), OPERATOR)
    await store.create_customer(other, OPERATOR)
    await store.create_meter(C1, "register", KEY, 1, OPERATOR)
    await store.replace_token(C1, "new-hash", 2, OPERATOR)
    await store.replace_key(C1, 1, "cd" * 32, 3, OPERATOR)
    await store.create_meter(other.id, "interval", KEY, 4)  # no actor: not logged
    log = await store.audit_log(None, None, 100)
    assert [(e.audit_id, e.customer_id, e.action, e.meter_id) for e in log] == [
        (5, C1, "key_renewed", 1), (4, C1, "token_renewed", None), (3, C1, "meter_registered", 1),
        (2, other.id, "customer_registered", None), (1, C1, "customer_registered", None),
    ]
    assert [e.new for e in log[:2]] == [None, None]  # never the secret
    assert [e.audit_id for e in await store.audit_log(None, 4, 2)] == [3, 2]
    assert [e.audit_id for e in await store.audit_log(C1, 4, 10)] == [3, 1]
    store = await reopen(store)
    await store.create_customer(person(2, "Carla"), OPERATOR)
    assert (await store.audit_log(None, None, 1))[0].audit_id == 6  # the counter survives a restart


# -- retiring and replacing meters ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_meter_is_retired_at_a_new_final_reading_and_takes_no_reading_after_it(store):
    await setup_meters(store, "register")
    await store.ingest([rd(D0, 1_000), rd(D0 + HOUR, 2_000)], D0 + HOUR)
    meter, stored = await store.retire_meter(C1, 1, D0 + 2 * HOUR, 2_500, OPERATOR)
    assert stored and meter.retired_ts == D0 + 2 * HOUR
    outcomes = await store.ingest([rd(D0 + 30 * MIN, 1_500), rd(D0 + 2 * HOUR, 2_500), rd(D0 + 3 * HOUR, 2_600)], D0 + 3 * HOUR)
    assert outcomes == [Outcome.STORED, Outcome.DUPLICATE, Outcome.RETIRED]
    assert await usage_of(store, 1, "register", [D0, D0 + 4 * HOUR]) == [(1_500, False)]
    status = (await store.meter_status(C1))[0]
    assert (status.last_ts, status.last_wh, status.retired_ts) == (D0 + 2 * HOUR, 2_500, D0 + 2 * HOUR)
    with pytest.raises(MeterRetired):
        await store.retire_meter(C1, 1, D0 + 5 * HOUR, 3_000, OPERATOR)
    store = await reopen(store)  # the retirement is the store's, not the memory's
    assert await store.ingest([rd(D0 + 4 * HOUR, 2_700)], D0 + 4 * HOUR) == [Outcome.RETIRED]
    assert (await store.get_meter(C1, 1)).retired_ts == D0 + 2 * HOUR
    (entry,) = [e for e in await store.audit_log(C1, None, 10) if e.action == "meter_retired"]
    assert (entry.meter_id, entry.new) == (1, {"ts": D0 + 2 * HOUR, "wh": 2_500})


@pytest_twisted.ensureDeferred
async def test_a_final_reading_must_be_the_newest_and_agree_with_what_is_stored(store):
    await setup_meters(store, "register", "interval")
    await store.ingest([rd(D0, 1_000), rd(D0 + HOUR, 2_000), rd(D0, 7, meter=2)], D0 + HOUR)
    with pytest.raises(ReadingsAfter):
        await store.retire_meter(C1, 1, D0 + 30 * MIN, 1_500, OPERATOR)
    with pytest.raises(ReadingRefused) as refused:
        await store.retire_meter(C1, 1, D0 + HOUR, 2_001, OPERATOR)
    assert refused.value.args[0] is Outcome.CONFLICT
    with pytest.raises(ReadingRefused) as refused:
        await store.retire_meter(C1, 1, D0 + 2 * HOUR, 1_999, OPERATOR)
    assert refused.value.args[0] is Outcome.BACKWARDS
    with pytest.raises(NotFound):
        await store.retire_meter(C1, 3, D0, 0, OPERATOR)
    assert (await store.meter_status(C1))[0].retired_ts is None  # refused: nothing changed
    assert await store.audit_log(C1, None, 10) == []
    meter, stored = await store.retire_meter(C1, 1, D0 + HOUR, 2_000, OPERATOR)  # its newest, as stored
    assert not stored and meter.retired_ts == D0 + HOUR
    meter, stored = await store.retire_meter(C1, 2, D0 + HOUR, 3, OPERATOR)  # an interval meter's last interval
    assert stored and await usage_of(store, 2, "interval", [D0, D0 + 2 * HOUR]) == [(10, False)]


@pytest_twisted.ensureDeferred
async def test_a_replacement_runs_the_customers_consumption_on_exactly(store):
    await setup_meters(store, "register")
    await store.ingest([rd(D0 + h * HOUR, 5_000_000 + 1_234 * h) for h in range(10)], D0 + 10 * HOUR)
    with pytest.raises(NotRetired):
        await store.replace_meter(C1, 1, "register", KEY, D0 + 10 * HOUR, 0, OPERATOR)
    await store.retire_meter(C1, 1, D0 + 10 * HOUR, 5_000_000 + 12_340, OPERATOR)
    with pytest.raises(ReadingsAfter):
        await store.replace_meter(C1, 1, "register", KEY, D0 + 9 * HOUR, 0, OPERATOR)
    new = await store.replace_meter(C1, 1, "register", "ef" * 32, D0 + 10 * HOUR, 0, OPERATOR)
    assert (new.meter_id, new.replaces, new.mode, new.key_hex) == (2, 1, "register", "ef" * 32)
    with pytest.raises(AlreadyReplaced):
        await store.replace_meter(C1, 1, "register", KEY, D0 + 11 * HOUR, 0, OPERATOR)
    # the new register starts from zero: a later reading below the old register is no register_backwards
    assert await store.ingest([rd(D0 + 11 * HOUR + h * MIN, 17 * h, meter=2) for h in range(1, 61)], D0 + 12 * HOUR) == [Outcome.STORED] * 60
    edges = [D0 + h * HOUR for h in range(0, 13)]
    (old,) = await store.usage(C1, [(1, "register")], edges)
    (fresh,) = await store.usage(C1, [(2, "register")], edges)
    total = [a[0] + b[0] for a, b in zip(old.buckets, fresh.buckets)]
    assert total[:10] == [1_234] * 10  # the old meter's hours, to its final reading
    assert total[10] + total[11] == 17 * 60  # the new meter's, from its first value: zero is no consumption
    assert sum(total) == 12_340 + 17 * 60
    assert await store.meter_status(C1) == [
        MeterStatus(1, "register", D0 + 10 * HOUR, 5_012_340, D0 + 10 * HOUR, D0 + 10 * HOUR, None, 2),
        MeterStatus(2, "register", D0 + 11 * HOUR + 60 * MIN, 17 * 60, D0 + 12 * HOUR, None, 1, None),
    ]
    store = await reopen(store)
    assert (await store.get_meter(C1, 2)).replaces == 1
    assert await store.ingest([rd(D0 + 13 * HOUR, 17 * 60 + 5, meter=2), rd(D0 + 13 * HOUR, 1, meter=1)], D0 + 13 * HOUR) == [
        Outcome.STORED, Outcome.RETIRED,
    ]
    (entry,) = [e for e in await store.audit_log(C1, None, 10) if e.action == "meter_replaced"]
    assert (entry.meter_id, entry.new) == (2, {"replaces": 1, "mode": "register", "ts": D0 + 10 * HOUR, "wh": 0})


@pytest_twisted.ensureDeferred
async def test_the_words_table_is_what_the_migration_writes_for_a_name(store):
    c = person(3, "Maria-José D'Ávila da Silva")
    await store.create_customer(c)
    found, _ = await store.search_customers(parse_query("avila"), None, None, 5)
    assert [f.position for f in found] == [("avila", "maria jose d avila da silva", c.id)]
    assert schema.word_rows(c.id, c.name) == [
        (w, "maria jose d avila da silva", c.id) for w in ("maria", "jose", "d", "avila", "da", "silva")
    ]
