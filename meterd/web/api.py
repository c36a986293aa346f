"""The HTTP API of DESIGN §3 as a thin adapter over the domain modules.

One leaf resource routes by path. Each handler is declared with its route
(:mod:`meterd.web.routes`: method, path, who may call it, its fields, its
answers) and returns ``(status, body)`` or raises :class:`ApiError`; the
same declarations are ``/openapi.json``. Anything unexpected becomes a logged
500, never a traceback on the wire; bad input never gets that far.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson
from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from meterd import credentials, exports, periods
from meterd.alarms import Alarms, UnknownAlarm, alarm_json, view_json
from meterd.bill_cache import BillCache
from meterd.directory import OPERATOR, Directory, Principal
from meterd.ingest import Ingest, Overloaded
from meterd.metrics import Metrics
from meterd.readings import (
    MAX_KWH,
    MAX_METER_ID,
    MAX_SEQ,
    US_PER_MS,
    InvalidField,
    Outcome,
    Reading,
    timestamp_at,
    us_edges,
    wh_of,
)
from meterd.registers import kwh
from meterd.store.base import Actor, AlreadyExists, Customer, NotFound, Store, StoreError, Usage
from meterd.tariff import LIGACOES, Tariff
from meterd.web import params as p
from meterd.web import routes
from meterd.web.errors import ApiError, bad_request, forbidden, not_found, unauthorized
from meterd.web.exchange import Answer, Incoming, Reply, Streamed, write_answer
from meterd.web.formats import FORMAT, wants_csv
from meterd.web.routes import Route, route
from meterd.web.streaming import write_stream

log = Logger()
T = TypeVar("T")

JSON = b"application/json; charset=utf-8"
MODES = ("register", "interval")
MAX_HISTORY_PERIODS = 30_000  # days back to 1970 for decades to come; months and years meet 1970 first
MAX_CURSOR = 2**63 - 1  # alarm and event ids are BIGINT


@dataclass(frozen=True)
class Settings:
    no_auth: bool = False
    tz: str = "America/Sao_Paulo"
    limit_w: int = 10_000
    limit_wh: int = 1_000_000
    meter_mode: str = "register"


@dataclass(frozen=True)
class Call:
    incoming: Incoming
    params: dict[str, Any]  # as sent: the query string and the JSON body, merged
    args: dict[str, Any]  # the route's fields, parsed (routes.Route.parse)
    principal: Principal | None


#: A handler answers ``(status, JSON object)``, or a reply of its own (another media type, a streamed body).
Handler = Callable[[Call], Awaitable[tuple[int, dict[str, Any]] | Reply]]

# -- the fields the routes share --------------------------------------------------

ID = routes.taxid()
METER = routes.integer("id_medidor", "the meter, numbered per customer from 1", minimum=1, maximum=MAX_METER_ID)
PERIODO = "periods back (0 = the current one); no period starts before 1970"


class Api:
    """Route handlers; everything they need is given, nothing is global.

    Each handler is declared with :func:`meterd.web.routes.route`: its
    fields are parsed before it runs (``call.args``) and its declaration is
    also its entry in ``/openapi.json``.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        directory: Directory,
        ingest: Ingest,
        metrics: Metrics,
        clock: IReactorTime,
        tariff: Tariff,
        bills: BillCache,
        alarms: Alarms | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        self.tariff = tariff
        self.bills = bills
        self.alarm_service = alarms
        #: Read from the data dir when meterd starts (meterd.service.Meterd), not when it is built.
        self.operator_token = ""
        self._counters: dict[tuple[str, int], Counter] = {}
        self.routes: dict[str, tuple[Route, Handler]] = {r.path: (r, getattr(self, r.handler)) for r in routes.routes_of(Api)}

    def mount(self, group: object) -> None:
        """Serve the routes ``group``'s class declares, handled by ``group`` (a feature's own module)."""
        for r in routes.routes_of(type(group)):
            if r.path in self.routes:
                raise ValueError(f"{r.path} is declared twice")
            self.routes[r.path] = (r, getattr(group, r.handler))

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def actor(self, call: Call) -> Actor:
        """Who makes the change ``call`` asks for, for the audit log: the principal's kind, the client's address, now."""
        assert call.principal is not None  # routes that change something need credentials
        return Actor(call.principal.kind, call.incoming.client, self.now_ms())

    # -- authentication ----------------------------------------------------

    def authenticate(self, header: str | None) -> Principal | None:
        """Who the Authorization header names (None without one)."""
        if self.settings.no_auth:
            return OPERATOR
        if header is None:
            return None
        token = bearer_token(header)
        if self.operator_token and credentials.same_secret(token, self.operator_token):
            return OPERATOR
        return self.directory.principal(token)

    async def identify(self, route: Route, incoming: Incoming, params: dict[str, Any]) -> Principal | None:
        """The caller, or 401 when the route needs credentials and these are none."""
        principal = self.authenticate(incoming.authorization)
        if route.access == "public" or principal is not None:
            return principal
        token_given = incoming.authorization is not None
        if token_given and self.store.shared:
            # The token may belong to a customer or meter another process registered.
            await self._refresh(params)
            principal = self.authenticate(incoming.authorization)
        if principal is None:
            raise unauthorized("no valid credentials" if token_given else "a bearer token is required")
        return principal

    def authorize(self, route: Route, principal: Principal | None, args: dict[str, Any]) -> None:
        """403 unless ``principal`` may call ``route`` for the customer (and meter) it names."""
        if route.access == "public" or principal is OPERATOR:
            return
        assert principal is not None  # identify() raised 401 otherwise
        if route.access == "operator":
            raise forbidden("only the operator may do this")
        if principal.customer_id != args["id"]:
            raise forbidden("these credentials belong to another customer")
        if route.access == "customer" and principal.kind != "customer":
            raise forbidden("a meter key only authorises posting that meter's readings")
        if route.access == "meter":
            if principal.kind != "meter":
                raise forbidden("only the meter's key (or the operator) may post its readings")
            if principal.meter_id != args["id_medidor"]:
                raise forbidden("this key belongs to another meter")

    async def _refresh(self, params: dict[str, Any]) -> None:
        """Load a customer (and the named meter) that this process has not seen yet."""
        try:
            cid = ID.value(params)
            meter_id = METER.optional().value(params)
        except ApiError:
            return
        await self.customer(cid, refresh_only=True)
        if meter_id is not None:
            try:
                await self.meter_ids(cid, meter_id)
            except ApiError:
                return

    async def customer(self, cid: str, *, refresh_only: bool = False) -> Customer:
        found = self.directory.customers.get(cid)
        if found is None and self.store.shared:  # unshared: the directory holds every customer
            found = await self.store.get_customer(cid)
            if found is not None:
                self.directory.add_customer(found)
        if found is None and not refresh_only:
            raise not_found("unknown_customer", f"customer {cid} is not registered")
        return found  # type: ignore[return-value]

    async def meter_ids(self, cid: str, meter_id: int | None) -> list[int]:
        """The customer's meters, or the one asked for (404 if it does not exist)."""
        if meter_id is None:
            if self.store.shared:
                await self._load_meters(cid)
            return self.directory.meter_ids(cid)
        if (cid, meter_id) not in self.directory.meters:
            meter = await self.store.get_meter(cid, meter_id) if self.store.shared else None
            if meter is None:
                raise not_found("unknown_meter", f"customer {cid} has no meter {meter_id}")
            self.directory.add_meter(meter)
        return [meter_id]

    async def _load_meters(self, cid: str) -> None:
        """Another process may have registered meters of this customer: learn them."""
        for status in await self.store.meter_status(cid):
            if (cid, status.meter_id) not in self.directory.meters:
                meter = await self.store.get_meter(cid, status.meter_id)
                if meter is not None:
                    self.directory.add_meter(meter)

    # -- answering ----------------------------------------------------------

    async def respond(self, incoming: Incoming) -> Reply:
        """The answer to one request; anything unexpected is logged and becomes a 500."""
        try:
            return await self._respond(incoming)
        except Exception:
            log.failure("unhandled error answering {path}", Failure(), path=incoming.path)
            error = ApiError(500, "internal_error", "internal error; it has been logged")
            return self._answer("error", error.status, orjson.dumps(error.body()), error.headers)

    async def _respond(self, incoming: Incoming) -> Reply:
        """In the order the API promises: 404 route, 405, 400/415 body, 401, 400 fields, 403, then the handler.

        (A body over 64 KiB never gets here: the HTTP channel answers 413 from its headers.)
        """
        path = incoming.path
        found = self.routes.get(path)
        label = path if found else "unknown"
        try:
            if found is None:
                raise not_found("unknown_route", f"no route {path}")
            route, handler = found
            allowed = (route.method, "HEAD") if route.method == "GET" else (route.method,)
            if incoming.method not in allowed:
                raise ApiError(405, "method_not_allowed", f"{path} accepts {', '.join(allowed)}", {"Allow": ", ".join(allowed)})
            params = p.parse(incoming.body, incoming.content_type, incoming.query)
            principal = await self.identify(route, incoming, params)
            args = route.parse(params)
            self.authorize(route, principal, args)
            result = await handler(Call(incoming, params, args, principal))
        except ApiError as e:
            return self._answer(label, e.status, orjson.dumps(e.body()), e.headers)
        except StoreError:
            error = ApiError(503, "store_unavailable", "the store is unavailable; retry shortly")
            return self._answer(label, 503, orjson.dumps(error.body()), {})
        if isinstance(result, (Answer, Streamed)):
            self._counter(label, result.status).inc()
            return result
        status, payload = result
        return self._answer(label, status, orjson.dumps(payload), {})

    async def call_as(
        self, principal: Principal, method: str, path: str, params: Mapping[str, Any], client: str = ""
    ) -> dict[str, Any] | Reply:
        """A route called in this process on behalf of ``principal``: what the web portal's pages show.

        The same declaration parses ``params`` (strings, as in a query
        string), :meth:`authorize` decides as for a request over HTTP, and the
        route's own handler answers, so a customer's login session sees exactly what
        the customer's token would; ``client`` is the browser's address (the
        audit log's "from where"). Raises :class:`ApiError` as the handler
        does (and ``StoreError``); returns the JSON body of a success, or the
        handler's own reply (a CSV, a streamed body).
        """
        found = self.routes.get(path)
        if found is None or found[0].method != method:
            raise not_found("unknown_route", f"no route {method} {path}")
        route, handler = found
        args = route.parse(params)
        self.authorize(route, principal, args)
        incoming = Incoming(method, path, b"", None, None, b"", client)
        result = await handler(Call(incoming, dict(params), args, principal))
        if isinstance(result, Answer) and result.content_type == JSON:  # a JSON body the handler had as bytes (an issued bill)
            decoded: dict[str, Any] = orjson.loads(result.body)
            return decoded
        return result if isinstance(result, (Answer, Streamed)) else result[1]

    def _answer(self, label: str, status: int, body: bytes, headers: dict[str, str]) -> Answer:
        self._counter(label, status).inc()
        return Answer(status, JSON, body, headers)

    def count(self, route: str, status: int, n: int) -> None:
        """Answers given elsewhere (an HTTP worker's own), in the request counters."""
        self._counter(route, status).inc(n)

    def _counter(self, label: str, status: int) -> Counter:
        """The request counter's child for this route and status, looked up once.

        ``labels()`` formats and locks on every call; the routes are a fixed
        set ("unknown" for the rest) and statuses few, so the children are kept.
        """
        counter = self._counters.get((label, status))
        if counter is None:
            counter = self._counters[(label, status)] = self.metrics.http.labels(label, str(status))
        return counter

    # -- registration ------------------------------------------------------

    @route(
        "POST", "/cadCliente", "operator",
        ID,
        routes.text("name", "the customer's name as it is written (accents and all)"),
        routes.choice("ligacao", "the connection: single-, two- or three-phase", LIGACOES).optional("mono"),
        routes.kilo("limite_kw", "demand alarm limit, kW (default --limit-kw)", maximum=MAX_KWH).optional(),
        routes.kilo("limite_kwh", "monthly alarm limit, kWh (default --limit-kwh)", maximum=MAX_KWH).optional(),
        routes.zone("tz", "IANA time zone of the customer's calendar (default --tz)").optional(),
        summary="Register a customer (operator token)",
        description="Returns the customer's bearer token, once; only its hash is stored.",
        tag="registration", ok=((201, "registered", "CustomerCreated"),), errors=(409, 503),
    )
    async def register_customer(self, call: Call) -> tuple[int, dict[str, Any]]:
        a, s = call.args, self.settings
        token = credentials.new_token()
        record = Customer(
            a["id"], a["name"], a["ligacao"], a["limite_kw"] or s.limit_w, a["limite_kwh"] or s.limit_wh,
            a["tz"] or s.tz, credentials.token_hash(token), self.now_ms(),
        )
        try:
            await self.store.create_customer(record, self.actor(call))
        except AlreadyExists:
            raise ApiError(409, "customer_exists", f"customer {record.id} is already registered") from None
        self.directory.add_customer(record)
        log.info("registered customer {id}", id=record.id)
        return 201, {**customer_json(record), "token": token}

    @route(
        "POST", "/cadMedidor", "operator",
        ID,
        routes.choice(
            "mode", "register: valor is the cumulative register; interval: kWh since the previous reading (default --meter-mode)", MODES,
        ).optional(),
        summary="Register a meter of a customer (operator token)",
        description=(
            "Meter ids are numbered per customer 1, 2, 3... The returned `key` (64 hex chars)"
            " signs the meter's datagrams and authorises `/postConsumo`; it is shown once."
        ),
        tag="registration", ok=((201, "registered", "MeterCreated"),), errors=(404, 503),
    )
    async def register_meter(self, call: Call) -> tuple[int, dict[str, Any]]:
        cid = call.args["id"]
        mode = call.args["mode"] or self.settings.meter_mode
        await self.customer(cid)
        key = credentials.new_meter_key()
        try:
            meter = await self.store.create_meter(cid, mode, key, self.now_ms(), self.actor(call))
        except NotFound:
            raise not_found("unknown_customer", f"customer {cid} is not registered") from None
        self.directory.add_meter(meter)
        self.bills.forget_customer(cid)
        log.info("registered meter {meter} of customer {id}", id=cid, meter=meter.meter_id)
        return 201, {"id": cid, "id_medidor": meter.meter_id, "mode": mode, "key": key}

    @route(
        "POST", "/novoToken", "operator",
        ID,
        summary="Give a customer a new token (operator token)",
        description=(
            "For a customer who lost the token, or never got it (its registration's answer was lost)."
            " The old token opens nothing from this answer on; the new one is shown once."
        ),
        tag="registration", ok=((200, "the new token", "NewToken"),), errors=(404, 503),
    )
    async def new_token(self, call: Call) -> tuple[int, dict[str, Any]]:
        cid = call.args["id"]
        await self.customer(cid)
        token = credentials.new_token()
        try:
            customer = await self.store.replace_token(cid, credentials.token_hash(token), self.now_ms(), self.actor(call))
        except NotFound:
            raise not_found("unknown_customer", f"customer {cid} is not registered") from None
        self.directory.add_customer(customer)
        log.info("issued a new token for customer {id}; the old one opens nothing", id=cid)
        return 200, {"id": cid, "token": token}

    @route(
        "POST", "/novaChave", "operator",
        ID,
        METER,
        summary="Give a meter a new key (operator token)",
        description=(
            "For a meter whose key was lost or exposed. Datagrams signed with the old key are refused,"
            " and it posts nothing, from this answer on; the new key is shown once."
        ),
        tag="registration", ok=((200, "the new key", "NewKey"),), errors=(404, 503),
    )
    async def new_key(self, call: Call) -> tuple[int, dict[str, Any]]:
        cid, meter_id = call.args["id"], call.args["id_medidor"]
        await self.customer(cid)
        await self.meter_ids(cid, meter_id)
        key = credentials.new_meter_key()
        try:
            meter = await self.store.replace_key(cid, meter_id, key, self.now_ms(), self.actor(call))
        except NotFound:
            raise not_found("unknown_meter", f"customer {cid} has no meter {meter_id}") from None
        self.directory.add_meter(meter)
        log.info("issued a new key for meter {meter} of customer {id}; the old one is refused", id=cid, meter=meter_id)
        return 200, {"id": cid, "id_medidor": meter_id, "key": key}

    # -- readings ----------------------------------------------------------

    @route(
        "POST", "/postConsumo", "meter",
        ID,
        METER,
        routes.kwh(
            "valor", "kWh: the register (register meters) or the energy since the previous reading (interval meters); at most 3 decimals",
            maximum=MAX_KWH,
        ),
        routes.timestamp("timestamp", "unix seconds, fractions allowed (to the microsecond)"),
        routes.integer("seq", "the meter's sequence number (acknowledged over UDP)", maximum=MAX_SEQ).optional(),
        summary="Store one reading (the meter's key, or the operator token)",
        description=(
            "Answered after the reading is committed. The same (customer, meter, timestamp)"
            " with the same value is a duplicate (200); with another value a 409 `conflict`."
            " A register reading that would make the register go backwards is a 422"
            " `register_backwards`; one after the final reading of a retired meter a 422 `meter_retired`"
            " (`/retiraMedidor`; readings before it are taken as any late reading)."
            " 503 `overloaded` when too many readings wait to be stored."
            " With `--no-auth`, a request without credentials has its `valor` rounded half up to the Wh."
        ),
        tag="readings", ok=((201, "stored", "ReadingStored"), (200, "already stored with the same value", "ReadingStored")),
        errors=(404, 409, 422, 503),
    )
    async def post_reading(self, call: Call) -> tuple[int, dict[str, Any]]:
        a = call.args
        unauthenticated = self.settings.no_auth and call.incoming.authorization is None  # the assignment's clients
        try:
            ts = timestamp_at(a["timestamp"], self.clock.seconds())
            try:
                wh, rounded = wh_of("valor", a["valor"]), False
            except InvalidField:
                if not unauthenticated:
                    raise
                wh, rounded = wh_of("valor", a["valor"], round_to_wh=True), True
        except InvalidField as e:
            raise bad_request(e.code, str(e)) from None
        reading = Reading(a["id"], a["id_medidor"], ts, wh, a["seq"])
        await self.customer(reading.customer_id)
        await self.meter_ids(reading.customer_id, reading.meter_id)
        if rounded:
            self.metrics.rounded.labels("http").inc()
        try:
            outcome = await self.ingest.submit_waiting(reading)
        except Overloaded:
            raise ApiError(503, "overloaded", "too many readings are waiting to be stored; retry shortly") from None
        if outcome is Outcome.STORED:
            return 201, {"status": "stored"}
        if outcome is Outcome.DUPLICATE:
            return 200, {"status": "duplicate"}
        if outcome is Outcome.CONFLICT:
            raise ApiError(409, "conflict", "a different value is already stored for this meter and timestamp")
        if outcome is Outcome.BACKWARDS:
            raise ApiError(422, "register_backwards", "the register would go backwards against its neighbouring readings")
        if outcome is Outcome.RETIRED:
            raise ApiError(422, "meter_retired", "the meter was retired at a final reading before this reading's time")
        raise not_found("unknown_meter", f"customer {reading.customer_id} has no meter {reading.meter_id}")

    # -- queries -------------------------------------------------------------

    async def usage(self, customer: Customer, meter_ids: list[int], edges: list[int]) -> list[Usage]:
        """Consumption between calendar edges (ms), read at the store's reading times (us)."""
        meters = [(m, self.directory.meters[(customer.id, m)].meter.mode) for m in meter_ids]
        return await self.store.usage(customer.id, meters, us_edges(edges))

    @route(
        "GET", "/getConsumoHist", "customer",
        ID,
        routes.choice("kind", "D: a day by hours, M: a month by days, Y: a year by months", periods.KINDS, fold=str.upper),
        routes.integer("periodo", PERIODO, maximum=MAX_HISTORY_PERIODS).optional(0),
        METER.optional(description="only this meter (default: all of the customer's)"),
        FORMAT,
        summary="Consumption history of a calendar day, month or year",
        description=(
            "Periods are calendar periods in the customer's time zone. `D` has hourly buckets,"
            " `M` daily, `Y` monthly. Register meters: consumption is the difference of the"
            " linearly interpolated register; a bucket interpolated across a gap longer than"
            " an hour is `estimated`. As CSV (`format=csv` or `Accept: text/csv`): one row per"
            " bucket, `start,end,kwh,estimated` and a `medidor_N_kwh` column per meter, with a"
            " `Content-Disposition` file name and the number of rows in `X-Total-Count`."
        ),
        ok=((200, "the history", "History"),), errors=(404, 503), also=(exports.CSV_MEDIA,),
    )
    async def history(self, call: Call) -> tuple[int, dict[str, Any]] | Answer:
        a = call.args
        customer = await self.customer(a["id"])
        kind, periodo = a["kind"], a["periodo"]
        meter_ids = await self.meter_ids(customer.id, a["id_medidor"])
        tz = ZoneInfo(customer.tz)
        try:
            start, end = periods.period_range(kind, periodo, self.now_ms(), tz)
        except ValueError:
            raise bad_request("out_of_range", f"periodo reaches before {periods.FIRST_YEAR}") from None
        edges = periods.bucket_edges(kind, start, end, tz)
        usages = await self.usage(customer, meter_ids, edges)
        if wants_csv(a["format"], call.incoming.accept):
            filename = exports.history_filename(customer.name, customer.id, a["id_medidor"], kind, start, tz)
            body = exports.history_csv(edges, [(u.meter_id, u.buckets) for u in usages], tz)
            headers = {"Content-Disposition": exports.attachment(filename), "X-Total-Count": str(len(edges) - 1)}
            return Answer(200, exports.CSV, body, headers)
        buckets = []
        for i in range(len(edges) - 1):
            wh = sum(u.buckets[i][0] for u in usages)
            estimated = any(u.buckets[i][1] for u in usages)
            buckets.append({"start": periods.iso(edges[i], tz), "kwh": kwh(wh), "estimated": estimated})
        total = sum(wh for u in usages for wh, _ in u.buckets)
        return 200, {
            "id": customer.id,
            "kind": kind,
            "periodo": periodo,
            "tz": customer.tz,
            "start": periods.iso(start, tz),
            "end": periods.iso(end, tz),
            "total_kwh": kwh(total),
            "estimated": any(b["estimated"] for b in buckets),
            "buckets": buckets,
            "meters": [{"id_medidor": u.meter_id, "total_kwh": kwh(sum(wh for wh, _ in u.buckets))} for u in usages],
        }

    @route(
        "GET", "/getMedidores", "customer",
        ID,
        summary="The customer's meters and their latest readings",
        ok=((200, "the meters", "Meters"),), errors=(404, 503),
    )
    async def meters(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(call.args["id"])
        statuses = await self.store.meter_status(customer.id)
        tz = ZoneInfo(customer.tz)
        return 200, {
            "id": customer.id,
            "meters": [
                {
                    "id_medidor": s.meter_id,
                    "mode": s.mode,
                    "last_seen": None if s.last_seen_ms is None else periods.iso(s.last_seen_ms, tz),
                    "last_reading_at": None if s.last_ts is None else periods.iso(s.last_ts // US_PER_MS, tz),
                    "last_kwh": None if s.last_wh is None else kwh(s.last_wh),
                }
                for s in statuses
            ],
        }

    def running_alarms(self) -> Alarms:
        """The alarm service, or a 503 where this process runs none."""
        if self.alarm_service is None:
            raise ApiError(503, "alarms_unavailable", "alarms are not running in this process")
        return self.alarm_service

    @route(
        "GET", "/getAlarme", "customer",
        ID,
        routes.integer("cursor", "the `cursor` of the previous answer", maximum=MAX_CURSOR).optional(),
        summary="Active alarms and the alarm events after a cursor",
        description=(
            "`events` are those after the `cursor` sent (all recent ones without a cursor);"
            " polling with the returned `cursor` misses nothing."
        ),
        ok=((200, "alarms and events", "Alarms"),), errors=(404, 503),
    )
    async def alarms(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(call.args["id"])
        view = await self.running_alarms().view(customer.id, call.args["cursor"])
        return 200, view_json(customer.id, view, ZoneInfo(customer.tz))

    @route(
        "POST", "/ackAlarme", "customer",
        ID,
        routes.integer("alarm_id", "the alarm to acknowledge", minimum=1, maximum=MAX_CURSOR),
        summary="Acknowledge an alarm",
        description="Answers the alarm after the acknowledgement.",
        ok=((200, "the acknowledged alarm", "Alarm"),), errors=(404, 503),
    )
    async def ack_alarm(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(call.args["id"])
        alarm_id = call.args["alarm_id"]
        try:
            alarm = await self.running_alarms().ack(customer.id, alarm_id)
        except UnknownAlarm:
            raise not_found("unknown_alarm", f"customer {customer.id} has no alarm {alarm_id}") from None
        return 200, alarm_json(alarm, ZoneInfo(customer.tz))

    # -- operations --------------------------------------------------------

    @route(
        "GET", "/health", "public",
        summary="Liveness and store status", tag="operations",
        ok=((200, "the server and its store work", "Health"), (503, "the store is unavailable", "HealthDegraded")),
    )
    async def health(self, call: Call) -> tuple[int, dict[str, Any]]:
        try:
            await self.store.ping()
        except StoreError:
            return 503, {"status": "degraded", "db": "unavailable"}
        return 200, {"status": "ok", "db": "ok", "pending": self.ingest.pending}

    @route(
        "GET", "/metrics", "public",
        summary="Prometheus metrics", tag="operations", media="text/plain",
        ok=((200, "Prometheus text exposition format 0.0.4", None),),
    )
    async def prometheus(self, call: Call) -> Answer:
        return Answer(200, b"text/plain; version=0.0.4; charset=utf-8", self.metrics.render(), {})



def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("use Authorization: Bearer <token>")
    return token


def customer_json(c: Customer) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "ligacao": c.ligacao, "limite_kw": kwh(c.limit_w), "limite_kwh": kwh(c.limit_wh), "tz": c.tz}


def write_reply(request: Request, reply: Reply) -> None:
    """A whole answer at once, a streamed one as the client reads it."""
    if isinstance(reply, Streamed):
        write_stream(request, reply)
    else:
        write_answer(request, reply)


def run_now(coroutine: Coroutine[Deferred[Any], Any, T], deliver: Callable[[T], object]) -> None:
    """Run ``coroutine`` as far as it goes without waiting, then ``deliver`` its result.

    If it must wait, Twisted drives the rest and delivers when it is done.

    Most answers wait for nothing (a cached bill, the alarms held in memory):
    stepping the coroutine once answers them without the Deferred and context
    copy of ``Deferred.fromCoroutine``, a noticeable share of such a request's
    cost. When it did stop, it stopped on a Deferred without a result;
    ``fromCoroutine`` resumes it there (a Deferred awaited again before it has
    a result just yields itself again), so nothing is lost or run twice.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        deliver(done.value)
        return
    Deferred.fromCoroutine(coroutine).addCallback(deliver)
