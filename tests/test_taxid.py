"""CPF / CNPJ normalisation and validation (DESIGN §3, "Customer ids")."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from meterd.taxid import (
    InvalidTaxId,
    format_taxid,
    is_cnpj,
    is_cpf,
    make_cnpj,
    make_cpf,
    normalize,
)

# Valid ids whose check digits were computed by hand / are the usual
# documentation examples (e.g. CPF 123456789-09: 210*10 % 11 = 10 -> 0,
# 255*10 % 11 = 9).
VALID_CPFS = ["12345678909", "52998224725", "11144477735", "01234567890"]
VALID_CNPJS = ["11222333000181", "11444777000161", "12345678000195", "00000000000191"]


@pytest.mark.parametrize("cpf", VALID_CPFS)
def test_known_valid_cpfs(cpf: str) -> None:
    assert is_cpf(cpf)
    assert not is_cnpj(cpf)
    assert normalize(cpf) == cpf


@pytest.mark.parametrize("cnpj", VALID_CNPJS)
def test_known_valid_cnpjs(cnpj: str) -> None:
    assert is_cnpj(cnpj)
    assert not is_cpf(cnpj)
    assert normalize(cnpj) == cnpj


@pytest.mark.parametrize(
    ("raw", "digits"),
    [
        ("123.456.789-09", "12345678909"),
        ("529.982.247-25", "52998224725"),
        (" 529 982 247 25 ", "52998224725"),
        ("11.222.333/0001-81", "11222333000181"),
        ("11 444 777 0001 61", "11444777000161"),
        ("12.345.678/0001-95", "12345678000195"),
    ],
)
def test_formatted_input_is_normalised(raw: str, digits: str) -> None:
    assert normalize(raw) == digits


def test_integers_are_accepted_when_they_have_11_or_14_digits() -> None:
    assert normalize(12345678909) == "12345678909"
    assert normalize(11222333000181) == "11222333000181"
    # A CPF with a leading zero cannot be an int: 1234567890 has 10 digits.
    with pytest.raises(InvalidTaxId) as ei:
        normalize(1234567890)
    assert ei.value.reason == "length"


@pytest.mark.parametrize(
    ("value", "reason", "fragment"),
    [
        ("", "length", "empty"),
        ("1234567890", "length", "11 digits"),
        ("123456789091", "length", "11 digits"),
        ("112223330001811", "length", "14 digits"),
        ("123.456.789-0X", "characters", "only digits"),
        ("١٢٣٤٥٦٧٨٩٠٩", "characters", "only digits"),  # Arabic-Indic digits
        ("111.111.111-11", "repeated", "all digits equal"),
        ("00000000000", "repeated", "all digits equal"),
        ("99999999999999", "repeated", "all digits equal"),
        ("123.456.789-08", "check_digits", "CPF check digits do not match"),
        ("12345678919", "check_digits", "CPF check digits do not match"),
        ("11.222.333/0001-82", "check_digits", "CNPJ check digits do not match"),
        (-12345678909, "characters", "negative"),
        (True, "type", "string or an integer"),
        (12345678909.0, "type", "string or an integer"),
        (None, "type", "string or an integer"),
    ],
)
def test_rejections(value: object, reason: str, fragment: str) -> None:
    with pytest.raises(InvalidTaxId) as ei:
        normalize(value)  # type: ignore[arg-type]
    assert ei.value.reason == reason
    assert isinstance(ei.value, ValueError)
    assert fragment in str(ei.value)


def test_surrounding_whitespace_is_ignored() -> None:
    assert normalize("\t12345678909\n") == "12345678909"


def test_is_cpf_and_is_cnpj_reject_non_digit_strings() -> None:
    assert not is_cpf("123.456.789-09")  # formatted: needs normalize first
    assert not is_cnpj("11.222.333/0001-81")
    assert not is_cpf("")
    assert not is_cpf("11111111111")
    assert not is_cnpj("11111111111111")


def test_format_taxid() -> None:
    assert format_taxid("12345678909") == "123.456.789-09"
    assert format_taxid("12345678000195") == "12.345.678/0001-95"
    for bad in ("1234", "1234567890X", "123.456.789-09"):
        with pytest.raises(InvalidTaxId):
            format_taxid(bad)


@given(st.sampled_from(VALID_CPFS + VALID_CNPJS))
def test_format_then_normalize_round_trips(digits: str) -> None:
    assert normalize(format_taxid(digits)) == digits


def test_make_cpf_known_values() -> None:
    assert make_cpf("123456789") == "12345678909"
    assert make_cpf("529982247") == "52998224725"
    assert make_cnpj("112223330001") == "11222333000181"
    for bad in ("12345678", "1234567890", "12345678a"):
        with pytest.raises(InvalidTaxId):
            make_cpf(bad)
    with pytest.raises(InvalidTaxId):
        make_cpf("777777777")


nine_digits = st.text(alphabet="0123456789", min_size=9, max_size=9).filter(
    lambda s: len(set(s)) > 1
)
twelve_digits = st.text(alphabet="0123456789", min_size=12, max_size=12).filter(
    lambda s: len(set(s)) > 1
)


@given(nine_digits)
def test_make_cpf_always_valid(base: str) -> None:
    cpf = make_cpf(base)
    assert cpf.startswith(base) and len(cpf) == 11
    assert is_cpf(cpf)
    assert normalize(format_taxid(cpf)) == cpf


@given(twelve_digits)
def test_make_cnpj_always_valid(base: str) -> None:
    cnpj = make_cnpj(base)
    assert cnpj.startswith(base) and len(cnpj) == 14
    assert is_cnpj(cnpj)


# A single wrong digit is NOT always caught: the mod-11 remainders 10 and 0
# (CPF) or 0 and 1 (CNPJ) both give check digit 0, so when the first check
# digit is 0 some one-digit changes in the base keep both check digits. These
# two real-world-valid CPFs differ only in their first digit:
def test_single_digit_weakness_of_the_algorithm_is_what_we_think() -> None:
    assert is_cpf("70499962206") and is_cpf("80499962206")


@given(nine_digits, st.integers(0, 10), st.integers(1, 9))
def test_changing_any_single_digit_invalidates_a_cpf(base: str, pos: int, bump: int) -> None:
    """Every one-digit change is caught, except the collapse described above,
    which needs the first check digit to be 0 before and after the change."""
    cpf = make_cpf(base)
    changed = str((int(cpf[pos]) + bump) % 10)
    mutated = cpf[:pos] + changed + cpf[pos + 1 :]
    if is_cpf(mutated):
        assert pos < 9 and cpf[9] == "0" and mutated[9] == "0"
    else:
        with pytest.raises(InvalidTaxId):
            normalize(mutated)


@given(nine_digits.filter(lambda b: make_cpf(b)[9] != "0"), st.integers(0, 10), st.integers(1, 9))
def test_single_digit_change_always_caught_when_first_check_digit_nonzero(
    base: str, pos: int, bump: int
) -> None:
    cpf = make_cpf(base)
    mutated = cpf[:pos] + str((int(cpf[pos]) + bump) % 10) + cpf[pos + 1 :]
    assert not is_cpf(mutated)


@given(nine_digits, st.integers(9, 10), st.integers(1, 9))
def test_changing_a_cpf_check_digit_is_always_caught(base: str, pos: int, bump: int) -> None:
    cpf = make_cpf(base)
    mutated = cpf[:pos] + str((int(cpf[pos]) + bump) % 10) + cpf[pos + 1 :]
    assert not is_cpf(mutated)


@given(twelve_digits, st.integers(0, 13), st.integers(1, 9))
def test_changing_any_single_digit_invalidates_a_cnpj(base: str, pos: int, bump: int) -> None:
    cnpj = make_cnpj(base)
    changed = str((int(cnpj[pos]) + bump) % 10)
    mutated = cnpj[:pos] + changed + cnpj[pos + 1 :]
    if is_cnpj(mutated):
        assert pos < 12 and cnpj[12] == "0"
