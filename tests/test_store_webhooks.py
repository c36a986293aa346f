# ruff: noqa: F811 - the tests take the imported `store` fixture as their parameter
"""The store's webhook methods (meterd/store/webhook_sql.py), on every backend of tests/test_store.py.

Registration and removal, the events a webhook reads after its cursor (one
customer's or everyone's, with their alarms), the durable cursor, and the
leases that let one process at a time deliver a webhook.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from meterd.alarm_book import Acknowledgement
from meterd.store.base import NotFound, WebhookProgress
from tests.test_store import C1, C2, clear, customer, raise_, reopen, store  # noqa: F401 - the backends' fixture

URL = "http://127.0.0.1:9/hook"


def progress(webhook_id: int, cursor: int, *, failures: int = 0, error: str | None = None) -> WebhookProgress:
    return WebhookProgress(webhook_id, cursor, 1_000 if not failures else None, 2_000 if failures else None, error, failures)


async def customers(store: Any) -> None:
    for cid in (C1, C2):
        await store.create_customer(customer(cid))


@pytest_twisted.ensureDeferred
async def test_webhooks_are_registered_listed_and_removed_and_ids_never_come_back(store):
    await customers(store)
    await store.settle_alarms([raise_("demand", 1, 1_000), raise_("monthly", None, 1_000)])
    everyone = await store.create_webhook(URL, None, "whsec_a", 5_000)
    one = await store.create_webhook(URL + "?c=1", C1, "whsec_b", 6_000)
    # each starts after the events committed before it: history is not replayed
    assert (everyone.webhook_id, everyone.last_delivered, everyone.customer_id) == (1, 2, None)
    assert (one.webhook_id, one.last_delivered, one.customer_id, one.secret) == (2, 2, C1, "whsec_b")
    with pytest.raises(NotFound):
        await store.create_webhook(URL, "39053344705", "whsec_c", 7_000)
    assert [w.webhook_id for w in await store.webhooks()] == [1, 2]
    removed = await store.remove_webhook(1, 8_000)
    assert removed.url == URL
    with pytest.raises(NotFound):
        await store.remove_webhook(1, 9_000)
    with pytest.raises(NotFound):
        await store.remove_webhook(99, 9_000)
    assert [w.webhook_id for w in await store.webhooks()] == [2]
    assert (await store.create_webhook(URL, None, "whsec_d", 9_000)).webhook_id == 3
    store = await reopen(store)
    assert [(w.webhook_id, w.url, w.secret) for w in await store.webhooks()] == [(2, URL + "?c=1", "whsec_b"), (3, URL, "whsec_d")]


@pytest_twisted.ensureDeferred
async def test_events_after_a_cursor_come_in_id_order_with_their_alarms(store):
    await customers(store)
    await store.settle_alarms([raise_("demand", 1, 1_000), raise_("silent", 2, 1_000, cid=C2)])
    await store.settle_alarms([clear("demand", 1, 2_000), Acknowledgement(C2, 2, 3_000)])
    await store.settle_alarms([raise_("demand", 1, 4_000)])
    every = await store.webhook_events(None, 0, 100)
    assert [(d.event.event_id, d.event.customer_id, d.event.type) for d in every] == [
        (1, C1, "raised"), (2, C2, "raised"), (3, C1, "cleared"), (4, C2, "acked"), (5, C1, "raised"),
    ]
    first = every[0]
    assert (first.alarm.alarm_id, first.alarm.rule, first.alarm.meter_id, first.tz) == (1, "demand", 1, "America/Sao_Paulo")
    assert first.alarm.cleared_at == 2_000  # the alarm as it is stored now
    assert every[3].alarm.acked_at == 3_000 and every[3].event.at == 3_000
    # pages: a cursor and a limit; one customer's only
    assert [d.event.event_id for d in await store.webhook_events(None, 2, 2)] == [3, 4]
    assert [d.event.event_id for d in await store.webhook_events(C1, 0, 100)] == [1, 3, 5]
    assert [d.event.event_id for d in await store.webhook_events(C2, 2, 100)] == [4]
    assert await store.webhook_events(None, 5, 100) == []
    assert await store.webhook_backlogs([(None, 0), (None, 3), (C1, 1), (C2, 4), (None, 0)], 10) == [5, 2, 2, 0, 5]
    assert await store.webhook_backlogs([(None, 0), (C1, 0)], 2) == [2, 2]  # counted up to the cap only


@pytest_twisted.ensureDeferred
async def test_one_owner_at_a_time_holds_a_webhook_and_saves_its_cursor(store):
    await customers(store)
    a, b = "host-a:1", "host-b:2"
    first = await store.create_webhook(URL, None, "s1", 1_000)
    second = await store.create_webhook(URL, C1, "s2", 1_000)
    held = await store.hold_webhooks(a, [], 30_000)
    assert [w.webhook_id for w in held] == [first.webhook_id, second.webhook_id]
    assert all(w.lease_owner == a and w.lease_until_ms is not None for w in held)
    assert await store.hold_webhooks(b, [progress(1, 50)], 30_000) == []  # held by a: b gets none, and saves nothing
    # the holder saves its progress; the cursor never moves back
    saved = await store.hold_webhooks(a, [progress(1, 7), progress(2, 3, failures=2, error="HTTP 500")], 30_000)
    assert [(w.last_delivered, w.failures, w.last_error) for w in saved] == [(7, 0, None), (3, 2, "HTTP 500")]
    saved = await store.hold_webhooks(a, [progress(1, 5)], 30_000)
    assert [w.last_delivered for w in saved] == [7, 3]
    # a clean stop releases: the next asker takes them at once, from the saved cursors
    await store.release_webhooks(a, [progress(2, 4)])
    store = await reopen(store)
    taken = await store.hold_webhooks(b, [], 30_000)
    assert [(w.webhook_id, w.last_delivered, w.lease_owner) for w in taken] == [(1, 7, b), (2, 4, b)]


@pytest_twisted.ensureDeferred
async def test_a_lease_that_ran_out_by_the_databases_clock_is_taken_by_another_owner(store):
    await store.create_webhook(URL, None, "s", 1_000)
    assert len(await store.hold_webhooks("a", [], -1_000)) == 1  # a lease that ended a second ago
    taken = await store.hold_webhooks("b", [], 30_000)
    assert [w.lease_owner for w in taken] == ["b"]
    assert await store.hold_webhooks("a", [progress(1, 9)], 30_000) == []  # a lost it: its progress is not saved
    assert [w.last_delivered for w in await store.webhooks()] == [0]
    # a removed webhook is held by nobody
    await store.remove_webhook(1, 2_000)
    assert await store.hold_webhooks("b", [], 30_000) == []
