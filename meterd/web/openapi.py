"""The OpenAPI 3 document served at ``/openapi.json`` (DESIGN §3).

Written out by hand as one plain dict, so that reading it is reading the
contract: every route of :class:`meterd.web.api.Api`, its parameters, who may
call it and every status its handler can answer with. Response schemas say
``additionalProperties: false`` so the tests can hold the live answers to them
field by field; a field added to a handler without being added here fails them.

Pure: imports nothing from Twisted, and is built once.
"""

from __future__ import annotations

import functools
from typing import Any

from meterd import periods
from meterd.alarm_rules import RULES
from meterd.numbers import PATTERN as NUMBER_PATTERN
from meterd.tariff import LIGACOES

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref(schema))}


def _errors(*statuses: int) -> dict[str, Any]:
    """The shared error responses, by status."""
    return {str(s): {"$ref": f"#/components/responses/{_ERROR_RESPONSES[s]}"} for s in statuses}


_ERROR_RESPONSES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "Unprocessable",
    503: "ServiceUnavailable",
}

# What every request can run into before its handler: a body that is too big or
# not JSON, parameters that contradict each other, the wrong method, the store down.
_COMMON = (400, 405, 413, 415, 503)
# ... and, for routes that need credentials, missing or foreign ones.
_AUTHED = (*_COMMON, 401, 403)

_PARAMS_NOTE = (
    " Parameters may be sent as a query string or as a JSON object in the body"
    " (the assignment's clients send a JSON body even on GET); both are merged,"
    " and the same key with two different values is a 400 `conflicting_parameter`."
    " Numbers may be sent as strings (`\"id_medidor\": \"1\"`)."
)

# Numbers may be strings spelled as JSON numbers in ASCII (meterd.numbers).
_INT_OR_STRING = {
    "oneOf": [{"type": "integer"}, {"type": "string", "pattern": NUMBER_PATTERN}],
}
_NUMBER_OR_STRING = {
    "oneOf": [{"type": "number"}, {"type": "string", "pattern": NUMBER_PATTERN}],
}
_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601 local time with offset"}
_ISO_OR_NULL = {**_ISO, "nullable": True}
_KWH = {"type": "number", "minimum": 0, "description": "kWh, at most 3 decimals (exact Wh)"}
_MONEY = {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{2}$", "description": "R$, exactly 2 decimals", "example": "123.45"}
_RATE = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "description": "a decimal rate as written in the tariff"}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _body(schema: str, description: str) -> dict[str, Any]:
    return {"required": True, "description": description, "content": _json(_ref(schema))}


_GET_BODY_NOTE = "The same parameters are accepted as a JSON object in the body of the GET."

