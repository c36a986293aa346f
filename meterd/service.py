"""``makeService``: meterd assembled from small parts (DESIGN §1).

Three steps, each in one place:

* :func:`makeService` only builds objects: nothing is opened, bound, written
  or changed in the process until the service starts;
* :func:`connect` wires them, in a written order (who observes a committed
  flush, who sends the meters' acks, who is told of new credentials);
* :meth:`Meterd.startService` does the side effects, in order: tunes the
  process, prepares the data dir and the operator token, opens the store and
  loads the directory, starts ingest and the alarms, then listens on HTTP
  and UDP and starts the worker processes. Any step that fails ends the
  process with one line naming what failed, no traceback, and nothing left
  running: meterd starts whole or not at all.
"""

from __future__ import annotations

import gc
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from twisted.application import service
from twisted.internet import reactor as default_reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorSocket, IReactorTime, IReactorUDP
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from meterd import kernel_drops, tuning
from meterd.alarms import Alarms
from meterd.bill_cache import BillCache
from meterd.credentials import operator_token
from meterd.data_dir import prepare as data_dir_prepare
from meterd.directory import Directory
from meterd.faturamento import BillingRuns, IssuedBills
from meterd.http_workers import HttpWorkers
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.notices import Notices
from meterd.options import Options
from meterd.portal.site import Portal
from meterd.reuseport import SharedTCPEndpoint, shared_socket
from meterd.store.base import Store
from meterd.store.sqlite import SqliteStore
from meterd.sync import DirectorySync
from meterd.twisted_internals import datagram_socket
from meterd.udp import MeterProtocol
from meterd.udp_workers import UdpWorkers
from meterd.web.api import Api, Settings
from meterd.web.app import mount_all
from meterd.web.bills import Bills
from meterd.web.exports import Exports
from meterd.web.fleet import Fleet
from meterd.web.operations import Operations
from meterd.web.request import make_site, with_backlog
from meterd.web.webhook_routes import WebhookRoutes
from meterd.webhooks import Webhooks

__all__ = ["Meterd", "Options", "makeService"]

log = Logger()

# The meters' socket's receive buffer: what arrives while the readers are
# short of CPU waits here, and what does not fit is lost before any reader
# sees it (docs/performance.md). The kernel allocates it only as datagrams
# queue up.
UDP_RECEIVE_BUFFER = 32 * 1024 * 1024
MAX_PACKET = 8192  # what recvfrom asks for: a signed datagram is at most datagram.MAX_SIGNED bytes


class StartError(Exception):
    """A step of the start failed; the message is the one line the operator sees."""


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


@dataclass
class Parts:
    """What meterd is made of, built by :func:`makeService` and wired by :func:`connect`."""

    config: dict[str, Any]
    clock: IReactorTime
    metrics: Metrics
    store: Store
    directory: Directory
    ingest: Ingest
    bills: BillCache
    alarms: Alarms
    runs: BillingRuns
    webhooks: Webhooks
    api: Api
    fleet: Fleet
    portal: Portal
    meters: MeterProtocol
    udp_workers: UdpWorkers | None
    http_workers: HttpWorkers | None


def makeService(config: dict[str, Any], clock: IReactorTime | None = None) -> Meterd:
    """Build meterd from its options; nothing starts until the service does."""
    clock = clock or default_reactor
    metrics = Metrics()
    store = make_store(config["db"], config["durability"])
    directory = Directory()
    ingest = Ingest(store, clock, metrics)
    # Other processes' late readings never reach this cache's observer: no caching on a shared store.
    bills = BillCache(max_entries=0 if store.shared else 50_000)
    alarms = Alarms(store, directory, clock, window_s=config["alarm-window"], silent_after_s=config["silent-after"])
    webhooks = Webhooks(store, clock, metrics, timeout=config["webhook-timeout"], max_backoff=config["webhook-max-backoff"])
    settings = Settings(
        no_auth=bool(config.get("no-auth")), tz=config["tz"], limit_w=config["limit-w"], limit_wh=config["limit-wh"],
        meter_mode=config["meter-mode"],
    )
    runs = BillingRuns(store, config["tariff"], clock, config["tz"], bills)
    api = Api(settings, store, directory, ingest, metrics, clock, config["tariff"], bills, alarms)
    fleet = Fleet(api, alarms, clock)
    mount_all(api, Bills(api, runs, IssuedBills(store)), Operations(api), Exports(api), fleet, WebhookRoutes(api, webhooks))
    portal = Portal(api, clock, secure=config["http"].startswith("ssl:"))
    meters = MeterProtocol(directory, ingest, metrics, clock, require_signature=not config.get("no-auth"))
    parts = Parts(
        config, clock, metrics, store, directory, ingest, bills, alarms, runs, webhooks, api, fleet, portal, meters,
        UdpWorkers(config["udp-workers"], meters, directory, ingest, metrics, default_reactor) if config.get("udp-workers") else None,
        HttpWorkers(config["http-workers"], api, config["limits"], default_reactor) if config.get("http-workers") else None,
    )
    connect(parts)
    return Meterd(parts)


