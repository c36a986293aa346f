"""Each route declared once: its parameters, its credential, its answers.

A :class:`Field` says what one parameter is (its parser, its bounds, its
default) and a :class:`Route` what a route takes, who may call it and which
statuses it answers with. The same objects parse every request
(:meth:`Route.parse`) and write ``/openapi.json``'s parameters, request
bodies, security and error responses (:mod:`meterd.web.openapi`), so a bound
changed in one place is changed in both. Fields parse with the functions of
:mod:`meterd.readings`, the ones a datagram's fields go through too.

Every field may come from the query string or the JSON body (DESIGN §3): the
assignment's clients send a body even on GET. Pure: no Twisted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterd.numbers import PATTERN as NUMBER_PATTERN
from meterd.readings import MAX_FUTURE_S, MIN_TIMESTAMP_S, InvalidField, as_int, customer_id, kwh_exact, kwh_to_wh, timestamp_exact
from meterd.web.errors import bad_request

__all__ = [
    "Access", "Field", "Route", "route", "routes_of",
    "choice", "integer", "kilo", "kwh", "taxid", "text", "timestamp", "zone",
    "COMMON_ERRORS",
]

Access = Literal["public", "operator", "customer", "meter"]
Parser = Callable[[str, Any], Any]
F = TypeVar("F", bound=Callable[..., Any])

#: What any request can be answered before its handler runs: a bad body or
#: parameters (400), a malformed Authorization header (401), the wrong method
#: (405), a body over 64 KiB (413), a body that is not JSON (415). Routes that
#: need credentials add 403 (someone else's), and each route names the rest.
COMMON_ERRORS = (400, 401, 405, 413, 415)


@dataclass(frozen=True)
class Field:
    """One parameter: how it is parsed and how it is documented, from one description."""

    name: str
    description: str
    parse: Parser  # (name, raw value) -> value; raises InvalidField
    schema: Mapping[str, Any]  # its JSON schema in a JSON body
    query_schema: Mapping[str, Any]  # ... and in a query string
    required: bool = True
    default: Any = None  # when absent (optional fields); None may mean "the server's configured default"

    def value(self, params: Mapping[str, Any]) -> Any:
        raw = params.get(self.name)
        if raw is None or raw == "":
            if self.required:
                raise bad_request("missing_field", f"{self.name} is required")
            return self.default
        try:
            return self.parse(self.name, raw)
        except InvalidField as e:
            raise bad_request(e.code, str(e)) from None

    def optional(self, default: Any = None, description: str | None = None) -> Field:
        """The same field, not required, ``default`` when absent."""
        return replace(self, required=False, default=default, description=description or self.description)


@dataclass(frozen=True)
class Route:
    """A route: method, path, who may call it, its fields and its answers."""

    method: str
    path: str
    access: Access
    fields: tuple[Field, ...]
    summary: str
    description: str = ""
    tag: str = "customer"
    # (status, description, schema name in components/schemas, or None for a non-JSON body)
    ok: tuple[tuple[int, str, str | None], ...] = ((200, "the answer", None),)
    errors: tuple[int, ...] = ()  # beyond COMMON_ERRORS (and 403 with credentials)
    media: str = "application/json"  # of the successful answers
    also: tuple[str, ...] = ()  # other media types of the 200 answer, which Accept or `format` selects
    handler: str = ""  # the Api method's name, set by @route

    def parse(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Every declared field's value, in declaration order (the first bad one is the 400)."""
        return {f.name: f.value(params) for f in self.fields}

    @property
    def statuses(self) -> tuple[int, ...]:
        """Every status this route can answer with, sorted."""
        credentials = (403,) if self.access != "public" else ()
        return tuple(sorted({s for s, _, _ in self.ok} | set(COMMON_ERRORS) | set(credentials) | set(self.errors)))

    @property
    def operation_id(self) -> str:
        return self.path.strip("/").replace(".", "_").replace("/", "_")


def route(method: str, path: str, access: Access, *fields: Field, **doc: Any) -> Callable[[F], F]:
    """Declare the decorated ``Api`` method as the handler of a route."""

    def declare(handler: F) -> F:
        handler.route = Route(method, path, access, fields, handler=handler.__name__, **doc)  # type: ignore[attr-defined]
        return handler

    return declare


