"""Tariff file parsing and validation (meterd.tariff), DESIGN §6, and its
optional ``[empresa]`` section (the company on the bill and its payment codes)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from meterd.arrecadacao import bill_free_field, build_barcode, parse_code
from meterd.pix import brcode, parse_brcode, txid_for_bill
from meterd.tariff import (
    FLAGS,
    Empresa,
    Tariff,
    TariffError,
    default_tariff,
    load_tariff,
    loads_tariff,
)

# The tariff file exactly as DESIGN §6 shows it (line numbers matter below).
DESIGN_TOML = """\
[tarifa]          # R$/kWh before taxes
te = 0.30
tusd = 0.45
[tributos]
icms = 0.25
pis = 0.0103
cofins = 0.0475
[bandeiras]       # R$ per 100 kWh
verde = 0
amarela = 1.885
vermelha1 = 4.463
vermelha2 = 7.877
[calendario]      # month -> flag; months not listed use "padrao"
padrao = "verde"
"2026-11" = "amarela"
[disponibilidade] # minimum billed kWh by connection
mono = 30
bi = 50
tri = 100
"""


# The [empresa] section as the built-in tariff has it, appended to DESIGN_TOML
# (so its lines are 20-27).
EMPRESA_TOML = """\
[empresa]         # who bills, on the bill and in its payment codes (fictitious)
nome = "Companhia Fictícia de Energia S.A."
cnpj = "12.345.678/0001-95"
endereco = "Rua Exemplo, 100 - Centro, Cidade Fictícia - XX, 00000-000"
chave_pix = "pix@energia-ficticia.example"
cidade = "Cidade Fictícia"
codigo_febraban = "0000"   # FEBRABAN assigns the real one
vencimento_dias = 10       # due date: days after issue
"""
FULL_TOML = DESIGN_TOML + EMPRESA_TOML

EMPRESA = Empresa(
    nome="Companhia Fictícia de Energia S.A.",
    cnpj="12345678000195",
    endereco="Rua Exemplo, 100 - Centro, Cidade Fictícia - XX, 00000-000",
    chave_pix="pix@energia-ficticia.example",
    cidade="Cidade Fictícia",
    codigo_febraban="0000",
    vencimento_dias=10,
)


def _write(tmp_path: Path, text: str, name: str = "tarifa.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> TariffError:
    path = _write(tmp_path, text)
    with pytest.raises(TariffError) as info:
        load_tariff(path)
    return info.value


# ---------------------------------------------------------------------------
# Good files


def test_design_file_loads_with_exact_decimals(tmp_path: Path) -> None:
    tariff = load_tariff(_write(tmp_path, DESIGN_TOML))
    # Exact decimal values, not the nearest binary floats.
    assert tariff.te == Decimal("0.30")
    assert tariff.tusd == Decimal("0.45")
    assert tariff.icms == Decimal("0.25")
    assert tariff.pis == Decimal("0.0103")
    assert tariff.cofins == Decimal("0.0475")
    assert all(isinstance(v, Decimal) for v in (tariff.te, tariff.pis))
    assert dict(tariff.bandeiras) == {
        "verde": Decimal(0),
        "amarela": Decimal("1.885"),
        "vermelha1": Decimal("4.463"),
        "vermelha2": Decimal("7.877"),
    }
    assert all(isinstance(v, Decimal) for v in tariff.bandeiras.values())
    assert dict(tariff.calendario) == {"2026-11": "amarela"}
    assert tariff.padrao == "verde"
    assert dict(tariff.disponibilidade) == {"mono": 30, "bi": 50, "tri": 100}
    assert all(type(v) is int for v in tariff.disponibilidade.values())


def test_default_tariff_is_the_design_file_plus_empresa(tmp_path: Path) -> None:
    assert default_tariff() == load_tariff(_write(tmp_path, FULL_TOML))
    assert default_tariff().empresa == EMPRESA


def test_file_without_empresa_still_loads(tmp_path: Path) -> None:
    """DESIGN §6's file has no [empresa]: it prices bills, with no company."""
    tariff = load_tariff(_write(tmp_path, DESIGN_TOML))
    assert tariff.empresa is None
    assert tariff == replace(default_tariff(), empresa=None)


