"""The tariff: what a kWh costs, which taxes apply and which flag each month has,
and who the utility is on its bills (the optional ``[empresa]`` section).

Pure module (no Twisted, no I/O beyond reading the file), so the rules are
unit-tested without a reactor.  The file format is the TOML of DESIGN §6 plus
``[empresa]``, checked with the payment-code modules' own rules
(``meterd.pix``, ``meterd.taxid``); ``default_tariff()`` loads the copy
shipped inside the package (``meterd/default_tariff.toml``), so the built-in
default and an operator's ``--tariff`` file go through exactly the same parser
and the same checks.

Why so strict: a tariff is read once, at start, and then every bill depends on
it.  A typo (``tsud = 0.45``) that silently dropped a rate would bill zero for
months before anyone noticed, so every problem stops the server with one line
naming the file, the line, the key and the reason.  Numbers are parsed straight
into ``Decimal`` (``parse_float=Decimal``): ``0.0103`` stays exactly ``0.0103``
instead of the nearest binary float, because money is computed from it.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from meterd import taxid
from meterd.paycodes import PaymentCodeError
from meterd.pix import MAX_CITY, MAX_NAME, normalize_text, validate_key

__all__ = [
    "FLAGS",
    "FLAG_LABELS",
    "LIGACOES",
    "Empresa",
    "Tariff",
    "TariffError",
    "default_tariff",
    "load_tariff",
    "loads_tariff",
]

#: The four tariff flags (bandeiras tarifárias) ANEEL defines today, with the
#: names a customer reads on the bill.  An unknown flag name in a tariff file is
#: a typo, never a new flag: adding one is a code change, on purpose.
FLAG_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "verde": "Verde",
        "amarela": "Amarela",
        "vermelha1": "Vermelha patamar 1",
        "vermelha2": "Vermelha patamar 2",
    }
)
FLAGS: tuple[str, ...] = tuple(FLAG_LABELS)

#: Connection types (ligação) and so the keys of ``[disponibilidade]``.
LIGACOES: tuple[str, ...] = ("mono", "bi", "tri")

_SECTIONS = ("tarifa", "tributos", "bandeiras", "calendario", "disponibilidade")
#: Optional: a file without it (DESIGN §6 shows none) still loads, with
#: ``Tariff.empresa`` None.
_EMPRESA = "empresa"
_EMPRESA_KEYS = (
    "nome",
    "cnpj",
    "endereco",
    "chave_pix",
    "cidade",
    "codigo_febraban",
    "vencimento_dias",
)
_TARIFA_KEYS = ("te", "tusd")
_TRIBUTO_KEYS = ("icms", "pis", "cofins")
_MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$")
_DEFAULT_RESOURCE = "default_tariff.toml"


class TariffError(ValueError):
    """A tariff that must not be used; ``str()`` is one line for the operator.

    The shape is ``<file>:<line>: <key>: <reason>`` (``:<line>`` left out when
    the key does not appear in the file, e.g. a missing section), the way
    compilers report errors, so editors and terminals can jump to the spot.
    """

    def __init__(
        self, source: str, key: str, reason: str, line: int | None = None
    ) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        self.line = line
        where = source if line is None else f"{source}:{line}"
        super().__init__(f"{where}: {key}: {reason}")


@dataclass(frozen=True)
class Empresa:
    """The utility as its bills name it and its payment codes pay it.

    ``nome`` and ``cidade`` are as written in the file (the bill prints them
    with accents; the Pix code gets its own ASCII, cut copy); ``cnpj`` is its
    14 digits; ``chave_pix`` the Pix key exactly as registered;
    ``codigo_febraban`` the 4-digit company code of the arrecadação barcode;
    ``vencimento_dias`` how many days after issue a bill falls due.
    """

    nome: str
    cnpj: str
    endereco: str
    chave_pix: str
    cidade: str
    codigo_febraban: str
    vencimento_dias: int


@dataclass(frozen=True)
class Tariff:
    """A validated tariff.  Build it with ``load_tariff``/``default_tariff``.

    Rates are ``Decimal`` exactly as written in the file; taxes are fractions
    (``0.25`` is 25 %); bandeira rates are R$ per 100 kWh, as ANEEL publishes
    them.  The mappings are read-only views.  ``empresa`` is the optional
    ``[empresa]`` section.
    """

    te: Decimal
    tusd: Decimal
    icms: Decimal
    pis: Decimal
    cofins: Decimal
    bandeiras: Mapping[str, Decimal]
    calendario: Mapping[str, str]
    padrao: str
    disponibilidade: Mapping[str, int]
    #: None when the file has no ``[empresa]``: such a tariff prices bills but
    #: cannot give them payment codes.  Never a made-up default company, whose
    #: Pix key would send customers' money to nobody (or to somebody else).
    empresa: Empresa | None = None

    def flag_for(self, year: int, month: int) -> str:
        """The flag of a calendar month: listed in ``calendario`` or ``padrao``."""
        if not 1 <= month <= 12:
            raise ValueError(f"month must be 1..12, got {month}")
        return self.calendario.get(f"{year:04d}-{month:02d}", self.padrao)


# ---------------------------------------------------------------------------
# Loading


def load_tariff(path: str | os.PathLike[str]) -> Tariff:
    """Read and validate a tariff file (``--tariff``); raises ``TariffError``."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TariffError(source, "file", f"cannot read: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TariffError(source, "file", "not valid UTF-8", line) from e
    return loads_tariff(text, source)


