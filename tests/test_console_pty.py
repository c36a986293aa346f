"""The console in a real terminal (a pty at 80×24) against a real ``twistd -n meterd``.

What a person types goes through the whole terminal stack: the pty's bytes,
Twisted's stdio, insults' ServerProtocol and the console's line editor; what
the server stores is then read back over HTTP.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pty_terminal import PtyProcess, client_env, lines_of, strip_escapes
from tests.support import ROOT, Twistd

pytestmark = pytest.mark.slow

CPF_JOAO = "52998224725"
CPF_WIDE = "11144477735"
CPF_ALARM = "39053344705"
CPF_TOKEN = "86288366757"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    live = Twistd(tmp_path_factory.mktemp("meterd") / "meterd-data").start()
    yield live
    live.stop()


def call(server: Twistd, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or server.token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def console(server: Twistd, *args: str, cols: int = 80, rows: int = 24) -> PtyProcess:
    return PtyProcess(
        [sys.executable, "-m", "clients.console", "--server", server.url, *args],
        cols=cols,
        rows=rows,
        env=client_env(),
        cwd=ROOT,
    )


def test_accented_name_typed_and_edited_in_a_terminal_is_stored_intact(server: Twistd) -> None:
    term = console(server, "--data-dir", str(server.data_dir), "--operator")
    try:
        term.expect(r"1\) Cadastrar cliente")
        term.send("1\r")
        term.expect("CPF ou CNPJ do cliente: ")
        term.type(CPF_JOAO + "\r")
        term.expect("Nome: ")
        # typed a byte at a time, so a letter's two bytes arrive in separate reads;
        # "õ" (two bytes) is a typo, erased with one backspace
        term.type("João da Conceiçõ")
        at = term.mark()
        term.send(b"\x7f")
        term.expect(re.escape("\x1b[1D\x1b[1P"), start=at)  # one cell back, one cell deleted
        term.type("ão\r")
        for prompt in ("Ligação", "Limite de demanda", "Limite mensal"):
            term.expect(prompt)
            term.send("\r")
        term.expect(r"TOKEN DO CLIENTE")
        assert "(João da Conceição) cadastrado" in strip_escapes(term.output).replace("\r\n", " ")

        # a wide letter (two cells) erased with one backspace
        term.expect(r"> ")
        term.send("1\r")
        term.expect("CPF ou CNPJ do cliente: ", start=at)
        at = term.mark()
        term.type(CPF_WIDE + "\r")
        term.expect("Nome: ", start=at)
        term.type("Ñandú 王小明明")
        at = term.mark()
        term.send(b"\x7f")
        term.expect(re.escape("\x1b[2D\x1b[2P"), start=at)  # two cells back, two deleted
        term.send("\r\r\r\r")
        term.expect(r"TOKEN DO CLIENTE", start=at)
        term.send("0\r")
        assert term.wait() == 0
    finally:
        term.close()
    assert call(server, "GET", f"/getFatura?id={CPF_JOAO}")["name"] == "João da Conceição"
    assert call(server, "GET", f"/getFatura?id={CPF_WIDE}")["name"] == "Ñandú 王小明"


def test_token_typed_at_the_prompt_is_not_echoed(server: Twistd) -> None:
    token = call(server, "POST", "/cadCliente", {"id": CPF_TOKEN, "name": "Tânia"})["token"]
    term = console(server)
    try:
        term.expect(r"0\) Sair")
        term.send("2\r")
        term.expect("CPF ou CNPJ do cliente: ")
        term.send(CPF_TOKEN + "\r")
        term.expect(r"Token de acesso \(não aparece ao digitar\): ")
        at = term.mark()
        term.type(token + "\r")
        term.expect(r"1\) Fatura", start=at)  # the server took it
        assert token not in term.output
        assert token[:6] not in term.output[at:]
        term.send("0\r")
        assert term.wait() == 0
    finally:
        term.close()


@pytest.fixture(scope="module")
def alarmed(server: Twistd) -> tuple[str, str]:
    """A customer whose meter drew 120 kW for a minute: (token, alarm message), for every test that needs one."""
    token = call(server, "POST", "/cadCliente", {"id": CPF_ALARM, "name": "Carla"})["token"]
    call(server, "POST", "/cadMedidor", {"id": CPF_ALARM})
    now = time.time()
    for ts, valor in ((now - 61, 500.0), (now - 1, 502.0)):
        call(server, "POST", "/postConsumo", {"id": CPF_ALARM, "id_medidor": 1, "valor": valor, "timestamp": ts})
    deadline = time.monotonic() + 20
    while not (active := call(server, "GET", f"/getAlarme?id={CPF_ALARM}", token=token)["active"]):
        assert time.monotonic() < deadline, "the demand alarm was not raised"
        time.sleep(0.2)
    return token, active[0]["message"]


def _column(lines: list[str], index: int, columns: int) -> str:
    """The text of column ``index`` (from 1) of the drawn table with ``columns``
    columns, its wrapped lines joined."""
    cells = [line.split("│")[index].strip() for line in lines if line.count("│") == columns + 1]
    return " ".join(c for c in cells if c)


def test_alarm_view_shows_the_message_at_80_columns_and_follows_a_resize(server: Twistd, alarmed: tuple[str, str]) -> None:
    token, message = alarmed
    term = console(server, "--customer", CPF_ALARM, "--token", token)
    try:
        term.expect(r"3\) Alarmes")
        at = term.mark()
        term.send("3\r")
        term.expect("Eventos recentes", start=at)
        term.expect(r"0\) Sair\r\n> ", start=at)  # the view and the menu fit 24 lines together
        view = lines_of(term.output[at:])
        assert max(len(line) for line in view) <= 80
        assert "Mensagem" not in term.output[at:]  # too narrow for a column of its own
        shown = _column(view, 2, 5)
        assert " ".join(message.split()) in shown  # wrapped under the rule's name, not dropped

        at = term.mark()
        term.resize(150, 40)
        term.expect("Mensagem", start=at)  # drawn again, now with a message column
        term.expect(r"0\) Sair\r\n> ", start=at)
        redrawn = lines_of(term.output[at:])
        assert max(len(line) for line in redrawn) > 80
        assert _column(redrawn, 8, 8) == "Mensagem " + " ".join(message.split())  # header, then the message
        term.send("0\r")
        assert term.wait() == 0
    finally:
        term.close()


def test_bill_keeps_its_header_on_a_24_line_screen(server: Twistd, alarmed: tuple[str, str]) -> None:
    term = console(server, "--data-dir", str(server.data_dir), "--operator")
    try:
        term.expect(r"4\) Fatura de um cliente")
        term.send("4\r")
        term.expect("CPF ou CNPJ do cliente: ")
        term.send(CPF_ALARM + "\r")
        term.expect(r"Quantos meses atrás")
        at = term.mark()
        term.send("\r")
        term.expect(re.escape("Opção (Enter mostra o menu): "), start=at)
        drawn = lines_of(term.output[at:])
        title = next(i for i, line in enumerate(drawn) if "CONTA DE ENERGIA ELÉTRICA" in line)
        # what follows the title, prompt included, fits under it on the screen
        assert len(drawn) - title <= 23
        assert "Cadastrar cliente" not in term.output[at:]  # the menu waits for Enter
        at = term.mark()
        term.send("\r")
        term.expect(r"1\) Cadastrar cliente", start=at)
        term.send("0\r")
        assert term.wait() == 0
    finally:
        term.close()


def test_server_down_is_reported_before_anything_is_asked(tmp_path: Path) -> None:
    from tests.support import free_port

    url = f"http://127.0.0.1:{free_port()}"
    term = PtyProcess([sys.executable, "-m", "clients.console", "--server", url], env=client_env(), cwd=ROOT)
    try:
        assert term.wait() == 3
        term.expect(re.escape(f"Servidor indisponível: {url} recusou a conexão."))
        assert "Escolha o modo" not in term.output
    finally:
        term.close()
