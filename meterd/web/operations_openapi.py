"""The schemas of the operations routes' answers (:mod:`meterd.web.operations`) in ``/openapi.json``.

Like :mod:`meterd.web.openapi`'s own, each says ``additionalProperties:
false`` so the tests hold live answers to it field by field. Pure data.
"""

from __future__ import annotations

from typing import Any

from meterd.tariff import LIGACOES

__all__ = ["SCHEMAS"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], properties: dict[str, Any], description: str = "") -> dict[str, Any]:
    schema = {"type": "object", "required": required, "additionalProperties": False, "properties": properties}
    return {**schema, "description": description} if description else schema


_ISO = {"type": "string", "format": "date-time", "description": "ISO 8601 local time with offset"}
_ISO_OR_NULL = {**_ISO, "nullable": True}
_KWH = {"type": "number", "minimum": 0, "description": "kWh, at most 3 decimals (exact Wh)"}
_ID = {"type": "string", "pattern": "^([0-9]{11}|[0-9]{14})$", "description": "CPF or CNPJ, digits only"}
_METER_ID = {"type": "integer", "minimum": 1}
_CURSOR = {"type": "string", "nullable": True, "description": "send it back as `cursor` for the next page; null on the last page"}
_CUSTOMER = {
    "id": _ID,
    "name": {"type": "string"},
    "ligacao": {"type": "string", "enum": list(LIGACOES)},
    "limite_kw": {"type": "number"},
    "limite_kwh": {"type": "number"},
    "tz": {"type": "string"},
}
_ANY = {"description": "a JSON value: text, a number (kW, kWh), or an object for a whole record", "nullable": True}

SCHEMAS: dict[str, Any] = {
    "CustomerSearch": _object(["q", "results", "cursor"], {
        "q": {"type": "string", "description": "the query, as sent"},
        "results": {"type": "array", "items": _ref("CustomerFound")},
        "cursor": _CURSOR,
    }),
    "CustomerFound": _object([*_CUSTOMER, "meters"], {
        **_CUSTOMER,
        "meters": {"type": "integer", "minimum": 0, "description": "how many meters the customer has (retired ones included)"},
    }),
    "CustomerDetail": _object([*_CUSTOMER, "created_at", "meters", "active"], {
        **_CUSTOMER,
        "created_at": _ISO,
        "meters": {"type": "array", "items": _ref("MeterDetail")},
        "active": {"type": "array", "items": _ref("Alarm")},
    }),
    "MeterDetail": _object(
        ["id_medidor", "mode", "last_seen", "last_reading_at", "last_kwh", "silent", "retired_at", "replaces", "replaced_by"],
        {
            "id_medidor": _METER_ID,
            "mode": {"type": "string", "enum": ["register", "interval"]},
            "last_seen": {**_ISO_OR_NULL, "description": "when the server last received a reading (server clock)"},
            "last_reading_at": {**_ISO_OR_NULL, "description": "time of the newest reading"},
            "last_kwh": {"type": "number", "nullable": True,
                         "description": "the newest reading: the register (register meters) or the last interval's energy (interval meters)"},
            "silent": {"type": "boolean", "description": "nothing heard for --silent-after (never for a retired meter)"},
            "retired_at": {**_ISO_OR_NULL, "description": "the final reading's time, if the meter is retired"},
            "replaces": {"type": "integer", "nullable": True, "description": "the retired meter this one replaced"},
            "replaced_by": {"type": "integer", "nullable": True, "description": "the meter that replaced this one"},
        },
    ),
    "CustomerUpdated": _object([*_CUSTOMER, "changed"], {
        **_CUSTOMER,
        "changed": {"type": "array", "items": {"type": "string"}, "description": "the fields whose value changed"},
    }),
    "MeterRetired": _object(["id", "id_medidor", "retired_at", "timestamp", "valor", "stored"], {
        "id": _ID,
        "id_medidor": _METER_ID,
        "retired_at": _ISO,
        "timestamp": {"type": "number", "description": "the final reading's time, unix seconds"},
        "valor": _KWH,
        "stored": {"type": "boolean", "description": "the final reading was stored now (false: it was the newest stored already)"},
    }),
    "MeterReplaced": _object(["id", "id_medidor", "mode", "key", "replaces", "valor", "installed_at"], {
        "id": _ID,
        "id_medidor": _METER_ID,
        "mode": {"type": "string", "enum": ["register", "interval"]},
        "key": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "HMAC key and bearer token of the new meter; shown only now"},
        "replaces": _METER_ID,
        "valor": _KWH,
        "installed_at": _ISO,
    }),
    "AuditLog": _object(["id", "entries", "cursor"], {
        "id": {**_ID, "nullable": True, "description": "the customer asked about, or null for everyone's"},
        "entries": {"type": "array", "items": _ref("AuditEntry")},
        "cursor": _CURSOR,
    }),
    "AuditEntry": _object(
        ["audit_id", "at", "who", "address", "action", "id", "id_medidor", "field", "old", "new"],
        {
            "audit_id": {"type": "integer", "minimum": 1, "description": "increasing in commit order"},
            "at": _ISO,
            "who": {"type": "string", "enum": ["operator"]},
            "address": {"type": "string", "description": "the client's IP address"},
            "action": {"type": "string", "enum": [
                "customer_registered", "customer_updated", "token_renewed", "meter_registered", "key_renewed",
                "meter_retired", "meter_replaced",
            ]},
            "id": _ID,
            "id_medidor": {"type": "integer", "nullable": True},
            "field": {"type": "string", "nullable": True, "description": "the field an update changed"},
            "old": _ANY,
            "new": _ANY,
        },
    ),
}
