"""The OpenAPI 3 document served at ``/openapi.json`` (DESIGN §3).

The paths are written from the routes' declarations (:mod:`meterd.web.routes`):
each operation's parameters or request body, its security and its error
responses come from the same objects that parse the requests, so the
document cannot drift from the code. What the routes answer stays data here:
the response schemas say ``additionalProperties: false`` so the tests can hold
the live answers to them field by field; a field added to a handler without
being added here fails them.

Pure: imports nothing from Twisted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import meterd
from meterd import periods
from meterd.alarm_rules import RULES
from meterd.tariff import LIGACOES
from meterd.web.routes import Field, Route

__all__ = ["document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


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

_PARAMS_NOTE = (
    " Parameters may be sent as a query string or as a JSON object in the body"
    " (the assignment's clients send a JSON body even on GET); both are merged,"
    " and the same key with two different values is a 400 `conflicting_parameter`."
    " Numbers may be sent as strings spelled as JSON numbers (`\"id_medidor\": \"1\"`)."
)
_GET_BODY_NOTE = " The same parameters are accepted as a JSON object in the body of the GET."
_WHO = {
    "public": "",
    "operator": " Credentials: the operator token.",
    "customer": " Credentials: the customer's token (for its own `id` only) or the operator token.",
    "meter": " Credentials: the meter's key (for its own `id` and `id_medidor` only) or the operator token.",
}

_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601 local time with offset"}
_ISO_OR_NULL = {**_ISO, "nullable": True}
_DATE = {"type": "string", "format": "date"}
_KWH = {"type": "number", "minimum": 0, "description": "kWh, at most 3 decimals (exact Wh)"}
_MONEY = {"type": "string", "pattern": "^-?[0-9]+\\.[0-9]{2}$", "description": "R$, exactly 2 decimals", "example": "123.45"}
_RATE = {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "description": "a decimal rate as written in the tariff"}


def document(
    routes: Sequence[Route], *, schemas: Mapping[str, Any] | None = None, tags: Sequence[Mapping[str, str]] = ()
) -> dict[str, Any]:
    """The whole document for ``routes``; ``schemas`` and ``tags`` are a feature module's own, beside the core API's."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    extra = dict(schemas or {})
    clash = set(extra) & set(_COMPONENTS["schemas"])
    assert not clash, f"schemas declared twice: {sorted(clash)}"
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "meterd",
            "version": meterd.__version__,
            "description": (
                "Smart-meter head-end and billing server. Every answer is a JSON object"
                " (`application/json; charset=utf-8`) except `/metrics` and the CSV forms of"
                " `/getConsumoHist` and `/getLeituras` (`format=csv`, or `Accept: text/csv`); every error is"
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
            *(dict(tag) for tag in tags),
        ],
        "paths": paths,
        "components": {**_COMPONENTS, "schemas": {**_COMPONENTS["schemas"], **extra}},
    }


def _operation(route: Route) -> dict[str, Any]:
    get = route.method == "GET"
    notes = (_GET_BODY_NOTE if get else "") + _PARAMS_NOTE if route.fields else ""
    operation: dict[str, Any] = {
        "tags": [route.tag],
        "operationId": route.operation_id,
        "summary": route.summary,
        "description": (route.description + _WHO[route.access] + notes).strip(),
        "security": [] if route.access == "public" else [{"bearerAuth": []}],
    }
    if route.fields and get:
        operation["parameters"] = [_parameter(f) for f in route.fields]
    elif route.fields:
        operation["requestBody"] = {
            "required": True,
            "content": _json({
                "type": "object",
                "required": [f.name for f in route.fields if f.required],
                "properties": {f.name: {**_with_default(f, dict(f.schema)), "description": f.description} for f in route.fields},
            }),
        }
    responses: dict[str, Any] = {}
    for status in route.statuses:
        ok = [(description, schema) for s, description, schema in route.ok if s == status]
        if ok:
            description, schema = ok[0]
            media = {"type": "object"} if route.media == "application/json" else {"type": "string"}
            content = _json(_ref(schema)) if schema else {route.media: {"schema": media}}
            if status == 200:
                content.update({other: {"schema": {"type": "string"}} for other in route.also})
            responses[str(status)] = {"description": description, "content": content}
        else:
            responses[str(status)] = {"$ref": f"#/components/responses/{_ERROR_RESPONSES[status]}"}
    operation["responses"] = responses
    return operation


def _parameter(field: Field) -> dict[str, Any]:
    return {
        "name": field.name,
        "in": "query",
        "required": field.required,
        "schema": _with_default(field, dict(field.query_schema)),
        "description": field.description,
    }