def test_default_tariff_is_read_only() -> None:
    tariff = default_tariff()
    with pytest.raises(TypeError):
        tariff.bandeiras["verde"] = Decimal(1)  # type: ignore[index]
    with pytest.raises(TypeError):
        tariff.calendario["2027-01"] = "verde"  # type: ignore[index]
    with pytest.raises(AttributeError):
        tariff.te = Decimal(0)  # type: ignore[misc]


def test_flag_for_uses_calendar_then_padrao() -> None:
    tariff = default_tariff()
    assert tariff.flag_for(2026, 11) == "amarela"
    assert tariff.flag_for(2026, 10) == "verde"
    assert tariff.flag_for(2027, 11) == "verde"
    assert tariff.flag_for(2026, 12) == "verde"


@pytest.mark.parametrize("month", [0, 13, -1])
def test_flag_for_rejects_impossible_month(month: int) -> None:
    with pytest.raises(ValueError):
        default_tariff().flag_for(2026, month)


def test_integers_are_accepted_as_rates_and_bare_month_keys() -> None:
    text = DESIGN_TOML.replace("te = 0.30", "te = 1").replace(
        '"2026-11" = "amarela"', '2026-11 = "amarela"\n"2027-02" = "vermelha2"'
    )
    tariff = loads_tariff(text)
    assert tariff.te == Decimal(1) and isinstance(tariff.te, Decimal)
    assert tariff.flag_for(2026, 11) == "amarela"
    assert tariff.flag_for(2027, 2) == "vermelha2"


def test_negative_zero_is_plain_zero() -> None:
    tariff = loads_tariff(DESIGN_TOML.replace("te = 0.30", "te = -0.0"))
    assert tariff.te == 0 and not tariff.te.is_signed()


def test_zero_taxes_are_valid() -> None:
    text = (
        DESIGN_TOML.replace("icms = 0.25", "icms = 0")
        .replace("pis = 0.0103", "pis = 0.0")
        .replace("cofins = 0.0475", "cofins = 0")
    )
    tariff = loads_tariff(text)
    assert (tariff.icms, tariff.pis, tariff.cofins) == (0, 0, 0)


def test_any_section_order_and_comments() -> None:
    sections = re.split(r"(?m)^(?=\[)", DESIGN_TOML)
    shuffled = "# a comment\n\n" + "".join(reversed([s for s in sections if s]))
    assert loads_tariff(shuffled) == loads_tariff(DESIGN_TOML)


def test_calendar_flag_must_be_known_but_every_known_flag_is_allowed() -> None:
    lines = "\n".join(f'"2030-{i + 1:02d}" = "{flag}"' for i, flag in enumerate(FLAGS))
    tariff = loads_tariff(DESIGN_TOML.replace('"2026-11" = "amarela"', lines))
    assert [tariff.flag_for(2030, m) for m in (1, 2, 3, 4)] == list(FLAGS)


# ---------------------------------------------------------------------------
# Bad files: "<file>:<line>: <key>: <reason>"

