"""The bill as a document: every field a group-B bill carries, as JSON.

Pure module (no Twisted, no I/O). One builder serves both kinds of bill
``/getFatura`` answers:

* a **preview** (``"status": "previa"``): a month not issued yet, the open one
  or a closed one the billing run has not reached, computed on each request
  from the readings as they are;
* an **issued** bill (``"status": "emitida"``): written once by the billing
  run (:mod:`meterd.billing_run`) with its number, dates, readings, history,
  adjustments and payment codes, stored as bytes and served as stored.

The fields and the rules that require them (ANEEL REN 1000/2021 art. 327,
PRODIST Módulo 11) are listed in ``docs/design.md``; their names are the
API's (Portuguese, as the rest of ``/getFatura``) and stable: the console and
the portal render them. Money is a string with 2 decimals, kWh a number with
at most 3, instants ISO 8601 with the customer's offset, dates ``AAAA-MM-DD``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from meterd import arrecadacao, periods, pix
from meterd.billing import Adjustment, Bill, money
from meterd.tariff import Empresa

__all__ = [
    "CLASSE",
    "EdgeValue",
    "HistoryMonth",
    "MeterCycle",
    "Payment",
    "average_kwh",
    "cycle_days",
    "fill_parts",
    "issued_template",
    "split_template",
    "payment_codes",
    "preview",
]

#: The statuses of a bill. A preview is never stored; an issued bill never changes.
PREVIA = "previa"
EMITIDA = "emitida"
#: Whether the month is still running in the customer's zone.
ABERTO = "aberto"
FECHADO = "fechado"
#: DESIGN §6 bills the group-B residential class (REN 1000 art. 327 II: the
#: unit's classification is printed on every bill).
CLASSE = "B1 - Residencial"
#: meterd's registers arrive in kWh already scaled: no meter has a multiplying
#: constant (a CT-connected meter would, and the field is there for it).
CONSTANTE = 1
_MILLI = Decimal("0.001")
# What an issued bill's template holds where its number and payment codes go (see split_template).
_NUMERO, _PIX, _BARRAS, _LINHA = _MARKS = tuple(f"\x00{name}\x00" for name in ("numero", "pix", "codigo_barras", "linha_digitavel"))


@dataclass(frozen=True)
class EdgeValue:
    """A meter's register at one edge of the cycle: Wh, and whether it was estimated."""

    wh: int
    estimado: bool


@dataclass(frozen=True)
class MeterCycle:
    """One meter's readings of a cycle: the register at its start and at its end.

    For a register meter ``anterior``/``atual`` are the register interpolated
    at the cycle's edges (DESIGN §5); for an interval meter, the energy it had
    counted by then (the sum of all its readings before the edge).
    """

    meter_id: int
    mode: str
    anterior: EdgeValue
    atual: EdgeValue

    @property
    def consumo_wh(self) -> int:
        return (self.atual.wh - self.anterior.wh) * CONSTANTE

    @property
    def estimado(self) -> bool:
        return self.anterior.estimado or self.atual.estimado


@dataclass(frozen=True)
class HistoryMonth:
    """One month of the consumption history: ``consumo_wh`` None when it was never billed."""

    referencia: str
    consumo_wh: int | None
    dias: int | None
    estimado: bool


@dataclass(frozen=True)
class Payment:
    """The payment codes of an issued bill (its total is positive)."""

    pix: str
    codigo_barras: str

    @property
    def linha_digitavel(self) -> str:
        return arrecadacao.linha_digitavel(self.codigo_barras)


def cycle_days(inicio_ms: int, fim_ms: int, tz: ZoneInfo) -> int:
    """Days in the cycle: calendar days in the customer's zone (a DST day counts as one)."""
    return (periods.local_date(fim_ms, tz) - periods.local_date(inicio_ms, tz)).days


