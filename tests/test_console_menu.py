"""The console's menu state machine, driven through a StringTransport.

The API is the in-memory FakeMeterd behind StubTreq; time is a Clock, so the
alarm poller's LoopingCall runs only when a test advances it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from treq.testing import StubTreq
from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from clients.api import MeterdClient
from clients.console.frontend import LineFrontend, TerminalFrontend
from clients.console.menu import Menu
from clients.console.messages import Messages
from clients.console.render import Renderer
from meterd.taxid import make_cpf
from tests.console_fakes import CPF, CPF2, OPERATOR, FakeMeterd, stub_client_factory


@dataclass
class Session:
    fake: FakeMeterd
    stub: StubTreq
    proto: LineFrontend
    tr: StringTransport
    clock: Clock

    def type(self, *lines: str) -> str:
        """Send lines; return only the output they caused."""
        self.tr.clear()
        for line in lines:
            self.proto.dataReceived(line.encode() + b"\n")
            self.stub.flush()
        return self.tr.value().decode()

    def advance(self, seconds: float) -> str:
        self.tr.clear()
        self.clock.advance(seconds)
        self.stub.flush()
        return self.tr.value().decode()


def session(
    fake: FakeMeterd | None = None,
    *,
    lang: str = "pt",
    make_client: Any = None,
    renderer: Renderer | None = None,
    **menu_kw: Any,
) -> Session:
    fake = fake or FakeMeterd()
    stub, make = stub_client_factory(fake)
    clock = Clock()
    msgs = Messages(lang)
    kw = {"operator_token": OPERATOR, **menu_kw}

    def factory(out: Any) -> Menu:
        return Menu(
            out,
            msgs=msgs,
            renderer=renderer or Renderer(msgs),
            make_client=make_client or make,
            clock=clock,
            poll_interval=30,
            **kw,
        )

    proto = LineFrontend(factory)
    tr = StringTransport()
    proto.makeConnection(tr)
    return Session(fake, stub, proto, tr, clock)


def with_customer(s: Session, cid: str = CPF) -> str:
    """Register a customer and a meter as operator; return the customer token."""
    s.type("1", "1", cid, "Ana", "", "", "")
    s.type("2", cid, "")
    s.type("9")
    return f"tok-{cid}"


def test_start_shows_mode_menu() -> None:
    s = session()
    out = s.tr.value().decode()
    assert "1) Operador" in out and "2) Cliente" in out
    assert out.endswith("> ")


def test_operator_registers_customer_and_sees_token_once() -> None:
    s = session()
    out = s.type("1", "1", "529.982.247-25", "Ana Souza", "bi", "7,5", "")
    assert "TOKEN DO CLIENTE: tok-52998224725" in out
    assert "guarde este token agora" in out.lower()
    (body,) = s.fake.calls("/cadCliente")
    # formatted CPF normalized before sending; decimal comma accepted
    assert body == {"id": CPF, "name": "Ana Souza", "ligacao": "bi", "limite_kw": 7.5}
    # the operator menu comes back
    assert out.rstrip().endswith(">")
    assert "Cadastrar cliente" in out.split("TOKEN DO CLIENTE")[1]


def test_invalid_cpf_is_refused_before_sending_and_asked_again() -> None:
    s = session()
    s.type("1", "1")
    out = s.type("123.456.789-00")
    assert "verificadores" in out
    assert out.endswith("CPF ou CNPJ do cliente: ")
    out = s.type("1234")
    assert "foram digitados 4" in out
    out = s.type("111.111.111-11")
    assert "todos os dígitos iguais" in out
    assert s.fake.calls("/cadCliente") == []
    out = s.type(CPF, "Ana", "", "", "")
    assert "TOKEN DO CLIENTE" in out


def test_invalid_number_and_choice_are_asked_again() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana")
    out = s.type("quadrifásica")
    assert "mono, bi, tri" in out
    out = s.type("tri", "-3")
    assert "número positivo" in out
    out = s.type("abc")
    assert "número positivo" in out
    out = s.type("10", "1.000")  # "1.000" is one (point as decimal), not a thousand
    assert s.fake.calls("/cadCliente")[0]["limite_kwh"] == 1
    assert "TOKEN DO CLIENTE" in out


def test_empty_required_field_cancels_back_to_menu() -> None:
    s = session()
    s.type("1", "1")
    out = s.type("")
    assert "Cancelado." in out
    assert "Cadastrar cliente" in out
    assert s.fake.requests == []


def test_invalid_menu_choice() -> None:
    s = session()
    out = s.type("7")
    assert "Opção inválida: '7'" in out
    assert "1) Operador" in out


def test_register_and_list_meters() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("2", CPF, "interval")
    assert "CHAVE DO MEDIDOR: " + "0" * 63 + "1" in out
    assert s.fake.calls("/cadMedidor") == [{"id": CPF, "mode": "interval"}]
    out = s.type("3", "529.982.247-25")
    assert "Medidores do cliente 529.982.247-25" in out
    assert "interval" in out and "nunca" in out


def test_server_error_is_one_line_and_menu_returns() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("1", CPF, "Ana de novo", "", "", "")
    assert "Recusado pelo servidor (409): já existe um cliente com este CPF/CNPJ." in out
    assert "Traceback" not in out and "já existe\n" not in out  # the server's own message is not shown
    assert out.rstrip().endswith(">") and "Cadastrar cliente" in out
    out = s.type("3", CPF2)
    assert "Recusado pelo servidor (404): não há cliente cadastrado com este CPF/CNPJ." in out


def test_store_down_503() -> None:
    fake = FakeMeterd()
    s = session(fake)
    fake.down = True
    out = s.type("1", "3", CPF)
    assert "Erro no servidor (503): o banco de dados está indisponível; tente de novo em instantes." in out
    assert "banco indisponível" not in out


def test_operator_without_token_is_asked_for_one() -> None:
    s = session(operator_token=None)
    out = s.type("1")
    assert "Sem token do operador" in out
    assert out.endswith("Token de acesso (não aparece ao digitar): ")
    out = s.type(OPERATOR)
    assert "Cadastrar cliente" in out


def test_customer_login_wrong_token_goes_back_to_mode_menu() -> None:
    s = session()
    with_customer(s)
    out = s.type("2", CPF, "wrong")
    assert "Recusado pelo servidor (401): token de acesso ausente ou inválido." in out
    assert "1) Operador" in out


def test_customer_bill_history_alarms_ack() -> None:
    s = session()
    token = with_customer(s)
    out = s.type("2", CPF, token)
    assert "Cliente 529.982.247-25" in out
    out = s.type("1", "")
    assert "CONTA DE ENERGIA ELÉTRICA" in out
    assert "TOTAL A PAGAR" in out and "R$ 1.111,08" in out
    assert "Bandeira Amarela" in out
    assert s.fake.calls("/getFatura")[-1] == {"id": CPF, "periodo": "0"}
    out = s.type("1", "2")
    assert s.fake.calls("/getFatura")[-1] == {"id": CPF, "periodo": "2"}

    out = s.type("2", "x")
    assert "D, M, A" in out
    out = s.type("m", "1", "1")
    assert s.fake.calls("/getConsumoHist")[-1] == {"id": CPF, "kind": "M", "periodo": "1", "id_medidor": "1"}
    assert "Consumo por dia (kWh)" in out
    # bars proportional to 1, 2, 4 kWh: the largest gets the full 60 columns
    bars = [line.split("|", 1)[1].split(" ")[0] for line in out.splitlines() if "|#" in line]
    assert [len(b) for b in bars] == [15, 30, 60]

    s.fake.raise_alarm()
    out = s.type("3")
    assert "Alarmes ativos" in out and "Demanda" in out and "12,50 kW" in out
    out = s.type("4", "abc")
    assert "maior que zero" in out
    out = s.type("1")
    assert "Alarme 1 reconhecido." in out
    assert s.fake.calls("/ackAlarme") == [{"id": CPF, "alarm_id": 1}]
    out = s.type("4", "99")
    assert "Recusado pelo servidor (404): o cliente não tem este alarme." in out
    assert "não existe" not in out  # the fake server's own words


def test_bill_not_implemented_is_readable() -> None:
    fake = FakeMeterd()
    fake.bill = None
    s = session(fake)
    token = with_customer(s)
    s.type("2", CPF, token)
    out = s.type("1", "0")
    assert "Erro no servidor (501): este servidor ainda não oferece esta função." in out
    assert "Traceback" not in out
    assert "1) Fatura" in out


def test_customer_preset_with_token() -> None:
    fake = FakeMeterd()
    s = session(fake)
    with_customer(s)
    s2 = session(fake, start_mode="customer", customer_id=CPF, customer_token=f"tok-{CPF}")
    s2.stub.flush()
    assert "1) Fatura" in s2.tr.value().decode()


def test_english() -> None:
    s = session(lang="en")
    out = s.type("1", "1", "123")
    assert "A CPF has 11 digits and a CNPJ 14; you typed 3." in out
    out = s.type(CPF, "Ana", "", "", "")
    assert "CUSTOMER TOKEN: tok-" in out
    assert "Register a customer" in out


def test_eof_after_queued_script_quits() -> None:
    s = session()
    s.tr.clear()
    s.proto.dataReceived(f"1\n1\n{CPF}\nAna\n\n\n\n".encode())
    s.proto.readConnectionLost()
    s.stub.flush()
    out = s.tr.value().decode()
    assert "TOKEN DO CLIENTE" in out
    assert out.rstrip().endswith("Até logo.")
    assert s.tr.disconnecting


class SlowClient:
    """A client whose answers the test releases by hand."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Deferred[dict[str, Any]]]] = []

    def meters(self, id: str) -> Deferred[dict[str, Any]]:
        d: Deferred[dict[str, Any]] = Deferred()
        self.pending.append((id, d))
        return d