# (replace this, with that, expected key, expected line or None, reason fragment)
BAD_CASES = [
    pytest.param(
        "[bandeiras]       # R$ per 100 kWh\nverde = 0\namarela = 1.885\n"
        "vermelha1 = 4.463\nvermelha2 = 7.877\n",
        "",
        "bandeiras",
        None,
        "missing section",
        id="missing-section",
    ),
    pytest.param("tusd = 0.45", "tusd = -0.45", "tarifa.tusd", 3, "negative", id="negative-rate"),
    pytest.param("icms = 0.25", "icms = -0.01", "tributos.icms", 5, "negative", id="negative-tax"),
    pytest.param(
        "vermelha1 = 4.463", "vermelha1 = -4.463", "bandeiras.vermelha1", 11, "negative",
        id="negative-bandeira",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"2026-11" = "roxa"', "calendario.2026-11", 15, "unknown flag",
        id="unknown-flag-in-calendar",
    ),
    pytest.param(
        'padrao = "verde"', 'padrao = "Verde"', "calendario.padrao", 14, "unknown flag",
        id="unknown-flag-padrao",
    ),
    pytest.param(
        "vermelha2 = 7.877", "vermelha2 = 7.877\nvermelha3 = 9.5", "bandeiras.vermelha3", 13,
        "unknown key", id="unknown-flag-in-bandeiras",
    ),
    pytest.param(
        "vermelha2 = 7.877\n", "", "bandeiras.vermelha2", 8, "missing",
        id="missing-flag-rate",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"2026-13" = "amarela"', "calendario.2026-13", 15,
        "not a month", id="month-13",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"2026-00" = "amarela"', "calendario.2026-00", 15,
        "not a month", id="month-00",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"2026-1" = "amarela"', "calendario.2026-1", 15,
        "not a month", id="month-one-digit",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"novembro" = "amarela"', "calendario.novembro", 15,
        "not a month", id="month-name",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"2026/11" = "amarela"', 'calendario."2026/11"', 15,
        "not a month", id="month-slash",
    ),
    pytest.param(
        'padrao = "verde"\n', "", "calendario.padrao", 13, "missing", id="missing-padrao",
    ),
    pytest.param(
        '"2026-11" = "amarela"', '"2026-11" = 1', "calendario.2026-11", 15,
        "must be a flag name", id="flag-not-a-string",
    ),
    pytest.param("tusd = 0.45", "tsud = 0.45", "tarifa.tsud", 3, "unknown key", id="typo-in-tarifa"),
    pytest.param(
        "tusd = 0.45\n", "", "tarifa.tusd", 1, "missing", id="missing-rate-points-at-section",
    ),
    pytest.param("cofins = 0.0475", "confins = 0.0475", "tributos.confins", 7, "unknown key",
                 id="typo-in-tributos"),
    pytest.param("tri = 100", "tri = 100\nquad = 200", "disponibilidade.quad", 20, "unknown key",
                 id="typo-in-disponibilidade"),
    pytest.param("tri = 100\n", "", "disponibilidade.tri", 16, "missing", id="missing-tri"),
    pytest.param("bi = 50", "bi = 50.5", "disponibilidade.bi", 18, "whole number",
                 id="fractional-disponibilidade"),
    pytest.param("bi = 50", "bi = -50", "disponibilidade.bi", 18, "negative",
                 id="negative-disponibilidade"),
    pytest.param("bi = 50", 'bi = "50"', "disponibilidade.bi", 18, "whole number",
                 id="string-disponibilidade"),
    pytest.param("te = 0.30", 'te = "0.30"', "tarifa.te", 2, "must be a number", id="string-rate"),
    pytest.param("te = 0.30", "te = true", "tarifa.te", 2, "boolean", id="bool-rate"),
    pytest.param("te = 0.30", "te = nan", "tarifa.te", 2, "finite", id="nan-rate"),
    pytest.param("te = 0.30", "te = inf", "tarifa.te", 2, "finite", id="inf-rate"),
    pytest.param(
        "icms = 0.25", "icms = 0.9423", "tributos", 4, "below 1", id="taxes-sum-to-one",
    ),
    pytest.param(
        "[disponibilidade]", "[extra]\nfoo = 1\n[disponibilidade]", "extra", 16,
        "unknown section", id="unknown-section",
    ),
    pytest.param(
        "[tarifa]          # R$/kWh before taxes\nte = 0.30\ntusd = 0.45\n",
        "tarifa = 1\n", "tarifa", 1, "must be a table", id="section-not-a-table",
    ),
]


