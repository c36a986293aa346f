"""Login throttling: exponential back-off per client address and per login id.

Tokens are 256-bit random, so guessing one is hopeless; what the throttle
stops is a script hammering the login form (and the store behind it), and a
person locked out by someone else's typos for longer than a few minutes.

Each key (an address, a login id) counts its failures. The first
``free_failures`` cost nothing; after that each failure doubles the wait
before the next attempt, from ``base_delay`` up to ``max_delay``. A key with no
failure for ``forget_after`` seconds starts over. Counting per address slows
one client trying many ids; counting per id slows many clients (a botnet)
trying one id. A success forgets the id's failures but not the address's, so
owning one account does not reset a client's count against the others.

Memory is bounded: each of the two tables holds at most ``max_entries`` keys
and drops the one that failed longest ago to make room. IPv6 clients are
counted per /64, the block one subscriber usually gets, or a client could
take a fresh address for every try.

The clock is injected (seconds). Pure module: standard library only.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LoginThrottle", "client_key"]


@dataclass
class _Record:
    failures: int
    last: float


def client_key(address: str) -> str:
    """The key an address is counted under: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Table:
    """Failure records of one kind of key, least recently failed first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.records: OrderedDict[str, _Record] = OrderedDict()

    def fail(self, key: str, now: float, forget_after: float) -> None:
        record = self.records.pop(key, None)
        if record is None or now - record.last >= forget_after:
            record = _Record(0, now)
        record.failures += 1
        record.last = now
        while len(self.records) >= self.max_entries:
            self.records.popitem(last=False)
        self.records[key] = record


class LoginThrottle:
    """Decides how long a login attempt must wait."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        free_failures: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 15 * 60,
        forget_after: float = 3600,
        max_entries: int = 10_000,
    ) -> None:
        if free_failures < 0 or base_delay <= 0 or max_delay < base_delay or max_entries < 1:
            raise ValueError("need free_failures >= 0, 0 < base_delay <= max_delay, max_entries >= 1")
        if forget_after < max_delay:
            raise ValueError("forget_after must be at least max_delay, or a long lockout would reset itself")
        self._clock = clock
        self.free_failures = free_failures
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self._addresses = _Table(max_entries)
        self._logins = _Table(max_entries)

    def __len__(self) -> int:
        """Keys held, both tables together (bounded by twice ``max_entries``)."""
        return len(self._addresses.records) + len(self._logins.records)

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures of one key."""
        over = failures - self.free_failures
        if over < 0:
            return 0.0
        # Capping the exponent keeps 2**over a small number for any count.
        return min(self.max_delay, self.base_delay * 2.0 ** min(over, 64))

    def retry_after(self, address: str, login_id: str) -> float:
        """Seconds before this client may try this id again; 0 means now."""
        now = self._clock()
        waits = [0.0]
        for table, key in ((self._addresses, client_key(address)), (self._logins, login_id)):
            record = table.records.get(key)
            if record is not None and now - record.last < self.forget_after:
                waits.append(record.last + self.delay(record.failures) - now)
        return max(waits)

    def failed(self, address: str, login_id: str) -> None:
        """Count a failed attempt against the client and the id."""
        now = self._clock()
        self._addresses.fail(client_key(address), now, self.forget_after)
        self._logins.fail(login_id, now, self.forget_after)

    def succeeded(self, login_id: str) -> None:
        """Forget the id's failures (its owner got in); the client's stay counted."""
        self._logins.records.pop(login_id, None)