def routes_of(cls: type) -> list[Route]:
    """The routes a class's methods declare, in definition order."""
    return [r for value in vars(cls).values() if (r := getattr(value, "route", None)) is not None and isinstance(r, Route)]


# -- field kinds -----------------------------------------------------------------------

_NUMERIC_STRING = {"type": "string", "pattern": NUMBER_PATTERN}


def taxid(name: str = "id", description: str = "CPF (11 digits) or CNPJ (14 digits), digits or formatted; check digits verified") -> Field:
    return Field(
        name, description, lambda _, v: customer_id(v),
        {"oneOf": [{"type": "string"}, {"type": "integer"}], "example": "123.456.789-09"},
        {"type": "string", "example": "123.456.789-09"},
    )


def integer(name: str, description: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> Field:
    bounds = {"minimum": minimum, "maximum": maximum}
    return Field(
        name, description, lambda n, v: as_int(n, v, minimum=minimum, maximum=maximum),
        {"oneOf": [{"type": "integer", **bounds}, _NUMERIC_STRING]}, {"type": "integer", **bounds},
    )


def _number(name: str, description: str, parse: Parser, minimum: float, maximum: float) -> Field:
    bounds = {"minimum": minimum, "maximum": maximum}
    return Field(name, description, parse, {"oneOf": [{"type": "number", **bounds}, _NUMERIC_STRING]}, {"type": "number", **bounds})


def kwh(name: str, description: str, *, maximum: int) -> Field:
    """An energy in kWh, checked but for its precision (an ``Exact``): the handler decides whether to round."""
    return _number(name, description, kwh_exact, 0, maximum)


def kilo(name: str, description: str, *, maximum: int) -> Field:
    """A positive kW or kWh limit with at most 3 decimals, as integer W or Wh."""

    def parse(n: str, v: Any) -> int:
        units = kwh_to_wh(n, v)
        if units <= 0:
            raise InvalidField("out_of_range", f"{n} must be positive")
        return units

    return _number(name, description, parse, 0.001, maximum)


def timestamp(name: str, description: str) -> Field:
    """Unix seconds, fractions allowed (an ``Exact``): the handler holds it to the window around its clock."""
    schema = {"minimum": MIN_TIMESTAMP_S}
    return Field(
        name, f"{description}; not before 2000-01-01 nor more than {MAX_FUTURE_S} s ahead of the server's clock",
        timestamp_exact, {"oneOf": [{"type": "number", **schema}, _NUMERIC_STRING]}, {"type": "number", **schema},
    )


def text(name: str, description: str, *, max_length: int = 200) -> Field:
    def parse(n: str, v: Any) -> str:
        if not isinstance(v, str):
            raise InvalidField("invalid_type", f"{n} must be a string")
        v = v.strip()
        if not v or len(v) > max_length or not v.isprintable():
            raise InvalidField("invalid_value", f"{n} must be 1 to {max_length} printable characters")
        return v

    schema = {"type": "string", "minLength": 1, "maxLength": max_length}
    return Field(name, description, parse, schema, schema)


def choice(name: str, description: str, options: tuple[str, ...], *, fold: Callable[[str], str] | None = None) -> Field:
    """One of ``options``; ``fold`` (``str.upper``, say) is applied first, and the document says so."""
    base = text(name, description, max_length=max(len(o) for o in options))

    def parse(n: str, v: Any) -> str:
        value = base.parse(n, v if fold is None or not isinstance(v, str) else fold(v))
        if value not in options:
            raise InvalidField("invalid_value", f"{n} must be one of {', '.join(options)}")
        return value

    schema = {"type": "string", "enum": list(options)}
    if fold is not None:
        description += " (case-insensitive)"
    return Field(name, description, parse, schema, schema)


def zone(name: str, description: str) -> Field:
    base = text(name, description, max_length=64)

    def parse(n: str, v: Any) -> str:
        value = base.parse(n, v)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidField("invalid_tz", f"{value} is not an IANA time zone") from None
        return value

    return Field(name, description, parse, {"type": "string", "example": "America/Sao_Paulo"}, {"type": "string", "example": "America/Sao_Paulo"})
