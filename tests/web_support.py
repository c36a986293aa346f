"""Helpers of the HTTP-layer tests: a tiny checker of live answers against the
OpenAPI document, a dump of the store to prove bad requests change nothing,
and timestamps that are safely in the past in a customer's time zone."""

from __future__ import annotations

import re
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from meterd.web.app import openapi_document
from tests.support import LiveServer

SAO_PAULO = ZoneInfo("America/Sao_Paulo")


# -- the schema checker ------------------------------------------------------


def resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow ``$ref`` chains to the node they point at (KeyError if broken)."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if ref in seen:
            raise ValueError(f"$ref cycle at {ref}")
        seen.add(ref)
        assert ref.startswith("#/"), f"only local refs are used, not {ref}"
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise AssertionError(f"unknown schema type {kind}")


def schema_errors(doc: dict[str, Any], schema: Any, value: Any, where: str = "$") -> list[str]:
    """What in ``value`` breaks ``schema`` (the subset of OpenAPI 3.0 the document uses)."""
    schema = resolve(doc, schema)
    if value is None:
        return [] if schema.get("nullable") else [f"{where}: null where it is not nullable"]
    if "oneOf" in schema:
        matches = [s for s in schema["oneOf"] if not schema_errors(doc, s, value, where)]
        return [] if len(matches) == 1 else [f"{where}: {value!r} matches {len(matches)} of oneOf"]
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None and not _type_ok(kind, value):
        return [f"{where}: {value!r} is not of type {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if schema.get("format") == "date-time":
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"{where}: {value!r} is not ISO 8601")
            else:
                if parsed.utcoffset() is None:
                    errors.append(f"{where}: {value!r} has no offset")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{where}: missing required {name}")
        for name, item in value.items():
            if name in properties:
                errors += schema_errors(doc, properties[name], item, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: undocumented field {name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(doc, schema["items"], item, f"{where}[{i}]")
    return errors


def assert_documented(path: str, method: str, status: int, body: Any, headers: dict[str, list[str]] | None = None) -> None:
    """A live answer is one the document describes: its status, its body, its headers."""
    doc = openapi_document()
    if path not in doc["paths"]:  # an unknown route: still the error shape
        assert status == 404, (path, status)
        assert not schema_errors(doc, {"$ref": "#/components/schemas/Error"}, body), body
        return
    if method.lower() not in doc["paths"][path]:  # a method the route does not take
        assert status == 405 and headers is not None and "allow" in headers, (method, path, status)
        assert not schema_errors(doc, {"$ref": "#/components/schemas/Error"}, body), body
        return
    operation = doc["paths"][path][method.lower()]
    assert str(status) in operation["responses"], f"{method} {path} answered an undocumented {status}: {body!r}"
    response = resolve(doc, operation["responses"][str(status)])
    content = response.get("content", {})
    if "application/json" in content:
        errors = schema_errors(doc, content["application/json"]["schema"], body)
        assert not errors, f"{method} {path} {status}: {errors}"
    for name in response.get("headers", {}):
        assert headers is not None and name.lower() in headers, f"{method} {path} {status} lacks header {name}"


async def call(server: LiveServer, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """``server.call`` that also holds the answer to the OpenAPI document."""
    status, body, response = await server.call(method, path, **kwargs)
    assert status != 500, body
    headers = {k.decode().lower(): [x.decode("latin-1") for x in v] for k, v in response.headers.getAllRawHeaders()}
    if path != "/metrics" or status != 200:
        assert headers["content-type"] == ["application/json; charset=utf-8"], headers
    if method != "HEAD":
        assert_documented(path, method, status, body, headers)
    return status, body, response


# -- the store, as rows ------------------------------------------------------


WEBHOOK_REGISTRATION = ("webhook_id", "url", "customer_id", "secret", "created_ms", "removed_ms")


def dump_store(data_dir: Path, *, except_last_seen: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the SQLite store, sorted; equal dumps = nothing changed.

    ``except_last_seen`` leaves out ``meters.last_seen_ms``: the store counts a
    refused but well-formed reading (conflict, register going backwards) as a
    sign of life of its meter, on purpose. A webhook's delivery state (its
    cursor, lease, last attempts) moves in the background, whatever the
    requests: only what the operator registered is compared.
    """
    connection = sqlite3.connect(f"file:{data_dir / 'meterd.sqlite3'}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        dump = {}
        for table in tables:
            cursor = connection.execute(f'SELECT * FROM "{table}"')
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
            if except_last_seen and table == "meters":
                rows = [tuple(v for n, v in zip(names, row) if n != "last_seen_ms") for row in rows]
            if table == "webhooks":
                rows = [tuple(v for n, v in zip(names, row) if n in WEBHOOK_REGISTRATION) for row in rows]
            dump[table] = sorted(rows, key=repr)
        return dump
    finally:
        connection.close()


# -- time ----------------------------------------------------------------------


def yesterday(tz: ZoneInfo = SAO_PAULO, now: datetime | None = None) -> date:
    return (now or datetime.now(tz)).astimezone(tz).date() - timedelta(days=1)


def local_ts(day: date, hour: int, minute: int = 0, tz: ZoneInfo = SAO_PAULO) -> int:
    """Unix seconds of a local wall-clock time (yesterday's are always in the past)."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).timestamp())


def periods_back(day: date, kind: str, tz: ZoneInfo = SAO_PAULO) -> int:
    """``periodo`` of the day/month/year holding ``day``, counted from today in ``tz``."""
    today = datetime.now(tz).date()
    if kind == "D":
        return (today - day).days
    if kind == "M":
        return (today.year - day.year) * 12 + today.month - day.month
    return today.year - day.year


# -- raw HTTP ----------------------------------------------------------------


def raw_exchange(url: str, payload: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send exact bytes over a blocking socket and read one HTTP/1.1 answer.

    Blocking on purpose: run it with ``deferToThread`` so the in-process
    server keeps serving on the reactor thread meanwhile. A connection the
    server closes early gives status 0.
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except OSError:  # the server may stop reading and close; its answer may still be there
            pass
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return 0, {}, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()

        def more() -> bool:
            nonlocal body
            chunk = sock.recv(65536)
            body += chunk
            return bool(chunk)

        if headers.get("transfer-encoding", "").lower() == "chunked":
            decoded = b""
            while True:
                while b"\r\n" not in body and more():
                    pass
                size_line, _, body = body.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    return status, headers, decoded
                while len(body) < size + 2 and more():
                    pass
                decoded, body = decoded + body[:size], body[size + 2 :]
        length = int(headers.get("content-length", "0"))
        while len(body) < length and more():
            pass
        return status, headers, body[:length]