def loads_tariff(text: str, source: str = "<tariff>") -> Tariff:
    """Parse and validate tariff TOML text; ``source`` names it in errors."""
    try:
        raw = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        message, line = _split_toml_position(str(e))
        raise TariffError(source, "TOML syntax", message, line) from e
    return _Validator(text, source).tariff(raw)


@cache
def default_tariff() -> Tariff:
    """The built-in tariff shipped with the package (same shape as a file).

    Cached: a ``Tariff`` is immutable, and the packaged file cannot change
    while the process runs.
    """
    resource = resources.files("meterd").joinpath(_DEFAULT_RESOURCE)
    text = resource.read_text(encoding="utf-8")
    return loads_tariff(text, f"<built-in {_DEFAULT_RESOURCE}>")


def _split_toml_position(message: str) -> tuple[str, int | None]:
    """Take tomllib's "(at line N, column M)" suffix apart into a line number.

    Python 3.11's ``TOMLDecodeError`` carries the position only in its text.
    "(at end of document)" is kept in the reason: tomllib also says it for a
    duplicate key, where the last line would point at the wrong place.
    """
    m = re.match(r"^(.*) \(at line (\d+), column \d+\)$", message, re.DOTALL)
    if m is None:
        return message, None
    return m.group(1), int(m.group(2))