@pytest.mark.parametrize("old, new, key, line, reason", BAD_CASES)
def test_bad_tariff_names_file_line_key_and_reason(
    tmp_path: Path, old: str, new: str, key: str, line: int | None, reason: str
) -> None:
    assert old in DESIGN_TOML
    error = _error(tmp_path, DESIGN_TOML.replace(old, new, 1))
    path = str(tmp_path / "tarifa.toml")
    where = path if line is None else f"{path}:{line}"
    message = str(error)
    assert message.startswith(f"{where}: {key}: "), message
    assert reason in message
    assert "\n" not in message
    assert (error.source, error.key, error.line) == (path, key, line)


def test_tariff_error_is_a_value_error() -> None:
    assert issubclass(TariffError, ValueError)


def test_syntax_error_reports_tomllib_line(tmp_path: Path) -> None:
    error = _error(tmp_path, DESIGN_TOML.replace("tusd = 0.45", "tusd = = 0.45"))
    path = tmp_path / "tarifa.toml"
    assert str(error).startswith(f"{path}:3: TOML syntax: ")
    assert "(at line" not in str(error)


def test_syntax_error_at_end_of_document_has_no_invented_line(tmp_path: Path) -> None:
    error = _error(tmp_path, DESIGN_TOML + 'x = "unterminated')
    assert str(error).startswith(f"{tmp_path / 'tarifa.toml'}: TOML syntax: ")
    assert "end of document" in str(error)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(TariffError) as info:
        load_tariff(path)
    assert str(info.value).startswith(f"{path}: file: cannot read")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(DESIGN_TOML.replace("# R$/kWh", "# pre\u00e7o").encode("latin-1"))
    with pytest.raises(TariffError) as info:
        load_tariff(path)
    assert str(info.value) == f"{path}:1: file: not valid UTF-8"


def test_loads_tariff_names_its_source() -> None:
    with pytest.raises(TariffError) as info:
        loads_tariff("[tarifa]\nte = 0.3\n", source="inline")
    assert str(info.value).startswith("inline")


def test_inline_and_dotted_tables_are_validated_too() -> None:
    text = DESIGN_TOML.replace(
        "[tarifa]          # R$/kWh before taxes\nte = 0.30\ntusd = 0.45\n",
        "tarifa = { te = 0.30, tusd = -0.45 }\n",
    )
    with pytest.raises(TariffError) as info:
        loads_tariff(text, "f")
    # The key has no line of its own; the message points at the inline table.
    assert str(info.value).startswith("f:1: tarifa.tusd: must not be negative")


def test_hand_built_tariff_equals_loaded() -> None:
    built = Tariff(
        te=Decimal("0.30"),
        tusd=Decimal("0.45"),
        icms=Decimal("0.25"),
        pis=Decimal("0.0103"),
        cofins=Decimal("0.0475"),
        bandeiras={
            "verde": Decimal(0),
            "amarela": Decimal("1.885"),
            "vermelha1": Decimal("4.463"),
            "vermelha2": Decimal("7.877"),
        },
        calendario={"2026-11": "amarela"},
        padrao="verde",
        disponibilidade={"mono": 30, "bi": 50, "tri": 100},
        empresa=EMPRESA,
    )
    # MappingProxyType compares equal to a dict with the same items.
    assert built == default_tariff()


# ---------------------------------------------------------------------------
# [empresa]


def test_default_empresa_can_issue_both_payment_codes() -> None:
    """The built-in company is fictitious but complete: a Pix code and a
    barcode can be made from it, and they validate."""
    empresa = default_tariff().empresa
    assert empresa is not None
    pix = brcode(
        key=empresa.chave_pix,
        name=empresa.nome,
        city=empresa.cidade,
        amount=Decimal("187.43"),
        txid=txid_for_bill(1),
    )
    parsed = parse_brcode(pix)
    assert parsed.key == "pix@energia-ficticia.example"
    assert parsed.name == "Companhia Ficticia de Ene"
    assert parsed.city == "Cidade Ficticia"
    barcode = build_barcode(
        Decimal("187.43"), empresa.codigo_febraban, bill_free_field(1, date(2026, 12, 10))
    )
    assert parse_code(barcode).company_code == "0000"


