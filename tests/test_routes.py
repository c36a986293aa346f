"""The routes' declarations: one source for parsing and for ``/openapi.json``.

Every bound the document states is the bound the server enforces: a value at
the bound parses, one past it is a 400 naming the field, on the live API.
"""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted

from meterd.web import routes
from meterd.web.app import all_routes, openapi_document
from tests.support import LiveServer
from tests.web_support import call

CPF = "12345678909"

# A value every field accepts, to vary one field at a time.
VALID: dict[str, Any] = {
    "id": CPF, "id_medidor": 1, "valor": 1.5, "seq": 1, "kind": "D", "periodo": 0, "cursor": 0, "alarm_id": 1,
    "name": "Ana", "ligacao": "mono", "limite_kw": 5, "limite_kwh": 500, "mode": "register", "tz": "America/Sao_Paulo",
    "q": "ana", "execucao": 1,
}
#: ... where a route's field of the same name is another kind of value.
VALID_ON: dict[str, dict[str, Any]] = {"/getLeituras": {"cursor": "1764558000000000-1"}}


def documented_fields(operation: dict[str, Any]) -> dict[str, tuple[bool, dict[str, Any]]]:
    """name -> (required, the number branch of its schema) as the document states it."""
    if "parameters" in operation:
        return {p["name"]: (p["required"], p["schema"]) for p in operation["parameters"]}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    out = {}
    for name, schema in body.get("properties", {}).items():
        branch = next((s for s in schema.get("oneOf", [schema]) if s.get("type") in ("integer", "number")), schema)
        out[name] = (name in body["required"], branch)
    return out


def test_the_document_lists_exactly_each_routes_fields() -> None:
    doc = openapi_document()
    for route in all_routes():
        operation = doc["paths"][route.path][route.method.lower()]
        documented = documented_fields(operation)
        assert list(documented) == [f.name for f in route.fields], route.path
        for field in route.fields:
            assert documented[field.name][0] is field.required, (route.path, field.name)
        where = "parameters" if route.method == "GET" else "requestBody"
        assert (where in operation) is bool(route.fields), route.path
        assert sorted(int(s) for s in operation["responses"]) == list(route.statuses), route.path


def bounded() -> list[tuple[routes.Route, str, str, float]]:
    """(route, field, "minimum"/"maximum", bound) for every bound the document states."""
    doc = openapi_document()
    out = []
    for route in all_routes():
        for name, (_, schema) in documented_fields(doc["paths"][route.path][route.method.lower()]).items():
            for side in ("minimum", "maximum"):
                if side in schema:
                    out.append((route, name, side, schema[side]))
    return out


def test_every_stated_bound_parses_and_one_past_it_does_not() -> None:
    checked = 0
    for route, name, side, bound in bounded():
        field = next(f for f in route.fields if f.name == name)
        past = bound + 1 if side == "maximum" else bound - (1 if isinstance(bound, int) else 0.001)
        if name == "timestamp" and side == "minimum":
            assert field.value({name: bound}) is not None  # the window's other end is the server's clock
        else:
            assert field.value({name: bound}) is not None or not field.required, (route.path, name, bound)
        try:
            field.value({name: past})
        except Exception as e:  # an ApiError: 400 naming the field
            assert getattr(e, "status", None) == 400 and name in str(e), (route.path, name, past, e)
        else:
            raise AssertionError(f"{route.path} {name}={past} parsed past its documented {side}")
        checked += 1
    assert checked >= 15


@pytest_twisted.ensureDeferred
async def test_the_live_api_refuses_one_past_every_documented_bound(server: LiveServer) -> None:
    status, customer, _ = await call(server, "POST", "/cadCliente", json_body={"id": CPF, "name": "Ana"})
    assert status == 201
    assert (await call(server, "POST", "/cadMedidor", json_body={"id": CPF}))[0] == 201
    for route, name, side, bound in bounded():
        if route.path in ("/cadCliente",) and name == "id":
            continue
        past = bound + 1 if side == "maximum" else bound - (1 if isinstance(bound, int) else 0.001)
        valid = {**VALID, **VALID_ON.get(route.path, {})}
        fields = {f.name: valid.get(f.name) for f in route.fields if f.name in valid}
        fields["timestamp"] = time.time() - 60
        fields = {k: v for k, v in fields.items() if k in {f.name for f in route.fields}}
        fields[name] = past
        if route.method == "GET":
            status, body, _ = await call(server, "GET", route.path, params={k: str(v) for k, v in fields.items()})
        else:
            status, body, _ = await call(server, route.method, route.path, json_body=fields)
        assert status == 400 and name in body["error"]["message"], (route.path, name, past, body)