def _with_default(field: Field, schema: dict[str, Any]) -> dict[str, Any]:
    if not field.required and field.default is not None:
        schema["default"] = field.default
    return schema


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


_COMPONENTS: dict[str, Any] = {
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
    "responses": {
        "BadRequest": _error_response(
            "a field is missing or invalid (codes such as `missing_field`, `invalid_type`, `invalid_number`,"
            " `not_finite`, `negative`, `out_of_range`, `too_precise`, `invalid_id`, `invalid_value`,"
            " `invalid_tz`, `invalid_url`, `timestamp_too_old`, `timestamp_in_future`, `malformed_json`,"
            " `conflicting_parameter`, `invalid_cursor`, `nothing_to_change`)"
        ),
        "Unauthorized": {
            **_error_response("no or bad credentials (`unauthorized`)"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="meterd"'}},
        },
        "Forbidden": _error_response("valid credentials that do not open this customer, meter or route (`forbidden`)"),
        "NotFound": _error_response(
        "unknown customer, meter, alarm, billing run, webhook or route (`unknown_customer`, `unknown_meter`, `unknown_alarm`,"
        " `unknown_run`, `unknown_webhook`, `unknown_route`), a bill not issued (`bill_not_issued`) or with nothing to pay (`nothing_to_pay`)"
    ),
        "MethodNotAllowed": {
            **_error_response("wrong method (`method_not_allowed`)"),
            "headers": {"Allow": {"schema": {"type": "string"}, "description": "the methods the route accepts"}},
        },
        "Conflict": _error_response(
            "already exists (`customer_exists`), a different value for the same reading (`conflict`),"
            " a meter's state forbids it (`already_retired`, `not_retired`, `already_replaced`)"
            " or a billing run is running (`billing_run_active`)"
        ),
        "PayloadTooLarge": _error_response("the body is larger than 64 KiB (`body_too_large`)"),
        "UnsupportedMediaType": _error_response("the body is not a JSON object (`unsupported_media_type`)"),
        "Unprocessable": _error_response(
            "well-formed but impossible: `register_backwards`, `meter_retired` (a reading after a retired"
            " meter's final one), `readings_after_final`, `before_final_reading`, or a billing run without"
            " the tariff's `[empresa]` (`company_not_configured`)"
        ),
        "ServiceUnavailable": _error_response(
        "the store is unavailable (`store_unavailable`), ingest is full (`overloaded`)"
        " or alarms are not running (`alarms_unavailable`); retry"
    ),
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
        "NewToken": {
        "type": "object",
        "required": ["id", "token"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "token": {"type": "string", "description": "the customer's new bearer token; shown only now"},
        },
    },
    "NewKey": {
        "type": "object",
        "required": ["id", "id_medidor", "key"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "id_medidor": {"type": "integer", "minimum": 1},
            "key": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "the meter's new HMAC key; shown only now"},
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
        "Readings": {
            "type": "object",
            "required": ["id", "tz", "inicio", "fim", "total", "leituras", "cursor"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "tz": {"type": "string"},
                "inicio": {**_ISO_OR_NULL, "description": "the period's first instant (null: from the first reading)"},
                "fim": {**_ISO_OR_NULL, "description": "the first instant after the period (null: to the newest reading)"},
                "total": {"type": "integer", "minimum": 0, "description": "readings in the whole period"},
                "leituras": {"type": "array", "items": _ref("Reading")},
                "cursor": {"type": "string", "nullable": True, "description": "send it back for the next page; null: this is the last"},
            },
        },
        "Reading": {
            "type": "object",
            "required": ["id_medidor", "timestamp", "valor_kwh", "consumo_kwh", "estimated"],
            "additionalProperties": False,
            "properties": {
                "id_medidor": {"type": "integer", "minimum": 1},
                "timestamp": _ISO,
                "valor_kwh": {**_KWH, "description": "as the meter sent it: the register, or the interval's energy"},
                "consumo_kwh": {**_KWH, "description": "the consumption since the meter's previous reading"},
                "estimated": {"type": "boolean", "description": "the previous reading is more than an hour before this one"},
            },
        },
        "Bill": {
            "type": "object",
            "description": (
                "A month's bill. `status`: `emitida` (issued by a billing run: stored, never changed, with the fields"
                " marked *issued*) or `previa` (a month not issued: computed from the readings as they are). `mes`:"
                " `aberto` (the current month) or `fechado`."
            ),
            "required": [
                "status", "mes", "referencia", "id", "name", "ligacao", "classe", "tz", "inicio", "fim", "dias",
                "medidores", "consumo_kwh", "media_diaria_kwh", "faturado_kwh", "minimo", "bandeira", "itens",
                "tributos", "total_mes", "total", "estimado",
            ],
            "additionalProperties": False,
            "properties": {
                "status": {"type": "string", "enum": ["previa", "emitida"]},
                "mes": {"type": "string", "enum": ["aberto", "fechado"]},
                "numero": {"type": "integer", "minimum": 1, "description": "issued: the bill number (sequential, unique)"},
                "referencia": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$", "example": "2026-11"},
                "emissao": {**_DATE, "description": "issued: the issue date"},
                "vencimento": {**_DATE, "description": "issued: the due date"},
                "empresa": _ref("Company"),
                "id": {"type": "string", "description": "the customer's CPF or CNPJ, digits"},
                "name": {"type": "string"},
                "ligacao": {"type": "string", "enum": list(LIGACOES)},
                "classe": {"type": "string", "description": "the unit's class"},
                "tz": {"type": "string", "description": "the customer's zone: the calendar of the month"},
                "inicio": _ISO,
                "fim": {**_ISO, "description": "the cycle's end (exclusive: the next month's first instant)"},
                "dias": {"type": "integer", "minimum": 0, "description": "days in the cycle"},
                "leituras": {"type": "array", "items": _ref("BillReading"), "description": "issued: each meter's readings"},
                "medidores": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id_medidor", "consumo_kwh", "estimado"],
                        "additionalProperties": False,
                        "properties": {"id_medidor": {"type": "integer"}, "consumo_kwh": _KWH, "estimado": {"type": "boolean"}},
                    },
                },
                "consumo_kwh": {**_KWH, "description": "measured, all meters"},
                "media_diaria_kwh": {**_KWH, "description": "consumo_kwh / dias"},
                "faturado_kwh": {**_KWH, "description": "billed: max(consumo_kwh, the connection's minimum)"},
                "minimo": _ref("BillMinimum"),
                "bandeira": {"type": "string", "example": "amarela"},
                "itens": {"type": "array", "items": _ref("BillItem")},
                "tributos": _ref("Taxes"),
                "total_mes": {**_MONEY, "description": "the month's own lines and taxes"},
                "ajustes": {"type": "array", "items": _ref("BillAdjustment"), "description": "issued: earlier months' adjustments"},
                "credito_anterior": {
                    "type": "object",
                    "nullable": True,
                    "required": ["numero", "valor"],
                    "additionalProperties": False,
                    "properties": {"numero": {"type": "integer"}, "valor": _MONEY},
                    "description": "issued: the previous bill, when its total was a credit (negative)",
                },
                "total": {**_MONEY, "description": "to pay: total_mes + ajustes + credito_anterior"},
                "estimado": {"type": "boolean"},
                "historico": {"type": "array", "items": _ref("BillMonth"), "description": "issued: the 12 months before and this one"},
                "pix": {"type": "string", "nullable": True, "description": "issued: the Pix copia-e-cola (null: nothing to pay)"},
                "codigo_barras": {"type": "string", "nullable": True, "pattern": "^[0-9]{44}$", "description": "issued: FEBRABAN barcode"},
                "linha_digitavel": {"type": "string", "nullable": True, "pattern": "^[0-9]{48}$", "description": "issued: the barcode's typed form"},
            },
        },
        "Company": {
            "type": "object",
            "required": ["nome", "cnpj", "endereco"],
            "additionalProperties": False,
            "properties": {"nome": {"type": "string"}, "cnpj": {"type": "string", "pattern": "^[0-9]{14}$"}, "endereco": {"type": "string"}},
        },
        "BillReading": {
            "type": "object",
            "required": [
                "id_medidor", "modo", "data_anterior", "leitura_anterior", "estimada_anterior", "data_atual",
                "leitura_atual", "estimada_atual", "constante", "consumo_kwh",
            ],
            "additionalProperties": False,
            "properties": {
                "id_medidor": {"type": "integer"},
                "modo": {"type": "string", "enum": ["register", "interval"]},
                "data_anterior": _ISO,
                "leitura_anterior": {**_KWH, "description": "the register at the cycle's start (interval meters: kWh counted)"},
                "estimada_anterior": {"type": "boolean"},
                "data_atual": _ISO,
                "leitura_atual": {**_KWH, "description": "the register at the cycle's end"},
                "estimada_atual": {"type": "boolean"},
                "constante": {"type": "integer", "description": "multiplying constant"},
                "consumo_kwh": _KWH,
            },
        },
        "BillMinimum": {
            "type": "object",
            "required": ["kwh", "aplicado", "motivo"],
            "additionalProperties": False,
            "properties": {
                "kwh": {"type": "integer", "description": "the connection's minimum (custo de disponibilidade)"},
                "aplicado": {"type": "boolean"},
                "motivo": {"type": "string", "nullable": True},
            },
        },
        "BillAdjustment": {
            "type": "object",
            "required": [
                "referencia", "descricao", "consumo_faturado_kwh", "consumo_corrigido_kwh", "consumo_kwh", "quantidade_kwh",
                "itens", "tributos", "valor",
            ],
            "additionalProperties": False,
            "description": "an issued month whose consumption a late reading changed, priced with that month's rates",
            "properties": {
                "referencia": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                "descricao": {"type": "string", "example": "Ajuste de faturamento ref. 10/2026"},
                "consumo_faturado_kwh": {**_KWH, "description": "what the month was billed as"},
                "consumo_corrigido_kwh": {**_KWH, "description": "what it measures now"},
                "consumo_kwh": {"type": "number", "description": "the difference (may be negative)"},
                "quantidade_kwh": {"type": "number", "description": "the difference in billed kWh"},
                "itens": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["descricao", "valor"],
                        "additionalProperties": False,
                        "properties": {"descricao": {"type": "string"}, "valor": _MONEY},
                    },
                },
                "tributos": {
                    "type": "object",
                    "required": ["icms", "pis", "cofins", "valor"],
                    "additionalProperties": False,
                    "properties": {"icms": _MONEY, "pis": _MONEY, "cofins": _MONEY, "valor": _MONEY},
                },
                "valor": {**_MONEY, "description": "taxes included"},
            },
        },
        "BillMonth": {
            "type": "object",
            "required": ["referencia", "consumo_kwh", "dias", "media_diaria_kwh", "estimado"],
            "additionalProperties": False,
            "properties": {
                "referencia": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                "consumo_kwh": {**_KWH, "nullable": True, "description": "as billed, adjustments included; null: not billed"},
                "dias": {"type": "integer", "nullable": True},
                "media_diaria_kwh": {**_KWH, "nullable": True},
                "estimado": {"type": "boolean"},
            },
        },
        "BillItem": {
            "type": "object",
            "required": ["descricao", "quantidade_kwh", "tarifa", "tarifa_com_tributos", "valor"],
            "additionalProperties": False,
            "properties": {
                "descricao": {"type": "string"},
                "quantidade_kwh": _KWH,
                "tarifa": {**_RATE, "description": "R$/kWh before taxes"},
                "tarifa_com_tributos": {**_RATE, "description": "R$/kWh with the taxes 'por dentro', 8 decimals"},
                "valor": _MONEY,
            },
        },
        "Taxes": {
            "type": "object",
            "required": ["icms", "pis", "cofins", "valor", "base", "aliquotas"],
            "additionalProperties": False,
            "properties": {
                "icms": _MONEY,
                "pis": _MONEY,
                "cofins": _MONEY,
                "valor": _MONEY,
                "base": {**_MONEY, "description": "the base of every tax: subtotal / (1 - the rates' sum)"},
                "aliquotas": {
                    "type": "object",
                    "required": ["icms", "pis", "cofins"],
                    "additionalProperties": False,
                    "properties": {"icms": _RATE, "pis": _RATE, "cofins": _RATE},
                    "description": "the tax rates applied, as fractions",
                },
            },
        },
        "BillingRun": {
            "type": "object",
            "required": [
                "execucao", "periodo", "referencia", "estado", "iniciada", "atualizada", "concluida", "clientes",
                "processados", "emitidas", "ja_emitidas", "ignoradas", "ajustes", "erros", "valor_total", "mensagem",
            ],
            "additionalProperties": False,
            "properties": {
                "acao": {"type": "string", "enum": ["nova", "retomada"], "description": "POST: started anew or resumed"},
                "execucao": {"type": "integer", "minimum": 1},
                "periodo": {"type": "integer", "minimum": 1},
                "referencia": {"type": "string", "description": "the month in the server's zone (--tz)"},
                "estado": {"type": "string", "enum": ["executando", "concluida", "interrompida"]},
                "iniciada": _ISO,
                "atualizada": _ISO,
                "concluida": _ISO_OR_NULL,
                "clientes": {"type": "integer", "description": "customers when the run started"},
                "processados": {"type": "integer"},
                "emitidas": {"type": "integer", "description": "bills issued"},
                "ja_emitidas": {"type": "integer", "description": "customers whose month was already issued"},
                "ignoradas": {"type": "integer", "description": "customers registered after the month"},
                "ajustes": {"type": "integer", "description": "adjustments carried by the bills issued"},
                "erros": {"type": "integer"},
                "valor_total": _MONEY,
                "mensagem": {"type": "string", "nullable": True, "description": "why a run was cut short"},
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
}
