"""Who is who, in memory: customers, meters, their keys and token hashes.

The UDP hot path verifies a signature and the HTTP layer authenticates a
request without touching the store; the store stays the source of truth, and
a miss is looked up there (another process may have registered the meter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from meterd.credentials import token_hash
from meterd.store.base import Customer, Meter


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for."""

    kind: Literal["operator", "customer", "meter"]
    customer_id: str | None = None
    meter_id: int | None = None


OPERATOR = Principal("operator")


@dataclass(frozen=True, slots=True)
class MeterEntry:
    meter: Meter
    key: bytes  # the HMAC key: the 32 bytes the meter key's hex spells


class Directory:
    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.meters: dict[tuple[str, int], MeterEntry] = {}
        self._by_customer: dict[str, list[int]] = {}
        self._tokens: dict[str, Principal] = {}
        # Retired meters' final reading times (us): the screen drops what a meter sends after.
        self.retired: dict[tuple[str, int], int] = {}
        # Told of every meter added or replaced: the UDP workers hold copies of the keys.
        self.meter_listeners: list[Callable[[MeterEntry], None]] = []
        # Told of every customer added or changed (credentials included): answers kept elsewhere go stale.
        self.customer_listeners: list[Callable[[Customer], None]] = []
        # Told of a customer whose token was replaced: what the old one opened (a portal login session) ends.
        self.token_listeners: list[Callable[[str], None]] = []

    def add_customer(self, customer: Customer) -> None:
        """A customer registered, or changed: a token it no longer has opens nothing from now on."""
        old = self.customers.get(customer.id)
        replaced = False
        if old is not None and old.token_hash != customer.token_hash:
            self._tokens.pop(old.token_hash, None)
            replaced = True
        self.customers[customer.id] = customer
        self._tokens[customer.token_hash] = Principal("customer", customer.id)
        for listener in self.customer_listeners:
            listener(customer)
        if replaced:
            for token_listener in self.token_listeners:
                token_listener(customer.id)

    def add_meter(self, meter: Meter) -> None:
        """A meter registered, or changed (a new key, retired): listeners are told, and the UDP workers through them."""
        key = (meter.customer_id, meter.meter_id)
        old = self.meters.get(key)
        if old is None:
            self._by_customer.setdefault(meter.customer_id, []).append(meter.meter_id)
        elif old.meter.key_hex != meter.key_hex:
            self._tokens.pop(token_hash(old.meter.key_hex), None)  # the old key posts nothing from now on
        entry = self.meters[key] = MeterEntry(meter, bytes.fromhex(meter.key_hex))
        self._tokens[token_hash(meter.key_hex)] = Principal("meter", meter.customer_id, meter.meter_id)
        if meter.retired_ts is not None:
            self.retired[key] = meter.retired_ts
        for listener in self.meter_listeners:
            listener(entry)

    def key(self, meter: tuple[str, int]) -> bytes | None:
        """The HMAC key of ``(customer_id, meter_id)``, if the meter is known."""
        entry = self.meters.get(meter)
        return None if entry is None else entry.key

    def meter_ids(self, customer_id: str) -> list[int]:
        return sorted(self._by_customer.get(customer_id, ()))

    def principal(self, token: str) -> Principal | None:
        """The customer or meter a bearer token belongs to, if any."""
        return self._tokens.get(token_hash(token))
