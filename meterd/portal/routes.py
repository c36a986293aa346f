"""The portal's URLs, written once: the pages link with these and the resource
tree that serves them routes by the same constants.

Every page is reachable by a plain link or form (GET for reading, POST for
changing), so the portal works without JavaScript. Query strings carry the
view (period, meter, language); the login session carries who is looking.

Pure module: standard library only.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "ALARMS",
    "ALARM_ACK",
    "ALARM_EVENTS",
    "BILL",
    "HISTORY",
    "HISTORY_CSV",
    "ICON",
    "LOGIN",
    "LOGIN_STAFF",
    "LOGOUT",
    "OVERVIEW",
    "PREFIX",
    "SCRIPT",
    "STAFF_CUSTOMER",
    "STAFF_FLEET",
    "STAFF_NEW_CUSTOMER",
    "STAFF_NEW_KEY",
    "STAFF_NEW_METER",
    "STAFF_NEW_TOKEN",
    "STAFF_SEARCH",
    "STATIC",
    "STYLESHEET",
    "href",
    "with_lang",
]

PREFIX: Final = "/portal"

LOGIN: Final = f"{PREFIX}/entrar"  # GET: the page; POST: a customer's CPF/CNPJ and token
LOGIN_STAFF: Final = f"{PREFIX}/entrar/operador"  # POST: the operator token
LOGOUT: Final = f"{PREFIX}/sair"  # POST

OVERVIEW: Final = f"{PREFIX}/"
HISTORY: Final = f"{PREFIX}/historico"  # ?kind=D|M|Y&periodo=N&medidor=M
HISTORY_CSV: Final = f"{PREFIX}/historico.csv"  # the same query
BILL: Final = f"{PREFIX}/fatura"  # ?periodo=N
ALARMS: Final = f"{PREFIX}/alarmes"
ALARM_ACK: Final = f"{PREFIX}/alarmes/reconhecer"  # POST alarm_id
ALARM_EVENTS: Final = f"{PREFIX}/alarmes/eventos"  # text/event-stream

STAFF_SEARCH: Final = f"{PREFIX}/operador/clientes"  # ?q=
STAFF_CUSTOMER: Final = f"{PREFIX}/operador/cliente"  # ?id=
STAFF_NEW_CUSTOMER: Final = f"{PREFIX}/operador/clientes/novo"  # GET form, POST register
STAFF_NEW_METER: Final = f"{PREFIX}/operador/medidores/novo"  # GET form, POST register
STAFF_NEW_TOKEN: Final = f"{PREFIX}/operador/clientes/novo-token"  # ?id= GET confirm, POST reissue
STAFF_NEW_KEY: Final = f"{PREFIX}/operador/medidores/nova-chave"  # ?id=&medidor= GET confirm, POST reissue
STAFF_FLEET: Final = f"{PREFIX}/operador/frota"

STATIC: Final = f"{PREFIX}/static"
STYLESHEET: Final = f"{STATIC}/portal.css"
SCRIPT: Final = f"{STATIC}/portal.js"
ICON: Final = f"{STATIC}/favicon.svg"


def href(path: str, **params: str | int | None) -> str:
    """``path`` with the given query parameters, those that are None left out."""
    query = urlencode([(k, str(v)) for k, v in params.items() if v is not None])
    return f"{path}?{query}" if query else path


def with_lang(url: str, lang: str) -> str:
    """The same page in another language: ``url`` with its ``lang`` parameter set."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "lang"]
    query.append(("lang", lang))
    return urlunsplit(("", "", parts.path, urlencode(query), ""))