def test_type_ahead_is_queued_while_a_request_is_in_flight() -> None:
    slow = SlowClient()
    s = session(make_client=lambda token: slow)
    s.type("1", "3", CPF, "3", CPF2)
    assert [cid for cid, _ in slow.pending] == [CPF]  # second waits its turn
    slow.pending[0][1].callback({"id": CPF, "meters": []})
    assert [cid for cid, _ in slow.pending] == [CPF, CPF2]
    slow.pending[1][1].callback({"id": CPF2, "meters": []})
    out = s.tr.value().decode()
    assert "O cliente 529.982.247-25 não tem medidores." in out
    assert "O cliente 111.444.777-35 não tem medidores." in out


# -- alarm polling ------------------------------------------------------------


def customer_session(fake: FakeMeterd | None = None) -> Session:
    fake = fake or FakeMeterd()
    s = session(fake)
    token = with_customer(s)
    s.type("2", CPF, token)
    return s


def test_poll_announces_new_events_once() -> None:
    fake = FakeMeterd()
    s = session(fake)
    token = with_customer(s)
    old = fake.raise_alarm(rule="monthly", meter=None, value=1200, limit=1000)
    fake.clear_alarm(old)  # history before the session: not news
    out = s.type("2", CPF, token)
    assert "ALARME" not in out
    assert s.fake.calls("/getAlarme")[-1] == {"id": CPF}

    fake.raise_alarm(value=12.5, limit=10)
    out = s.advance(29)
    assert out == ""
    out = s.advance(1)
    # 17:03 UTC is 14:03 in São Paulo (UTC-3)
    assert (
        "*** ALARME #2 DISPARADO — Demanda, medidor 1: 12,50 kW (limite 10,00 kW) em 05/11/2026 14:03 ***" in out
    )
    assert s.fake.calls("/getAlarme")[-1] == {"id": CPF, "cursor": "2"}
    assert out.endswith("> ")  # the prompt is back after the banner
    assert s.advance(30) == ""  # nothing new, nothing shown
    fake.clear_alarm(2)
    out = s.advance(30)
    assert "ALARME #2 NORMALIZADO — Demanda, medidor 1 em 05/11/2026 14:20" in out


