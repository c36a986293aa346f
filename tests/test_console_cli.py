"""Non-interactive subcommands: DESIGN §8 flags, --json, exit status, stderr."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import ensureDeferred

from clients.api import MeterdClient
from clients.console.cli import EXIT_API, EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE, build_parser, run_command
from clients.console.messages import Messages
from clients.console.render import Renderer
from tests.console_fakes import CPF, OPERATOR, FakeMeterd, stub_client_factory


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
    d, out, err = run(fake, "fatura", "--id", CPF, "--periodo", "-1")
    assert (yield d) == EXIT_INPUT
    assert fake.requests == []


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