def test_empresa_is_read_only() -> None:
    empresa = default_tariff().empresa
    with pytest.raises(AttributeError):
        empresa.cnpj = "1"  # type: ignore[misc, union-attr]


@pytest.mark.parametrize(
    "old, new, value",
    [
        ('cnpj = "12.345.678/0001-95"', 'cnpj = "12345678000195"', "12345678000195"),
        ('cnpj = "12.345.678/0001-95"', 'cnpj = " 12.345.678/0001-95 "', "12345678000195"),
        ('nome = "Companhia Fictícia de Energia S.A."', 'nome = "  Energia  "', "Energia"),
        ("vencimento_dias = 10 ", "vencimento_dias = 1 ", 1),
        ('chave_pix = "pix@energia-ficticia.example"', 'chave_pix = "12345678000195"',
         "12345678000195"),
        ('chave_pix = "pix@energia-ficticia.example"', 'chave_pix = "+5561912345678"',
         "+5561912345678"),
        ('chave_pix = "pix@energia-ficticia.example"',
         'chave_pix = "123e4567-e12b-12d1-a456-426655440000"',
         "123e4567-e12b-12d1-a456-426655440000"),
    ],
)
def test_good_empresa_values(old: str, new: str, value: object) -> None:
    assert old in FULL_TOML
    empresa = loads_tariff(FULL_TOML.replace(old, new, 1)).empresa
    assert empresa is not None
    key = new.split("=")[0].strip()
    assert getattr(empresa, key) == value