def test_poll_reports_active_alarms_at_login() -> None:
    fake = FakeMeterd()
    s = session(fake)
    token = with_customer(s)
    fake.raise_alarm()
    out = s.type("2", CPF, token)
    assert "1 alarme(s) ativo(s)" in out


def test_acked_events_are_not_announced() -> None:
    s = customer_session()
    s.fake.raise_alarm()
    s.advance(30)
    out = s.type("4", "1")
    assert "reconhecido" in out
    assert "ALARME" not in s.advance(30)


def test_poll_keeps_what_user_is_typing_in_line_mode() -> None:
    s = customer_session()
    s.fake.raise_alarm()
    s.tr.clear()
    s.proto.dataReceived(b"2")  # half-typed, no newline yet
    out = s.advance(30)
    assert "DISPARADO" in out
    s.proto.dataReceived(b"\n")  # the line completes intact
    s.stub.flush()
    assert "Agrupar por D" in s.tr.value().decode()


def test_server_going_away_reported_once_then_resumes() -> None:
    fake = FakeMeterd()
    s = customer_session(fake)
    menu = s.proto.menu
    assert menu is not None and menu.poller is not None
    good = menu.poller.client

    class Refusing:
        def alarms(self, id: str, cursor: int | None = None) -> Deferred[dict[str, Any]]:
            return MeterdClient("http://127.0.0.1:1", None, http=_RefusedHttp()).alarms(id, cursor)

    menu.poller.client = Refusing()  # type: ignore[assignment]
    out = s.advance(30) + s.advance(30) + s.advance(30)
    assert out.count("Servidor indisponível") == 1
    menu.poller.client = good
    fake.raise_alarm()
    out = s.advance(30)
    assert "Servidor de volta" in out
    assert "ALARME #1 DISPARADO" in out


