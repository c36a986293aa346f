"""The OpenAPI document: complete (every route and method), internally sound
(every $ref resolves, OpenAPI-3 shaped), and served as is. Live answers are
held to it by ``tests.web_support.call`` in the other web tests."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import pytest_twisted

from meterd.web.app import openapi_document
from tests.support import LiveServer
from tests.web_support import call, resolve, schema_errors

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def api_routes(server: LiveServer) -> dict[str, tuple[str, ...]]:
    """The routes and methods the live API has."""
    return {path: (route.method,) for path, (route, _) in server.core.api.routes.items()}


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}/{i}")


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def test_every_route_and_method_is_documented_and_nothing_else(server: LiveServer) -> None:
    doc = openapi_document()
    routes = api_routes(server)
    assert set(doc["paths"]) == set(routes)
    for path, methods in routes.items():
        documented = {m for m in doc["paths"][path] if m in HTTP_METHODS}
        assert documented == {m.lower() for m in methods}, path


def test_every_ref_resolves() -> None:
    doc = openapi_document()
    refs = [(where, node["$ref"]) for where, node in walk(doc) if isinstance(node, dict) and "$ref" in node]
    assert len(refs) > 50
    for where, ref in refs:
        assert resolve(doc, {"$ref": ref}) is not None, where
    # and every component is used by something
    used = {ref for _, ref in refs}
    for section, entries in doc["components"].items():
        if section == "securitySchemes":
            continue
        for name in entries:
            assert f"#/components/{section}/{name}" in used, f"unused component {section}/{name}"


def test_openapi3_shape() -> None:
    doc = openapi_document()
    assert re.fullmatch(r"3\.(0\.\d|1\.\d)", doc["openapi"])
    assert doc["info"]["title"] and doc["info"]["version"]
    json.dumps(doc)  # plain JSON, nothing Python-only inside
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    operation_ids = []
    for path, method, operation in operations(doc):
        assert path.startswith("/")
        operation_ids.append(operation["operationId"])
        assert operation["responses"], (path, method)
        for status, response in operation["responses"].items():
            assert re.fullmatch(r"[1-5][0-9][0-9]|default", status), (path, status)
            response = resolve(doc, response)
            assert response["description"], (path, status)
            for media in response.get("content", {}).values():
                assert "schema" in media
        for parameter in operation.get("parameters", []):
            parameter = resolve(doc, parameter)
            assert {"name", "in", "schema"} <= set(parameter), parameter
            assert parameter["in"] in ("query", "header", "path", "cookie")
        if method == "get":
            assert "requestBody" not in operation  # 3.0: GET bodies are described in words
            assert "JSON" in operation.get("description", "JSON") or "parameters" not in operation  # no fields, no body either
        for requirement in operation.get("security", []):
            assert set(requirement) <= set(schemes)
    assert len(operation_ids) == len(set(operation_ids))


def test_security_matches_the_routes_access(server: LiveServer) -> None:
    doc = openapi_document()
    for path, (route, _) in server.core.api.routes.items():
        operation = doc["paths"][path][route.method.lower()]
        security = operation.get("security", doc["security"])
        responses = operation["responses"]
        if route.access == "public":
            assert security == [], path
        else:
            assert security == [{"bearerAuth": []}], path
            assert {"401", "403"} <= set(responses), path
        assert {"405", "413", "415"} <= set(responses), path


def test_the_error_schema_is_shared_by_every_error_response() -> None:
    doc = openapi_document()
    for path, method, operation in operations(doc):
        for status, response in operation["responses"].items():
            if int(status) >= 400 and not (path == "/health" and status == "503"):
                schema = resolve(doc, response)["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)


def test_money_and_kwh_in_the_bill_schema() -> None:
    doc = openapi_document()
    bill = resolve(doc, {"$ref": "#/components/schemas/Bill"})
    assert resolve(doc, bill["properties"]["total"])["type"] == "string"
    assert resolve(doc, bill["properties"]["consumo_kwh"])["type"] == "number"
    item = doc["components"]["schemas"]["BillItem"]["properties"]
    assert re.search(item["valor"]["pattern"], "12.30") and not re.search(item["valor"]["pattern"], "12.3")


def test_the_checker_finds_what_is_wrong() -> None:
    """The checker the live tests rely on is not vacuous."""
    doc = openapi_document()
    meter = {"$ref": "#/components/schemas/MeterStatus"}
    good = {"id_medidor": 1, "mode": "register", "last_seen": None, "last_reading_at": "2026-01-01T00:00:00-03:00", "last_kwh": 1.5}
    assert schema_errors(doc, meter, good) == []
    assert schema_errors(doc, meter, {**good, "extra": 1})
    assert schema_errors(doc, meter, {k: v for k, v in good.items() if k != "mode"})
    assert schema_errors(doc, meter, {**good, "mode": "other"})
    assert schema_errors(doc, meter, {**good, "id_medidor": "1"})
    assert schema_errors(doc, meter, {**good, "last_reading_at": "2026-01-01T00:00:00"})  # no offset
    assert schema_errors(doc, meter, {**good, "id_medidor": True})
    money = {"$ref": "#/components/schemas/Bill"}
    assert any("total" in e for e in schema_errors(doc, money, {"total": 12.3}))


def test_document_is_built_once() -> None:
    assert openapi_document() is openapi_document()


@pytest_twisted.ensureDeferred
async def test_served_as_is(server) -> None:
    status, body, response = await call(server, "GET", "/openapi.json", token=None)
    assert status == 200
    assert body == json.loads(json.dumps(openapi_document()))


def test_every_operation_says_what_it_does() -> None:
    for path, method, operation in operations(openapi_document()):
        assert operation["summary"], (path, method)
