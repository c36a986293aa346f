"""Non-interactive subcommands: DESIGN §8 flags, --json, exit status, stderr."""

from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from clients.api import MeterdClient
from clients.console.cli import EXIT_API, EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE, build_parser, run_command
from clients.console.messages import Messages
from clients.console.render import Renderer
from clients.console.export import Progress
from tests.console_fakes import CPF, OPERATOR, FakeMeterd, stub_client_factory


@pytest.fixture(autouse=True)
def _no_console_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The defaults under test are those of an environment that sets none."""
    for name in ("METERD_LANG", "METERD_SERVER", "METERD_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def parse(*argv: str) -> Any:
    return build_parser(Messages("pt")).parse_args(list(argv))


def test_design_flags_parse() -> None:
    a = parse("--server", "http://h:1", "--token", "t", "--json", "--lang", "en", "cliente", "--id", CPF, "--name", "Ana", "--ligacao", "tri")
    assert (a.server, a.token, a.json, a.lang, a.command, a.id, a.name, a.ligacao) == ("http://h:1", "t", True, "en", "cliente", CPF, "Ana", "tri")
    assert parse("medidor", "--id", CPF, "--mode", "interval").mode == "interval"
    assert parse("medidores", "--id", CPF).command == "medidores"
    assert parse("fatura", "--id", CPF, "--periodo", "2").periodo == 2
    h = parse("historico", "--id", CPF, "--kind", "m", "--periodo", "1", "--medidor", "3")
    assert (h.kind, h.periodo, h.medidor) == ("M", 1, 3)
    assert parse("alarmes", "--id", CPF, "--cursor", "7").cursor == 7
    assert parse("ack", "--id", CPF, "--alarm", "5").alarm == 5
    with pytest.raises(SystemExit):
        parse("historico", "--id", CPF, "--kind", "W")


def run(fake: FakeMeterd, *argv: str, token: str | None = OPERATOR) -> tuple[Any, int, str, str]:
    args = parse(*argv)
    _, make = stub_client_factory(fake)
    out, err = io.StringIO(), io.StringIO()
    m = Messages(args.lang)
    d = ensureDeferred(run_command(args, make(token), m, Renderer(m), out, err))
    return d, out, err  # type: ignore[return-value]


@pytest_twisted.inlineCallbacks
def test_json_output_is_the_servers_json() -> Any:
    fake = FakeMeterd()
    d, out, err = run(fake, "--json", "cliente", "--id", "529.982.247-25", "--name", "Ana")
    assert (yield d) == EXIT_OK
    doc = json.loads(out.getvalue())
    assert doc == {**fake.customers[CPF], "token": f"tok-{CPF}"}
    d, out, err = run(fake, "--json", "fatura", "--id", CPF, "--periodo", "1")
    assert (yield d) == EXIT_OK
    assert json.loads(out.getvalue())["total"] == "1111.08"  # money stays a string
    assert fake.calls("/getFatura")[-1] == {"id": CPF, "periodo": "1"}


@pytest_twisted.inlineCallbacks
def test_human_output_and_errors() -> Any:
    fake = FakeMeterd()
    d, out, err = run(fake, "cliente", "--id", CPF, "--name", "Ana")
    assert (yield d) == EXIT_OK
    assert f"TOKEN DO CLIENTE: tok-{CPF}" in out.getvalue()
    d, out, err = run(fake, "cliente", "--id", CPF, "--name", "Ana")
    assert (yield d) == EXIT_API
    assert out.getvalue() == ""
    assert err.getvalue() == "Recusado pelo servidor (409): já existe um cliente com este CPF/CNPJ.\n"
    d, out, err = run(fake, "--json", "medidores", "--id", CPF, token="bad")
    assert (yield d) == EXIT_API
    assert json.loads(err.getvalue()) == {"error": {"code": "unauthorized", "message": "token inválido"}}


@pytest_twisted.inlineCallbacks
def test_invalid_input_is_not_sent() -> Any:
    fake = FakeMeterd()
    d, out, err = run(fake, "--lang", "en", "fatura", "--id", "123.456.789-00")
    assert (yield d) == EXIT_INPUT
    assert "check digits" in err.getvalue()
    assert fake.requests == []
    # numbers out of range stop at the command line, with the same exit status
    for argv in (["fatura", "--id", CPF, "--periodo", "-1"], ["ack", "--id", CPF, "--alarm", "0"],
                 ["historico", "--id", CPF, "--kind", "D", "--medidor", "0"]):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            parse(*argv)
        assert e.value.code == EXIT_INPUT


@pytest_twisted.inlineCallbacks
def test_unreachable_exit_status() -> Any:
    from tests.test_console_menu import _RefusedHttp

    args = parse("medidores", "--id", CPF)
    out, err = io.StringIO(), io.StringIO()
    m = Messages("pt")
    client = MeterdClient("http://127.0.0.1:1", None, http=_RefusedHttp())
    code = yield ensureDeferred(run_command(args, client, m, Renderer(m), out, err))
    assert code == EXIT_UNREACHABLE
    assert err.getvalue().startswith("Servidor indisponível: http://127.0.0.1:1")


# -- options anywhere, one language, --version ---------------------------------


def test_global_options_before_or_after_the_subcommand() -> None:
    before = parse("--server", "http://h:1", "--token", "t", "--json", "--lang", "en", "--timeout", "3", "fatura", "--id", CPF)
    after = parse("fatura", "--id", CPF, "--server", "http://h:1", "--token", "t", "--json", "--lang", "en", "--timeout", "3")
    mixed = parse("--json", "--token", "t", "fatura", "--lang", "en", "--id", CPF, "--server", "http://h:1", "--timeout", "3")
    assert before == after == mixed
    assert (after.server, after.token, after.json, after.lang, after.timeout) == ("http://h:1", "t", True, "en", 3.0)
    # given after the subcommand, an option overrides the same one given before it
    assert parse("--token", "a", "fatura", "--id", CPF, "--token", "b").token == "b"
    # and one not given after it keeps its value from before, or its default
    assert parse("--token", "a", "fatura", "--id", CPF).token == "a"
    assert parse("fatura", "--id", CPF).server == "http://127.0.0.1:8888"


def test_choice_values_are_typed_in_the_screens_language_or_the_apis() -> None:
    assert parse("medidor", "--id", CPF, "--mode", "intervalo").mode == "interval"
    assert parse("medidor", "--id", CPF, "--mode", "INTERVAL").mode == "interval"
    assert parse("historico", "--id", CPF, "--kind", "a").kind == "Y"  # ano
    assert parse("cliente", "--id", CPF, "--name", "Ana", "--ligacao", "tri").ligacao == "tri"
    en = build_parser(Messages("en"))
    assert en.parse_args(["cliente", "--id", CPF, "--name", "Ana", "--ligacao", "three"]).ligacao == "tri"
    with pytest.raises(SystemExit):
        en.parse_args(["historico", "--id", CPF, "--kind", "A"])


def _main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from clients.console.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


#: argparse's own English, which must not show on a Portuguese screen.
ARGPARSE_ENGLISH = ("usage:", "options:", "show this help", "positional arguments", "error:", "unrecognized", "invalid choice", "required")


@pytest.mark.parametrize("argv", [["--help"], ["fatura", "--help"], ["historico", "-h"]])
def test_help_is_entirely_portuguese(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(capsys, *argv)
    assert code == 0
    assert out.startswith("uso: python -m clients.console") and "opções:" in out and "mostra esta ajuda e sai" in out
    assert not [w for w in ARGPARSE_ENGLISH if w in out]
    assert "{registrador,intervalo}" in _main(capsys, "medidor", "--help")[1]


def test_help_in_english_wherever_lang_is(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(capsys, "fatura", "--help", "--lang", "en")
    assert code == 0 and out.startswith("usage: python -m clients.console fatura") and "show this help message" in out
    assert "{register,interval}" in _main(capsys, "--lang=en", "medidor", "--help")[1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fatura", "--id", CPF, "--bogus"], "erro: argumentos não reconhecidos: --bogus"),
        (["fatura"], "erro: faltam os argumentos obrigatórios: --id"),
        (["--lang", "xx"], "argumento --lang: escolha inválida: 'xx' (escolha entre 'pt', 'en')"),
        (["historico", "--id", CPF, "--kind", "W"], "argumento --kind: Escolha uma destas opções: D, M, A."),
        (["fatura", "--id", CPF, "--periodo", "x"], "argumento --periodo: Digite um número inteiro, não 'x'."),
        (["fatura", "--id", CPF, "--periodo", "-2"], "argumento --periodo: O número não pode ser negativo."),
        (["ack", "--id", CPF, "--alarm", "0"], "argumento --alarm: Digite um número inteiro maior que zero, não '0'."),
        (["fatura", "--id", CPF, "--timeout", "0"], "argumento --timeout: Digite um número positivo"),
        (["fatura", "--id"], "argumento --id: espera um valor"),
    ],
)
def test_argparse_errors_in_portuguese(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _main(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("uso: ") and expected in err
    assert not [w for w in ARGPARSE_ENGLISH if w in err.replace("erro:", "")]


def test_argparse_is_english_again_after_the_console_parsed(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    _main(capsys, "--help")
    p = argparse.ArgumentParser(prog="other")
    assert p.format_help().startswith("usage: other")


def test_every_translated_argparse_message_is_one_argparse_writes() -> None:
    import argparse
    import inspect

    from clients.console.argparse_i18n import PORTUGUESE, PORTUGUESE_PLURALS

    source = inspect.getsource(argparse)
    for msgid in [*PORTUGUESE, *(m for pair in PORTUGUESE_PLURALS for m in pair)]:
        assert repr(msgid)[1:-1] in source or msgid.replace("\n", "\\n") in source, msgid


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import meterd

    code, out, _ = _main(capsys, "--version")
    assert code == 0 and out == f"python -m clients.console {meterd.__version__}\n"




def run_billing(fake: FakeMeterd, *argv: str, progress: Any = None) -> tuple[Any, Any, Any]:
    from twisted.internet import reactor

    args = parse(*argv)
    _, make = stub_client_factory(fake)
    out, err = io.StringIO(), io.StringIO()
    m = Messages(args.lang)
    d = ensureDeferred(run_command(args, make(OPERATOR), m, Renderer(m, width=80), out, err, progress=progress, timer=reactor, poll=0))
    return d, out, err


@pytest_twisted.inlineCallbacks
def test_faturamento_follows_the_run_and_prints_its_summary_or_its_json() -> Any:
    fake = FakeMeterd()
    drawn: list[str] = []
    progress = Progress(drawn.append, Messages("pt"), 80, ascii_only=True, key="billing.progress")
    d, out, err = run_billing(fake, "faturamento", "--periodo", "2", progress=progress)
    assert (yield d) == EXIT_OK
    assert fake.calls("/faturamento") == [{"periodo": 2}]
    assert len(fake.calls("/getFaturamento")) == 4  # looked at until it was over
    assert "Faturamento de nov/2026 (execução 1): concluído" in out.getvalue() and "R$ 400,00" in out.getvalue()
    assert err.getvalue() == ""
    bars = [line for line in drawn if line.startswith("\r\x1b[KFaturando")]
    assert re.fullmatch(r"\r\x1b\[KFaturando nov/2026 -{10,}   0%  0 de 4 clientes, 0 faturas", bars[0]), bars[0]
    assert re.search(r"Faturando nov/2026 #{10,}-+  75%  3 de 4 clientes, 3 faturas$", bars[-1]), bars[-1]
    assert drawn[-1] == "\r\x1b[K"  # erased before the summary
    assert all(len(line) - len("\r\x1b[K") < 80 for line in drawn)
    d, out, err = run_billing(fake, "--json", "faturamento")
    assert (yield d) == EXIT_OK
    assert json.loads(out.getvalue())["estado"] == "concluida"


@pytest_twisted.inlineCallbacks
def test_faturamento_while_one_runs_is_refused_and_a_run_can_be_followed() -> Any:
    fake = FakeMeterd()
    fake.run_customers = 10**6  # never done
    fake.billing("/faturamento", {"periodo": 1})
    d, out, err = run_billing(fake, "faturamento")
    assert (yield d) == EXIT_API
    assert err.getvalue() == ("Recusado pelo servidor (409): já há um faturamento em andamento "
                              "(acompanhe-o com faturamento --execucao N).\n")
    fake.run_customers = fake.run["clientes"] = 3
    d, out, err = run_billing(fake, "faturamento", "--execucao", "1")
    assert (yield d) == EXIT_OK
    assert fake.calls("/faturamento") == [{"periodo": 1}] and "concluído" in out.getvalue()


@pytest_twisted.inlineCallbacks
def test_faturamento_resultado_writes_the_runs_bills_as_they_arrive() -> Any:
    fake = FakeMeterd()
    fake.billing("/faturamento", {"periodo": 1})
    fake.result = "numero,id,nome\r\n1,a,Zé\r\n2,b,Çá\r\n".encode()
    d, out, err = run_billing(fake, "faturamento", "--resultado", "csv", "--execucao", "1")
    assert (yield d) == EXIT_OK
    assert out.getvalue() == "numero,id,nome\r\n1,a,Zé\r\n2,b,Çá\r\n"
    assert fake.calls("/getFaturamentoResultado") == [{"execucao": "1", "formato": "csv"}]


@pytest_twisted.inlineCallbacks
def test_webhook_subcommands_register_list_and_remove() -> Any:
    fake = FakeMeterd()
    yield run(fake, "cliente", "--id", CPF, "--name", "Ana")[0]
    assert parse("webhook", "--url", "https://h/x").id is None
    d, out, err = run(fake, "webhook", "--url", "https://alarmes.example.com/meterd", "--id", "529.982.247-25")
    assert (yield d) == EXIT_OK, err.getvalue()
    assert fake.calls("/cadWebhook") == [{"url": "https://alarmes.example.com/meterd", "id": CPF}]
    assert f"SEGREDO DO WEBHOOK: whsec_{1:064x}" in out.getvalue()
    d, out, err = run(fake, "--json", "webhooks")
    assert (yield d) == EXIT_OK
    assert [w["webhook_id"] for w in json.loads(out.getvalue())["webhooks"]] == [1]
    d, out, err = run(fake, "--lang", "en", "remove-webhook", "--webhook", "1")
    assert (yield d) == EXIT_OK
    assert out.getvalue() == "Webhook 1 removed: nothing more will be sent to https://alarmes.example.com/meterd.\n"
    d, out, err = run(fake, "remove-webhook", "--webhook", "1")
    assert (yield d) == EXIT_API and "não há webhook com este número" in err.getvalue()
    d, out, err = run(fake, "webhooks", token=f"tok-{CPF}")
    assert (yield d) == EXIT_API and "(403)" in err.getvalue()
    d, out, err = run(fake, "webhook", "--url", "https://h/x", "--id", "111.111.111-11")
    assert (yield d) == EXIT_INPUT and fake.calls("/cadWebhook") == [{"url": "https://alarmes.example.com/meterd", "id": CPF}]
    with pytest.raises(SystemExit):
        parse("webhook", "--url", "alarmes.example.com")  # refused before anything is sent