def test_poll_not_implemented_reported_once() -> None:
    fake = FakeMeterd()
    fake.alarms_enabled = False
    s = session(fake)
    token = with_customer(s)
    out = s.type("2", CPF, token) + s.advance(30) + s.advance(30)
    assert out.count("Não foi possível verificar os alarmes") == 1
    assert "ainda não oferece" in out


def test_polling_stops_when_leaving_customer_mode() -> None:
    s = customer_session()
    n = len(s.fake.calls("/getAlarme"))
    s.type("9")
    s.advance(300)
    assert len(s.fake.calls("/getAlarme")) == n
    assert not s.clock.getDelayedCalls()


class _RefusedHttp:
    def request(self, *a: Any, **kw: Any) -> Deferred[Any]:
        return fail(ConnectionRefusedError())

    def content(self, response: Any) -> Deferred[bytes]:  # pragma: no cover
        raise AssertionError


# -- terminal frontend --------------------------------------------------------


def test_terminal_frontend_redraws_half_typed_line_after_banner() -> None:
    fake = FakeMeterd()
    stub, make = stub_client_factory(fake)
    msgs = Messages("pt")
    clock = Clock()

    def factory(out: Any) -> Menu:
        return Menu(out, msgs=msgs, renderer=Renderer(msgs), make_client=make, clock=clock, operator_token=OPERATOR)

    proto = ServerProtocol(TerminalFrontend, factory)
    tr = StringTransport()
    proto.makeConnection(tr)
    out = tr.value()
    assert b"1) Operador\r\n" in out  # raw mode: CR LF line ends
    assert b"\x1bc" not in out  # the screen is not reset
    proto.dataReceived(b"1\r")
    proto.dataReceived(b"ab")
    assert tr.value().endswith(b"ab")  # echoed by the line editor
    tr.clear()
    front = proto.terminalProtocol
    front.notify("*** ALARME ***\n")
    out = tr.value()
    banner_at = out.index(b"*** ALARME ***\r\n")
    assert out[:banner_at].startswith(b"\r")  # the input line was erased first
    assert out.endswith(b"> ab")  # prompt and half-typed text redrawn
    tr.clear()
    proto.dataReceived(b"\x7f\x7fx\r")  # edit and submit
    assert "Opção inválida: 'x'" in tr.value().decode()
    tr.clear()
    proto.dataReceived(b"\x03")  # ^C quits
    assert tr.disconnecting
    assert b"\x1bc" not in tr.value()  # without wiping the screen


# -- the operator sees a customer's data ---------------------------------------


def test_operator_sees_a_customers_bill_history_alarms_and_acks() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    s.type("2", CPF, "")
    out = s.type("4", "529.982.247-25", "1")
    assert "CONTA DE ENERGIA ELÉTRICA" in out and "R$ 1.111,08" in out
    assert s.fake.calls("/getFatura")[-1] == {"id": CPF, "periodo": "1"}
    out = s.type("5", CPF, "a", "", "")
    assert "Consumo por mês (kWh)" in out  # "A" (ano) asked for the year
    assert s.fake.calls("/getConsumoHist")[-1] == {"id": CPF, "kind": "Y", "periodo": "0"}
    s.fake.raise_alarm()
    out = s.type("6", CPF)
    assert "Alarmes ativos" in out and "Demanda acima do limite" in out  # the alarm's own message
    out = s.type("7", CPF, "1")
    assert "Alarme 1 reconhecido." in out
    assert s.fake.calls("/ackAlarme") == [{"id": CPF, "alarm_id": 1}]
    out = s.type("6", CPF2)
    assert "não há cliente cadastrado com este CPF/CNPJ" in out
    assert "Cadastrar cliente" in out  # back at the operator's menu
    assert s.fake.calls("/getAlarme")[-1] == {"id": CPF2}


def test_operator_replaces_a_lost_token_or_key() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    s.type("2", CPF, "")
    out = s.type("8", CPF, "")
    assert "Novo token do cliente 529.982.247-25" in out and "TOKEN DO CLIENTE: tok2-52998224725" in out
    assert s.fake.calls("/novoToken") == [{"id": CPF}]
    out = s.type("8", CPF, "1")
    assert "Nova chave do medidor 1" in out and f"CHAVE DO MEDIDOR: {101:064x}" in out
    assert s.fake.calls("/novaChave") == [{"id": CPF, "id_medidor": 1}]
    out = s.type("8", CPF, "4")
    assert "(404): o cliente não tem este medidor" in out and "Cadastrar cliente" in out


# -- choices, secrets, Unicode ---------------------------------------------------