_OPERATOR_ONLY = [{"bearerAuth": []}]
_PUBLIC: list[dict[str, list[str]]] = []


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document; built on first use and shared afterwards (do not mutate)."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "meterd",
            "version": "0.1.0",
            "description": (
                "Smart-meter head-end and billing server. Every answer is a JSON object"
                " (`application/json; charset=utf-8`) except `/metrics`; every error is"
                " `{\"error\": {\"code\", \"message\"}}`. Bodies over 64 KiB get 413,"
                " unknown routes 404 `unknown_route`, GET routes also answer HEAD."
                + _PARAMS_NOTE
                + " With `--no-auth` no credentials are needed anywhere."
            ),
        },
        "servers": [{"url": "http://localhost:8888"}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "registration", "description": "operator: customers and meters"},
            {"name": "readings", "description": "meters: energy readings (UDP is the main way in)"},
            {"name": "customer", "description": "a customer (or the operator): history, bill, alarms, meters"},
            {"name": "operations", "description": "anyone: health, metrics, this document"},
        ],
        "paths": {
            "/cadCliente": {
                "post": {
                    "tags": ["registration"],
                    "operationId": "cadCliente",
                    "summary": "Register a customer (operator token)",
                    "description": "Returns the customer's bearer token, once; only its hash is stored." + _PARAMS_NOTE,
                    "security": _OPERATOR_ONLY,
                    "requestBody": _body("CustomerRequest", "the customer to register"),
                    "responses": {
                        "201": _ok("registered", "CustomerCreated"),
                        **_errors(*_AUTHED, 409),
                    },
                }
            },
            "/cadMedidor": {
                "post": {
                    "tags": ["registration"],
                    "operationId": "cadMedidor",
                    "summary": "Register a meter of a customer (operator token)",
                    "description": (
                        "Meter ids are numbered per customer 1, 2, 3... The returned `key` (64 hex chars)"
                        " signs the meter's datagrams and authorises `/postConsumo`; it is shown once."
                        + _PARAMS_NOTE
                    ),
                    "security": _OPERATOR_ONLY,
                    "requestBody": _body("MeterRequest", "the customer and the meter's mode"),
                    "responses": {
                        "201": _ok("registered", "MeterCreated"),
                        **_errors(*_AUTHED, 404),
                    },
                }
            },
            "/postConsumo": {
                "post": {
                    "tags": ["readings"],
                    "operationId": "postConsumo",
                    "summary": "Store one reading (the meter's key, or the operator token)",
                    "description": (
                        "Answered after the reading is committed. The same (customer, meter, timestamp)"
                        " with the same value is a duplicate (200); with another value a 409 `conflict`."
                        " A register reading that would make the register go backwards is a 422"
                        " `register_backwards`. 503 `overloaded` when too many readings wait to be stored."
                        + _PARAMS_NOTE
                    ),
                    "requestBody": _body("ReadingRequest", "the reading"),
                    "responses": {
                        "201": _ok("stored", "ReadingStored"),
                        "200": _ok("already stored with the same value", "ReadingStored"),
                        **_errors(*_AUTHED, 404, 409, 422),
                    },
                }
            },
            "/getConsumoHist": {
                "get": {
                    "tags": ["customer"],
                    "operationId": "getConsumoHist",
                    "summary": "Consumption history of a calendar day, month or year",
                    "description": (
                        "Periods are calendar periods in the customer's time zone. `D` has hourly buckets,"
                        " `M` daily, `Y` monthly. Register meters: consumption is the difference of the"
                        " linearly interpolated register; a bucket interpolated across a gap longer than"
                        " an hour is `estimated`. " + _GET_BODY_NOTE + _PARAMS_NOTE
                    ),
                    "parameters": [
                        {"$ref": "#/components/parameters/id"},
                        _query("kind", {"type": "string", "enum": list(periods.KINDS)}, "day, month or year (case-insensitive)", True),
                        {"$ref": "#/components/parameters/periodo"},
                        _query("id_medidor", {"type": "integer", "minimum": 1}, "only this meter (default: all of the customer's)"),
                    ],
                    "responses": {
                        "200": _ok("the history", "History"),
                        **_errors(*_AUTHED, 404),
                    },
                }
            },
            "/getFatura": {
                "get": {
                    "tags": ["customer"],
                    "operationId": "getFatura",
                    "summary": "The bill of a calendar month",
                    "description": (
                        "A Brazilian group-B bill: energy (TE, TUSD) and bandeira lines on"
                        " `faturado_kwh = max(consumo_kwh, disponibilidade)`, taxes 'por dentro'."
                        " Money is a string with exactly 2 decimals, kWh a number. The current month is"
                        " `aberta`, earlier ones `fechada`. " + _GET_BODY_NOTE + _PARAMS_NOTE
                    ),
                    "parameters": [
                        {"$ref": "#/components/parameters/id"},
                        _query("periodo", {"type": "integer", "minimum": 0, "maximum": 1200, "default": 0}, "months back (0 = the current month)"),
                    ],
                    "responses": {
                        "200": _ok("the bill", "Bill"),
                        **_errors(*_AUTHED, 404),
                    },
                }
            },
            "/getAlarme": {
                "get": {
                    "tags": ["customer"],
                    "operationId": "getAlarme",
                    "summary": "Active alarms and the alarm events after a cursor",
                    "description": (
                        "`events` are those after the `cursor` sent (all recent ones without a cursor);"
                        " polling with the returned `cursor` misses nothing. " + _GET_BODY_NOTE + _PARAMS_NOTE
                    ),
                    "parameters": [
                        {"$ref": "#/components/parameters/id"},
                        _query("cursor", {"type": "integer", "minimum": 0}, "the `cursor` of the previous answer"),
                    ],
                    "responses": {
                        "200": _ok("alarms and events", "Alarms"),
                        **_errors(*_AUTHED, 404),
                    },
                }
            },
            "/ackAlarme": {
                "post": {
                    "tags": ["customer"],
                    "operationId": "ackAlarme",
                    "summary": "Acknowledge an alarm",
                    "description": "Answers the alarm after the acknowledgement." + _PARAMS_NOTE,
                    "requestBody": _body("AckRequest", "the customer and the alarm"),
                    "responses": {
                        "200": _ok("the acknowledged alarm", "Alarm"),
                        **_errors(*_AUTHED, 404),
                    },
                }
            },
            "/getMedidores": {
                "get": {
                    "tags": ["customer"],
                    "operationId": "getMedidores",
                    "summary": "The customer's meters and their latest readings",
                    "description": _GET_BODY_NOTE + _PARAMS_NOTE,
                    "parameters": [{"$ref": "#/components/parameters/id"}],
                    "responses": {
                        "200": _ok("the meters", "Meters"),
                        **_errors(*_AUTHED, 404),
                    },
                }
            },
            "/health": {
                "get": {
                    "tags": ["operations"],
                    "operationId": "health",
                    "summary": "Liveness and store status",
                    "security": _PUBLIC,
                    "responses": {
                        "200": _ok("the server and its store work", "Health"),
                        "503": {"description": "the store is unavailable", "content": _json(_ref("HealthDegraded"))},
                        **_errors(400, 401, 405, 413, 415),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "tags": ["operations"],
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "security": _PUBLIC,
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **_errors(400, 401, 405, 413, 415),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "tags": ["operations"],
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": _PUBLIC,
                    "responses": {
                        "200": {"description": "an OpenAPI 3 document", "content": _json({"type": "object"})},
                        **_errors(400, 401, 405, 413, 415),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The operator token (`<data-dir>/operator.token`) opens everything; a customer's"
                        " token (from `/cadCliente`) opens that customer's routes; a meter key (from"
                        " `/cadMedidor`) opens `/postConsumo` for that meter."
                    ),
                }
            },
            "parameters": {
                "id": _query("id", {"type": "string", "example": "123.456.789-09"}, "CPF or CNPJ, digits or formatted", True),
                "periodo": _query("periodo", {"type": "integer", "minimum": 0, "default": 0}, "periods back (0 = the current one)"),
            },
            "responses": {
                "BadRequest": _error_response(
                    "a field is missing or invalid (codes such as `missing_field`, `invalid_type`, `invalid_number`,"
                    " `not_finite`, `negative`, `out_of_range`, `too_precise`, `invalid_id`, `invalid_value`,"
                    " `invalid_tz`, `timestamp_too_old`, `timestamp_in_future`, `malformed_json`,"
                    " `conflicting_parameter`)"
                ),
                "Unauthorized": {
                    **_error_response("no or bad credentials (`unauthorized`)"),
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="meterd"'}},
                },
                "Forbidden": _error_response("valid credentials that do not open this customer, meter or route (`forbidden`)"),
                "NotFound": _error_response("unknown customer, meter, alarm or route (`unknown_customer`, `unknown_meter`, `unknown_alarm`, `unknown_route`)"),
                "MethodNotAllowed": {
                    **_error_response("wrong method (`method_not_allowed`)"),
                    "headers": {"Allow": {"schema": {"type": "string"}, "description": "the methods the route accepts"}},
                },
                "Conflict": _error_response("already exists (`customer_exists`) or a different value for the same reading (`conflict`)"),
                "PayloadTooLarge": _error_response("the body is larger than 64 KiB (`body_too_large`)"),
                "UnsupportedMediaType": _error_response("the body is not a JSON object (`unsupported_media_type`)"),
                "Unprocessable": _error_response("well-formed but impossible, e.g. `register_backwards`"),
                "ServiceUnavailable": _error_response("the store is unavailable (`store_unavailable`), ingest is full (`overloaded`) or alarms are not running (`alarms_unavailable`); retry"),
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "additionalProperties": False,
                            "properties": {
                                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "description": "snake_case, stable"},
                                "message": {"type": "string", "description": "for humans"},
                            },
                        }
                    },
                },
                # -- requests ------------------------------------------------------
                "CustomerRequest": {
                    "type": "object",
                    "required": ["id", "name"],
                    "properties": {
                        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}], "description": "CPF (11 digits) or CNPJ (14 digits), check digits verified"},
                        "name": {"type": "string", "minLength": 1, "maxLength": 200},
                        "ligacao": {"type": "string", "enum": list(LIGACOES), "default": "mono"},
                        "limite_kw": {**_NUMBER_OR_STRING, "description": "demand alarm limit, kW (default --limit-kw)"},
                        "limite_kwh": {**_NUMBER_OR_STRING, "description": "monthly alarm limit, kWh (default --limit-kwh)"},
                        "tz": {"type": "string", "description": "IANA time zone (default --tz)", "example": "America/Sao_Paulo"},
                    },
                },
                "MeterRequest": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "mode": {
                            "type": "string",
                            "enum": ["register", "interval"],
                            "description": "register: valor is the cumulative register; interval: kWh since the previous reading (default --meter-mode)",
                        },
                    },
                },
                "ReadingRequest": {
                    "type": "object",
                    "required": ["id", "id_medidor", "valor", "timestamp"],
                    "properties": {
                        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "id_medidor": {**_INT_OR_STRING, "description": "the meter, 1 or more"},
                        "valor": {**_NUMBER_OR_STRING, "description": "kWh, finite, not negative, at most 3 decimals"},
                        "timestamp": {
                            **_NUMBER_OR_STRING,
                            "description": "unix seconds (fractions allowed), not before 2000-01-01, at most 300 s in the future",
                        },
                        "seq": {**_INT_OR_STRING, "description": "the meter's sequence number (acknowledged over UDP)"},
                    },
                },
                "AckRequest": {
                    "type": "object",
                    "required": ["id", "alarm_id"],
                    "properties": {
                        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        "alarm_id": _INT_OR_STRING,
                    },
                },
                # -- responses -----------------------------------------------------
                "CustomerCreated": {
                    "type": "object",
                    "required": ["id", "name", "ligacao", "limite_kw", "limite_kwh", "tz", "token"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string", "pattern": "^([0-9]{11}|[0-9]{14})$", "description": "digits only"},
                        "name": {"type": "string"},
                        "ligacao": {"type": "string", "enum": list(LIGACOES)},
                        "limite_kw": {"type": "number"},
                        "limite_kwh": {"type": "number"},
                        "tz": {"type": "string"},
                        "token": {"type": "string", "description": "the customer's bearer token; shown only now"},
                    },
                },
                "MeterCreated": {
                    "type": "object",
                    "required": ["id", "id_medidor", "mode", "key"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "id_medidor": {"type": "integer", "minimum": 1},
                        "mode": {"type": "string", "enum": ["register", "interval"]},
                        "key": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "HMAC key and bearer token of the meter; shown only now"},
                    },
                },
                "ReadingStored": {
                    "type": "object",
                    "required": ["status"],
                    "additionalProperties": False,
                    "properties": {"status": {"type": "string", "enum": ["stored", "duplicate"]}},
                },
                "History": {
                    "type": "object",
                    "required": ["id", "kind", "periodo", "tz", "start", "end", "total_kwh", "estimated", "buckets", "meters"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "kind": {"type": "string", "enum": list(periods.KINDS)},
                        "periodo": {"type": "integer", "minimum": 0},
                        "tz": {"type": "string"},
                        "start": _ISO,
                        "end": _ISO,
                        "total_kwh": _KWH,
                        "estimated": {"type": "boolean"},
                        "buckets": {"type": "array", "items": _ref("HistoryBucket")},
                        "meters": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id_medidor", "total_kwh"],
                                "additionalProperties": False,
                                "properties": {"id_medidor": {"type": "integer"}, "total_kwh": _KWH},
                            },
                        },
                    },
                },
                "HistoryBucket": {
                    "type": "object",
                    "required": ["start", "kwh", "estimated"],
                    "additionalProperties": False,
                    "properties": {"start": _ISO, "kwh": _KWH, "estimated": {"type": "boolean"}},
                },
                "Bill": {
                    "type": "object",
                    "required": [
                        "id", "name", "referencia", "status", "inicio", "fim", "consumo_kwh", "faturado_kwh",
                        "ligacao", "bandeira", "itens", "tributos", "total", "estimado", "medidores",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "referencia": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$", "example": "2026-11"},
                        "status": {"type": "string", "enum": ["aberta", "fechada"]},
                        "inicio": _ISO,
                        "fim": _ISO,
                        "consumo_kwh": _KWH,
                        "faturado_kwh": _KWH,
                        "ligacao": {"type": "string", "enum": list(LIGACOES)},
                        "bandeira": {"type": "string", "example": "amarela"},
                        "itens": {"type": "array", "items": _ref("BillItem")},
                        "tributos": _ref("Taxes"),
                        "total": _MONEY,
                        "estimado": {"type": "boolean"},
                        "medidores": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id_medidor", "consumo_kwh", "estimado"],
                                "additionalProperties": False,
                                "properties": {"id_medidor": {"type": "integer"}, "consumo_kwh": _KWH, "estimado": {"type": "boolean"}},
                            },
                        },
                    },
                },
                "BillItem": {
                    "type": "object",
                    "required": ["descricao", "quantidade_kwh", "tarifa", "valor"],
                    "additionalProperties": False,
                    "properties": {
                        "descricao": {"type": "string"},
                        "quantidade_kwh": _KWH,
                        "tarifa": {**_RATE, "description": "R$/kWh before taxes"},
                        "valor": _MONEY,
                    },
                },
                "Taxes": {
                    "type": "object",
                    "required": ["icms", "pis", "cofins", "valor", "aliquotas"],
                    "additionalProperties": False,
                    "properties": {
                        "icms": _MONEY,
                        "pis": _MONEY,
                        "cofins": _MONEY,
                        "valor": _MONEY,
                        "aliquotas": {
                            "type": "object",
                            "required": ["icms", "pis", "cofins"],
                            "additionalProperties": False,
                            "properties": {"icms": _RATE, "pis": _RATE, "cofins": _RATE},
                            "description": "the tax rates applied, as fractions",
                        },
                    },
                },
                "Meters": {
                    "type": "object",
                    "required": ["id", "meters"],
                    "additionalProperties": False,
                    "properties": {"id": {"type": "string"}, "meters": {"type": "array", "items": _ref("MeterStatus")}},
                },
                "MeterStatus": {
                    "type": "object",
                    "required": ["id_medidor", "mode", "last_seen", "last_reading_at", "last_kwh"],
                    "additionalProperties": False,
                    "properties": {
                        "id_medidor": {"type": "integer", "minimum": 1},
                        "mode": {"type": "string", "enum": ["register", "interval"]},
                        "last_seen": {**_ISO_OR_NULL, "description": "when the server last received a reading (server clock)"},
                        "last_reading_at": {**_ISO_OR_NULL, "description": "timestamp of the newest reading"},
                        "last_kwh": {"type": "number", "nullable": True, "description": "value of the newest reading, kWh"},
                    },
                },
                "Alarms": {
                    "type": "object",
                    "required": ["id", "alarme", "active", "events", "cursor"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "alarme": {"type": "boolean", "description": "any alarm active"},
                        "active": {"type": "array", "items": _ref("Alarm")},
                        "events": {"type": "array", "items": _ref("AlarmEvent")},
                        "cursor": {"type": "integer", "minimum": 0, "description": "send it back to get only newer events"},
                    },
                },
                "Alarm": {
                    "type": "object",
                    "required": ["alarm_id", "rule", "id_medidor", "raised_at", "cleared_at", "acked_at", "value", "threshold", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "alarm_id": {"type": "integer"},
                        "rule": {"type": "string", "enum": list(RULES)},
                        "id_medidor": {"type": "integer", "nullable": True, "description": "null for customer-wide rules"},
                        "raised_at": _ISO,
                        "cleared_at": _ISO_OR_NULL,
                        "acked_at": _ISO_OR_NULL,
                        "value": {"type": "number", "description": "the measured value (kW, kWh or seconds)"},
                        "threshold": {"type": "number"},
                        "message": {"type": "string", "description": "in Portuguese"},
                    },
                },
                "AlarmEvent": {
                    "type": "object",
                    "required": ["event_id", "alarm_id", "type", "at"],
                    "additionalProperties": False,
                    "properties": {
                        "event_id": {"type": "integer"},
                        "alarm_id": {"type": "integer"},
                        "type": {"type": "string", "enum": ["raised", "cleared", "acked"]},
                        "at": _ISO,
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "db"],
                    "additionalProperties": False,
                    "properties": {
                        "status": {"type": "string", "enum": ["ok"]},
                        "db": {"type": "string", "enum": ["ok"]},
                        "pending": {"type": "integer", "minimum": 0, "description": "readings waiting to be stored"},
                    },
                },
                "HealthDegraded": {
                    "type": "object",
                    "required": ["status", "db"],
                    "additionalProperties": False,
                    "properties": {
                        "status": {"type": "string", "enum": ["degraded"]},
                        "db": {"type": "string", "enum": ["unavailable"]},
                    },
                },
            },
        },
    }


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}
