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

What prices a month is gathered in :class:`Rates` (TE, TUSD, the month's flag
and its rate, the three taxes, the connection's minimum).  An issued bill keeps
its own, so changing the tariff file never reprices it; when a late reading
changes an issued month's consumption, :func:`adjustment` prices the difference
with that month's rates as the difference of two whole bills (the month as it
is now, less the month as it was billed), so the bill and all its adjustments
add up to exactly the bill the month would have had with every reading on
time, to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from meterd.tariff import FLAG_LABELS, LIGACOES, Tariff

__all__ = ["LIGACOES", "Adjustment", "Bill", "BillItem", "Rates", "Taxes", "adjustment", "compute_bill", "price"]

_CENT = Decimal("0.01")
_MILLI = Decimal("0.001")
#: A tariff with taxes is printed to 8 decimals, as bills print it: it is for
#: the reader, while every amount is computed from the rates without taxes.
_RATE_WITH_TAXES = Decimal("1e-8")
# Enough digits that no product of a kWh figure and a rate is ever rounded:
# every multiplication below is exact, and only the explicit cent roundings
# lose information.
_PRECISION = 120
#: A connection's name on the bill, for the reason the minimum applies.
LIGACAO_LABELS = {"mono": "monofásica", "bi": "bifásica", "tri": "trifásica"}


@dataclass(frozen=True)
class Rates:
    """Everything that prices one month of one connection.

    ``bandeira_rate`` is in R$ per 100 kWh as the tariff file gives it; taxes
    are fractions; ``minimo_kwh`` is the connection's disponibilidade.  An
    issued bill stores these (``to_json``) and prices its adjustments with
    them, whatever the tariff file says by then.
    """

    te: Decimal
    tusd: Decimal
    bandeira: str
    bandeira_rate: Decimal
    icms: Decimal
    pis: Decimal
    cofins: Decimal
    ligacao: str
    minimo_kwh: int

    @classmethod
    def of(cls, tariff: Tariff, ligacao: str, year: int, month: int) -> Rates:
        """The rates of ``tariff`` for a month and a connection."""
        if ligacao not in LIGACOES:
            raise ValueError(f"ligacao must be one of {', '.join(LIGACOES)}, got {ligacao!r}")
        bandeira = tariff.flag_for(year, month)  # also checks the month
        return cls(
            te=tariff.te, tusd=tariff.tusd, bandeira=bandeira, bandeira_rate=tariff.bandeiras[bandeira],
            icms=tariff.icms, pis=tariff.pis, cofins=tariff.cofins,
            ligacao=ligacao, minimo_kwh=tariff.disponibilidade[ligacao],
        )

    @property
    def taxes(self) -> Decimal:
        return self.icms + self.pis + self.cofins

    def to_json(self) -> dict[str, Any]:
        return {
            "te": _plain(self.te), "tusd": _plain(self.tusd), "bandeira": self.bandeira,
            "bandeira_rate": _plain(self.bandeira_rate), "icms": _plain(self.icms), "pis": _plain(self.pis),
            "cofins": _plain(self.cofins), "ligacao": self.ligacao, "minimo_kwh": self.minimo_kwh,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rates:
        return cls(
            te=Decimal(data["te"]), tusd=Decimal(data["tusd"]), bandeira=data["bandeira"],
            bandeira_rate=Decimal(data["bandeira_rate"]), icms=Decimal(data["icms"]), pis=Decimal(data["pis"]),
            cofins=Decimal(data["cofins"]), ligacao=data["ligacao"], minimo_kwh=int(data["minimo_kwh"]),
        )


@dataclass(frozen=True)
class BillItem:
    """One priced line: ``valor = round_half_up(quantidade_kwh × tarifa)``.

    ``tarifa_com_tributos`` is the same rate with the taxes "por dentro"
    (``tarifa / (1 − Σ taxes)``, 8 decimals), the figure a bill prints beside it.
    """

    descricao: str
    quantidade_kwh: Decimal
    tarifa: Decimal  # R$/kWh before taxes
    tarifa_com_tributos: Decimal
    valor: Decimal  # R$, 2 decimals

    def to_json(self) -> dict[str, Any]:
        return {
            "descricao": self.descricao,
            "quantidade_kwh": float(self.quantidade_kwh),
            "tarifa": _plain(self.tarifa),
            "tarifa_com_tributos": _plain(self.tarifa_com_tributos),
            "valor": _money(self.valor),
        }


@dataclass(frozen=True)
class Taxes:
    """Tax amounts in R$ (each rounded to cents), their rounded sum, and their base.

    ``base`` is the gross the taxes are a share of, ``subtotal / (1 − Σ
    rates)``, rounded to cents; each tax is rounded from the exact gross.
    """

    icms: Decimal
    pis: Decimal
    cofins: Decimal
    valor: Decimal
    base: Decimal


@dataclass(frozen=True)
class Bill:
    """A computed bill; ``to_json`` gives the DESIGN §6 fields it knows.

    The caller adds the fields that need the store (id, name, status, inicio,
    fim, medidores).  ``rates`` are the rates used, so a bill can be re-checked
    by hand (and adjusted) after the tariff changes.
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
    rates: Rates

    @property
    def aliquotas(self) -> tuple[Decimal, Decimal, Decimal]:
        """icms, pis, cofins, as fractions."""
        return self.rates.icms, self.rates.pis, self.rates.cofins

    @property
    def subtotal(self) -> Decimal:
        return sum((item.valor for item in self.itens), Decimal("0.00"))

    @property
    def minimo_aplicado(self) -> bool:
        """Whether the connection's minimum, not the measured consumption, was billed."""
        return self.faturado_kwh > self.consumo_kwh

    def minimo_json(self) -> dict[str, Any]:
        """The connection's minimum, whether it applied and why (as the bill says it)."""
        minimo = self.rates.minimo_kwh
        motivo = None
        if self.minimo_aplicado:
            motivo = (
                f"Custo de disponibilidade: consumo medido abaixo do mínimo de {minimo} kWh "
                f"da ligação {LIGACAO_LABELS[self.ligacao]}"
            )
        return {"kwh": minimo, "aplicado": self.minimo_aplicado, "motivo": motivo}

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
                "base": _money(self.tributos.base),
                "aliquotas": {
                    "icms": _plain(icms),
                    "pis": _plain(pis),
                    "cofins": _plain(cofins),
                },
            },
            "total": _money(self.total),
            "estimado": self.estimado,
        }