def average_kwh(consumo_wh: int, dias: int) -> float:
    """Average daily consumption, kWh to 3 decimals (half up); 0 for an empty cycle."""
    if dias <= 0:
        return 0.0
    return float((Decimal(consumo_wh) / 1000 / dias).quantize(_MILLI, rounding=ROUND_HALF_UP))


def payment_codes(empresa: Empresa, numero: int, total: Decimal, vencimento: date) -> Payment | None:
    """The Pix copia-e-cola and the arrecadação barcode; None when nothing is to be paid.

    A bill whose adjustments leave it at zero or below is a credit: no code
    can carry such an amount, and the next bill carries the credit.
    """
    if total <= 0:
        return None
    brcode = pix.brcode(key=empresa.chave_pix, name=empresa.nome, city=empresa.cidade, amount=total, txid=pix.txid_for_bill(numero))
    barcode = arrecadacao.build_barcode(total, empresa.codigo_febraban, arrecadacao.bill_free_field(numero, vencimento))
    return Payment(brcode, barcode)


def _empresa(empresa: Empresa) -> dict[str, Any]:
    return {"nome": empresa.nome, "cnpj": empresa.cnpj, "endereco": empresa.endereco}


def _customer(cid: str, name: str, tz_name: str, bill: Bill, inicio_ms: int, fim_ms: int) -> tuple[dict[str, Any], int]:
    """Who, where and when: the customer, the unit's class and the cycle; and the cycle's days."""
    inicio, fim, dias = _cycle(inicio_ms, fim_ms, tz_name)
    return {
        "id": cid,
        "name": name,
        "ligacao": bill.ligacao,
        "classe": CLASSE,
        "tz": tz_name,
        "inicio": inicio,
        "fim": fim,
        "dias": dias,
    }, dias


@functools.lru_cache(maxsize=256)
def _cycle(inicio_ms: int, fim_ms: int, tz_name: str) -> tuple[str, str, int]:
    """A cycle's edges as ISO strings and its days; the same for every customer of a zone and month, so kept."""
    tz = ZoneInfo(tz_name)
    return periods.iso(inicio_ms, tz), periods.iso(fim_ms, tz), cycle_days(inicio_ms, fim_ms, tz)


def _charges(bill: Bill, dias: int) -> dict[str, Any]:
    """The month's quantities and money: consumption, minimum, flag, lines and taxes."""
    priced = bill.to_json()
    consumo_wh = int(bill.consumo_kwh.scaleb(3))
    return {
        "consumo_kwh": priced["consumo_kwh"],
        "media_diaria_kwh": average_kwh(consumo_wh, dias),
        "faturado_kwh": priced["faturado_kwh"],
        "minimo": bill.minimo_json(),
        "bandeira": priced["bandeira"],
        "itens": priced["itens"],
        "tributos": priced["tributos"],
    }


def preview(
    *,
    cid: str,
    name: str,
    tz_name: str,
    bill: Bill,
    inicio_ms: int,
    fim_ms: int,
    aberto: bool,
    medidores: Sequence[tuple[int, int, bool]],
    empresa: Empresa | None,
) -> dict[str, Any]:
    """A month not issued: what it would be billed now. ``medidores``: (meter id, Wh, estimated)."""
    head, dias = _customer(cid, name, tz_name, bill, inicio_ms, fim_ms)
    return {
        "status": PREVIA,
        "mes": ABERTO if aberto else FECHADO,
        "referencia": bill.referencia,
        **({"empresa": _empresa(empresa)} if empresa is not None else {}),
        **head,
        "medidores": [{"id_medidor": m, "consumo_kwh": wh / 1000, "estimado": est} for m, wh, est in medidores],
        **_charges(bill, dias),
        "total_mes": money(bill.total),
        "total": money(bill.total),
        "estimado": bill.estimado,
    }


