"""``twistd meterd`` options: every value is checked here, at start.

A bad option ends the start with one line naming it (usage.UsageError), never
a traceback and never a server that runs with a value it misread.
"""

from __future__ import annotations

import platform
import socket
import sys
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

import meterd
import twisted
from meterd.reuseport import SharedTCPEndpoint
from meterd.tariff import TariffError, default_tariff, load_tariff
from meterd.web.request import Limits
from meterd.webhook_retry import MAX_DELAY_S
from meterd.webhooks import TIMEOUT_S


def _positive(name: str, value: str, *, integer: bool = False) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise usage.UsageError(f"--{name}: {value!r} is not a number") from None
    if not number.is_finite() or number <= 0 or (integer and number != number.to_integral_value()):
        raise usage.UsageError(f"--{name}: must be a positive {'integer' if integer else 'number'}, not {value!r}")
    return number


MAX_WORKERS = 64


def _worker_count(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_WORKERS:
        raise usage.UsageError(f"--{name}: must be an integer from 0 to {MAX_WORKERS}, not {value!r}")
    return int(value)


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "meterd: smart-meter head-end and billing server (HTTP API + UDP ingest)."
    optFlags = [
        ["no-auth", None, "the assignment's compatibility mode: no tokens, unsigned datagrams accepted, their valor rounded "
                          "half up to the Wh, new meters interval meters (unless --meter-mode); for its programs only, never in production"],
        ["reuse-port", None, "share the UDP and HTTP ports with other meterd processes (SO_REUSEPORT; --http must be tcp:)"],
    ]
    optParameters = [
        ["data-dir", None, "./meterd-data", "directory for the SQLite file and operator.token (created if missing)"],
        ["db", None, None, "sqlite:PATH or postgresql://... (default: SQLite file in the data dir)"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["http"] = "tcp:8888"
        self["udp"] = 8080
        self["udp-interface"] = ""
        self["tz"] = "America/Sao_Paulo"
        self["tariff"] = default_tariff()
        self["limit-w"] = 10_000
        self["limit-wh"] = 1_000_000
        self["alarm-window"] = 300
        self["silent-after"] = 900
        self["durability"] = "full"
        self["meter-mode"] = None  # postOptions: interval with --no-auth, else register
        self["udp-workers"] = 0
        self["http-workers"] = 0
        self["limits"] = Limits()  # opt_max_connections ... opt_idle_timeout change it
        self["webhook-timeout"] = TIMEOUT_S
        self["webhook-max-backoff"] = MAX_DELAY_S

    _failed = False

    def parseOptions(self, options: list[str] | None = None) -> None:
        try:
            super().parseOptions(options)
        except usage.UsageError:
            self._failed = True
            raise

    def getUsage(self, width: int | None = None) -> str:
        """After a bad option twistd prints the usage, then the error: keep that to a hint."""
        if self._failed:
            return "Run 'twistd meterd --help' for the options.\n"
        return super().getUsage(width)

    def opt_version(self) -> None:
        """print meterd's version and exit"""
        sys.stdout.write(f"meterd {meterd.__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})\n")
        sys.exit(0)

    def opt_http(self, value: str) -> None:
        """HTTP endpoint string (default tcp:8888; ssl:... works too)"""
        from twisted.internet import reactor

        try:
            serverFromString(reactor, value)
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise usage.UsageError(f"--http: {value!r} is not a server endpoint string ({e})") from None
        self["http"] = value

    def opt_udp(self, value: str) -> None:
        """UDP port for meter datagrams (default 8080; 0 picks a free one)"""
        port = _positive("udp", value, integer=True) if value != "0" else Decimal(0)
        if port > 65535:
            raise usage.UsageError(f"--udp: {value} is not a port number")
        self["udp"] = int(port)

    def opt_udp_interface(self, value: str) -> None:
        """address to bind the UDP port to (default: all interfaces)"""
        try:
            socket.getaddrinfo(value, None, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise usage.UsageError(f"--udp-interface: {value!r} is not an IP address") from None
        self["udp-interface"] = value

    def opt_tz(self, value: str) -> None:
        """default time zone of customers (default America/Sao_Paulo)"""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise usage.UsageError(f"--tz: {value!r} is not an IANA time zone") from None
        self["tz"] = value

    def opt_tariff(self, value: str) -> None:
        """TOML tariff file (default: the built-in tariff)"""
        try:
            self["tariff"] = load_tariff(value)
        except TariffError as e:
            raise usage.UsageError(f"--tariff: {e}") from None

    def opt_limit_kw(self, value: str) -> None:
        """default demand alarm limit per customer, kW (default 10)"""
        self["limit-w"] = int(_positive("limit-kw", value) * 1000)

    def opt_limit_kwh(self, value: str) -> None:
        """default monthly alarm limit per customer, kWh (default 1000)"""
        self["limit-wh"] = int(_positive("limit-kwh", value) * 1000)

    def opt_alarm_window(self, value: str) -> None:
        """seconds of trailing window for the demand rule (default 300)"""
        self["alarm-window"] = float(_positive("alarm-window", value))

    def opt_silent_after(self, value: str) -> None:
        """seconds without data before a meter is silent (default 900)"""
        self["silent-after"] = float(_positive("silent-after", value))

    def opt_udp_workers(self, value: str) -> None:
        """processes that read and verify datagrams beside the reactor, 0-64 (default 0: the reactor reads them)"""
        self["udp-workers"] = _worker_count("udp-workers", value)

    def opt_http_workers(self, value: str) -> None:
        """processes that parse HTTP beside the reactor, 0-64 (default 0: the reactor does; --http must be tcp: or unix:)"""
        self["http-workers"] = _worker_count("http-workers", value)

    def _limit(self, name: str, value: str, *, integer: bool = False, scale: int = 1) -> None:
        number = _positive(name, value, integer=integer)
        field = name.replace("-", "_").replace("connections_per_address", "per_address")
        self["limits"] = replace(self["limits"], **{field: int(number * scale) if integer else float(number)})

    def opt_max_connections(self, value: str) -> None:
        """open HTTP connections at most, kept below the descriptor limit (default 10000)"""
        self._limit("max-connections", value, integer=True)

    def opt_max_connections_per_address(self, value: str) -> None:
        """open HTTP connections from one client address at most (default 128)"""
        self._limit("max-connections-per-address", value, integer=True)

    def opt_header_timeout(self, value: str) -> None:
        """seconds for a request's headers to arrive once it begins (default 10)"""
        self._limit("header-timeout", value)

    def opt_body_timeout(self, value: str) -> None:
        """seconds for a request's body to arrive (default 30)"""
        self._limit("body-timeout", value)

    def opt_body_min_rate(self, value: str) -> None:
        """bytes a second a request's body must keep up after its first 5 s (default 1024)"""
        self._limit("body-min-rate", value, integer=True)

    def opt_max_buffered_bodies(self, value: str) -> None:
        """MiB of request bodies being received, all connections together (default 64)"""
        self._limit("max-buffered-bodies", value, integer=True, scale=1024 * 1024)

    def opt_idle_timeout(self, value: str) -> None:
        """seconds a kept-alive HTTP connection may sit idle (default 60)"""
        self._limit("idle-timeout", value)

    def opt_webhook_timeout(self, value: str) -> None:
        """seconds a webhook's receiver has to accept the connection, and again to answer (default 10)"""
        self["webhook-timeout"] = float(_positive("webhook-timeout", value))

    def opt_webhook_max_backoff(self, value: str) -> None:
        """longest wait, in seconds, before a failed webhook delivery is tried again (default 300; waits double from 1 s)"""
        self["webhook-max-backoff"] = float(_positive("webhook-max-backoff", value))

    def opt_durability(self, value: str) -> None:
        """full (fsync each group commit, default) or normal"""
        if value not in ("full", "normal"):
            raise usage.UsageError(f"--durability: must be full or normal, not {value!r}")
        self["durability"] = value

    def opt_meter_mode(self, value: str) -> None:
        """mode of meters registered without one: register or interval (default register; interval with --no-auth)"""
        if value not in ("register", "interval"):
            raise usage.UsageError(f"--meter-mode: must be register or interval, not {value!r}")
        self["meter-mode"] = value

    def postOptions(self) -> None:
        if self["meter-mode"] is None:  # the assignment's meters send the energy of each interval
            self["meter-mode"] = "interval" if self["no-auth"] else "register"
        data_dir = Path(self["data-dir"])  # created (private) when meterd starts: meterd.data_dir
        if data_dir.exists() and not data_dir.is_dir():
            raise usage.UsageError(f"--data-dir: {data_dir} exists and is not a directory")
        self["data-dir"] = data_dir
        db = self["db"] or f"sqlite:{data_dir / 'meterd.sqlite3'}"
        if not (db.startswith("sqlite:") or db.startswith(("postgresql://", "postgres://"))):
            raise usage.UsageError(f"--db: expected sqlite:PATH or postgresql://..., not {db!r}")
        if db.startswith("sqlite:") and len(db) == len("sqlite:"):
            raise usage.UsageError("--db: sqlite: needs a path")
        self["db"] = db
        if self["reuse-port"]:
            from twisted.internet import reactor

            try:
                SharedTCPEndpoint.from_string(reactor, self["http"])
            except ValueError as e:
                raise usage.UsageError(f"--reuse-port: {e}") from None
        if self["http-workers"] and self["http"].split(":", 1)[0] not in ("tcp", "tcp6", "unix"):
            raise usage.UsageError("--http-workers: --http must be a tcp:, tcp6: or unix: endpoint (a worker cannot share a TLS port)")
