"""An in-memory fake of the meterd HTTP API for the console's tests (StubTreq).

It follows DESIGN §3 closely enough for a client: bearer auth (operator token
``op``, customer tokens issued by /cadCliente), the error body, per-customer
meter ids, and a scriptable alarm feed with event ids and a cursor. It holds
no tests of its own; the name only keeps it among the console's files.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from treq.testing import StubTreq
from twisted.web.resource import Resource
from twisted.web.server import Request

from clients.api import MeterdClient
from meterd import bill_document
from meterd.bill_document import EdgeValue, HistoryMonth, MeterCycle
from meterd.billing import Rates, adjustment, compute_bill
from meterd.tariff import default_tariff

OPERATOR = "op"
CPF = "52998224725"  # valid check digits (hand-checked)
CPF2 = "11144477735"

BILL = {
    "id": CPF,
    "name": "Ana",
    "referencia": "2026-11",
    "status": "previa",
    "mes": "aberto",
    "inicio": "2026-11-01T00:00:00-03:00",
    "fim": "2026-12-01T00:00:00-03:00",
    "consumo_kwh": 100.0,
    "faturado_kwh": 100.0,
    "ligacao": "mono",
    "bandeira": "amarela",
    "itens": [
        {"descricao": "Energia (TE)", "quantidade_kwh": 100.0, "tarifa": "0.30", "valor": "30.00"},
        {"descricao": "Uso do sistema (TUSD)", "quantidade_kwh": 100.0, "tarifa": "0.45", "valor": "45.00"},
        {"descricao": "Bandeira Amarela", "quantidade_kwh": 100.0, "tarifa": "0.01885", "valor": "1.89"},
    ],
    # 76.89 / (1 - 0.3078) = 111.0806...: icms 27.77, pis 1.14, cofins 5.28 (by hand)
    "tributos": {
        "icms": "27.77",
        "pis": "1.14",
        "cofins": "5.28",
        "valor": "34.19",
        "aliquotas": {"icms": "0.25", "pis": "0.0103", "cofins": "0.0475"},
    },
    "total": "1111.08",  # deliberately large to see the thousands separator
    "estimado": False,
    "medidores": [{"id_medidor": 1, "consumo_kwh": 100.0}],
}


def issued_bill(numero: int = 123, consumo_wh: int = 312_457, ajuste: tuple[int, int] | None = (200_000, 212_500)) -> dict[str, Any]:
    """An issued bill as meterd writes it (its own modules build it): November 2026, meter 1's end
    estimated, October adjusted from ``ajuste[0]`` to ``ajuste[1]`` Wh, twelve months of history."""
    from datetime import date
    from zoneinfo import ZoneInfo

    import orjson

    from meterd import periods

    tariff = default_tariff()
    empresa = tariff.empresa
    assert empresa is not None
    bill = compute_bill(tariff=tariff, ligacao="bi", year=2026, month=11, consumo_wh=consumo_wh, estimado=True)
    ajustes = [] if ajuste is None else [adjustment(Rates.of(tariff, "bi", 2026, 10), "2026-10", *ajuste)]
    history = [HistoryMonth(f"{2025 + (m > 0)}-{(m - 1) % 12 + 1:02d}", 150_000 + 1000 * m, 30, False) for m in range(-1, 11)]
    start, end = periods.month_range(2026, 11, ZoneInfo("America/Sao_Paulo"))
    template = bill_document.issued_template(
        cid=CPF, name="Ana Tétis", tz_name="America/Sao_Paulo", bill=bill, inicio_ms=start, fim_ms=end,
        emissao=date(2026, 12, 1), vencimento=date(2026, 12, 11),
        meters=[MeterCycle(1, "register", EdgeValue(1_000_000, False), EdgeValue(1_000_000 + consumo_wh, True))],
        ajustes=ajustes, credito=None, historico=[*history, HistoryMonth("2026-11", consumo_wh, 30, True)], empresa=empresa,
    )
    total = bill_document.amount_due(bill, ajustes, None)
    payment = bill_document.payment_codes(empresa, numero, total, date(2026, 12, 11))
    doc: dict[str, Any] = orjson.loads(bill_document.fill_parts(bill_document.split_template(template), numero, payment))
    return doc


def history_doc(kind: str, periodo: int, meter: int | None) -> dict[str, Any]:
    buckets = [
        {"start": "2026-11-05T00:00:00-03:00", "kwh": 1.0, "estimated": False},
        {"start": "2026-11-05T01:00:00-03:00", "kwh": 2.0, "estimated": False},
        {"start": "2026-11-05T02:00:00-03:00", "kwh": 4.0, "estimated": True},
    ]
    return {
        "id": CPF,
        "kind": kind,
        "periodo": periodo,
        "tz": "America/Sao_Paulo",
        "start": "2026-11-05T00:00:00-03:00",
        "end": "2026-11-06T00:00:00-03:00",
        "total_kwh": 7.0,
        "estimated": True,
        "buckets": buckets,
        "meters": [{"id_medidor": meter or 1, "total_kwh": 7.0}],
    }


class FakeMeterd(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.customers: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}  # token -> customer id
        self.meters: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self.bill: dict[str, Any] | None = BILL
        self.alarms_enabled = True
        self.down = False  # answer 503 to everything (for error paths)
        self.alarms: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.run: dict[str, Any] | None = None
        self.run_customers = 4
        self.result = b""  # /getFaturamentoResultado's body
        self.audit: list[dict[str, Any]] = []
        # What a CSV export answers: its rows after the header (``Accept: text/csv``)
        self.csv_rows = ["1,2026-11-05T00:00:00-03:00,1000.000,0.000,false", "1,2026-11-05T00:01:00-03:00,1000.010,0.010,false"]
        self.webhooks: dict[int, dict[str, Any]] = {}

    # -- alarm scripting ----------------------------------------------------

    def raise_alarm(self, rule: str = "demand", meter: int | None = 1, value: float = 12.5, limit: float = 10.0) -> int:
        aid = len(self.alarms) + 1
        self.alarms[aid] = {
            "alarm_id": aid,
            "rule": rule,
            "id_medidor": meter,
            "raised_at": "2026-11-05T17:03:00+00:00",
            "cleared_at": None,
            "acked_at": None,
            "value": value,
            "threshold": limit,
            "message": "Demanda acima do limite",
        }
        self._event(aid, "raised", "2026-11-05T17:03:00+00:00")
        return aid

    def clear_alarm(self, aid: int) -> None:
        self.alarms[aid]["cleared_at"] = "2026-11-05T17:20:00+00:00"
        self._event(aid, "cleared", "2026-11-05T17:20:00+00:00")

    def _event(self, aid: int, kind: str, at: str) -> None:
        self.events.append({"event_id": len(self.events) + 1, "alarm_id": aid, "type": kind, "at": at})

    # -- http ---------------------------------------------------------------

    def render(self, request: Request) -> bytes:
        request.setHeader("content-type", "application/json; charset=utf-8")
        uri = urlsplit(request.uri.decode())
        params: dict[str, Any] = {k: v[0] for k, v in parse_qs(uri.query).items()}
        body = request.content.read()
        if body:
            params.update(json.loads(body))
        method = request.method.decode()
        self.requests.append((method, uri.path, params))
        auth = request.getHeader("authorization") or ""
        token = auth[7:] if auth.startswith("Bearer ") else None
        try:
            status, doc = self.route(method, uri.path, params, token)
        except KeyError as e:
            status, doc = 400, _err("missing_field", f"falta o campo {e}")
        request.setResponseCode(status)
        if isinstance(doc, bytes):  # a run's bills, as the server streams them
            request.setHeader("content-type", "text/csv; charset=utf-8")
            return doc
        if status == 200 and uri.path in ("/getLeituras", "/getConsumoHist") and request.getHeader("accept") == "text/csv":
            name = f"{'leituras' if uri.path == '/getLeituras' else 'historico'}-Zé-{params['id']}.csv"
            request.setHeader("content-type", "text/csv; charset=utf-8")
            request.setHeader("content-disposition", f"attachment; filename*=UTF-8''{quote(name)}")
            request.setHeader("x-total-count", str(len(self.csv_rows)))
            return "".join(f"{line}\r\n" for line in ["id_medidor,timestamp,valor_kwh,consumo_kwh,estimated", *self.csv_rows]).encode()
        return json.dumps(doc).encode()

    def route(self, method: str, path: str, p: dict[str, Any], token: str | None) -> tuple[int, Any]:
        if self.down:
            return 503, _err("store_unavailable", "banco indisponível")
        if path == "/health":
            return 200, {"status": "ok", "db": "ok"}
        if token is None:
            return 401, _err("unauthorized", "credenciais ausentes")
        operator = token == OPERATOR
        if not operator and token not in self.tokens:
            return 401, _err("unauthorized", "token inválido")
        if path in ("/cadWebhook", "/getWebhooks", "/removeWebhook"):
            return self.webhook_route(path, p) if operator else (403, _err("forbidden", "só o operador"))
        cid = str(p.get("id", ""))
        if path in ("/faturamento", "/getFaturamento", "/getFaturamentoResultado"):
            return self.billing(path, p) if operator else (403, _err("forbidden", "só o operador"))
        if path in OPERATIONS and not operator:
            return 403, _err("forbidden", "só o operador")
        if path == "/buscaClientes":
            return 200, self._page("search", self._found(str(p["q"])), p)
        if path == "/getAuditoria":
            entries = [e for e in reversed(self.audit) if not cid or e["id"] == cid]
            return 200, {"id": cid or None, **self._page("audit", entries, p, "entries")}
        if path == "/cadCliente":
            if not operator:
                return 403, _err("forbidden", "só o operador")
            if cid in self.customers:
                return 409, _err("customer_exists", f"cliente {cid} já existe")
            tok = f"tok-{cid}"
            self.tokens[tok] = cid
            c = {
                "id": cid,
                "name": p["name"],
                "ligacao": p.get("ligacao", "mono"),
                "limite_kw": p.get("limite_kw", 10),
                "limite_kwh": p.get("limite_kwh", 1000),
                "tz": p.get("tz", "America/Sao_Paulo"),
            }
            self.customers[cid] = c
            self.meters[cid] = []
            self._log(cid, "customer_registered", new={k: v for k, v in c.items() if k != "id"})
            return 201, {**c, "token": tok}
        if not operator and self.tokens.get(token) != cid:
            return 403, _err("forbidden", "não é seu")
        if cid not in self.customers:
            return 404, _err("unknown_customer", f"cliente {cid} não existe")
        if path == "/cadMedidor":
            if not operator:
                return 403, _err("forbidden", "só o operador")
            n = len(self.meters[cid]) + 1
            mode = p.get("mode", "register")
            self.meters[cid].append({"id_medidor": n, "mode": mode, "last_seen": None, "last_kwh": None})
            self._log(cid, "meter_registered", meter=n, new={"mode": mode})
            return 201, {"id": cid, "id_medidor": n, "mode": mode, "key": f"{n:064x}"}
        if path in ("/novoToken", "/novaChave") and not operator:
            return 403, _err("forbidden", "só o operador")
        if path == "/novoToken":
            for old in [t for t, owner in self.tokens.items() if owner == cid]:
                del self.tokens[old]
            tok = f"tok2-{cid}"
            self.tokens[tok] = cid
            return 200, {"id": cid, "token": tok}
        if path == "/novaChave":
            n = int(p["id_medidor"])
            if not 1 <= n <= len(self.meters[cid]):
                return 404, _err("unknown_meter", f"o medidor {n} não existe")
            return 200, {"id": cid, "id_medidor": n, "key": f"{n + 100:064x}"}
        if path == "/getMedidores":
            return 200, {"id": cid, "meters": self.meters[cid]}
        if path == "/getCliente":
            meters = [
                {"silent": False, "last_reading_at": None, "retired_at": None, "replaces": None, "replaced_by": None, **m}
                for m in self.meters[cid]
            ]
            active = [a for a in self.alarms.values() if a["cleared_at"] is None]
            return 200, {**self.customers[cid], "created_at": "2026-11-01T09:00:00-03:00", "meters": meters, "active": active}
        if path == "/alteraCliente":
            changed = []
            for field in ("name", "ligacao", "tz", "limite_kw", "limite_kwh"):
                if p.get(field) is not None and p[field] != self.customers[cid][field]:
                    self._log(cid, "customer_updated", field=field, old=self.customers[cid][field], new=p[field])
                    self.customers[cid][field] = p[field]
                    changed.append(field)
            if not any(p.get(f) is not None for f in ("name", "ligacao", "tz", "limite_kw", "limite_kwh")):
                return 400, _err("nothing_to_change", "nada")
            return 200, {**self.customers[cid], "changed": changed}
        if path in ("/retiraMedidor", "/substituiMedidor"):
            n = int(p["id_medidor"])
            if not 1 <= n <= len(self.meters[cid]):
                return 404, _err("unknown_meter", f"o medidor {n} não existe")
            old = self.meters[cid][n - 1]
            at = "2026-11-05T14:30:00-03:00"
            if path == "/retiraMedidor":
                if old.get("retired_at"):
                    return 409, _err("already_retired", "já retirado")
                old.update(retired_at=at, last_kwh=float(p["valor"]))
                self._log(cid, "meter_retired", meter=n, new={"timestamp": at, "valor": float(p["valor"])})
                return 200, {"id": cid, "id_medidor": n, "retired_at": at, "timestamp": float(p["timestamp"]),
                             "valor": float(p["valor"]), "stored": True}
            if not old.get("retired_at"):
                return 409, _err("not_retired", "em serviço")
            new = len(self.meters[cid]) + 1
            mode = p.get("mode") or old["mode"]
            self.meters[cid].append({"id_medidor": new, "mode": mode, "last_seen": None, "last_kwh": float(p["valor"]), "replaces": n})
            old["replaced_by"] = new
            self._log(cid, "meter_replaced", meter=new, new={"replaces": n, "mode": mode, "timestamp": at, "valor": float(p["valor"])})
            return 201, {"id": cid, "id_medidor": new, "mode": mode, "key": f"{new + 200:064x}", "replaces": n,
                         "valor": float(p["valor"]), "installed_at": at}
        if path == "/getLeituras":
            return 200, {"id": cid, "leituras": []}  # the JSON form is not what the console asks for
        if path == "/getConsumoHist":
            meter = int(p["id_medidor"]) if p.get("id_medidor") else None
            return 200, history_doc(p["kind"], int(p.get("periodo", 0)), meter)
        if path == "/getFatura":
            if self.bill is None:
                return 501, _err("not_implemented", "/getFatura ainda não implementado")
            return 200, {**self.bill, "id": cid}
        if path == "/getAlarme":
            if not self.alarms_enabled:
                return 501, _err("not_implemented", "/getAlarme ainda não implementado")
            cursor = int(p["cursor"]) if p.get("cursor") not in (None, "") else None
            events = [e for e in self.events if cursor is None or e["event_id"] > cursor]
            active = [a for a in self.alarms.values() if a["cleared_at"] is None]
            return 200, {
                "id": cid,
                "alarme": bool(active),
                "active": active,
                "events": events,
                "cursor": self.events[-1]["event_id"] if self.events else 0,
            }
        if path == "/ackAlarme":
            aid = int(p["alarm_id"])
            if aid not in self.alarms:
                return 404, _err("unknown_alarm", f"alarme {aid} não existe")
            self.alarms[aid]["acked_at"] = "2026-11-05T17:10:00+00:00"
            self._event(aid, "acked", "2026-11-05T17:10:00+00:00")
            return 200, self.alarms[aid]
        return 404, _err("not_found", path)

    def billing(self, path: str, p: dict[str, Any]) -> tuple[int, Any]:
        """A billing run over ``run_customers`` customers that does one more each time it is looked at."""
        if path == "/faturamento":
            if self.run is not None and self.run["estado"] == "executando":
                return 409, _err("billing_run_active", f"billing run {self.run['execucao']} is running")
            number = 1 if self.run is None else self.run["execucao"] + 1
            self.run = {
                "execucao": number, "periodo": int(p.get("periodo", 1)), "referencia": "2026-11", "estado": "executando",
                "iniciada": "2026-12-01T08:00:00-03:00", "atualizada": "2026-12-01T08:00:00-03:00", "concluida": None,
                "clientes": self.run_customers, "processados": 0, "emitidas": 0, "ja_emitidas": 0, "ignoradas": 0,
                "ajustes": 0, "erros": 0, "valor_total": "0.00", "mensagem": None,
            }
            return 202, {"acao": "nova", **self.run}
        if self.run is None:
            return 404, _err("unknown_run", "no such billing run")
        if path == "/getFaturamento":
            run = self.run
            if run["estado"] == "executando":
                run["processados"] = run["emitidas"] = run["processados"] + 1
                run["valor_total"] = f"{100 * run['emitidas']}.00"
                if run["processados"] == run["clientes"]:
                    run["estado"], run["concluida"] = "concluida", "2026-12-01T08:01:00-03:00"
            return 200, dict(run)
        return 200, self.result
    def webhook_route(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/cadWebhook":
            if p.get("id") and p["id"] not in self.customers:
                return 404, _err("unknown_customer", f"cliente {p['id']} não existe")
            n = len(self.webhooks) + 1
            self.webhooks[n] = {
                "webhook_id": n, "url": p["url"], "id": p.get("id"), "created": "2026-11-05T17:00:00-03:00", "cursor": 41,
                "backlog": 0, "last_success": None, "last_failure": None, "last_error": None, "failures": 0, "delivered_by": "meterd",
            }
            return 201, {"webhook_id": n, "url": p["url"], "id": p.get("id"), "cursor": 41, "secret": f"whsec_{n:064x}"}
        if path == "/getWebhooks":
            return 200, {"webhooks": list(self.webhooks.values())}
        n = int(p["webhook_id"])
        if n not in self.webhooks:
            return 404, _err("unknown_webhook", f"não há webhook {n}")
        return 200, self.webhooks.pop(n)

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [p for (_, pth, p) in self.requests if pth == path]

    def _found(self, q: str) -> list[dict[str, Any]]:
        """A stand-in for meterd's rule: digits find by CPF prefix, words by a name word's start (no accents here)."""
        digits = "".join(c for c in q if c.isdigit())
        if digits and not any(c.isalpha() for c in q):
            hits = [c for c in self.customers.values() if c["id"].startswith(digits)]
        else:
            hits = [c for c in self.customers.values()
                    if all(any(w.startswith(word) for w in c["name"].lower().split()) for word in q.lower().split())]
        return [{**c, "meters": len(self.meters[c["id"]])} for c in sorted(hits, key=lambda c: c["name"])]

    def _page(self, kind: str, items: list[dict[str, Any]], p: dict[str, Any], key: str = "results") -> dict[str, Any]:
        """A page of ``items`` after a cursor that is just the offset in disguise (meterd's are keysets)."""
        start = int(str(p["cursor"]).removeprefix(f"{kind}-")) if p.get("cursor") else 0
        size = int(p.get("limite", 20))
        page = items[start : start + size]
        more = start + size < len(items)
        body = {key: page, "cursor": f"{kind}-{start + size}" if more else None}
        return {"q": p["q"], **body} if kind == "search" else body

    def _log(self, cid: str, action: str, *, meter: int | None = None, field: str | None = None, old: Any = None, new: Any = None) -> None:
        self.audit.append({
            "audit_id": len(self.audit) + 1, "at": "2026-11-05T14:30:00-03:00", "who": "operator", "address": "127.0.0.1",
            "action": action, "id": cid, "id_medidor": meter, "field": field, "old": old, "new": new,
        })


OPERATIONS = ("/buscaClientes", "/getCliente", "/alteraCliente", "/retiraMedidor", "/substituiMedidor", "/getAuditoria")


def _err(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def stub_client_factory(fake: FakeMeterd) -> tuple[StubTreq, Any]:
    stub = StubTreq(fake)

    def make(token: str | None) -> MeterdClient:
        return MeterdClient("http://meterd.test:8888", token, http=stub, timeout=None)

    return stub, make
