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
# Requests remembered byte for byte (see WorkerAlarms.repeat); past this the memory starts over.
MAX_REPEATS = 20_000
MAX_REPEAT_BYTES = 512  # a longer request line and token than any client's poll is not remembered

#: A request as its client sent it: the request target and the Authorization header.
RawRequest = tuple[bytes, bytes]


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
        self.repeats: dict[RawRequest, tuple[str, int | None]] = {}  # -> the key of the view it was answered with

    def add_customers(self, rows: list[list[str]]) -> None:
        for customer_id, tz, hashed in rows:
            self.customers[hashed] = (customer_id, ZoneInfo(tz))

    def repeat(self, raw: RawRequest) -> bytes | None:
        """The body answered to this very request before, while its view is current; else None.

        Clients poll with the same request again and again. Parsing it and
        hashing its token again (4-5 us of the ~60 us of CPU a worker spends on
        a request, and the same outcome every time: a token never changes
        owner) is skipped once :meth:`answer` has authorized it: what it learnt
        is which view the request names, and that view's generation is still
        checked.
        """
        key = self.repeats.get(raw)
        if key is None:
            return None
        cached = self.views.get(key)
        if cached is None or cached[0] != self.generation.value():
            return None
        return cached[1]

    async def answer(self, incoming: Incoming, raw: RawRequest | None = None) -> bytes | None:
        """The body of a 200 answer to this ``/getAlarme`` request (the worker routes only those here), or None: meterd answers it.

        ``raw``: the request as sent, when it is a plain GET (no body) that :meth:`repeat` may answer next time.
        """
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
        if raw is not None and len(raw[0]) + len(raw[1]) <= MAX_REPEAT_BYTES:
            if len(self.repeats) >= MAX_REPEATS:
                self.repeats.clear()
            self.repeats[raw] = key
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
