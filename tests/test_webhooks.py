"""The delivery of alarm webhooks (meterd/webhooks.py) against an in-memory receiver.

The store is a real SQLite store (its reads and writes run on its threads);
the receiver is a twisted.web resource behind ``treq.testing.StubTreq``; time
is a ``Clock``, so the backoff schedule and the timeouts are exact and no test
waits for them. Events are settled through the store as the alarm service
settles them, and announced to the webhooks as it announces them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from meterd.alarm_book import Change
from meterd.metrics import Metrics
from meterd.store.sqlite import SqliteStore
from meterd.webhooks import Webhooks
from tests.test_store import C1, C2, clear, customer, raise_

SECRET_OF: dict[int, str] = {}


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # the Clock's time when it arrived

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> int:
        return int(self.json["event"]["event_id"])


class Receiver(Resource):
    """Takes POSTs on any path; answers each with the next of ``answers`` (200 once they run out, None: never)."""

    isLeaf = True

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.posts: list[Post] = []
        self.answers: dict[str, list[int | None]] = {}
        self.hanging: list[Request] = []

    def render_POST(self, request: Request) -> bytes | int:
        path = request.path.decode()
        headers = {k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        assert request.content is not None
        self.posts.append(Post(path, headers, request.content.read(), self.clock.seconds()))
        queue = self.answers.get(path, [])
        status = queue.pop(0) if queue else 200
        if status is None:
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(status)
        return b'{"ok": true}'

    def to(self, path: str) -> list[Post]:
        return [p for p in self.posts if p.path == path]


@dataclass
class World:
    store: SqliteStore
    clock: Clock
    metrics: Metrics
    receiver: Receiver
    stub: StubTreq
    started: list[Webhooks] = field(default_factory=list)

    def hooks(self, **options: Any) -> Webhooks:
        hooks = Webhooks(self.store, self.clock, self.metrics, http=self.stub, jitter=lambda: 0.5, **options)
        hooks.startService()
        self.started.append(hooks)
        return hooks

    async def settle(self, hooks: Sequence[Webhooks], *changes: Change) -> None:
        """Settle alarm changes in the store and tell the webhooks, as the alarm service does."""
        settled = await self.store.settle_alarms(list(changes))
        for h in hooks:
            h.events_stored(settled.events)

    async def register(self, path: str, customer_id: str | None = None) -> int:
        webhook = await self.store.create_webhook(f"http://receiver.test{path}", customer_id, f"whsec_{path}", 0)
        SECRET_OF[webhook.webhook_id] = webhook.secret
        return webhook.webhook_id

    async def until(self, check: Callable[[], object], what: str = "the condition") -> None:
        """Let the store's threads answer and the stub's connections flush until ``check()`` holds."""
        for _ in range(1000):
            self.stub.flush()
            if check():
                return
            await deferLater(reactor, 0.002, lambda: None)
        raise AssertionError(f"{what} never held")

    def sample(self, name: str, webhook: int) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"webhook": str(webhook)})


@pytest_twisted.async_yield_fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    store = SqliteStore(str(tmp_path / "meterd.sqlite3"))
    await store.start()
    for cid in (C1, C2):
        await store.create_customer(customer(cid))
    clock = Clock()
    clock.advance(1_800_000_000)
    receiver = Receiver(clock)
    w = World(store, clock, Metrics(), receiver, StubTreq(receiver))
    yield w
    for hooks in w.started:
        if hooks.running:
            await hooks.stopService()
    await store.stop()


def signed_by(post: Post, secret: str) -> bool:
    """The receiver's check, written here from the documented rule, not with meterd's code."""
    fields = dict(part.split("=", 1) for part in post.headers["Meterd-Signature"].split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + post.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and int(fields["t"]) == int(post.at)


@pytest_twisted.ensureDeferred
async def test_events_go_out_in_order_signed_each_once_and_the_cursor_is_saved_at_the_tick(world: World) -> None:
    everyone = await world.register("/all")
    only_c1 = await world.register("/c1", C1)
    hooks = world.hooks()
    await world.until(lambda: len(hooks.deliveries) == 2, "both webhooks held")
    await world.settle([hooks], raise_("demand", 1, 1_000), raise_("silent", 2, 1_000, cid=C2))
    await world.settle([hooks], clear("demand", 1, 2_000), raise_("monthly", None, 2_500, cid=C2))
    await world.settle([hooks], raise_("demand", 1, 3_000))
    await world.until(lambda: len(world.receiver.posts) == 8, "every event delivered")
    every, one = world.receiver.to("/all"), world.receiver.to("/c1")
    assert [p.event_id for p in every] == [1, 2, 3, 4, 5]
    assert [p.event_id for p in one] == [1, 3, 5]
    assert [p.json["id"] for p in every] == [C1, C2, C1, C2, C1]
    for webhook, posts in ((everyone, every), (only_c1, one)):
        for post in posts:
            assert signed_by(post, SECRET_OF[webhook])
            assert post.headers["Meterd-Delivery"] == f"{webhook}-{post.event_id}" == post.json["delivery_id"]
            assert post.headers["Meterd-Event"] == post.json["event"]["type"]
            assert post.headers["Content-Type"] == "application/json; charset=utf-8"
            assert not signed_by(post, SECRET_OF[everyone + only_c1 - webhook])
    first = every[0].json
    assert first["webhook_id"] == everyone
    assert first["event"] == {"event_id": 1, "alarm_id": 1, "type": "raised", "at": "1969-12-31T21:00:01-03:00"}
    assert (first["alarm"]["rule"], first["alarm"]["id_medidor"], first["alarm"]["raised_at"]) == ("demand", 1, "1969-12-31T21:00:01-03:00")
    assert every[2].json["alarm"]["cleared_at"] == "1969-12-31T21:00:02-03:00"  # the alarm as stored when its event is read
    # the cursors are in memory at once and in the store at the next tick
    assert [hooks.deliveries[i].cursor for i in (everyone, only_c1)] == [5, 5]
    assert [w.last_delivered for w in await world.store.webhooks()] == [0, 0]
    world.clock.advance(hooks.tick)
    await world.until(lambda: not hooks.deliveries[everyone].unsaved, "the tick saved the cursors")
    stored = {w.webhook_id: w for w in await world.store.webhooks()}
    assert (stored[everyone].last_delivered, stored[only_c1].last_delivered) == (5, 5)
    assert stored[everyone].last_success_ms == 1_800_000_000_000 and stored[everyone].failures == 0
    assert world.sample("meterd_webhook_deliveries_total", everyone) == 5
    assert world.sample("meterd_webhook_deliveries_total", only_c1) == 3
    assert world.sample("meterd_webhook_backlog", everyone) == 0
    assert world.sample("meterd_webhook_lag_seconds_count", everyone) == 5
    assert world.metrics.registry.get_sample_value("meterd_webhooks_delivering") == 2


@pytest_twisted.ensureDeferred
async def test_a_failure_is_retried_after_a_doubling_delay_with_jitter_up_to_the_bound(world: World) -> None:
    webhook = await world.register("/flaky")
    world.receiver.answers["/flaky"] = [500, 500, 500, 503, 502, 200]
    hooks = world.hooks(max_backoff=4.0)  # jitter 0.5: each wait is 3/4 of min(4, 1 x 2^(n-1)) s
    await world.until(lambda: hooks.deliveries, "the webhook held")
    await world.settle([hooks], raise_("demand", 1, 1_000))
    await world.until(lambda: world.receiver.posts, "the first attempt")
    waits = [0.75, 1.5, 3.0, 3.0, 3.0]
    for n, wait in enumerate(waits, start=2):
        world.clock.advance(wait - 0.01)
        world.stub.flush()
        assert len(world.receiver.posts) == n - 1, f"attempt {n} came early"
        world.clock.advance(0.01)
        world.stub.flush()
        assert len(world.receiver.posts) == n, f"attempt {n} did not come after {wait} s"
    posts = world.receiver.posts
    assert [b.at - a.at for a, b in zip(posts, posts[1:])] == pytest.approx(waits)
    assert {p.headers["Meterd-Delivery"] for p in posts} == {f"{webhook}-1"}  # one event, retried
    assert all(signed_by(p, SECRET_OF[webhook]) for p in posts)
    delivery = hooks.deliveries[webhook]
    assert (delivery.cursor, delivery.failures, delivery.last_error) == (1, 0, "HTTP 502")
    assert world.sample("meterd_webhook_failures_total", webhook) == 5
    assert world.sample("meterd_webhook_deliveries_total", webhook) == 1


@pytest_twisted.ensureDeferred
async def test_an_unanswered_request_times_out_and_a_slow_receiver_holds_only_its_own_webhook(world: World) -> None:
    slow = await world.register("/slow")
    fast = await world.register("/fast")
    world.receiver.answers["/slow"] = [None]  # the first request is never answered
    hooks = world.hooks(timeout=10.0)
    await world.until(lambda: len(hooks.deliveries) == 2, "both webhooks held")
    for at in range(1_000, 6_000, 1_000):
        await world.settle([hooks], raise_("demand", 1, at), clear("demand", 1, at + 500))
    await world.until(lambda: len(world.receiver.to("/fast")) == 10, "the fast webhook got every event")
    assert [p.event_id for p in world.receiver.to("/slow")] == [1]
    world.clock.advance(9.9)
    world.stub.flush()
    assert hooks.deliveries[slow].failures == 0
    world.clock.advance(0.1)  # the timeout
    await world.until(lambda: hooks.deliveries[slow].failures == 1, "the timeout counted")
    assert hooks.deliveries[slow].last_error == "timeout"
    world.clock.advance(0.75)  # its backoff
    await world.until(lambda: len(world.receiver.to("/slow")) == 11, "the slow webhook caught up")
    assert [p.event_id for p in world.receiver.to("/slow")] == [1, *range(1, 11)]
    assert [p.event_id for p in world.receiver.to("/fast")] == list(range(1, 11))
    assert hooks.deliveries[fast].failures == 0


@pytest_twisted.ensureDeferred
async def test_a_restart_resumes_after_the_last_event_delivered(world: World) -> None:
    webhook = await world.register("/r")
    hooks = world.hooks()
    await world.until(lambda: hooks.deliveries, "held")
    await world.settle([hooks], raise_("demand", 1, 1_000), raise_("silent", 1, 1_000))
    await world.until(lambda: len(world.receiver.posts) == 2, "delivered")
    await hooks.stopService()  # saves the cursor and gives the lease back
    assert [w.last_delivered for w in await world.store.webhooks()] == [2]
    await world.settle([], clear("demand", 1, 2_000), clear("silent", 1, 2_000))  # while nobody delivers
    again = world.hooks()
    await world.until(lambda: len(world.receiver.posts) == 4, "the events committed meanwhile delivered")
    assert [p.event_id for p in world.receiver.posts] == [1, 2, 3, 4]
    assert again.deliveries[webhook].cursor == 4


@pytest_twisted.ensureDeferred
async def test_one_owner_at_a_time_delivers_and_the_next_one_goes_on_from_its_cursor(world: World) -> None:
    webhook = await world.register("/shared")
    first = world.hooks(owner="a")
    await world.until(lambda: first.deliveries, "a holds it")
    second = world.hooks(owner="b")
    world.clock.advance(second.tick)
    await world.until(lambda: not second._ticking and not first._ticking, "both ticked")
    assert not second.deliveries
    both = [first, second]
    await world.settle(both, raise_("demand", 1, 1_000), raise_("silent", 1, 1_000))
    await world.until(lambda: len(world.receiver.posts) == 2, "delivered by a")
    await first.stopService()
    world.clock.advance(second.tick)
    await world.until(lambda: second.deliveries, "b took the webhook over")
    await world.settle(both, clear("demand", 1, 2_000))
    await world.until(lambda: len(world.receiver.posts) == 3, "delivered by b")
    assert [p.event_id for p in world.receiver.posts] == [1, 2, 3]
    assert second.deliveries[webhook].cursor == 3


@pytest_twisted.ensureDeferred
async def test_a_removed_webhook_gets_nothing_more(world: World) -> None:
    kept = await world.register("/kept")
    gone = await world.register("/gone")
    hooks = world.hooks()
    await world.until(lambda: len(hooks.deliveries) == 2, "held")
    await world.settle([hooks], raise_("demand", 1, 1_000))
    await world.until(lambda: len(world.receiver.posts) == 2, "delivered")
    await world.store.remove_webhook(gone, 2_000)
    hooks.removed(gone)
    assert set(hooks.deliveries) == {kept}
    assert world.sample("meterd_webhook_deliveries_total", gone) is None
    await world.settle([hooks], clear("demand", 1, 2_000))
    await world.until(lambda: len(world.receiver.to("/kept")) == 2, "the kept one goes on")
    world.clock.advance(hooks.tick)
    await world.until(lambda: not hooks._ticking, "ticked")
    assert [p.event_id for p in world.receiver.to("/gone")] == [1]
    assert set(hooks.deliveries) == {kept}