@dataclass(frozen=True)
class Adjustment:
    """What a late reading changed in an issued month, priced with that month's rates.

    Every amount is the month's bill as it is now less the bill it was billed
    as (issued, plus the adjustments before this one): per line, per tax and in
    all (``valor``, taxes included), so the issued bill and its adjustments
    always add up to the bill the month has now.  Negative amounts are credits.
    """

    referencia: str
    consumo_anterior_wh: int
    consumo_wh: int
    faturado_delta: Decimal  # kWh
    itens: tuple[tuple[str, Decimal], ...]  # (descricao, valor delta)
    tributos: tuple[Decimal, Decimal, Decimal]  # icms, pis, cofins deltas
    valor: Decimal

    @property
    def descricao(self) -> str:
        year, month = self.referencia.split("-")
        return f"Ajuste de faturamento ref. {month}/{year}"

    def to_json(self) -> dict[str, Any]:
        icms, pis, cofins = self.tributos
        return {
            "referencia": self.referencia,
            "descricao": self.descricao,
            "consumo_faturado_kwh": self.consumo_anterior_wh / 1000,
            "consumo_corrigido_kwh": self.consumo_wh / 1000,
            "consumo_kwh": (self.consumo_wh - self.consumo_anterior_wh) / 1000,
            "quantidade_kwh": float(self.faturado_delta),
            "itens": [{"descricao": d, "valor": _money(v)} for d, v in self.itens],
            "tributos": {"icms": _money(icms), "pis": _money(pis), "cofins": _money(cofins), "valor": _money(icms + pis + cofins)},
            "valor": _money(self.valor),
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
    return price(Rates.of(tariff, ligacao, year, month), f"{year:04d}-{month:02d}", consumo_wh, estimado)


def price(rates: Rates, referencia: str, consumo_wh: int, estimado: bool) -> Bill:
    """The bill of ``consumo_wh`` in month ``referencia`` ("2026-11") at ``rates``."""
    if isinstance(consumo_wh, bool) or not isinstance(consumo_wh, int):
        raise TypeError(f"consumo_wh must be an int of Wh, got {consumo_wh!r}")
    if consumo_wh < 0:
        raise ValueError(f"consumo_wh must not be negative, got {consumo_wh}")

    with localcontext() as ctx:
        ctx.prec = _PRECISION
        consumo = Decimal(consumo_wh).scaleb(-3)
        minimum = Decimal(rates.minimo_kwh).quantize(_MILLI)
        faturado = consumo if consumo >= minimum else minimum
        divisor = 1 - rates.taxes

        bandeira_rate = rates.bandeira_rate.scaleb(-2)  # R$/100 kWh -> R$/kWh
        itens = tuple(
            BillItem(
                descricao=descricao,
                quantidade_kwh=faturado,
                tarifa=tarifa,
                tarifa_com_tributos=_with_taxes(tarifa, divisor),
                valor=(faturado * tarifa).quantize(_CENT, rounding=ROUND_HALF_UP),
            )
            for descricao, tarifa in (
                ("Energia (TE)", rates.te),
                ("Uso do sistema (TUSD)", rates.tusd),
                (f"Bandeira {FLAG_LABELS[rates.bandeira]}", bandeira_rate),
            )
        )
        subtotal = sum((item.valor for item in itens), Decimal("0.00"))

        icms = _tax(subtotal, rates.icms, divisor)
        pis = _tax(subtotal, rates.pis, divisor)
        cofins = _tax(subtotal, rates.cofins, divisor)
        base = _tax(subtotal, Decimal(1), divisor)
        tributos = Taxes(icms=icms, pis=pis, cofins=cofins, valor=icms + pis + cofins, base=base)
        total = subtotal + tributos.valor

    return Bill(
        referencia=referencia,
        consumo_kwh=consumo,
        faturado_kwh=faturado,
        ligacao=rates.ligacao,
        bandeira=rates.bandeira,
        itens=itens,
        tributos=tributos,
        total=total,
        estimado=bool(estimado),
        rates=rates,
    )


def adjustment(rates: Rates, referencia: str, billed_wh: int, now_wh: int) -> Adjustment:
    """The adjustment of month ``referencia`` billed as ``billed_wh`` whose consumption is now ``now_wh``."""
    before = price(rates, referencia, billed_wh, False)
    after = price(rates, referencia, now_wh, False)
    b, a = before.tributos, after.tributos
    return Adjustment(
        referencia=referencia,
        consumo_anterior_wh=billed_wh,
        consumo_wh=now_wh,
        faturado_delta=after.faturado_kwh - before.faturado_kwh,
        itens=tuple((new.descricao, new.valor - old.valor) for old, new in zip(before.itens, after.itens)),
        tributos=(a.icms - b.icms, a.pis - b.pis, a.cofins - b.cofins),
        valor=after.total - before.total,
    )


def _with_taxes(rate: Decimal, divisor: Decimal) -> Decimal:
    if divisor <= 0:  # the tariff loader already refuses this
        raise ValueError("icms + pis + cofins must be below 1")
    return (rate / divisor).quantize(_RATE_WITH_TAXES, rounding=ROUND_HALF_UP)


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


def money(value: Decimal) -> str:
    """Reais as the API writes them: a string with exactly 2 decimals."""
    return _money(value)


def _money(value: Decimal) -> str:
    return f"{value.quantize(_CENT):f}"


def _plain(value: Decimal) -> str:
    """A rate as written, without exponent notation ("0.0103", not "1.03E-2")."""
    return f"{value:f}"