def test_choices_are_offered_and_typed_in_the_screens_language() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("2", CPF)
    assert out.endswith("Modo do medidor (registrador/intervalo) [registrador]: ")
    out = s.type("interval")  # the API's word is understood too
    assert "(modo intervalo)" in out
    s.type("2", CPF, "INTERVALO")
    assert [c["mode"] for c in s.fake.calls("/cadMedidor")] == ["interval", "interval"]
    out = s.type("3", CPF)
    assert "intervalo" in out and "interval " not in out
    en = session(lang="en")
    out = en.type("1", "2", CPF)
    assert out.endswith("Meter mode (register/interval) [register]: ")
    out = session(lang="en").type("1", "1", CPF, "Ana")
    assert out.endswith("Connection phases (single/two/three) [single]: ")


def test_a_decomposed_accent_is_stored_composed() -> None:
    s = session()
    s.type("1", "1", CPF, "Joa\u0303o da Conceic\u0327a\u0303o", "", "", "")
    assert s.fake.calls("/cadCliente")[0]["name"] == "João da Conceição"


def test_a_token_is_asked_without_echo() -> None:
    switched: list[bool] = []
    fake = FakeMeterd()
    stub, make = stub_client_factory(fake)
    msgs = Messages("pt")

    def factory(out: Any) -> Menu:
        return Menu(out, msgs=msgs, renderer=Renderer(msgs), make_client=make, clock=Clock(), operator_token=None)

    proto = LineFrontend(factory, echo=switched.append)
    tr = StringTransport()
    proto.makeConnection(tr)
    proto.dataReceived(b"1\n")
    assert tr.value().decode().endswith("Token de acesso (não aparece ao digitar): ")
    assert switched == [False]  # the terminal stops echoing for the token
    proto.dataReceived(OPERATOR.encode() + b"\n")
    assert switched == [False, True]  # and echoes again once it is typed
    assert "Cadastrar cliente" in tr.value().decode()


# -- views on a screen ----------------------------------------------------------


def screen_session(height: int | None, width: int = 80, **kw: Any) -> tuple[Session, Renderer]:
    renderer = Renderer(Messages("pt"), width=width, height=height)
    s = session(renderer=renderer, **kw)
    return s, renderer


def test_a_view_that_fills_the_screen_holds_the_menu_behind_a_prompt() -> None:
    s, _ = screen_session(height=24)
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("4", CPF, "")
    bill = out[out.index("CONTA DE ENERGIA") :]
    assert bill.endswith("Opção (Enter mostra o menu): ")
    assert "Cadastrar cliente" not in bill
    assert bill.count("\n") <= 22  # the bill, and the prompt under it, in 24 lines
    out = s.type("")
    assert "1) Cadastrar cliente" in out and out.endswith("> ")
    out = s.type("3", CPF)  # a short view: the menu fits under it
    assert "não tem medidores" in out and "Cadastrar cliente" in out


def test_with_no_screen_the_menu_always_follows() -> None:
    s, _ = screen_session(height=None)
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("4", CPF, "")
    assert "CONTA DE ENERGIA" in out and out.endswith("0) Sair\n> ")


def test_a_resize_redraws_the_view_on_screen_at_the_new_size() -> None:
    s, renderer = screen_session(height=24)
    s.type("1", "1", CPF, "Ana", "", "", "")
    s.fake.raise_alarm(value=12.5, limit=10)
    out = s.type("6", CPF)
    assert "Mensagem" not in out  # 80 columns: the message goes under the rule
    menu = s.proto.menu
    assert menu is not None
    s.tr.clear()
    menu.resize(160, 40)
    out = s.tr.value().decode()
    assert "Mensagem" in out and max(len(line) for line in out.splitlines()) > 80
    assert out.endswith("> ")
    s.type("x")  # typed something: the view is no longer what is on screen
    s.tr.clear()
    menu.resize(80, 24)
    assert s.tr.value() == b""
    assert renderer.width == 80  # the next views are laid out for it all the same


