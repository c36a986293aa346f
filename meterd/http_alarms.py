"""``/getAlarme`` answered inside an HTTP worker, without a round trip to meterd.

Customers poll their alarms, and under ingest meterd's reactor is busy with
flushes: a request that waits for it waits for them. A worker answers the
plain case itself (a customer's own token, GET, parameters that parse) from
the SQLite file, with the store's own query, and keeps each view it read
until meterd's alarm generation (:mod:`meterd.generation`) moves on; every
other request, including every error, goes to meterd, so errors and
authorisation are decided in one place. The answer is what meterd would give:
the same query (``store.alarm_view``, which meterd itself uses whenever its
book does not cover a cursor), the same cursor rule and the same JSON.
"""

from __future__ import annotations

import sqlite3
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from meterd.alarms import page, view_json
from meterd.credentials import token_hash
from meterd.generation import Generation
from meterd.store.sqlite import SqliteStore
from meterd.web import params as p
from meterd.web.api import bearer_token
from meterd.web.errors import ApiError
from meterd.web.exchange import Incoming

log = Logger()

MAX_VIEWS = 100_000  # cached views; past this the cache starts over


class LocalReads(SqliteStore):
    """The store's read queries, run at once on one query-only connection of this thread.

    A worker's reactor has nothing better to do meanwhile, and a read in WAL
    mode never waits for meterd's writer.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        # rw, not rwc: a missing file is an error, never a new empty database
        self._conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None)
        self._conn.execute("PRAGMA query_only=ON")

    def _read(self, fn: Any, *args: Any) -> Deferred[Any]:
        cursor = self._conn.cursor()
        cursor.execute("BEGIN")  # one snapshot for the query's statements
        try:
            return succeed(fn(cursor, *args))
        finally:
            cursor.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


class WorkerAlarms:
    def __init__(self, store: LocalReads, generation: Generation, recent_events: int) -> None:
        self.store = store
        self.generation = generation
        self.recent_events = recent_events
        self.customers: dict[str, tuple[str, ZoneInfo]] = {}  # token hash -> (customer id, time zone)
        self.views: dict[tuple[str, int | None], tuple[int, bytes]] = {}  # -> (generation, body)

    def add_customers(self, rows: list[list[str]]) -> None:
        for customer_id, tz, hashed in rows:
            self.customers[hashed] = (customer_id, ZoneInfo(tz))

    async def answer(self, incoming: Incoming) -> bytes | None:
        """The body of a 200 answer to this ``/getAlarme`` request (the worker routes only those here), or None: meterd answers it."""
        if incoming.method != "GET" or incoming.authorization is None:
            return None
        try:
            token = bearer_token(incoming.authorization)
            params = p.parse(incoming.body, incoming.content_type, incoming.query)
            customer_id = p.customer(params)
            cursor = p.integer(params, "cursor", default=None, maximum=2**63 - 1)
        except ApiError:
            return None
        customer = self.customers.get(token_hash(token))
        if customer is None or customer[0] != customer_id:
            return None
        generation = self.generation.value()  # before the read: a later settlement makes it stale
        key = (customer_id, cursor)
        cached = self.views.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1]
        try:
            active, events, last = await self.store.alarm_view(customer_id, cursor, self.recent_events)
        except sqlite3.Error as e:
            log.warn("cannot read alarms, meterd answers: {error}", error=str(e))
            return None
        body = orjson.dumps(view_json(customer_id, page(active, events, last, cursor, self.recent_events), customer[1]))
        if len(self.views) >= MAX_VIEWS:
            self.views.clear()
        self.views[key] = (generation, body)
        return body
