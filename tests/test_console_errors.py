"""Failures shown in the screen's language: the server's codes through the catalog."""

from __future__ import annotations

import re

import pytest

from clients.api import ApiError, ServerUnreachable
from clients.console.errors import Invalid, describe_error
from clients.console.messages import CATALOG, Messages
from tests.support import ROOT

#: How meterd raises its HTTP errors; each names its code as a string literal.
_RAISERS = re.compile(r'(?:ApiError\(\s*\d+,|bad_request\(|not_found\(|InvalidField\()\s*"([a-z_]+)"')


def server_codes() -> set[str]:
    codes: set[str] = set()
    for path in (ROOT / "meterd").rglob("*.py"):
        codes |= set(_RAISERS.findall(path.read_text(encoding="utf-8")))
    return codes


def test_every_code_the_server_raises_has_a_sentence_in_both_languages() -> None:
    codes = server_codes()
    assert {"unauthorized", "unknown_alarm", "customer_exists", "invalid_tz", "too_precise"} <= codes
    missing = sorted(c for c in codes if f"api.{c}" not in CATALOG["pt"] or f"api.{c}" not in CATALOG["en"])
    assert missing == []


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        ("pt", "Recusado pelo servidor (401): token de acesso ausente ou inválido."),
        ("en", "Refused by the server (401): the access token is missing or not valid."),
    ],
)
def test_a_known_code_is_the_catalogs_sentence(lang: str, expected: str) -> None:
    err = ApiError(401, "unauthorized", "no valid credentials")
    assert describe_error(err, Messages(lang)) == expected


def test_a_server_error_is_worded_as_the_servers_fault() -> None:
    err = ApiError(503, "store_unavailable", "the store is unavailable; retry shortly")
    assert describe_error(err, Messages("pt")).startswith("Erro no servidor (503): o banco de dados")


@pytest.mark.parametrize("lang", ["pt", "en"])
def test_an_unknown_code_is_named_in_the_screens_language(lang: str) -> None:
    err = ApiError(422, "credential_reissue_pending", "a new credential is being issued")
    line = describe_error(err, Messages(lang))
    assert "'credential_reissue_pending'" in line and "422" in line
    assert "being issued" not in line  # the server's English stays out
    assert ("console" in line) and (("ainda não conhece" in line) == (lang == "pt"))


def test_an_error_without_details_says_so() -> None:
    err = ApiError(502, "http_502", "<html>Bad gateway</html>")  # a proxy's page, not meterd's JSON
    assert describe_error(err, Messages("pt")) == "Erro no servidor (502): o servidor não explicou o erro."


def test_verbose_adds_the_servers_own_message() -> None:
    err = ApiError(404, "unknown_alarm", "customer 52998224725 has no alarm 99")
    m = Messages("pt")
    assert "has no alarm 99" not in describe_error(err, m)
    assert describe_error(err, m, verbose=True) == (
        "Recusado pelo servidor (404): o cliente não tem este alarme. [servidor: customer 52998224725 has no alarm 99]"
    )


@pytest.mark.parametrize(
    ("reason", "pt", "en"),
    [
        ("timeout", "Tempo esgotado: http://h:1 não respondeu em 2,5 s.", "Timed out: http://h:1 did not answer within 2.5 s."),
        ("refused", "Servidor indisponível: http://h:1 recusou a conexão.", "Server unreachable: http://h:1 refused the connection."),
        ("dns", "Servidor não encontrado: o nome do host em http://h:1 não existe.", "Server not found: the host name in http://h:1 does not exist."),
        ("failed", "Servidor indisponível: a conexão com http://h:1 falhou.", "Server unreachable: the connection to http://h:1 failed."),
    ],
)
def test_unreachable_is_worded_by_its_reason(reason: str, pt: str, en: str) -> None:
    err = ServerUnreachable("http://h:1: english detail", reason=reason, server="http://h:1", timeout=2.5)
    assert describe_error(err, Messages("pt")) == pt
    assert describe_error(err, Messages("en")) == en


def test_invalid_input_and_bugs() -> None:
    m = Messages("en")
    assert describe_error(Invalid("Type a whole number."), m) == "Type a whole number."
    assert describe_error(KeyError("x"), m) == "Unexpected error: KeyError: 'x'"


def test_every_reason_for_no_answer_has_a_sentence() -> None:
    from clients.api import UNREACHABLE_REASONS

    for lang in ("pt", "en"):
        assert [r for r in UNREACHABLE_REASONS if f"error.unreachable.{r}" not in CATALOG[lang]] == []