_BARE_OR_QUOTED = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)"""
_DOTTED = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER_RE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_KEY_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART_RE = re.compile(_BARE_OR_QUOTED)


def _dotted_parts(dotted: str) -> tuple[str, ...]:
    parts = []
    for m in _PART_RE.finditer(dotted):
        part = m.group(0)
        if part[0] in "\"'":
            part = part[1:-1]
        parts.append(part)
    return tuple(parts)


def _find_line(text: str, section: str, key: str | None = None) -> int | None:
    """Best-effort line of ``[section]`` or of ``key`` inside it, for messages.

    Only has to be right for ordinary files (table headers and ``key = value``
    lines, or ``section.key = ...`` at the top); when the key is absent it
    falls back to the section's own line, and to ``None`` when that is absent
    too, which leaves the line out of the message rather than guessing.
    """
    current: tuple[str, ...] = ()
    section_line: int | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER_RE.match(raw)
        if header is not None:
            current = _dotted_parts(header.group(1))
            if current == (section,) and section_line is None:
                section_line = lineno
                if key is None:
                    return lineno
            continue
        assign = _KEY_RE.match(raw)
        if assign is None:
            continue
        full = current + _dotted_parts(assign.group(1))
        if key is not None and full == (section, key):
            return lineno
        if full[:1] == (section,) and len(current) == 0 and section_line is None:
            section_line = lineno  # "tarifa = {...}" or "tarifa.te = ..."
            if key is None:
                return lineno
    return section_line


class _Validator:
    """Checks the parsed TOML and builds the ``Tariff``; fails on the first error."""

    def __init__(self, text: str, source: str) -> None:
        self._text = text
        self._source = source

    def _fail(self, section: str, key: str | None, reason: str) -> TariffError:
        name = section if key is None else f"{section}.{_show_key(key)}"
        line = _find_line(self._text, section, key)
        return TariffError(self._source, name, reason, line)

    def tariff(self, raw: dict[str, Any]) -> Tariff:
        known = (*_SECTIONS, _EMPRESA)
        for name in raw:
            if name not in known:
                raise self._fail(
                    name, None, f"unknown section (expected {', '.join(known)})"
                )
        sections: dict[str, dict[str, Any]] = {}
        for name in _SECTIONS:
            if name not in raw:
                raise self._fail(name, None, "missing section")
            if not isinstance(raw[name], dict):
                raise self._fail(name, None, "must be a table")
            sections[name] = raw[name]

        tarifa = self._rates("tarifa", sections["tarifa"], _TARIFA_KEYS)
        tributos = self._rates("tributos", sections["tributos"], _TRIBUTO_KEYS)
        total_tax = sum(tributos.values(), Decimal(0))
        if total_tax >= 1:
            raise self._fail(
                "tributos",
                None,
                f"icms + pis + cofins must be below 1 (got {total_tax}); "
                "taxes are charged 'por dentro'",
            )
        bandeiras = self._bandeiras(sections["bandeiras"])
        calendario, padrao = self._calendario(sections["calendario"])
        disponibilidade = self._disponibilidade(sections["disponibilidade"])
        empresa = None
        if _EMPRESA in raw:
            if not isinstance(raw[_EMPRESA], dict):
                raise self._fail(_EMPRESA, None, "must be a table")
            empresa = self._empresa(raw[_EMPRESA])
        return Tariff(
            te=tarifa["te"],
            tusd=tarifa["tusd"],
            icms=tributos["icms"],
            pis=tributos["pis"],
            cofins=tributos["cofins"],
            bandeiras=MappingProxyType(bandeiras),
            calendario=MappingProxyType(calendario),
            padrao=padrao,
            disponibilidade=MappingProxyType(disponibilidade),
            empresa=empresa,
        )

    def _number(self, section: str, key: str, value: object) -> Decimal:
        """A finite, non-negative Decimal; TOML ints count, booleans do not."""
        if isinstance(value, bool):
            raise self._fail(section, key, "must be a number, not a boolean")
        if isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, Decimal):
            number = value
        else:
            raise self._fail(
                section, key, f"must be a number, not {_describe(value)}"
            )
        if not number.is_finite():
            raise self._fail(section, key, f"must be a finite number (got {value})")
        if number < 0:
            raise self._fail(section, key, f"must not be negative (got {value})")
        return number.copy_abs()  # -0.0 is 0, and must not print as "-0.0"

    def _known_keys(self, section: str, table: dict[str, Any], keys: tuple[str, ...]) -> None:
        for key in table:
            if key not in keys:
                raise self._fail(
                    section, key, f"unknown key (expected {', '.join(keys)})"
                )

    def _required(self, section: str, table: dict[str, Any], key: str) -> Any:
        if key not in table:
            raise self._fail(section, key, "missing")
        return table[key]

    def _rates(
        self, section: str, table: dict[str, Any], keys: tuple[str, ...]
    ) -> dict[str, Decimal]:
        self._known_keys(section, table, keys)
        return {key: self._number(section, key, self._required(section, table, key)) for key in keys}

    def _bandeiras(self, table: dict[str, Any]) -> dict[str, Decimal]:
        # All four are required: a month can switch to any flag by decree, and
        # an operator who really means "no surcharge" writes 0.
        return self._rates("bandeiras", table, FLAGS)

    def _flag(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self._fail(
                "calendario", key, f"must be a flag name, not {_describe(value)}"
            )
        if value not in FLAG_LABELS:
            raise self._fail(
                "calendario",
                key,
                f"unknown flag {value!r} (expected {', '.join(FLAGS)})",
            )
        return value

    def _calendario(self, table: dict[str, Any]) -> tuple[dict[str, str], str]:
        months: dict[str, str] = {}
        padrao: str | None = None
        for key, value in table.items():
            if key == "padrao":
                padrao = self._flag(key, value)
                continue
            m = _MONTH_RE.match(key)
            if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1:
                raise self._fail(
                    "calendario",
                    key,
                    "not a month: keys are \"YYYY-MM\" (month 01-12) or padrao",
                )
            months[key] = self._flag(key, value)
        if padrao is None:
            raise self._fail("calendario", "padrao", "missing")
        return months, padrao

    def _disponibilidade(self, table: dict[str, Any]) -> dict[str, int]:
        self._known_keys("disponibilidade", table, LIGACOES)
        out: dict[str, int] = {}
        for key in LIGACOES:
            value = self._required("disponibilidade", table, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._fail(
                    "disponibilidade",
                    key,
                    f"must be a whole number of kWh, not {_describe(value)}",
                )
            if value < 0:
                raise self._fail(
                    "disponibilidade", key, f"must not be negative (got {value})"
                )
            out[key] = value
        return out

    def _empresa(self, table: dict[str, Any]) -> Empresa:
        """The company, every field required once the section is there.

        Checked with the payment-code modules' own rules (the CNPJ's check
        digits, the Pix key's form, a name and city the Pix code can carry),
        so a typo stops the server at start instead of the first billing run.
        """
        self._known_keys(_EMPRESA, table, _EMPRESA_KEYS)
        for key in _EMPRESA_KEYS:
            self._required(_EMPRESA, table, key)
        nome = self._string("nome", table["nome"])
        cidade = self._string("cidade", table["cidade"])
        for key, value, limit in (("nome", nome, MAX_NAME), ("cidade", cidade, MAX_CITY)):
            try:
                normalize_text(value, limit, key)
            except PaymentCodeError as e:
                raise self._fail(_EMPRESA, key, e.reason) from e
        chave = self._string("chave_pix", table["chave_pix"])
        try:
            validate_key(chave)
        except PaymentCodeError as e:
            raise self._fail(_EMPRESA, "chave_pix", e.reason) from e
        return Empresa(
            nome=nome,
            cnpj=self._cnpj(table["cnpj"]),
            endereco=self._string("endereco", table["endereco"]),
            chave_pix=chave,
            cidade=cidade,
            codigo_febraban=self._codigo_febraban(table["codigo_febraban"]),
            vencimento_dias=self._vencimento_dias(table["vencimento_dias"]),
        )

    def _string(self, key: str, value: object) -> str:
        """A non-blank line of printable text, without the spaces around it."""
        if not isinstance(value, str):
            raise self._fail(_EMPRESA, key, f"must be a string, not {_describe(value)}")
        if not value.strip():
            raise self._fail(_EMPRESA, key, "must not be empty")
        if not value.isprintable():
            raise self._fail(_EMPRESA, key, "must be one line of printable text (it is printed on every bill)")
        return value.strip()

    def _cnpj(self, value: object) -> str:
        """The CNPJ's 14 digits; written with or without its dots, slash and hyphen.

        A string, because a TOML integer would lose a CNPJ's leading zeros.
        """
        if not isinstance(value, str):
            raise self._fail(
                _EMPRESA, "cnpj", f"must be a string in quotes, not {_describe(value)}"
            )
        try:
            digits = taxid.normalize(value)
        except taxid.InvalidTaxId as e:
            raise self._fail(_EMPRESA, "cnpj", str(e)) from e
        if not taxid.is_cnpj(digits):
            raise self._fail(_EMPRESA, "cnpj", "must be a CNPJ (14 digits), not a CPF")
        return digits

    def _codigo_febraban(self, value: object) -> str:
        if not isinstance(value, str):
            raise self._fail(
                _EMPRESA,
                "codigo_febraban",
                f"must be 4 digits in quotes (leading zeros count), not {_describe(value)}",
            )
        if len(value) != 4 or not all(c in "0123456789" for c in value):
            raise self._fail(_EMPRESA, "codigo_febraban", f"must be exactly 4 digits (got {value!r})")
        return value

    def _vencimento_dias(self, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(
                _EMPRESA,
                "vencimento_dias",
                f"must be a whole number of days, not {_describe(value)}",
            )
        if value < 1:
            raise self._fail(
                _EMPRESA, "vencimento_dias", f"must be at least 1 day after issue (got {value})"
            )
        return value


def _show_key(key: str) -> str:
    """A key as TOML would need it written (quoted unless a plain bare key)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, Decimal):
        return f"a fraction ({value})"
    return f"a {type(value).__name__} ({value})"