def connect(parts: Parts) -> None:
    """Wire the parts, in this order.

    1. A committed flush is observed first by the bill cache, which evicts
       the bills its readings change, then by the alarm rules, which decide
       on the readings: ingest answers the flush's HTTP readings only after
       both, so a request behind a POST sees its effects.
    2. The meters' acks of each flush go to the UDP workers when any is up
       (they sign and send them from the shared socket), else to the
       reactor's own port.
    3. The HTTP workers' answers generation moves on with every alarm
       settlement and every change of credentials: a poll they answered
       before is answered by meterd again.
    4. The UDP workers are told every new meter's key.
    5. The web portal's open alarms pages are told of every alarm
       settlement; a customer's new token ends their portal sessions; the
       HTTP workers' requests are answered by the portal's dispatch (its
       pages, and the API for the rest).
    6. The webhooks are told of every alarm event this process settles, once committed.
    """
    ingest, bills, alarms = parts.ingest, parts.bills, parts.alarms
    ingest.observers.append(lambda readings, outcomes, _: bills.readings_stored(readings, outcomes))
    ingest.observers.append(alarms.observe)
    ingest.send_acks = parts.udp_workers.send_acks if parts.udp_workers else parts.meters.send_acks
    if parts.http_workers is not None:
        bump = parts.http_workers.answers_changed
        alarms.settled_listeners.append(bump)
        parts.directory.customer_listeners.append(lambda _: bump())
    if parts.udp_workers is not None:
        parts.directory.meter_listeners.append(parts.udp_workers.meter_added)
    alarms.settled_listeners.append(parts.portal.live.changed)
    parts.directory.token_listeners.append(parts.portal.token_replaced)
    if parts.http_workers is not None:
        parts.http_workers.respond = parts.portal.dispatch
    alarms.event_listeners.append(parts.webhooks.events_stored)


