"""The operator's routes for running customers and meters: find, look, change, retire, replace, and the audit log.

What they promise (docs/design.md, "Operations"):

* ``/buscaClientes`` finds customers by CPF/CNPJ prefix or by name words
  (:mod:`meterd.names`), a page at a time after an opaque cursor
  (:mod:`meterd.web.cursors`);
* ``/getCliente`` shows a customer, its meters' state and its active alarms;
* ``/alteraCliente`` changes name, connection, zone and limits: the directory,
  the alarm rules and the bill cache take the change before the answer, other
  processes on a shared store within a sync interval (:mod:`meterd.sync`);
* ``/retiraMedidor`` retires a meter at a final reading, ``/substituiMedidor``
  registers the meter that replaces it;
* ``/getAuditoria`` reads the audit log, where every change of these routes
  and of the registration routes is kept with who made it, from where, when.

A thin adapter: the rules live in the store (:mod:`meterd.store.operations_sql`),
the alarm service and the pure modules.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from twisted.logger import Logger

from meterd import credentials, names, periods
from meterd.alarms import alarm_json
from meterd.readings import MAX_KWH, US_PER_MS, US_PER_S, InvalidField, Outcome, timestamp_at, wh_of
from meterd.registers import kwh
from meterd.store.base import (
    AlreadyReplaced,
    AuditEntry,
    Found,
    MeterRetired,
    NotFound,
    NotRetired,
    ReadingRefused,
    ReadingsAfter,
)
from meterd.tariff import LIGACOES
from meterd.web import cursors, routes
from meterd.web.api import ID, METER, MODES, Api, Call, customer_json
from meterd.web.errors import ApiError, bad_request, not_found
from meterd.web.operations_openapi import SCHEMAS

__all__ = ["Operations"]

log = Logger()

MAX_PAGE = 100
DEFAULT_PAGE = 20
_CURSOR = routes.text("cursor", "the `cursor` of the previous answer, as it came (opaque)", max_length=cursors.MAX_LENGTH).optional()
_PAGE = routes.integer("limite", f"results per page (1 to {MAX_PAGE})", minimum=1, maximum=MAX_PAGE).optional(DEFAULT_PAGE)
_VALOR = routes.kwh("valor", "kWh: the register (register meters) or the last interval's energy (interval meters)", maximum=MAX_KWH)
#: The customer's attributes as the API names them, and how the store holds them.
_UPDATES = (("name", "name"), ("ligacao", "ligacao"), ("tz", "tz"), ("limite_kw", "limit_w"), ("limite_kwh", "limit_wh"))
_API_NAME = {stored: api for api, stored in _UPDATES}
_KILO = ("limit_w", "limit_wh")


class Operations:
    """Route handlers of the operator's operations, mounted on the :class:`Api`."""

    tags: ClassVar[list[dict[str, str]]] = [
        {"name": "management", "description": "operator: find, change and retire customers and meters; the audit log"},
    ]
    schemas: ClassVar[dict[str, Any]] = SCHEMAS

    def __init__(self, api: Api) -> None:
        self.api = api

    # -- search ------------------------------------------------------------

    @routes.route(
        "GET", "/buscaClientes", "operator",
        routes.text("q", "a CPF/CNPJ prefix (digits, formatted or not) or words of the name", max_length=100),
        _CURSOR,
        _PAGE,
        summary="Find customers by CPF/CNPJ prefix or by name (operator token)",
        description=(
            "A query of digits (and `.`, `-`, `/`, spaces) is a CPF/CNPJ prefix; anything else is a name"
            " query: each of its words must be the start of a word of the name, accents and case aside"
            " (`joao` finds `João`, `maria silva` finds `Maria da Silva Souza`). Name results are ordered"
            " by the name word that matched the query's most selective word, then by name; CPF/CNPJ results"
            " by id. A page holds at most `limite` results; `cursor` (null on the last page) asks the next"
            " one. Paging is by position, not offset: a customer registered while someone pages is neither"
            " repeated nor makes another one skipped. A cursor of another query is a 400 `invalid_cursor`."
        ),
        tag="management", ok=((200, "a page of results", "CustomerSearch"),), errors=(503,),
    )
    async def search(self, call: Call) -> tuple[int, dict[str, Any]]:
        a = call.args
        try:
            query = names.parse_query(a["q"])
        except ValueError as e:
            raise bad_request("invalid_value", f"q: {e}") from None
        driver, after = None, None
        if a["cursor"] is not None:
            driver, after = _search_position(a["cursor"], query)
        found, driver = await self.api.store.search_customers(query, driver, after, a["limite"] + 1)
        page, more = found[: a["limite"]], len(found) > a["limite"]
        cursor = None
        if more:
            position: list[Any] = list(page[-1].position) if driver is None else [driver, *page[-1].position]
            cursor = cursors.encode("search", query.fingerprint, position)
        return 200, {"q": a["q"], "results": [_found_json(f) for f in page], "cursor": cursor}

    # -- a customer --------------------------------------------------------

    @routes.route(
        "GET", "/getCliente", "operator",
        ID,
        summary="A customer's record, meters and active alarms (operator token)",
        description=(
            "Each meter with its newest reading (`last_kwh` is the register of a register meter, the last"
            " interval's energy of an interval meter), whether the `silent` rule finds it silent now"
            " (nothing heard for `--silent-after`; a retired meter never is), and its retirement and"
            " replacement, if any."
        ),
        tag="management", ok=((200, "the customer", "CustomerDetail"),), errors=(404, 503),
    )
    async def detail(self, call: Call) -> tuple[int, dict[str, Any]]:
        api = self.api
        customer = await api.customer(call.args["id"])
        await api.meter_ids(customer.id, None)  # learn meters other processes registered
        tz = ZoneInfo(customer.tz)
        alarms = api.running_alarms()
        statuses = await api.store.meter_status(customer.id)
        view = await alarms.view(customer.id, None)

        def at_us(us: int | None) -> str | None:
            return None if us is None else periods.iso(us // US_PER_MS, tz)

        meters = [
            {
                "id_medidor": s.meter_id,
                "mode": s.mode,
                "last_seen": None if s.last_seen_ms is None else periods.iso(s.last_seen_ms, tz),
                "last_reading_at": at_us(s.last_ts),
                "last_kwh": None if s.last_wh is None else kwh(s.last_wh),
                "silent": alarms.is_silent((customer.id, s.meter_id), s.last_seen_ms),
                "retired_at": at_us(s.retired_ts),
                "replaces": s.replaces,
                "replaced_by": s.replaced_by,
            }
            for s in statuses
        ]
        return 200, {
            **customer_json(customer),
            "created_at": periods.iso(customer.created_ms, tz),
            "meters": meters,
            "active": [alarm_json(alarm, tz) for alarm in view.active],
        }

    @routes.route(
        "POST", "/alteraCliente", "operator",
        ID,
        routes.text("name", "the customer's name as it is written (accents and all)").optional(),
        routes.choice("ligacao", "the connection: single-, two- or three-phase", LIGACOES).optional(),
        routes.zone("tz", "IANA time zone of the customer's calendar").optional(),
        routes.kilo("limite_kw", "demand alarm limit, kW", maximum=MAX_KWH).optional(),
        routes.kilo("limite_kwh", "monthly alarm limit, kWh", maximum=MAX_KWH).optional(),
        summary="Change a customer's name, connection, time zone or alarm limits (operator token)",
        description=(
            "At least one field besides `id` (else a 400 `nothing_to_change`). Alarm rules use the new"
            " limits from this answer on, and the bills of every month not yet issued are computed with the"
            " customer's current connection and zone (an issued bill stays as it was issued). Each field"
            " that really changes is kept in the audit log with its old and new values; `changed` names them."
        ),
        tag="management", ok=((200, "the customer after the change", "CustomerUpdated"),), errors=(404, 503),
    )
    async def update(self, call: Call) -> tuple[int, dict[str, Any]]:
        api, a = self.api, call.args
        cid = a["id"]
        changes = {stored: a[name] for name, stored in _UPDATES if a[name] is not None}
        if not changes:
            raise bad_request("nothing_to_change", "give at least one of " + ", ".join(name for name, _ in _UPDATES))
        await api.customer(cid)
        try:
            customer, changed = await api.store.update_customer(cid, changes, api.actor(call))
        except NotFound:
            raise not_found("unknown_customer", f"customer {cid} is not registered") from None
        api.directory.add_customer(customer)
        api.bills.forget_customer(cid)
        if changed and api.alarm_service is not None:
            decided = api.alarm_service.customer_changed(cid)
            if decided is not None:
                await decided
        if changed:
            log.info("customer {id} changed: {fields}", id=cid, fields=", ".join(_API_NAME[f] for f in changed))
        return 200, {**customer_json(customer), "changed": [_API_NAME[f] for f in changed]}

    # -- meters ------------------------------------------------------------

    @routes.route(
        "POST", "/retiraMedidor", "operator",
        ID,
        METER,
        _VALOR,
        routes.timestamp("timestamp", "the final reading's time, unix seconds (fractions allowed, to the microsecond)"),
        summary="Retire a meter at a final reading (operator token)",
        description=(
            "The final reading is the meter's newest: one already stored (the same value, else a 409"
            " `conflict`) or a new one after all of them, judged as a live reading (a 422"
            " `register_backwards` for a register below the last). Retiring before a stored reading is a 422"
            " `readings_after_final`; a meter retired already is a 409 `already_retired`. The meter stays in"
            " the history and on every bill up to its final reading; readings after it are refused (HTTP 422"
            " `meter_retired`, datagrams dropped and counted as `meter_retired`), earlier ones are taken as"
            " any late reading. Its active alarms clear, and the `silent` rule watches it no more."
        ),
        tag="management", ok=((200, "retired", "MeterRetired"),), errors=(404, 409, 422, 503),
    )
    async def retire(self, call: Call) -> tuple[int, dict[str, Any]]:
        api, a = self.api, call.args
        cid, meter_id = a["id"], a["id_medidor"]
        customer = await api.customer(cid)
        await api.meter_ids(cid, meter_id)
        ts, wh = self._reading(a)
        actor = api.actor(call)
        try:
            meter, stored = await api.ingest.exclusively(lambda: api.store.retire_meter(cid, meter_id, ts, wh, actor))
        except NotFound:
            raise not_found("unknown_meter", f"customer {cid} has no meter {meter_id}") from None
        except MeterRetired as e:
            raise ApiError(409, "already_retired", f"meter {meter_id} was retired at {_when(e.args[0], customer.tz)}") from None
        except ReadingsAfter as e:
            raise ApiError(
                422, "readings_after_final",
                f"meter {meter_id} has a reading at {_when(e.args[0], customer.tz)}, after this one: retire it at or after its newest",
            ) from None
        except ReadingRefused as e:
            raise _refused(e.args[0]) from None
        api.directory.add_meter(meter)
        api.bills.forget_customer(cid)
        if api.alarm_service is not None:
            cleared = api.alarm_service.meter_retired((cid, meter_id))
            if cleared is not None:
                await cleared
        log.info("retired meter {meter} of customer {id}", id=cid, meter=meter_id)
        return 200, {
            "id": cid, "id_medidor": meter_id, "retired_at": _when(ts, customer.tz), "timestamp": ts / US_PER_S,
            "valor": kwh(wh), "stored": stored,
        }

    @routes.route(
        "POST", "/substituiMedidor", "operator",
        ID,
        dataclasses.replace(METER, description="the retired meter being replaced"),
        routes.choice("mode", "register or interval (default: the retired meter's)", MODES).optional(),
        routes.kwh("valor", "kWh: the new meter's register when installed (usually 0; for an interval meter, its first interval)",
                   maximum=MAX_KWH),
        routes.timestamp("timestamp", "when the new meter was installed (its first reading's time), unix seconds"),
        summary="Register the meter that replaces a retired one (operator token)",
        description=(
            "The new meter gets the customer's next id and a key, shown once (as `/cadMedidor`), and its"
            " first reading (`valor` at `timestamp`, not before the retired meter's final reading: else a 422"
            " `before_final_reading`). The customer's history and bills run across the replacement without a"
            " jump: each meter's consumption is its own register's difference, so a register starting again"
            " from zero is neither consumption nor `register_backwards`. Only a retired meter is replaced"
            " (409 `not_retired`), and once (409 `already_replaced`)."
        ),
        tag="management", ok=((201, "the new meter", "MeterReplaced"),), errors=(404, 409, 422, 503),
    )
    async def replace(self, call: Call) -> tuple[int, dict[str, Any]]:
        api, a = self.api, call.args
        cid, retired_id = a["id"], a["id_medidor"]
        customer = await api.customer(cid)
        await api.meter_ids(cid, retired_id)
        ts, wh = self._reading(a)
        mode = a["mode"] or api.directory.meters[(cid, retired_id)].meter.mode
        key = credentials.new_meter_key()
        actor = api.actor(call)
        try:
            meter = await api.ingest.exclusively(lambda: api.store.replace_meter(cid, retired_id, mode, key, ts, wh, actor))
        except NotFound:
            raise not_found("unknown_meter", f"customer {cid} has no meter {retired_id}") from None
        except NotRetired:
            raise ApiError(409, "not_retired", f"meter {retired_id} is in service: retire it first (/retiraMedidor)") from None
        except AlreadyReplaced as e:
            raise ApiError(409, "already_replaced", f"meter {retired_id} was replaced by meter {e.args[0]}") from None
        except ReadingsAfter as e:
            raise ApiError(
                422, "before_final_reading",
                f"meter {retired_id} was retired at {_when(e.args[0], customer.tz)}: the new one is installed after that",
            ) from None
        api.directory.add_meter(meter)
        api.bills.forget_customer(cid)
        log.info("meter {new} of customer {id} replaces retired meter {old}", id=cid, new=meter.meter_id, old=retired_id)
        return 201, {
            "id": cid, "id_medidor": meter.meter_id, "mode": mode, "key": key, "replaces": retired_id,
            "valor": kwh(wh), "installed_at": _when(ts, customer.tz),
        }

    def _reading(self, args: dict[str, Any]) -> tuple[int, int]:
        """``timestamp`` (us, within the accepted window) and ``valor`` (Wh) of a reading the operator gives."""
        try:
            return timestamp_at(args["timestamp"], self.api.clock.seconds()), wh_of("valor", args["valor"])
        except InvalidField as e:
            raise bad_request(e.code, str(e)) from None

    # -- the audit log -----------------------------------------------------

    @routes.route(
        "GET", "/getAuditoria", "operator",
        ID.optional(description="only this customer's entries (default: everyone's)"),
        _CURSOR,
        _PAGE,
        summary="The audit log: every change an operator made, newest first (operator token)",
        description=(
            "Registrations, changes (one entry per field, with its old and new values), new tokens and keys"
            " (never the secrets), retirements and replacements: who (`operator`), from which address,"
            " when. `cursor` (null on the last page) asks older entries; entries written meanwhile are"
            " newer than the first page and never shift the pages after it."
        ),
        tag="management", ok=((200, "a page of the log", "AuditLog"),), errors=(503,),
    )
    async def audit(self, call: Call) -> tuple[int, dict[str, Any]]:
        a = call.args
        fingerprint = a["id"] or ""
        before = None
        if a["cursor"] is not None:
            try:
                (before,) = cursors.decode(a["cursor"], "audit", fingerprint, (int,))
            except cursors.InvalidCursor as e:
                raise bad_request("invalid_cursor", str(e)) from None
        entries = await self.api.store.audit_log(a["id"], before, a["limite"] + 1)
        page, more = entries[: a["limite"]], len(entries) > a["limite"]
        cursor = cursors.encode("audit", fingerprint, [page[-1].audit_id]) if more else None
        return 200, {"id": a["id"], "entries": [self._entry_json(e) for e in page], "cursor": cursor}

    def _entry_json(self, entry: AuditEntry) -> dict[str, Any]:
        customer = self.api.directory.customers.get(entry.customer_id)
        tz = customer.tz if customer is not None else self.api.settings.tz
        return {
            "audit_id": entry.audit_id,
            "at": periods.iso(entry.at_ms, ZoneInfo(tz)),
            "who": entry.actor,
            "address": entry.address,
            "action": entry.action,
            "id": entry.customer_id,
            "id_medidor": entry.meter_id,
            "field": None if entry.field is None else _API_NAME.get(entry.field, entry.field),
            "old": _audit_value(entry.field, entry.old, tz),
            "new": _audit_value(entry.field, entry.new, tz),
        }


def _search_position(cursor: str, query: names.TaxIdQuery | names.NameQuery) -> tuple[int | None, tuple[str, ...]]:
    """The driver and position a search cursor holds (400 ``invalid_cursor`` if it is not one of this query)."""
    try:
        if isinstance(query, names.TaxIdQuery):
            (customer_id,) = cursors.decode(cursor, "search", query.fingerprint, (str,))
            return None, (customer_id,)
        driver, *position = cursors.decode(cursor, "search", query.fingerprint, (int, str, str, str))
    except cursors.InvalidCursor as e:
        raise bad_request("invalid_cursor", str(e)) from None
    if not 0 <= driver < len(query.words):
        raise bad_request("invalid_cursor", "not a cursor meterd wrote; send back the `cursor` of the previous answer as it came")
    return driver, tuple(position)


def _found_json(found: Found) -> dict[str, Any]:
    return {**customer_json(found.customer), "meters": found.meters}


def _when(us: int, tz: str) -> str:
    return periods.iso(us // US_PER_MS, ZoneInfo(tz))


def _refused(outcome: Outcome) -> ApiError:
    if outcome is Outcome.CONFLICT:
        return ApiError(409, "conflict", "a different value is already stored for this meter and timestamp")
    return ApiError(422, "register_backwards", "the register would go backwards against its neighbouring readings")


def _audit_value(field: str | None, value: Any, tz: str) -> Any:
    """A stored audit value as the API shows it: limits in kW and kWh, readings as kWh at an ISO time."""
    if value is None:
        return None
    if field in _KILO:
        return kwh(value)
    if isinstance(value, dict):
        shown: dict[str, Any] = {}
        for key, item in value.items():
            if key in _KILO:
                shown[_API_NAME[key]] = kwh(item)
            elif key == "ts":
                shown["timestamp"] = _when(item, tz)
            elif key == "wh":
                shown["valor"] = kwh(item)
            else:
                shown[key] = item
        return shown
    return value
