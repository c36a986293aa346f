"""The HTTP API of DESIGN §3 as a thin adapter over the domain modules.

One leaf resource routes by path; each route names the methods it allows and
who may call it, and its handler returns ``(status, body)`` or raises
:class:`ApiError`. Anything unexpected becomes a logged 500, never a traceback
on the wire; bad input never gets that far.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from meterd import credentials, periods
from meterd.alarms import Alarms, UnknownAlarm, alarm_json, view_json
from meterd.bill_cache import BillCache
from meterd.billing import compute_bill
from meterd.directory import OPERATOR, Directory, Principal
from meterd.ingest import Ingest, Overloaded
from meterd.metrics import Metrics
from meterd.readings import US_PER_MS, InvalidField, Outcome, kwh_to_wh, parse_reading, parse_rounding, us_edges
from meterd.registers import kwh
from meterd.store.base import AlreadyExists, Customer, NotFound, Store, StoreError, Usage
from meterd.tariff import LIGACOES, Tariff
from meterd.web import params as p
from meterd.web.errors import ApiError, bad_request, forbidden, not_found, unauthorized
from meterd.web.exchange import Answer, Incoming, incoming_of, write_answer
from meterd.web.openapi import openapi_document

log = Logger()
T = TypeVar("T")

JSON = b"application/json; charset=utf-8"
MODES = ("register", "interval")


@dataclass(frozen=True)
class Settings:
    operator_token: str
    no_auth: bool = False
    tz: str = "America/Sao_Paulo"
    limit_w: int = 10_000
    limit_wh: int = 1_000_000
    meter_mode: str = "register"


@dataclass(frozen=True)
class Call:
    incoming: Incoming
    params: dict[str, Any]
    principal: Principal | None


Handler = Callable[[Call], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    access: str  # "public", "operator", "customer" (own id) or "meter" (own meter)
    handler: Handler


class Api:
    """Route handlers; everything they need is given, nothing is global."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        directory: Directory,
        ingest: Ingest,
        metrics: Metrics,
        clock: IReactorTime,
        tariff: Tariff,
        alarms: Alarms | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.directory = directory
        self.ingest = ingest
        self.metrics = metrics
        self.clock = clock
        self.tariff = tariff
        self.alarm_service = alarms
        self._counters: dict[tuple[str, int], Counter] = {}
        # Other processes' late readings never reach this cache's observer: no caching on a shared store.
        self.bills = BillCache(max_entries=0 if store.shared else 50_000)
        ingest.observers.append(lambda readings, outcomes, _: self.bills.readings_stored(readings, outcomes))
        self.routes: dict[str, Route] = {
            "/cadCliente": Route(("POST",), "operator", self.register_customer),
            "/cadMedidor": Route(("POST",), "operator", self.register_meter),
            "/postConsumo": Route(("POST",), "meter", self.post_reading),
            "/getConsumoHist": Route(("GET",), "customer", self.history),
            "/getFatura": Route(("GET",), "customer", self.bill),
            "/getAlarme": Route(("GET",), "customer", self.alarms),
            "/ackAlarme": Route(("POST",), "customer", self.ack_alarm),
            "/getMedidores": Route(("GET",), "customer", self.meters),
            "/health": Route(("GET",), "public", self.health),
            "/metrics": Route(("GET",), "public", self.prometheus),
            "/openapi.json": Route(("GET",), "public", self.openapi),
        }

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    # -- authentication ----------------------------------------------------

    def authenticate(self, header: str | None) -> Principal | None:
        """Who the Authorization header names (None without one)."""
        if self.settings.no_auth:
            return OPERATOR
        if header is None:
            return None
        token = bearer_token(header)
        if credentials.same_secret(token, self.settings.operator_token):
            return OPERATOR
        return self.directory.principal(token)

    async def authorize(self, route: Route, call: Call) -> None:
        principal = call.principal
        if route.access == "public" or principal is OPERATOR:
            return
        token_given = call.incoming.authorization is not None
        if principal is None:
            if token_given and self.store.shared:
                # The token may belong to a customer or meter another process registered.
                await self._refresh(call.params)
                principal = self.authenticate(call.incoming.authorization)
            if principal is None:
                raise unauthorized("no valid credentials" if token_given else "a bearer token is required")
        if route.access == "operator":
            raise forbidden("only the operator may do this")
        cid = p.customer(call.params)
        if principal.customer_id != cid:
            raise forbidden("these credentials belong to another customer")
        if route.access == "customer" and principal.kind != "customer":
            raise forbidden("a meter key only authorises posting that meter's readings")
        if route.access == "meter" and principal.kind != "meter":
            raise forbidden("only the meter's key (or the operator) may post its readings")
        if route.access == "meter" and principal.kind == "meter":
            if principal.meter_id != p.integer(call.params, "id_medidor", minimum=1):
                raise forbidden("this key belongs to another meter")

    async def _refresh(self, params: dict[str, Any]) -> None:
        """Load a customer (and the named meter) that this process has not seen yet."""
        try:
            cid = p.customer(params)
        except ApiError:
            return
        await self.customer(cid, refresh_only=True)
        if "id_medidor" in params:
            try:
                await self.meter_ids(cid, p.integer(params, "id_medidor", minimum=1))
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

    async def respond(self, incoming: Incoming) -> Answer:
        """The answer to one request; anything unexpected is logged and becomes a 500."""
        try:
            return await self._respond(incoming)
        except Exception:
            log.failure("unhandled error answering {path}", Failure(), path=incoming.path)
            error = ApiError(500, "internal_error", "internal error; it has been logged")
            return self._answer("error", error.status, orjson.dumps(error.body()), error.headers)

    async def _respond(self, incoming: Incoming) -> Answer:
        path = incoming.path
        route = self.routes.get(path)
        label = path if route else "unknown"
        try:
            if route is None:
                raise not_found("unknown_route", f"no route {path}")
            allowed = route.methods + (("HEAD",) if "GET" in route.methods else ())
            if incoming.method not in allowed:
                raise ApiError(405, "method_not_allowed", f"{path} accepts {', '.join(allowed)}", {"Allow": ", ".join(allowed)})
            if incoming.too_large:
                raise ApiError(413, "body_too_large", "the body is larger than 64 KiB")
            principal = self.authenticate(incoming.authorization)
            call = Call(incoming, p.parse(incoming.body, incoming.content_type, incoming.query), principal)
            await self.authorize(route, call)
            status, payload = await route.handler(call)
        except ApiError as e:
            return self._answer(label, e.status, orjson.dumps(e.body()), e.headers)
        except StoreError:
            error = ApiError(503, "store_unavailable", "the store is unavailable; retry shortly")
            return self._answer(label, 503, orjson.dumps(error.body()), {})
        except _Raw as raw:
            return self._answer(label, 200, raw.body, {}, raw.content_type)
        return self._answer(label, status, orjson.dumps(payload), {})

    def _answer(self, label: str, status: int, body: bytes, headers: dict[str, str], content_type: bytes = JSON) -> Answer:
        self._counter(label, status).inc()
        return Answer(status, content_type, body, headers)

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

    async def register_customer(self, call: Call) -> tuple[int, dict[str, Any]]:
        params, s = call.params, self.settings
        cid = p.customer(params)
        name = p.text(params, "name")
        ligacao = p.choice(params, "ligacao", LIGACOES, default="mono")
        limit_w = _kilo(params, "limite_kw", s.limit_w)
        limit_wh = _kilo(params, "limite_kwh", s.limit_wh)
        tz = p.text(params, "tz", default=s.tz)
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise bad_request("invalid_tz", f"{tz} is not an IANA time zone") from None
        token = credentials.new_token()
        record = Customer(cid, name, ligacao, limit_w, limit_wh, tz, credentials.token_hash(token), self.now_ms())
        try:
            await self.store.create_customer(record)
        except AlreadyExists:
            raise ApiError(409, "customer_exists", f"customer {cid} is already registered") from None
        self.directory.add_customer(record)
        log.info("registered customer {id}", id=cid)
        return 201, {**_customer_json(record), "token": token}

    async def register_meter(self, call: Call) -> tuple[int, dict[str, Any]]:
        cid = p.customer(call.params)
        mode = p.choice(call.params, "mode", MODES, default=self.settings.meter_mode)
        await self.customer(cid)
        key = credentials.new_meter_key()
        try:
            meter = await self.store.create_meter(cid, mode, key, self.now_ms())
        except NotFound:
            raise not_found("unknown_customer", f"customer {cid} is not registered") from None
        self.directory.add_meter(meter)
        self.bills.forget_customer(cid)
        log.info("registered meter {meter} of customer {id}", id=cid, meter=meter.meter_id)
        return 201, {"id": cid, "id_medidor": meter.meter_id, "mode": mode, "key": key}

    # -- readings ----------------------------------------------------------

    async def post_reading(self, call: Call) -> tuple[int, dict[str, Any]]:
        rounded = False
        try:
            if self.settings.no_auth and call.incoming.authorization is None:  # the assignment's clients: see parse_rounding
                reading, rounded = parse_rounding(call.params, self.clock.seconds())
            else:
                reading = parse_reading(call.params, self.clock.seconds())
        except InvalidField as e:
            raise bad_request(e.code, str(e)) from None
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
        raise not_found("unknown_meter", f"customer {reading.customer_id} has no meter {reading.meter_id}")

    # -- queries -------------------------------------------------------------

    async def _usage(self, customer: Customer, meter_ids: list[int], edges: list[int]) -> list[Usage]:
        """Consumption between calendar edges (ms), read at the store's reading times (us)."""
        meters = [(m, self.directory.meters[(customer.id, m)].meter.mode) for m in meter_ids]
        return await self.store.usage(customer.id, meters, us_edges(edges))

    async def history(self, call: Call) -> tuple[int, dict[str, Any]]:
        params = call.params
        customer = await self.customer(p.customer(params))
        kind = p.choice({"kind": str(params.get("kind", "")).upper() or None}, "kind", periods.KINDS)
        periodo = p.integer(params, "periodo", default=0, maximum=10_000)
        meter_id = p.integer(params, "id_medidor", default=None, minimum=1)
        meter_ids = await self.meter_ids(customer.id, meter_id)
        tz = ZoneInfo(customer.tz)
        try:
            start, end = periods.period_range(kind, periodo, self.now_ms(), tz)
        except ValueError:
            raise bad_request("out_of_range", f"periodo reaches before {periods.FIRST_YEAR}") from None
        edges = periods.bucket_edges(kind, start, end, tz)
        usages = await self._usage(customer, meter_ids, edges)
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

    async def bill(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(p.customer(call.params))
        periodo = p.integer(call.params, "periodo", default=0, maximum=1200)
        tz = ZoneInfo(customer.tz)
        try:
            year, month = periods.months_back(self.now_ms(), tz, periodo)
        except ValueError:
            raise bad_request("out_of_range", f"periodo reaches before {periods.FIRST_YEAR}") from None
        status = "aberta" if periodo == 0 else "fechada"
        cached = self.bills.get(customer.id, year, month)
        if cached is not None and cached["status"] == status:  # this month's bill, cached while open, is now closed
            return 200, cached
        begun = self.bills.begin()
        start, end = periods.month_range(year, month, tz)
        usages = await self._usage(customer, await self.meter_ids(customer.id, None), [start, end])
        consumo = sum(u.buckets[0][0] for u in usages)
        estimado = any(u.buckets[0][1] for u in usages)
        bill = compute_bill(
            tariff=self.tariff, ligacao=customer.ligacao, year=year, month=month, consumo_wh=consumo, estimado=estimado
        )
        body = {
            "id": customer.id,
            "name": customer.name,
            "status": status,
            "inicio": periods.iso(start, tz),
            "fim": periods.iso(end, tz),
            **bill.to_json(),
            "medidores": [
                {"id_medidor": u.meter_id, "consumo_kwh": kwh(u.buckets[0][0]), "estimado": u.buckets[0][1]} for u in usages
            ],
        }
        self.bills.put(customer.id, year, month, body, {u.meter_id: u.spans for u in usages}, begun)
        return 200, body

    async def meters(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(p.customer(call.params))
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

    def _alarm_service(self) -> Alarms:
        if self.alarm_service is None:
            raise ApiError(503, "alarms_unavailable", "alarms are not running in this process")
        return self.alarm_service

    async def alarms(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(p.customer(call.params))
        cursor = p.integer(call.params, "cursor", default=None, maximum=2**63 - 1)
        view = await self._alarm_service().view(customer.id, cursor)
        return 200, view_json(customer.id, view, ZoneInfo(customer.tz))

    async def ack_alarm(self, call: Call) -> tuple[int, dict[str, Any]]:
        customer = await self.customer(p.customer(call.params))
        alarm_id = p.integer(call.params, "alarm_id", minimum=1, maximum=2**63 - 1)
        try:
            alarm = await self._alarm_service().ack(customer.id, alarm_id)
        except UnknownAlarm:
            raise not_found("unknown_alarm", f"customer {customer.id} has no alarm {alarm_id}") from None
        return 200, alarm_json(alarm, ZoneInfo(customer.tz))

    # -- operations --------------------------------------------------------

    async def health(self, call: Call) -> tuple[int, dict[str, Any]]:
        try:
            await self.store.ping()
        except StoreError:
            return 503, {"status": "degraded", "db": "unavailable"}
        return 200, {"status": "ok", "db": "ok", "pending": self.ingest.pending}

    async def prometheus(self, call: Call) -> tuple[int, dict[str, Any]]:
        raise _Raw(b"text/plain; version=0.0.4; charset=utf-8", self.metrics.render())

    async def openapi(self, call: Call) -> tuple[int, dict[str, Any]]:
        return 200, openapi_document()


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("use Authorization: Bearer <token>")
    return token


def _kilo(params: dict[str, Any], name: str, default: int) -> int:
    """A limit in kW or kWh (3 decimals at most) to integer W or Wh."""
    if params.get(name) in (None, ""):
        return default
    try:
        value = kwh_to_wh(name, params[name])
    except InvalidField as e:
        raise bad_request(e.code, str(e)) from None
    if value <= 0:
        raise bad_request("out_of_range", f"{name} must be positive")
    return value


def _customer_json(c: Customer) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "ligacao": c.ligacao, "limite_kw": kwh(c.limit_w), "limite_kwh": kwh(c.limit_wh), "tz": c.tz}


class _Raw(Exception):
    """A non-JSON answer (the metrics text); carried out of the handler as an exception."""

    def __init__(self, content_type: bytes, body: bytes) -> None:
        self.content_type = content_type
        self.body = body


def serve(api: Api, request: Request) -> None:
    """twisted.web's side: the request as an :class:`Incoming`, its :class:`Answer` written back."""
    run_now(api.respond(incoming_of(request)), partial(write_answer, request))


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
