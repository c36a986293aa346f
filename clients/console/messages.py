"""The console's message catalog: every string a person reads, in pt and en.

Keeping all texts here (and nowhere else in the console) makes a translation a
one-file job and lets a test check that both languages have the same keys and
the same ``{placeholders}``.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["CATALOG", "LANGS", "Messages"]

LANGS: Final = ("pt", "en")

CATALOG: Final[dict[str, dict[str, str]]] = {
    "pt": {
        # menus
        "app.title": "meterd — console",
        "menu.mode": "Escolha o modo:\n  1) Operador\n  2) Cliente\n  0) Sair",
        "menu.operator": (
            "Operador — escolha uma opção:\n"
            "  1) Cadastrar cliente\n"
            "  2) Cadastrar medidor\n"
            "  3) Listar medidores de um cliente\n"
            "  9) Trocar de modo\n"
            "  0) Sair"
        ),
        "menu.customer": (
            "Cliente {id} — escolha uma opção:\n"
            "  1) Fatura\n"
            "  2) Histórico de consumo\n"
            "  3) Alarmes\n"
            "  4) Reconhecer um alarme\n"
            "  9) Trocar de modo\n"
            "  0) Sair"
        ),
        "menu.invalid": "Opção inválida: {choice!r}. Digite um dos números do menu.",
        "menu.bye": "Até logo.",
        "menu.cancelled": "Cancelado.",
        "menu.cancel_hint": "(linha vazia cancela)",
        "prompt.choice": "> ",
        # fields
        "field.customer_id": "CPF ou CNPJ do cliente: ",
        "field.name": "Nome: ",
        "field.ligacao": "Ligação (mono/bi/tri) [mono]: ",
        "field.limite_kw": "Limite de demanda em kW [padrão do servidor]: ",
        "field.limite_kwh": "Limite mensal em kWh [padrão do servidor]: ",
        "field.meter_mode": "Modo do medidor (register/interval) [register]: ",
        "field.token": "Token de acesso: ",
        "field.periodo_bill": "Quantos meses atrás (0 = este mês) [0]: ",
        "field.kind": "Agrupar por D (dia), M (mês) ou Y (ano) [D]: ",
        "field.periodo_hist": "Quantos períodos atrás (0 = o atual) [0]: ",
        "field.meter": "Medidor (vazio = todos): ",
        "field.alarm_id": "Número do alarme: ",
        # validation
        "invalid.required": "Campo obrigatório.",
        "invalid.integer": "Digite um número inteiro, não {value!r}.",
        "invalid.nonnegative": "O número não pode ser negativo.",
        "invalid.positive_int": "Digite um número inteiro maior que zero, não {value!r}.",
        "invalid.number": "Digite um número positivo (ex.: 10 ou 10,5), não {value!r}.",
        "invalid.choice": "Escolha uma destas opções: {choices}.",
        "invalid.taxid.type": "CPF/CNPJ inválido.",
        "invalid.taxid.characters": "CPF/CNPJ só pode ter dígitos e os separadores . - /",
        "invalid.taxid.length": "CPF tem 11 dígitos e CNPJ tem 14; foram digitados {n}.",
        "invalid.taxid.repeated": "CPF/CNPJ com todos os dígitos iguais não é válido.",
        "invalid.taxid.check_digits": "Os dígitos verificadores do CPF/CNPJ não conferem.",
        "invalid.no_token": "Sem token do operador: use --token, METERD_TOKEN ou --data-dir.",
        # results
        "result.customer_created": "Cliente {id} ({name}) cadastrado: ligação {ligacao}, limites {limite_kw} kW e {limite_kwh} kWh/mês, fuso {tz}.",
        "result.customer_token": "TOKEN DO CLIENTE: {token}",
        "result.token_once": "Guarde este token agora: ele é mostrado só esta vez e dá acesso à conta do cliente.",
        "result.meter_created": "Medidor {id_medidor} do cliente {id} cadastrado (modo {mode}).",
        "result.meter_key": "CHAVE DO MEDIDOR: {key}",
        "result.key_once": "Guarde esta chave agora: ela é mostrada só esta vez e assina as leituras do medidor.",
        "result.acked": "Alarme {alarm_id} reconhecido.",
        "result.working": "Consultando o servidor…",
        # errors
        "error.api": "Erro do servidor ({status}, {code}): {message}",
        "error.unreachable": "Servidor indisponível: {message}",
        "error.not_implemented": "Este servidor ainda não oferece esta função ({message}).",
        "error.unexpected": "Erro inesperado: {message}",
        "error.bad_server": "Endereço de servidor inválido: {server!r} (use http://HOST:PORTA).",
        # polling
        "poll.lost": "Servidor indisponível; os alarmes serão verificados de novo quando ele voltar.",
        "poll.back": "Servidor de volta; verificação de alarmes retomada.",
        "poll.failed": "Não foi possível verificar os alarmes: {error}",
        "poll.active": "Atenção: {n} alarme(s) ativo(s). Use a opção 3 para ver.",
        "banner.raised": "ALARME #{alarm_id} DISPARADO — {rule}{meter}: {value} (limite {limit}) em {at}",
        "banner.cleared": "ALARME #{alarm_id} NORMALIZADO — {rule}{meter} em {at}",
        "banner.meter": ", medidor {id_medidor}",
        # rendering: bill
        "bill.title": "CONTA DE ENERGIA ELÉTRICA",
        "bill.customer": "Cliente",
        "bill.reference": "Referência",
        "bill.status.aberta": "aberta (mês em curso)",
        "bill.status.fechada": "fechada",
        "bill.period": "Período",
        "bill.ligacao": "Ligação",
        "bill.flag": "Bandeira tarifária",
        "bill.measured": "Consumo medido",
        "bill.billed": "Consumo faturado",
        "bill.minimum": "{kwh} (mínimo da ligação {ligacao})",
        "bill.meters": "Medidores",
        "col.description": "Descrição",
        "col.quantity": "Quant. (kWh)",
        "col.rate": "Tarifa (R$/kWh)",
        "col.amount": "Valor (R$)",
        "bill.subtotal": "Subtotal sem tributos",
        "bill.tax": "{name} ({rate})",
        "bill.taxes": "Tributos",
        "bill.total": "TOTAL A PAGAR",
        "bill.estimated": "* Parte do consumo deste mês foi estimada (falta de leituras).",
        "ligacao.mono": "monofásica",
        "ligacao.bi": "bifásica",
        "ligacao.tri": "trifásica",
        "flag.verde": "verde",
        "flag.amarela": "amarela",
        "flag.vermelha1": "vermelha patamar 1",
        "flag.vermelha2": "vermelha patamar 2",
        # rendering: history
        "hist.title.D": "Consumo do dia {label}",
        "hist.title.M": "Consumo de {label}",
        "hist.title.Y": "Consumo do ano {label}",
        "hist.meter": "Medidor {id_medidor}",
        "hist.all_meters": "Todos os medidores",
        "hist.total": "Total",
        "hist.col.meter": "Medidor",
        "hist.col.kwh": "kWh",
        "hist.chart": "Consumo por {unit} (kWh)",
        "hist.unit.D": "hora",
        "hist.unit.M": "dia",
        "hist.unit.Y": "mês",
        "hist.estimated": "* valores estimados (intervalo sem leituras)",
        "hist.empty": "Sem dados neste período.",
        "hist.tz": "Fuso horário: {tz}",
        # rendering: alarms
        "alarms.none": "Nenhum alarme ativo.",
        "alarms.active": "Alarmes ativos",
        "alarms.events": "Eventos recentes",
        "alarms.col.id": "Nº",
        "alarms.col.rule": "Regra",
        "alarms.col.meter": "Medidor",
        "alarms.col.value": "Valor",
        "alarms.col.limit": "Limite",
        "alarms.col.raised": "Disparado em",
        "alarms.col.acked": "Reconhecido em",
        "alarms.col.event": "Evento",
        "alarms.col.type": "Tipo",
        "alarms.col.at": "Quando",
        "alarms.all": "todos",
        "alarms.no": "não",
        "event.raised": "disparado",
        "event.cleared": "normalizado",
        "event.acked": "reconhecido",
        "rule.demand": "Demanda",
        "rule.monthly": "Consumo mensal",
        "rule.anomaly": "Consumo anormal",
        "rule.silent": "Medidor sem comunicação",
        # rendering: meters
        "meters.title": "Medidores do cliente {id}",
        "meters.none": "O cliente {id} não tem medidores.",
        "meters.col.meter": "Medidor",
        "meters.col.mode": "Modo",
        "meters.col.last_seen": "Última leitura",
        "meters.col.last_kwh": "Registro (kWh)",
        "never": "nunca",
        # dates
        "date.day": "{d:02d}/{m:02d}/{y:04d}",
        "date.time": "{d:02d}/{m:02d}/{y:04d} {H:02d}:{M:02d}",
        "date.hour": "{H:02d}h",
        "date.daymonth": "{d:02d}/{m:02d}",
        "date.month": "{mon}/{y:04d}",
        "months": "jan fev mar abr mai jun jul ago set out nov dez",
        # number formatting
        "num.decimal": ",",
        "num.thousands": ".",
        # cli
        "cli.description": "Console do meterd: menus interativos ou subcomandos para scripts.",
        "cli.interrupted": "Interrompido.",
        "help.server": "endereço do servidor (padrão %(default)s)",
        "help.token": "token de acesso (ou a variável {env}; no modo operador, o operator.token do diretório de dados)",
        "help.data_dir": "diretório de dados do servidor, onde está o operator.token (padrão ./meterd-data)",
        "help.json": "imprime o JSON do servidor sem formatação humana",
        "help.lang": "idioma: pt (padrão) ou en",
        "help.poll": "intervalo em segundos da verificação de alarmes (padrão %(default)s)",
        "help.plain": "texto simples, sem cores nem molduras",
        "help.operator": "começa no modo operador",
        "help.customer": "começa no modo cliente com este CPF/CNPJ",
        "help.cmd.cliente": "cadastra um cliente (operador)",
        "help.cmd.medidor": "cadastra um medidor (operador)",
        "help.cmd.medidores": "lista os medidores de um cliente",
        "help.cmd.fatura": "mostra a fatura de um mês",
        "help.cmd.historico": "mostra o histórico de consumo",
        "help.cmd.alarmes": "mostra os alarmes",
        "help.cmd.ack": "reconhece um alarme",
        "help.id": "CPF ou CNPJ do cliente",
        "help.name": "nome do cliente",
        "help.ligacao": "tipo de ligação (padrão mono)",
        "help.limite_kw": "limite de demanda em kW",
        "help.limite_kwh": "limite de consumo mensal em kWh",
        "help.tz": "fuso horário do cliente, ex.: America/Sao_Paulo",
        "help.mode": "modo do medidor (padrão register)",
        "help.periodo_bill": "meses atrás (0 = mês atual)",
        "help.kind": "D (dia, por hora), M (mês, por dia) ou Y (ano, por mês)",
        "help.periodo_hist": "períodos atrás (0 = o atual)",
        "help.medidor": "só este medidor",
        "help.cursor": "só eventos depois deste cursor",
        "help.alarm": "número do alarme",
    },
    "en": {
        "app.title": "meterd — console",
        "menu.mode": "Choose a mode:\n  1) Operator\n  2) Customer\n  0) Quit",
        "menu.operator": (
            "Operator — choose an option:\n"
            "  1) Register a customer\n"
            "  2) Register a meter\n"
            "  3) List a customer's meters\n"
            "  9) Switch mode\n"
            "  0) Quit"
        ),
        "menu.customer": (
            "Customer {id} — choose an option:\n"
            "  1) Bill\n"
            "  2) Consumption history\n"
            "  3) Alarms\n"
            "  4) Acknowledge an alarm\n"
            "  9) Switch mode\n"
            "  0) Quit"
        ),
        "menu.invalid": "Invalid option: {choice!r}. Type one of the menu's numbers.",
        "menu.bye": "Goodbye.",
        "menu.cancelled": "Cancelled.",
        "menu.cancel_hint": "(an empty line cancels)",
        "prompt.choice": "> ",
        "field.customer_id": "Customer CPF or CNPJ: ",
        "field.name": "Name: ",
        "field.ligacao": "Connection (mono/bi/tri) [mono]: ",
        "field.limite_kw": "Demand limit in kW [server default]: ",
        "field.limite_kwh": "Monthly limit in kWh [server default]: ",
        "field.meter_mode": "Meter mode (register/interval) [register]: ",
        "field.token": "Access token: ",
        "field.periodo_bill": "How many months back (0 = this month) [0]: ",
        "field.kind": "Group by D (day), M (month) or Y (year) [D]: ",
        "field.periodo_hist": "How many periods back (0 = the current one) [0]: ",
        "field.meter": "Meter (empty = all): ",
        "field.alarm_id": "Alarm number: ",
        "invalid.required": "This field is required.",
        "invalid.integer": "Type a whole number, not {value!r}.",
        "invalid.nonnegative": "The number cannot be negative.",
        "invalid.positive_int": "Type a whole number above zero, not {value!r}.",
        "invalid.number": "Type a positive number (e.g. 10 or 10.5), not {value!r}.",
        "invalid.choice": "Choose one of: {choices}.",
        "invalid.taxid.type": "Invalid CPF/CNPJ.",
        "invalid.taxid.characters": "A CPF/CNPJ may contain only digits and the separators . - /",
        "invalid.taxid.length": "A CPF has 11 digits and a CNPJ 14; you typed {n}.",
        "invalid.taxid.repeated": "A CPF/CNPJ with all digits equal is not valid.",
        "invalid.taxid.check_digits": "The CPF/CNPJ check digits do not match.",
        "invalid.no_token": "No operator token: use --token, METERD_TOKEN or --data-dir.",
        "result.customer_created": "Customer {id} ({name}) registered: {ligacao} connection, limits {limite_kw} kW and {limite_kwh} kWh/month, time zone {tz}.",
        "result.customer_token": "CUSTOMER TOKEN: {token}",
        "result.token_once": "Save this token now: it is shown only this once and opens the customer's account.",
        "result.meter_created": "Meter {id_medidor} of customer {id} registered (mode {mode}).",
        "result.meter_key": "METER KEY: {key}",
        "result.key_once": "Save this key now: it is shown only this once and signs the meter's readings.",
        "result.acked": "Alarm {alarm_id} acknowledged.",
        "result.working": "Asking the server…",
        "error.api": "Server error ({status}, {code}): {message}",
        "error.unreachable": "Server unreachable: {message}",
        "error.not_implemented": "This server does not offer this yet ({message}).",
        "error.unexpected": "Unexpected error: {message}",
        "error.bad_server": "Invalid server address: {server!r} (use http://HOST:PORT).",
        "poll.lost": "Server unreachable; alarms will be checked again when it is back.",
        "poll.back": "Server is back; alarm checks resumed.",
        "poll.failed": "Could not check alarms: {error}",
        "poll.active": "Note: {n} active alarm(s). Use option 3 to see them.",
        "banner.raised": "ALARM #{alarm_id} RAISED — {rule}{meter}: {value} (limit {limit}) at {at}",
        "banner.cleared": "ALARM #{alarm_id} CLEARED — {rule}{meter} at {at}",
        "banner.meter": ", meter {id_medidor}",
        "bill.title": "ELECTRICITY BILL",
        "bill.customer": "Customer",
        "bill.reference": "Month",
        "bill.status.aberta": "open (current month)",
        "bill.status.fechada": "closed",
        "bill.period": "Period",
        "bill.ligacao": "Connection",
        "bill.flag": "Tariff flag",
        "bill.measured": "Measured consumption",
        "bill.billed": "Billed consumption",
        "bill.minimum": "{kwh} (minimum for a {ligacao} connection)",
        "bill.meters": "Meters",
        "col.description": "Description",
        "col.quantity": "Qty (kWh)",
        "col.rate": "Rate (R$/kWh)",
        "col.amount": "Amount (R$)",
        "bill.subtotal": "Subtotal before taxes",
        "bill.tax": "{name} ({rate})",
        "bill.taxes": "Taxes",
        "bill.total": "TOTAL DUE",
        "bill.estimated": "* Part of this month's consumption was estimated (missing readings).",
        "ligacao.mono": "single-phase",
        "ligacao.bi": "two-phase",
        "ligacao.tri": "three-phase",
        "flag.verde": "green",
        "flag.amarela": "yellow",
        "flag.vermelha1": "red level 1",
        "flag.vermelha2": "red level 2",
        "hist.title.D": "Consumption on {label}",
        "hist.title.M": "Consumption in {label}",
        "hist.title.Y": "Consumption in {label}",
        "hist.meter": "Meter {id_medidor}",
        "hist.all_meters": "All meters",
        "hist.total": "Total",
        "hist.col.meter": "Meter",
        "hist.col.kwh": "kWh",
        "hist.chart": "Consumption per {unit} (kWh)",
        "hist.unit.D": "hour",
        "hist.unit.M": "day",
        "hist.unit.Y": "month",
        "hist.estimated": "* estimated values (span without readings)",
        "hist.empty": "No data in this period.",
        "hist.tz": "Time zone: {tz}",
        "alarms.none": "No active alarms.",
        "alarms.active": "Active alarms",
        "alarms.events": "Recent events",
        "alarms.col.id": "No.",
        "alarms.col.rule": "Rule",
        "alarms.col.meter": "Meter",
        "alarms.col.value": "Value",
        "alarms.col.limit": "Limit",
        "alarms.col.raised": "Raised at",
        "alarms.col.acked": "Acknowledged at",
        "alarms.col.event": "Event",
        "alarms.col.type": "Type",
        "alarms.col.at": "When",
        "alarms.all": "all",
        "alarms.no": "no",
        "event.raised": "raised",
        "event.cleared": "cleared",
        "event.acked": "acknowledged",
        "rule.demand": "Demand",
        "rule.monthly": "Monthly consumption",
        "rule.anomaly": "Unusual consumption",
        "rule.silent": "Silent meter",
        "meters.title": "Meters of customer {id}",
        "meters.none": "Customer {id} has no meters.",
        "meters.col.meter": "Meter",
        "meters.col.mode": "Mode",
        "meters.col.last_seen": "Last reading",
        "meters.col.last_kwh": "Register (kWh)",
        "never": "never",
        "date.day": "{y:04d}-{m:02d}-{d:02d}",
        "date.time": "{y:04d}-{m:02d}-{d:02d} {H:02d}:{M:02d}",
        "date.hour": "{H:02d}:00",
        "date.daymonth": "{mon} {d:02d}",
        "date.month": "{mon} {y:04d}",
        "months": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec",
        "num.decimal": ".",
        "num.thousands": ",",
        "cli.description": "meterd console: interactive menus, or subcommands for scripts.",
        "cli.interrupted": "Interrupted.",
        "help.server": "server address (default %(default)s)",
        "help.token": "access token (or the {env} variable; in operator mode, the data dir's operator.token)",
        "help.data_dir": "the server's data directory, holding operator.token (default ./meterd-data)",
        "help.json": "print the server's JSON instead of human output",
        "help.lang": "language: pt (default) or en",
        "help.poll": "seconds between alarm checks (default %(default)s)",
        "help.plain": "plain text, no colours or box lines",
        "help.operator": "start in operator mode",
        "help.customer": "start in customer mode with this CPF/CNPJ",
        "help.cmd.cliente": "register a customer (operator)",
        "help.cmd.medidor": "register a meter (operator)",
        "help.cmd.medidores": "list a customer's meters",
        "help.cmd.fatura": "show a month's bill",
        "help.cmd.historico": "show consumption history",
        "help.cmd.alarmes": "show alarms",
        "help.cmd.ack": "acknowledge an alarm",
        "help.id": "customer CPF or CNPJ",
        "help.name": "customer name",
        "help.ligacao": "connection type (default mono)",
        "help.limite_kw": "demand limit in kW",
        "help.limite_kwh": "monthly consumption limit in kWh",
        "help.tz": "customer time zone, e.g. America/Sao_Paulo",
        "help.mode": "meter mode (default register)",
        "help.periodo_bill": "months back (0 = current month)",
        "help.kind": "D (day, hourly), M (month, daily) or Y (year, monthly)",
        "help.periodo_hist": "periods back (0 = the current one)",
        "help.medidor": "only this meter",
        "help.cursor": "only events after this cursor",
        "help.alarm": "alarm number",
    },
}


class Messages:
    """Look up and format a message in one language.

    A missing key returns the key itself rather than raising: a console that
    shows ``menu.foo`` is better than one that dies; the catalog test keeps
    that from ever shipping.
    """

    def __init__(self, lang: str = "pt") -> None:
        if lang not in CATALOG:
            raise ValueError(f"unknown language {lang!r}; use one of {', '.join(LANGS)}")
        self.lang = lang
        self._table = CATALOG[lang]

    def __call__(self, key: str, /, **kw: Any) -> str:
        text = self._table.get(key)
        if text is None:
            return key
        return text.format(**kw) if kw else text

    def month_name(self, month: int) -> str:
        return self._table["months"].split()[month - 1]
