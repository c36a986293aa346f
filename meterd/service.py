"""``makeService``: the MultiService of DESIGN §1, from small services.

The store must be open and the directory loaded before a single request or
datagram is accepted, so the listening services are children of a
:class:`Core` service that starts them only once the store is ready, and on
stop closes them first, drains ingest, and closes the store last.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
from functools import partial
from pathlib import Path
from typing import Any

from twisted.application import internet, service
from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from zope.interface import implementer

from meterd.alarms import Alarms
from meterd.bill_cache import BillCache
from meterd.credentials import operator_token
from meterd.directory import Directory
from meterd.http_workers import HttpWorkers
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.notices import Notices
from meterd.options import Options
from meterd.reuseport import SharedTCPEndpoint, shared_socket
from meterd.store.base import Store
from meterd.store.sqlite import SqliteStore
from meterd.udp import MeterProtocol
from meterd.udp_workers import UdpWorkers
from meterd.web.api import Api, Settings, serve
from meterd.web.request import make_site
from meterd.worker_process import GC_THRESHOLDS

__all__ = ["Options", "makeService"]

log = Logger()

# The meters' socket's receive buffer: what arrives while the readers are
# short of CPU waits here, and what does not fit is lost before any reader sees
# it. At 62,000-64,000 readings/s on 2 busy cores 8 MB overflowed in 7 of 24
# runs (3,700-43,000 readings lost in a 30 s run); 32 MB in none of six in
# the hour after. The kernel allocates it only as datagrams queue up.
UDP_RECEIVE_BUFFER = 32 * 1024 * 1024
SWITCH_INTERVAL = 0.001


def make_store(db: str, durability: str) -> Store:
    if db.startswith("sqlite:"):
        return SqliteStore(db[len("sqlite:") :], durability=durability)
    if db.startswith(("postgresql://", "postgres://")):
        try:
            from meterd.store.postgres import PostgresStore
        except ImportError as e:
            raise usage.UsageError(f"--db: PostgreSQL needs psycopg 3 (pip install 'meterd[postgresql]'): {e}") from None
        return PostgresStore(db, durability=durability)
    raise usage.UsageError(f"--db: {db!r} is neither sqlite:PATH nor postgresql://...")


class Core(service.MultiService):
    """Opens the store, loads the directory, then starts its children."""

    def __init__(self, store: Store, directory: Directory, ingest: Ingest) -> None:
        super().__init__()
        self.store = store
        self.directory = directory
        self.ingest = ingest
        self.ready: Deferred[None] = Deferred()
        self.api: Api
        self.http: Any  # StreamServerEndpointService
        self.udp: Any  # internet.UDPServer
        self.workers: UdpWorkers | None = None
        self.http_workers: HttpWorkers | None = None

    def privilegedStartService(self) -> None:
        """Bind nothing yet: the ports open only once the store is ready."""

    def startService(self) -> None:
        service.Service.startService(self)
        Deferred.fromCoroutine(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        await self.store.start()
        customers, meters = await self.store.load_directory()
        for customer in customers:
            self.directory.add_customer(customer)
        for meter in meters:
            self.directory.add_meter(meter)
        log.info("loaded {c} customers and {m} meters", c=len(customers), m=len(meters))
        # What is loaded by now lives as long as the process, and a full
        # collection traverses every tracked object with the GIL held: 88 ms
        # for a directory of 100,000 meters, a pause the reactor cannot
        # afford under load. Frozen, the collector skips it.
        gc.collect()
        gc.freeze()
        self.ingest.startService()
        for child in self:
            child.privilegedStartService()
            child.startService()
        self.ready.callback(None)

    def _failed(self, failure: Any) -> None:
        log.critical("meterd cannot start: {error}", error=failure.getErrorMessage())
        self.ready.errback(failure)
        if default_reactor.running:
            default_reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            default_reactor.stop()

    def stopService(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        if self.ingest.running:
            await self.ingest.stopService()
        await self.store.stop()
        gc.unfreeze()  # a stopped Core's objects are the collector's again (tests run many in one process)
        log.info("meterd stopped")


def _udp_port(config: dict[str, Any], protocol: MeterProtocol) -> service.Service:
    """The UDP server, with a large receive buffer (and SO_REUSEPORT if asked)."""

    class UDPServer(internet.UDPServer):
        def _getPort(self) -> Any:
            if not config.get("reuse-port"):
                port = super()._getPort()
            else:
                sock = shared_socket(socket.SOCK_DGRAM, config["udp-interface"], config["udp"])
                try:
                    reactor = internet._maybeGlobalReactor(self.reactor)
                    port = reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol)
                finally:
                    sock.close()
            set_receive_buffer(port.socket, UDP_RECEIVE_BUFFER)
            return port

    return UDPServer(config["udp"], protocol, interface=config["udp-interface"])


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; the size granted, with a warning when the kernel capped it.

    Linux grants at most ``net.core.rmem_max`` (208 KB by default) without a
    word, and a socket that silently keeps a small buffer loses datagrams
    under load; the operator must see that where they look, at start-up.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux reports twice the size, bookkeeping included
    if granted < size:
        log.warn("the UDP receive buffer is {granted} bytes, not the {size} asked for: under load datagrams will be lost "
                 "before meterd reads them; raise the limit (sysctl -w net.core.rmem_max={size})", granted=granted, size=size)
    return granted


@implementer(IStreamServerEndpoint)
class _KeepsPort:
    """An endpoint that remembers the port it listens on: the HTTP workers share its socket."""

    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self.endpoint = endpoint
        self.port: IListeningPort | None = None

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        return self.endpoint.listen(factory).addCallback(self._listening)

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        return port


def makeService(config: dict[str, Any], clock: IReactorTime | None = None) -> service.MultiService:
    clock = clock or default_reactor
    # The store's writer thread hands the GIL back and forth with a reactor that
    # is never idle under load; each hand-back waits up to one switch interval
    # (5 ms by default), which capped durable ingest far below what SQLite does.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # Every datagram allocates a few containers (a dict, tuples, a Reading)
    # that die within a flush, but CPython's default thresholds (700, 10, 10)
    # ran a young collection every few hundred datagrams and, as pending
    # readings and the alarms' windows kept surviving, a full collection every
    # second or so: 80-120 ms each with the GIL held, some 15 % of the process's
    # time at 40,000 readings/s, each pause long enough to overflow the socket
    # buffer. Counts are net of frees, so with these a young collection comes
    # only once garbage really accumulates.
    gc.set_threshold(*GC_THRESHOLDS)
    data_dir = Path(config["data-dir"])
    token, token_path, created = operator_token(data_dir)
    log.info("operator token {state} {path}", state="created in" if created else "read from", path=str(token_path))
    if config.get("no-auth"):
        log.warn("AUTHENTICATION IS OFF (--no-auth, the assignment's compatibility mode): anyone can register, read any bill "
                 "and post readings; unsigned datagrams are accepted and their valor rounded half up to the Wh")
    log.info("meters registered without a mode are {mode} meters (--meter-mode)", mode=config["meter-mode"])

    metrics = Metrics()
    store = make_store(config["db"], config["durability"])
    directory = Directory()
    ingest = Ingest(store, clock, metrics)
    settings = Settings(
        no_auth=bool(config.get("no-auth")),
        tz=config["tz"],
        limit_w=config["limit-w"],
        limit_wh=config["limit-wh"],
        meter_mode=config["meter-mode"],
    )
    alarms = Alarms(store, directory, ingest, clock, window_s=config["alarm-window"], silent_after_s=config["silent-after"])
    bills = BillCache(max_entries=0 if store.shared else 50_000)  # other processes' late readings never reach its observer
    ingest.observers.append(lambda readings, outcomes, _: bills.readings_stored(readings, outcomes))
    api = Api(settings, store, directory, ingest, metrics, clock, config["tariff"], bills, alarms)
    api.operator_token = token
    site = make_site(partial(serve, api))

    core = Core(store, directory, ingest)
    core.api = api
    alarms.setServiceParent(core)  # started by Core once the store is open, before the ports
    Notices(metrics.recent).setServiceParent(core)
    if config.get("reuse-port"):
        endpoint = SharedTCPEndpoint.from_string(default_reactor, config["http"])
    else:
        endpoint = serverFromString(default_reactor, config["http"])
    endpoint = _KeepsPort(endpoint)
    core.http = internet.StreamServerEndpointService(endpoint, site)
    core.http.setServiceParent(core)
    if config.get("http-workers"):
        # After the port: they start with the socket listening, and stop first.
        sqlite_path = os.path.abspath(store.path) if isinstance(store, SqliteStore) else None
        core.http_workers = HttpWorkers(config["http-workers"], api, lambda: endpoint.port, default_reactor,
                                        sqlite_path=sqlite_path)
        core.http_workers.setServiceParent(core)
    protocol = MeterProtocol(directory, ingest, metrics, clock, require_signature=not config.get("no-auth"))
    core.udp = _udp_port(config, protocol)
    core.udp.setServiceParent(core)
    if config.get("udp-workers"):
        # After the port: it starts with the socket open, and stops first.
        core.workers = UdpWorkers(config["udp-workers"], protocol, directory, ingest, metrics, default_reactor)
        core.workers.setServiceParent(core)
    return core