# (replace this, with that, expected key, expected line, reason fragment)
BAD_EMPRESA = [
    pytest.param('nome = "Companhia Fictícia de Energia S.A."', 'nome = ""', "empresa.nome", 21,
                 "must not be empty", id="nome-empty"),
    pytest.param('nome = "Companhia Fictícia de Energia S.A."', "nome = 1", "empresa.nome", 21,
                 "must be a string", id="nome-number"),
    pytest.param('nome = "Companhia Fictícia de Energia S.A."', 'nome = "Energia € S.A."',
                 "empresa.nome", 21, "ASCII only", id="nome-not-in-pix-charset"),
    pytest.param('cnpj = "12.345.678/0001-95"', 'cnpj = "12.345.678/0001-96"', "empresa.cnpj",
                 22, "check digits", id="cnpj-check-digits"),
    pytest.param('cnpj = "12.345.678/0001-95"', "cnpj = 12345678000195", "empresa.cnpj", 22,
                 "must be a string in quotes", id="cnpj-integer"),
    pytest.param('cnpj = "12.345.678/0001-95"', 'cnpj = "123.456.789-09"', "empresa.cnpj", 22,
                 "must be a CNPJ", id="cnpj-is-a-cpf"),
    pytest.param('cnpj = "12.345.678/0001-95"', 'cnpj = "CNPJ 12.345.678/0001-95"',
                 "empresa.cnpj", 22, "only digits", id="cnpj-letters"),
    pytest.param('cnpj = "12.345.678/0001-95"', 'cnpj = "11.111.111/1111-11"', "empresa.cnpj",
                 22, "all digits equal", id="cnpj-repeated"),
    pytest.param('endereco = "Rua Exemplo, 100 - Centro, Cidade Fictícia - XX, 00000-000"',
                 'endereco = "   "', "empresa.endereco", 23, "must not be empty",
                 id="endereco-blank"),
    pytest.param('endereco = "Rua Exemplo, 100 - Centro, Cidade Fictícia - XX, 00000-000"',
                 'endereco = "Rua Exemplo, 100\\nCentro"', "empresa.endereco", 23, "one line of printable text",
                 id="endereco-two-lines"),
    pytest.param('chave_pix = "pix@energia-ficticia.example"',
                 'chave_pix = "Pix@Energia-Ficticia.example"', "empresa.chave_pix", 24,
                 "e-mail key", id="chave-email-upper-case"),
    pytest.param('chave_pix = "pix@energia-ficticia.example"', 'chave_pix = "61912345678"',
                 "empresa.chave_pix", 24, "not a valid CPF", id="chave-phone-without-55"),
    pytest.param('chave_pix = "pix@energia-ficticia.example"', 'chave_pix = "chave"',
                 "empresa.chave_pix", 24, "not a Pix key", id="chave-garbage"),
    pytest.param('chave_pix = "pix@energia-ficticia.example"', 'chave_pix = ""',
                 "empresa.chave_pix", 24, "must not be empty", id="chave-empty"),
    pytest.param('cidade = "Cidade Fictícia"', 'cidade = ""', "empresa.cidade", 25,
                 "must not be empty", id="cidade-empty"),
    pytest.param('cidade = "Cidade Fictícia"', 'cidade = "Cidade \u2603"', "empresa.cidade",
                 25, "ASCII only", id="cidade-not-in-pix-charset"),
    pytest.param('codigo_febraban = "0000"', "codigo_febraban = 42", "empresa.codigo_febraban",
                 26, "in quotes", id="codigo-integer"),
    pytest.param('codigo_febraban = "0000"', 'codigo_febraban = "042"',
                 "empresa.codigo_febraban", 26, "exactly 4 digits", id="codigo-3-digits"),
    pytest.param('codigo_febraban = "0000"', 'codigo_febraban = "12345"',
                 "empresa.codigo_febraban", 26, "exactly 4 digits", id="codigo-5-digits"),
    pytest.param('codigo_febraban = "0000"', 'codigo_febraban = "12a4"',
                 "empresa.codigo_febraban", 26, "exactly 4 digits", id="codigo-letter"),
    pytest.param("vencimento_dias = 10 ", "vencimento_dias = 0 ", "empresa.vencimento_dias", 27,
                 "at least 1 day", id="vencimento-zero"),
    pytest.param("vencimento_dias = 10 ", "vencimento_dias = -5 ", "empresa.vencimento_dias",
                 27, "at least 1 day", id="vencimento-negative"),
    pytest.param("vencimento_dias = 10 ", "vencimento_dias = 10.5 ",
                 "empresa.vencimento_dias", 27, "whole number of days", id="vencimento-fraction"),
    pytest.param("vencimento_dias = 10 ", 'vencimento_dias = "10" ',
                 "empresa.vencimento_dias", 27, "whole number of days", id="vencimento-string"),
    pytest.param("vencimento_dias = 10 ", "vencimento_dias = true ",
                 "empresa.vencimento_dias", 27, "whole number of days", id="vencimento-bool"),
    pytest.param('cnpj = "12.345.678/0001-95"\n', "", "empresa.cnpj", 20, "missing",
                 id="missing-key-points-at-section"),
    pytest.param("vencimento_dias = 10 ", "vencimento = 10 ", "empresa.vencimento", 27,
                 "unknown key", id="typo-in-empresa"),
    pytest.param("[empresa]", "[empresas]", "empresas", 20, "expected tarifa, tributos, "
                 "bandeiras, calendario, disponibilidade, empresa", id="section-typo"),
]


@pytest.mark.parametrize("old, new, key, line, reason", BAD_EMPRESA)
def test_bad_empresa_names_file_line_key_and_reason(
    tmp_path: Path, old: str, new: str, key: str, line: int, reason: str
) -> None:
    assert old in FULL_TOML
    error = _error(tmp_path, FULL_TOML.replace(old, new, 1))
    path = str(tmp_path / "tarifa.toml")
    message = str(error)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert reason in message, message
    assert "\n" not in message
    assert (error.source, error.key, error.line) == (path, key, line)


def test_empresa_must_be_a_table() -> None:
    with pytest.raises(TariffError) as info:
        loads_tariff('empresa = "Energia S.A."\n' + DESIGN_TOML, "f")
    assert str(info.value) == "f:1: empresa: must be a table"
