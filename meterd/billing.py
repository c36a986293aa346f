"""One month's bill for a Brazilian group-B (low-voltage) customer.

Pure module (standard library only): the caller measures the month's
consumption (all of the customer's meters, calendar month in the customer's
time zone) and says whether any of it was estimated; this module only does the
money, in ``Decimal`` from end to end, so the same inputs always give the same
cents.

The rules (DESIGN §6):

* ``faturado_kwh = max(consumo_kwh, disponibilidade[ligacao])``: the "custo de
  disponibilidade" minimum a connection pays even when it used less.
* Lines: TE and TUSD (``faturado × rate``) and the month's bandeira
  (``faturado × rate / 100``, rates being R$ per 100 kWh).  The bandeira line
  is kept when the flag is green and worth zero, as on a real bill, so the
  customer sees which flag applied.  Each line's ``tarifa`` is in R$/kWh (the
  bandeira rate divided by 100), so ``quantidade × tarifa = valor`` on every
  line before rounding.
* Each line is rounded to cents, half up (``ROUND_HALF_UP``, how Brazilian
  bills and the customer's calculator round; Python's default half-even would
  differ on exact half-cents).

Why taxes are computed on the gross ("por dentro"): in Brazil ICMS, PIS and
COFINS are part of their own base - the taxed amount is the price *including*
the taxes, so the gross is ``subtotal / (1 − (icms + pis + cofins))`` and each
tax is ``gross × rate``, not ``subtotal × rate`` (25 % ICMS on a R$ 75 subtotal
is R$ 25 of a R$ 100 bill, not R$ 18.75).  Each tax amount is rounded half up
to cents on its own, because each is a separate line that is reported to a
different authority; ``tributos.valor`` is the sum of those rounded amounts and
``total = subtotal + tributos.valor``.  So the total is exactly the sum of the
printed lines - nothing the customer can add up differs by a cent - at the
price of differing from the unrounded ``subtotal / (1 − taxes)`` by at most a
cent and a half (three half-cent roundings).

The gross is never materialised as a rounded number: each tax is rounded from
the exact fraction ``subtotal × rate / (1 − taxes)`` with integer arithmetic,
so no intermediate 28-digit rounding can tip a value that sits just below a
half cent over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from meterd.tariff import FLAG_LABELS, LIGACOES, Tariff

__all__ = ["LIGACOES", "Bill", "BillItem", "Taxes", "compute_bill"]

_CENT = Decimal("0.01")
_MILLI = Decimal("0.001")
# Enough digits that no product of a kWh figure and a rate is ever rounded:
# every multiplication below is exact, and only the explicit cent roundings
# lose information.
_PRECISION = 120


@dataclass(frozen=True)
class BillItem:
    """One priced line: ``valor = round_half_up(quantidade_kwh × tarifa)``."""

    descricao: str
    quantidade_kwh: Decimal
    tarifa: Decimal  # R$/kWh before taxes
    valor: Decimal  # R$, 2 decimals

    def to_json(self) -> dict[str, Any]:
        return {
            "descricao": self.descricao,
            "quantidade_kwh": float(self.quantidade_kwh),
            "tarifa": _plain(self.tarifa),
            "valor": _money(self.valor),
        }


@dataclass(frozen=True)
class Taxes:
    """Tax amounts in R$ (each rounded to cents) and their rounded sum."""

    icms: Decimal
    pis: Decimal
    cofins: Decimal
    valor: Decimal


@dataclass(frozen=True)
class Bill:
    """A computed bill; ``to_json`` gives the DESIGN §6 fields it knows.

    The caller adds the fields that need the store (id, name, status, inicio,
    fim, medidores).  ``aliquotas`` keeps the tax rates used, so a bill can be
    re-checked by hand after the tariff changes.
    """

    referencia: str
    consumo_kwh: Decimal
    faturado_kwh: Decimal
    ligacao: str
    bandeira: str
    itens: tuple[BillItem, ...]
    tributos: Taxes
    total: Decimal
    estimado: bool
    aliquotas: tuple[Decimal, Decimal, Decimal]  # icms, pis, cofins (fractions)

    def to_json(self) -> dict[str, Any]:
        icms, pis, cofins = self.aliquotas
        return {
            "referencia": self.referencia,
            "consumo_kwh": float(self.consumo_kwh),
            "faturado_kwh": float(self.faturado_kwh),
            "ligacao": self.ligacao,
            "bandeira": self.bandeira,
            "itens": [item.to_json() for item in self.itens],
            "tributos": {
                "icms": _money(self.tributos.icms),
                "pis": _money(self.tributos.pis),
                "cofins": _money(self.tributos.cofins),
                "valor": _money(self.tributos.valor),
                "aliquotas": {
                    "icms": _plain(icms),
                    "pis": _plain(pis),
                    "cofins": _plain(cofins),
                },
            },
            "total": _money(self.total),
            "estimado": self.estimado,
        }


def compute_bill(
    *,
    tariff: Tariff,
    ligacao: str,
    year: int,
    month: int,
    consumo_wh: int,
    estimado: bool,
) -> Bill:
    """Price one calendar month of ``consumo_wh`` (all meters, exact Wh).

    Watt-hours come in as an integer so the kWh figure is exact to three
    decimals; the caller sums its meters in Wh before calling.
    """
    if ligacao not in LIGACOES:
        raise ValueError(f"ligacao must be one of {', '.join(LIGACOES)}, got {ligacao!r}")
    if isinstance(consumo_wh, bool) or not isinstance(consumo_wh, int):
        raise TypeError(f"consumo_wh must be an int of Wh, got {consumo_wh!r}")
    if consumo_wh < 0:
        raise ValueError(f"consumo_wh must not be negative, got {consumo_wh}")
    bandeira = tariff.flag_for(year, month)  # also checks the month

    with localcontext() as ctx:
        ctx.prec = _PRECISION
        consumo = Decimal(consumo_wh).scaleb(-3)
        minimum = Decimal(tariff.disponibilidade[ligacao]).quantize(_MILLI)
        faturado = consumo if consumo >= minimum else minimum

        bandeira_rate = tariff.bandeiras[bandeira].scaleb(-2)  # R$/100 kWh -> R$/kWh
        itens = tuple(
            BillItem(
                descricao=descricao,
                quantidade_kwh=faturado,
                tarifa=tarifa,
                valor=(faturado * tarifa).quantize(_CENT, rounding=ROUND_HALF_UP),
            )
            for descricao, tarifa in (
                ("Energia (TE)", tariff.te),
                ("Uso do sistema (TUSD)", tariff.tusd),
                (f"Bandeira {FLAG_LABELS[bandeira]}", bandeira_rate),
            )
        )
        subtotal = sum((item.valor for item in itens), Decimal("0.00"))

        divisor = 1 - (tariff.icms + tariff.pis + tariff.cofins)
        icms = _tax(subtotal, tariff.icms, divisor)
        pis = _tax(subtotal, tariff.pis, divisor)
        cofins = _tax(subtotal, tariff.cofins, divisor)
        tributos = Taxes(icms=icms, pis=pis, cofins=cofins, valor=icms + pis + cofins)
        total = subtotal + tributos.valor

    return Bill(
        referencia=f"{year:04d}-{month:02d}",
        consumo_kwh=consumo,
        faturado_kwh=faturado,
        ligacao=ligacao,
        bandeira=bandeira,
        itens=itens,
        tributos=tributos,
        total=total,
        estimado=bool(estimado),
        aliquotas=(tariff.icms, tariff.pis, tariff.cofins),
    )


def _tax(subtotal: Decimal, rate: Decimal, divisor: Decimal) -> Decimal:
    """``round_half_up(subtotal × rate / divisor)`` to cents, exactly.

    With x = subtotal × rate × 100 (cents, exact) the answer in cents is
    floor(x / divisor + 1/2) = floor((2x + divisor) / (2 divisor)) for
    non-negative values; ``//`` on Decimals truncates, which is floor here,
    and is exact (it raises rather than round when digits run out).
    """
    if divisor <= 0:  # the tariff loader already refuses this
        raise ValueError("icms + pis + cofins must be below 1")
    cents_x = subtotal * rate * 100
    cents = (2 * cents_x + divisor) // (2 * divisor)
    return (cents.scaleb(-2)).quantize(_CENT)


def _money(value: Decimal) -> str:
    return f"{value.quantize(_CENT):f}"


def _plain(value: Decimal) -> str:
    """A rate as written, without exponent notation ("0.0103", not "1.03E-2")."""
    return f"{value:f}"