class RecordingOutput:
    """An Output that keeps the order of what the menu asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def show(self, text: str) -> None:
        self.calls.append(("show", text))

    def prompt(self, text: str, *, secret: bool = False) -> None:
        self.calls.append(("prompt", text))

    def notify(self, text: str) -> None:
        self.calls.append(("notify", text))

    def busy(self, text: str | None) -> None:
        self.calls.append(("busy", text))

    def redraw(self, text: str) -> None:
        self.calls.append(("redraw", text))

    def quit(self) -> None:
        self.calls.append(("quit", None))


def test_the_menu_says_it_is_waiting_while_a_request_is_out() -> None:
    slow = SlowClient()
    out = RecordingOutput()
    msgs = Messages("pt")
    menu = Menu(out, msgs=msgs, renderer=Renderer(msgs), make_client=lambda token: slow, clock=Clock(), operator_token=OPERATOR)
    menu.start()
    menu.feed("1")
    menu.feed("3")
    out.calls.clear()
    menu.feed(CPF)
    assert out.calls == [("busy", "Consultando o servidor…")]
    slow.pending[0][1].callback({"id": CPF, "meters": []})
    kinds = [kind for kind, _ in out.calls]
    assert kinds[:3] == ["busy", "show", "busy"] and out.calls[2] == ("busy", None)
    assert kinds[-1] == "prompt"


def terminal_session(make_client: Any, renderer: Renderer | None = None) -> tuple[ServerProtocol, StringTransport, Clock]:
    msgs = Messages("pt")
    clock = Clock()

    def factory(out: Any) -> Menu:
        return Menu(
            out,
            msgs=msgs,
            renderer=renderer or Renderer(msgs),
            make_client=make_client,
            clock=clock,
            operator_token=OPERATOR,
        )

    proto = ServerProtocol(TerminalFrontend, factory, None, clock)
    tr = StringTransport()
    proto.makeConnection(tr)
    return proto, tr, clock


def test_terminal_spins_while_the_server_thinks_and_clears_the_line_for_the_answer() -> None:
    slow = SlowClient()
    proto, tr, clock = terminal_session(lambda token: slow)
    proto.dataReceived(b"1\r3\r" + CPF.encode() + b"\r")
    tr.clear()
    clock.advance(0.1)
    assert tr.value() == b""  # a quick answer would not have been preceded by a flash
    for _ in range(5):
        clock.advance(0.1)
    spun = tr.value().decode()
    assert spun.count("Consultando o servidor…") >= 3 and spun.startswith("\r\x1b[K")
    tr.clear()
    slow.pending[0][1].callback({"id": CPF, "meters": []})
    out = tr.value().decode()
    assert out.startswith("\r\x1b[KO cliente 529.982.247-25 não tem medidores.")  # the spinner's line erased first
    tr.clear()
    clock.advance(1)
    assert tr.value() == b"" and not clock.getDelayedCalls()  # and it stopped


def test_terminal_resize_redraws_the_view_from_the_top_of_the_screen() -> None:
    fake = FakeMeterd()
    stub, make = stub_client_factory(fake)
    renderer = Renderer(Messages("pt"), width=80, height=24)
    proto, tr, clock = terminal_session(make, renderer)
    proto.dataReceived(b"1\r1\r" + CPF.encode() + b"\rAna\r\r\r\r")
    stub.flush()
    fake.raise_alarm()
    proto.dataReceived(b"6\r" + CPF.encode() + b"\r")
    stub.flush()
    proto.dataReceived("João".encode())  # typing, not yet sent: the view is still what is on screen
    tr.clear()
    proto.terminalProtocol.terminalSize(160, 40)
    out = tr.value().decode()
    assert out.startswith("\x1b[H\x1b[2J")  # home, clear the screen (the scrollback stays)
    assert "Mensagem" in out and (renderer.width, renderer.height) == (160, 40)
    assert out.endswith("> João")  # the prompt and what was being typed, drawn again


# -- the operator's management: find, look, change, retire, replace, audit ----------------


def managed(s: Session, *names: str) -> None:
    """Customers registered through the menu (one meter for the first), then into the management submenu."""
    s.type("1")
    for i, name in enumerate(names):
        s.type("1", make_cpf(f"{400_000_000 + i:09d}") if i else CPF, name, "", "", "")
    s.type("2", CPF, "")
    s.type("10")


def test_the_operator_menu_and_the_management_submenu_fit_a_screen_and_lead_back() -> None:
    for lang, back in (("pt", "Cadastrar cliente"), ("en", "Register a customer")):
        s = session(lang=lang)
        out = s.type("1")
        menu = out[out.index("Operador" if lang == "pt" else "Operator") :]
        assert menu.count("\n") <= 14 and max(len(line) for line in menu.splitlines()) <= 80  # 24 lines leave room for a view
        out = s.type("10")
        sub = out[out.index("Gestão" if lang == "pt" else "Management") :]
        assert sub.count("\n") <= 10 and max(len(line) for line in sub.splitlines()) <= 80
        assert " m) " not in sub  # no search shown yet: nothing more to see
        out = s.type("0")
        assert back in out


def test_customers_are_searched_a_page_at_a_time() -> None:
    s, _ = screen_session(height=24)
    fake = s.fake
    for n in range(20):
        cid = make_cpf(f"{500_000_000 + n:09d}")
        fake.customers[cid] = {"id": cid, "name": f"Ana {n:02d}", "ligacao": "mono", "limite_kw": 10, "limite_kwh": 1000, "tz": "UTC"}
        fake.meters[cid] = []
    s.type("1", "10")
    out = s.type("1", "ana")
    assert "Clientes encontrados para “ana”" in out and "Ana 00" in out and "Ana 14" in out and "Ana 15" not in out
    assert "Há mais resultados: opção m." in out
    assert fake.calls("/buscaClientes") == [{"q": "ana", "limite": "15"}]  # what fits 24 lines
    assert max(len(line) for line in out.splitlines()) <= 80
    out = s.type("")
    assert " m) Mais resultados" in out
    out = s.type("m")
    assert "Ana 15" in out and "Ana 19" in out and "Ana 00" not in out and "opção m" not in out
    assert fake.calls("/buscaClientes")[-1] == {"q": "ana", "limite": "15", "cursor": "search-15"}
    out = s.type("", "m")
    assert "Opção inválida: 'm'" in out  # the last page: nothing more
    out = s.type("1", "xavier")
    assert "Nenhum cliente encontrado para “xavier”." in out


def test_the_operator_looks_changes_retires_and_replaces_and_reads_the_audit_log() -> None:
    s = session(renderer=Renderer(Messages("pt"), width=160))  # wide: each cell on one line
    managed(s, "Ana")
    out = s.type("2", CPF)
    assert "Ficha do cliente 529.982.247-25" in out and "em serviço" in out and "Nenhum alarme ativo." in out
    out = s.type("3", CPF, "Ana Luíza", "tri", "", "", "12,5")
    assert "Cliente 529.982.247-25 alterado: nome, ligação, limite mensal (kWh)." in out
    assert s.fake.calls("/alteraCliente") == [{"id": CPF, "name": "Ana Luíza", "ligacao": "tri", "limite_kwh": 12.5}]
    out = s.type("3", CPF, "", "", "", "", "")
    assert "Nada a alterar." in out and len(s.fake.calls("/alteraCliente")) == 1  # nothing sent
    out = s.type("5", CPF, "1", "", "", "")
    assert "(409): o medidor está em serviço: retire-o antes de substituí-lo" in out
    out = s.type("4", CPF, "1", "1234,567", "05/11/2026 14:30")
    assert "Medidor 1 do cliente 529.982.247-25 retirado na leitura final de 1.234,567 kWh" in out
    (retired,) = s.fake.calls("/retiraMedidor")
    assert (retired["valor"], retired["timestamp"]) == ("1234.567", datetime(2026, 11, 5, 14, 30).astimezone().timestamp())
    s.clock.advance(1_764_000_000)
    out = s.type("5", CPF, "1", "", "", "")
    assert "Medidor 2 do cliente 529.982.247-25 no lugar do 1 (modo registrador)" in out
    assert f"CHAVE DO MEDIDOR: {202:064x}" in out and "mostrada só esta vez" in out
    assert s.fake.calls("/substituiMedidor")[-1] == {"id": CPF, "id_medidor": 1, "valor": "0", "timestamp": 1_764_000_000}
    out = s.type("2", CPF)
    assert "retirado (05/11/2026 14:30); substituído pelo 2" in out and "substitui o 1" in out
    out = s.type("6", "")
    for line in ("medidor 2 no lugar do 1", "retirada do medidor 1: 1.234,567 kWh", "alteração: ligação de monofásica",
                 "para trifásica", "alteração: nome de Ana para Ana Luíza", "cadastro do medidor 1", "operator (127.0.0.1)"):
        assert line in out, line
    assert s.fake.calls("/getAuditoria") == [{"limite": "10"}]  # two lines an entry: half a page
    out = s.type("6", "123")
    assert "CPF tem 11 dígitos" in out


def test_the_management_screens_in_english() -> None:
    s = session(lang="en")
    s.type("1", "1", CPF, "Ana", "", "", "")
    s.type("2", CPF, "")
    s.type("10")
    out = s.type("4", CPF, "1", "12.5", "")
    assert "Meter 1 of customer 529.982.247-25 retired at its final reading of 12.500 kWh" in out
    out = s.type("6", CPF)
    assert "Audit log of customer 529.982.247-25" in out and "meter 1 retired: 12.500 kWh" in out
    out = s.type("3", CPF, "", "", "Mars/Olympus", "", "")
    assert "Customer 529.982.247-25 changed: time zone." in out  # the fake takes any zone; meterd refuses it
def test_the_export_item_writes_a_file_where_the_menu_says(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("e", CPF, "", "", "", "", "")  # readings of this month, every meter, the server's file name
    written = tmp_path / f"leituras-Zé-{CPF}.csv"
    assert f"Gravado em {written}: 2 linhas" in out
    assert written.read_text(encoding="utf-8").splitlines()[1:] == s.fake.csv_rows
    [asked] = s.fake.calls("/getLeituras")
    assert asked == {"id": CPF, "kind": "M", "periodo": "0"}
    out = s.type("E", CPF, "h", "a", "1", "2", str(tmp_path / "ano.csv"))
    assert f"Gravado em {tmp_path / 'ano.csv'}" in out
    assert s.fake.calls("/getConsumoHist")[-1] == {"id": CPF, "kind": "Y", "periodo": "1", "id_medidor": "2"}
    s.fake.down = True
    out = s.type("e", CPF, "", "", "", "", "")
    assert "503" in out and sorted(p.name for p in tmp_path.iterdir()) == ["ano.csv", f"leituras-Zé-{CPF}.csv"]


def test_the_operator_menu_with_its_export_item_fits_80_by_24() -> None:
    for lang in ("pt", "en"):
        text = Messages(lang)("menu.operator")
        assert "e) " in text and len(text.splitlines()) <= 14 and max(len(line) for line in text.splitlines()) <= 80, lang


# -- alarm webhooks (operator) ------------------------------------------------------


def test_operator_registers_lists_and_removes_webhooks_in_their_submenu() -> None:
    s = session()
    s.type("1", "1", CPF, "Ana", "", "", "")
    out = s.type("w")
    assert "Webhooks de alarme — escolha uma opção" in out and "0) Voltar ao menu do operador" in out
    out = s.type("1")
    assert "Nenhum webhook cadastrado." in out
    out = s.type("2", "ftp://alarmes")
    assert "Digite uma URL que comece com http:// ou https://" in out and out.endswith("(http:// ou https://): ")
    out = s.type("https://alarmes.example.com/meterd", "")
    assert "Webhook 1 cadastrado: os eventos de alarme de todos os clientes serão enviados para https://alarmes.example.com/meterd." in out
    assert f"SEGREDO DO WEBHOOK: whsec_{1:064x}" in out and "mostrado só esta vez" in out
    out = s.type("2", "http://10.0.0.5/ana", "529.982.247-25")
    assert "de 529.982.247-25 serão enviados" in out
    assert s.fake.calls("/cadWebhook") == [{"url": "https://alarmes.example.com/meterd"}, {"url": "http://10.0.0.5/ana", "id": CPF}]
    s.fake.webhooks[2].update(failures=3, last_error="HTTP 500", last_failure="2026-11-05T17:05:00-03:00", backlog=1234)
    out = s.type("1")
    assert "Webhooks de alarme" in out and "https://alarmes.example.com/meterd" in out and "todos" in out
    assert "falhando: HTTP 500 (3" in out and "1.234" in out and "05/11/2026 17:05" in out
    assert f"whsec_{1:064x}" not in out  # the secret is never shown again
    out = s.type("3", "7")
    assert "(404): não há webhook com este número" in out
    out = s.type("3", "2")
    assert "Webhook 2 removido: nada mais será enviado para http://10.0.0.5/ana." in out
    out = s.type("0")
    assert "1) Cadastrar cliente" in out


def test_the_webhooks_view_fits_80_columns_and_the_menus_fit_24_lines() -> None:
    s, renderer = screen_session(height=24)
    for n in range(1, 4):
        s.fake.webhooks[n] = {
            "webhook_id": n, "url": f"https://alarmes.distribuidora-exemplo.com.br/integracoes/meterd/{n}?token=abc", "id": CPF if n == 2 else None,
            "created": "2026-11-05T17:00:00-03:00", "cursor": 123456, "backlog": 100000, "last_success": "2026-11-05T17:01:00-03:00",
            "last_failure": "2026-11-05T17:02:00-03:00", "last_error": "connection failed: Connection was refused by other side", "failures": 17,
            "delivered_by": "meterd",
        }
    out = s.type("1", "w", "1")
    assert "Webhooks de alarme" in out and max(len(line) for line in out.splitlines()) <= 80
    url_column = "".join(line.split("|")[2].strip() for line in out.splitlines() if line.startswith("|"))
    assert "https://alarmes.distribuidora-exemplo.com.br/integracoes/meterd/3?token=abc" in url_column  # wrapped, not cut
    for lang in ("pt", "en"):
        m = Messages(lang)
        for key in ("menu.operator", "menu.webhooks"):
            assert m(key).count("\n") + 3 <= 24 and max(len(line) for line in m(key).splitlines()) <= 80