def issued_template(
    *,
    cid: str,
    name: str,
    tz_name: str,
    bill: Bill,
    inicio_ms: int,
    fim_ms: int,
    emissao: date,
    vencimento: date,
    meters: Sequence[MeterCycle],
    ajustes: Sequence[Adjustment],
    credito: tuple[int, Decimal] | None,
    historico: Sequence[HistoryMonth],
    empresa: Empresa,
) -> bytes:
    """The issued bill's document, encoded, but for its number and payment codes (:func:`split_template` and :func:`fill_parts` write them in).

    Everything here is known before the store hands out the bill's number, so
    it is encoded on the billing run's reader thread; the writer, which holds
    the store's write lock, only fills in what the number decides.
    ``credito``: (number, negative total) of the previous bill, if it was a credit.
    """
    head, dias = _customer(cid, name, tz_name, bill, inicio_ms, fim_ms)
    inicio, fim = head["inicio"], head["fim"]
    return orjson.dumps({
        "status": EMITIDA,
        "mes": FECHADO,
        "numero": _NUMERO,
        "referencia": bill.referencia,
        "emissao": emissao.isoformat(),
        "vencimento": vencimento.isoformat(),
        "empresa": _empresa(empresa),
        **head,
        "leituras": [
            {
                "id_medidor": m.meter_id,
                "modo": m.mode,
                "data_anterior": inicio,
                "leitura_anterior": m.anterior.wh / 1000,
                "estimada_anterior": m.anterior.estimado,
                "data_atual": fim,
                "leitura_atual": m.atual.wh / 1000,
                "estimada_atual": m.atual.estimado,
                "constante": CONSTANTE,
                "consumo_kwh": m.consumo_wh / 1000,
            }
            for m in meters
        ],
        "medidores": [{"id_medidor": m.meter_id, "consumo_kwh": m.consumo_wh / 1000, "estimado": m.estimado} for m in meters],
        **_charges(bill, dias),
        "total_mes": money(bill.total),
        "ajustes": [a.to_json() for a in ajustes],
        "credito_anterior": None if credito is None else {"numero": credito[0], "valor": money(credito[1])},
        "total": money(amount_due(bill, ajustes, credito)),
        "estimado": bill.estimado,
        "historico": [
            {
                "referencia": h.referencia,
                "consumo_kwh": None if h.consumo_wh is None else h.consumo_wh / 1000,
                "dias": h.dias,
                "media_diaria_kwh": None if h.consumo_wh is None or h.dias is None else average_kwh(h.consumo_wh, h.dias),
                "estimado": h.estimado,
            }
            for h in historico
        ],
        "pix": _PIX,
        "codigo_barras": _BARRAS,
        "linha_digitavel": _LINHA,
    })


def split_template(template: bytes) -> tuple[bytes, ...]:
    """A template cut at its placeholders, in the order :func:`fill_parts` joins them.

    Each placeholder is a JSON string holding NUL characters, which no text on
    a bill can hold (names and the company's fields are printable text); each
    must be found exactly once.
    """
    parts = []
    rest = template
    for marker in _MARKS:
        before, found, rest = rest.partition(orjson.dumps(marker))
        if not found or orjson.dumps(marker) in rest:
            raise ValueError(f"the bill's template must hold the placeholder {marker!r} once")
        parts.append(before)
    return (*parts, rest)


def fill_parts(parts: tuple[bytes, ...], numero: int, payment: Payment | None) -> bytes:
    """Join a split template with the number and the payment codes: a few copies, nothing parsed."""
    codes = (None, None, None) if payment is None else (payment.pix, payment.codigo_barras, payment.linha_digitavel)
    values = [orjson.dumps(v) for v in (numero, *codes)]
    return b"".join(part for pair in zip(parts, [*values, b""]) for part in pair)


def amount_due(bill: Bill, ajustes: Sequence[Adjustment], credito: tuple[int, Decimal] | None) -> Decimal:
    """The month's own total, plus its adjustments, plus the previous bill's credit (negative)."""
    return bill.total + sum((a.valor for a in ajustes), Decimal("0.00")) + (credito[1] if credito is not None else 0)