class Meterd(service.MultiService):
    """meterd: starts its parts in order once the store is ready, stops them in reverse."""

    def __init__(self, parts: Parts) -> None:
        super().__init__()
        self.parts = parts
        self.ready: Deferred[None] = Deferred()
        self.http_port: IListeningPort | None = None
        self.udp_port: Any = None
        self._tuning: tuning.Tuning | None = None
        #: Whether start-up freezes what it loaded (and stop thaws it). Right for
        #: a process meterd owns, as under twistd; a host running many meterds
        #: in its own process (the tests) turns it off: the full collection
        #: before freezing would traverse the host's whole heap at each start.
        self.freeze_heap = True
        self._frozen = False
        self._umask: int | None = None
        self._stopping: Deferred[None] | None = None
        for child in (parts.ingest, parts.alarms, parts.webhooks, parts.runs, Notices(parts.metrics.recent), parts.fleet.sampler, parts.portal.live):
            child.setServiceParent(self)
        if parts.store.shared:  # other processes change the directory too
            DirectorySync(parts.store, parts.directory, parts.clock).setServiceParent(self)

    # the parts tests and the bench reach for
    api = property(lambda self: self.parts.api)
    store = property(lambda self: self.parts.store)
    directory = property(lambda self: self.parts.directory)
    ingest = property(lambda self: self.parts.ingest)
    workers = property(lambda self: self.parts.udp_workers)
    http_workers = property(lambda self: self.parts.http_workers)

    def privilegedStartService(self) -> None:
        """Bind nothing yet: the ports open only once the store is ready."""

    def startService(self) -> None:
        service.Service.startService(self)
        Deferred.fromCoroutine(self._start()).addErrback(self._failed)

    async def _start(self) -> None:
        parts, config = self.parts, self.parts.config
        self._tuning = tuning.tune()
        data_dir = Path(config["data-dir"])
        self._umask, tightened = _step(f"the data dir {data_dir}", data_dir_prepare, data_dir)
        for warning in tightened:
            log.warn("{warning}: the data dir holds the operator token and every meter's key", warning=warning)
        token, token_path, created = _step("the operator token", operator_token, data_dir)
        parts.api.operator_token = token
        log.info("operator token {state} {path}", state="created in" if created else "read from", path=str(token_path))
        if config.get("no-auth"):
            log.warn("AUTHENTICATION IS OFF (--no-auth, the assignment's compatibility mode): anyone can register, read any bill "
                     "and post readings; unsigned datagrams are accepted and their valor rounded half up to the Wh")
        log.info("meters registered without a mode are {mode} meters (--meter-mode)", mode=config["meter-mode"])
        await parts.store.start()
        customers, meters = await parts.store.load_directory()
        for customer in customers:
            parts.directory.add_customer(customer)
        for meter in meters:
            parts.directory.add_meter(meter)
        log.info("loaded {c} customers and {m} meters", c=len(customers), m=len(meters))
        # What is loaded by now lives as long as the process, and a full
        # collection traverses every tracked object with the GIL held, a
        # pause that grows with the directory and that the reactor cannot
        # afford under load. Frozen, the collector skips it.
        if self.freeze_heap:
            gc.collect()
            gc.freeze()
            self._frozen = True
        for child in self:
            child.startService()
        self.http_port = await self._listen_http()
        self.udp_port = self._listen_udp()
        for pool in (parts.http_workers, parts.udp_workers):
            if pool is not None:
                pool.startService()
        self.ready.callback(None)

    async def _listen_http(self) -> IListeningPort:
        config, parts = self.parts.config, self.parts
        description = with_backlog(config["http"])
        endpoint = SharedTCPEndpoint.from_string(default_reactor, description) if config.get("reuse-port") \
            else serverFromString(default_reactor, description)
        try:
            limits = config["limits"].within_descriptors()
            log.info("HTTP: at most {n} connections, {a} from one address", n=limits.max_connections, a=limits.max_per_address)
            site = make_site(parts.portal.serve, limits, parts.metrics.http_refused, default_reactor)
            port: IListeningPort = await endpoint.listen(site)
        except Exception as e:
            raise StartError(f"cannot listen for HTTP on {description}: {_reason(e)}") from None
        log.info("HTTP on {description}", description=description)
        if parts.http_workers is not None:
            parts.http_workers.listening = port
        return port

    def _listen_udp(self) -> Any:
        config, meters = self.parts.config, self.parts.meters
        interface, number = config["udp-interface"], config["udp"]
        where = f"{interface or '*'}:{number}"
        try:
            if config.get("reuse-port"):
                sock = shared_socket(socket.SOCK_DGRAM, interface, number)
                try:
                    port = cast(IReactorSocket, default_reactor).adoptDatagramPort(sock.fileno(), sock.family, meters, MAX_PACKET)
                finally:
                    sock.close()
            else:
                port = cast(IReactorUDP, default_reactor).listenUDP(number, meters, interface, MAX_PACKET)
        except Exception as e:
            raise StartError(f"cannot listen for UDP on {where}: {_reason(e)}") from None
        set_receive_buffer(datagram_socket(port), UDP_RECEIVE_BUFFER)
        self.parts.metrics.udp_socket_inode = kernel_drops.socket_inode(datagram_socket(port))
        log.info("UDP on {where}", where=where)
        return port

    def _failed(self, failure: Failure) -> None:
        reason = _reason(failure.value) if failure.value is not None and not failure.check(StartError) else failure.getErrorMessage()
        log.critical("meterd cannot start: {reason}", reason=reason)
        self.ready.errback(failure)
        self.stopService()  # whatever did start: ports, workers, the store
        if default_reactor.running:
            default_reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            default_reactor.stop()

    def stopService(self) -> Deferred[None]:
        """Stop once: a failed start stops what it started, and twistd asks again at shutdown."""
        if self._stopping is None:
            self._stopping = Deferred.fromCoroutine(self._stop())
        stopping: Deferred[None] = Deferred()

        def stopped(result: object) -> object:
            stopping.callback(None)
            return result

        self._stopping.addBoth(stopped)
        return stopping

    async def _stop(self) -> None:
        service.Service.stopService(self)
        parts = self.parts
        for pool in (parts.udp_workers, parts.http_workers):  # first: they send what they hold
            if pool is not None and pool.running:
                await maybeDeferred(pool.stopService)
        for port in (self.udp_port, self.http_port):
            if port is not None:
                await maybeDeferred(port.stopListening)
        self.udp_port = self.http_port = None
        for child in reversed(list(self)):  # ..., webhooks (saving their cursors), alarms, then ingest, which flushes what is pending
            if child.running:
                await maybeDeferred(child.stopService)
        await parts.store.stop()
        if self._frozen:  # a stopped meterd's objects are the collector's again
            gc.unfreeze()
            self._frozen = False
        if self._tuning is not None:
            tuning.restore(self._tuning)
            self._tuning = None
        if self._umask is not None:
            os.umask(self._umask)
            self._umask = None
        log.info("meterd stopped")


def _step(what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except (OSError, ValueError) as e:
        raise StartError(f"{what}: {_reason(e)}") from None


def _reason(error: BaseException) -> str:
    """One line for an operator: the OS's words where there are some."""
    error = getattr(error, "socketError", error)  # twisted's CannotListenError carries the OS error
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


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
