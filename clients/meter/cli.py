"""``python -m clients.meter``: options, provisioning, and wiring onto the reactor."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IReactorCore
from twisted.python.failure import Failure

import meterd
from clients.api import DEFAULT_SERVER, ApiError, MeterdClient, ServerUnreachable, find_token
from meterd.taxid import InvalidTaxId, make_cpf, normalize

from .commands import MAX_INTERVAL, MIN_INTERVAL, CommandProtocol, parse_kw
from .device import SimMeter
from .faults import FaultInjector
from .fleet import AckProtocol, Simulator
from .load import LoadModel
from .outbox import Outbox
from .status import StatusLine, terminal_width, wrap_message

__all__ = ["main", "build_parser", "Credentials", "provision", "Fatal"]

DEFAULT_UDP_PORT = 8080
SERVER_ENV = "METERD_SERVER"
UDP_ENV = "METERD_UDP"
SOCKET_BUFFER = 4 * 1024 * 1024
EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 3


class Fatal(Exception):
    """A setup problem reported as one line on stderr, exit status 1."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a meter needs to speak for itself (``token`` only when provisioned)."""

    customer_id: str
    meter_id: int
    key: str
    token: str | None = None
    start_wh: int = 0


# -- options ---------------------------------------------------------------------


def _probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a probability: {text!r}") from None
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return p


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (x > 0 and x < float("inf")):
        raise argparse.ArgumentTypeError("must be a positive number")
    return x


def _interval(text: str) -> float:
    x = _positive(text)
    if not MIN_INTERVAL <= x <= MAX_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be between {MIN_INTERVAL} and {MAX_INTERVAL:g} s")
    return x


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _kw(text: str) -> float:
    try:
        return parse_kw(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _key(text: str) -> str:
    k = text.strip().lower()
    if len(k) != 64 or any(c not in "0123456789abcdef" for c in k):
        raise argparse.ArgumentTypeError("a meter key is 64 hex characters (from /cadMedidor)")
    return k


def build_parser() -> argparse.ArgumentParser:
    """The simulator's options; every one with a default says it in its help."""
    p = argparse.ArgumentParser(
        prog="python -m clients.meter",
        description="Simulated smart meters that push signed readings to meterd over UDP.",
        epilog=(
            "stdin commands while running: + - interval SECONDS, load KW, spike [KW [N]], status, help, quit. "
            "To provoke a demand alarm (the 5-minute average above the customer's limit, 10 kW unless "
            "set): --load-kw 12, or type load 12."
        ),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {meterd.__version__}")
    c = p.add_argument_group("connection")
    c.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV) or DEFAULT_SERVER,
        help=f"HTTP API URL (default %(default)s; or ${SERVER_ENV})",
    )
    c.add_argument(
        "--udp",
        metavar="HOST:PORT",
        default=os.environ.get(UDP_ENV) or None,
        help=f"UDP target (default ${UDP_ENV}, then the server's host, port {DEFAULT_UDP_PORT})",
    )
    c.add_argument("--data-dir", help="server data dir holding operator.token (default ./meterd-data)")
    c.add_argument("--token", help="operator token (default $METERD_TOKEN, then <data-dir>/operator.token)")
    w = p.add_argument_group("which meters")
    w.add_argument("--id", help="customer id (CPF/CNPJ) of one existing meter")
    w.add_argument("--meter", type=_count, help="id_medidor of that meter")
    w.add_argument("--key", type=_key, help="that meter's key (64 hex chars)")
    w.add_argument("--start-kwh", type=float, help="register at start for --id (default: server's last_kwh, or 0)")
    w.add_argument("--provision", action="store_true", help="register a demo customer and meter first")
    w.add_argument("--fleet", type=_count, metavar="N", help="provision and run N meters in this process")
    w.add_argument("--credentials", metavar="PATH", help="save provisioned tokens and keys here (JSON, mode 0600)")
    w.add_argument(
        "--concurrency", type=_count, default=16, help="parallel provisioning requests (default %(default)s)"
    )
    s = p.add_argument_group("behaviour")
    s.add_argument(
        "--interval", type=_interval, default=1.0, help="seconds between readings (default %(default)g)"
    )
    s.add_argument(
        "--load-kw",
        type=_kw,
        default=0.0,
        metavar="KW",
        help="a steady demand every meter draws on top of its household, backfill included "
        "(default %(default)g; 12 raises a demand alarm against the default 10 kW limit)",
    )
    s.add_argument("--seed", type=int, help="seed of the load model and faults (default: random, printed)")
    s.add_argument("--backfill", type=_positive, metavar="DAYS", help="first fill the last DAYS of history")
    s.add_argument(
        "--backfill-rate", type=_positive, default=2000.0, help="readings/s during backfill (default %(default)g)"
    )
    s.add_argument(
        "--window",
        type=_count,
        default=2000,
        help="max unacknowledged readings during backfill (default %(default)s)",
    )
    s.add_argument(
        "--buffer", type=_count, default=10_000, help="unacknowledged readings kept per meter (default %(default)s)"
    )
    s.add_argument("--duration", type=_positive, metavar="SECONDS", help="quit by itself after this long")
    s.add_argument(
        "--drain-timeout", type=float, default=10.0, help="seconds to wait for acks on quit (default %(default)g)"
    )
    s.add_argument(
        "--ack-warning",
        type=_positive,
        default=5.0,
        help="seconds without any ack before saying so (default %(default)g)",
    )
    f = p.add_argument_group("fault injection")
    f.add_argument("--loss", type=_probability, default=0.0, help="drop this fraction of datagrams (default %(default)g)")
    f.add_argument("--dup", type=_probability, default=0.0, help="send this fraction twice (default %(default)g)")
    f.add_argument("--reorder", type=_probability, default=0.0, help="delay this fraction 5-150 ms (default %(default)g)")
    o = p.add_argument_group("output")
    o.add_argument("--summary-json", metavar="PATH", help="write per-meter counters here on exit")
    o.add_argument(
        "--log-every",
        type=_positive,
        default=5.0,
        help="seconds between status lines when not a tty (default %(default)g)",
    )
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject contradictory combinations with argparse's one-line error."""
    single = [args.id, args.meter, args.key]
    modes = sum([any(x is not None for x in single), bool(args.provision), args.fleet is not None])
    if modes == 0:
        parser.error("choose --id/--meter/--key, --provision or --fleet N")
    if modes > 1:
        parser.error("--id/--meter/--key, --provision and --fleet N are alternatives")
    if any(x is not None for x in single) and not all(x is not None for x in single):
        parser.error("one meter needs all of --id, --meter and --key")
    if args.id is not None:
        try:
            args.id = normalize(args.id)
        except InvalidTaxId as e:
            parser.error(f"--id: {e}")
    if args.start_kwh is not None and (args.start_kwh < 0 or args.id is None):
        parser.error("--start-kwh needs --id and a non-negative value")
    if args.drain_timeout < 0:
        parser.error("--drain-timeout must be >= 0")
    url = urlsplit(args.server)
    if url.scheme not in ("http", "https") or not url.hostname:
        parser.error(f"--server must be an http(s) URL, not {args.server!r}")
    if args.udp is not None:
        udp_target(args)  # raises Fatal on nonsense; checked early


def udp_target(args: argparse.Namespace) -> tuple[str, int]:
    """``--udp HOST:PORT`` or the server's host with port 8080."""
    if args.udp is None:
        return urlsplit(args.server).hostname or "127.0.0.1", DEFAULT_UDP_PORT
    host, sep, port = args.udp.rpartition(":")
    if not sep:
        host, port = args.udp, str(DEFAULT_UDP_PORT)
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise Fatal(f"--udp: bad port in {args.udp!r}")
    return host, int(port)


# -- provisioning ----------------------------------------------------------------


async def provision(
    client: Any,
    count: int,
    concurrency: int = 16,
    rng: random.Random | None = None,
    name_prefix: str = "Casa de Teste",
) -> list[Credentials]:
    """Register ``count`` demo customers with one register-mode meter each.

    CPFs come from a system random source, not ``--seed``: a rerun with the same
    seed must not collide with the customers the previous run created. A
    collision (409) just draws another number.
    """

    rng = rng or random.SystemRandom()
    sem = DeferredSemaphore(concurrency)

    async def one(i: int) -> Credentials:
        for _attempt in range(8):
            base = f"{rng.randrange(10**9):09d}"
            try:
                cpf = make_cpf(base)
            except InvalidTaxId:
                continue
            try:
                customer = await client.register_customer(cpf, f"{name_prefix} {i + 1:04d}")
            except ApiError as e:
                if e.status == 409:
                    continue
                raise
            meter = await client.register_meter(customer["id"], mode="register")
            return Credentials(str(customer["id"]), int(meter["id_medidor"]), str(meter["key"]), customer.get("token"))
        raise Fatal("could not find a free CPF after 8 tries")

    def limited(i: int) -> Deferred[Credentials]:
        return sem.run(lambda: Deferred.fromCoroutine(one(i)))

    results = await gatherResults([limited(i) for i in range(count)], consumeErrors=True)
    return list(results)


def explain_api_error(e: BaseException, what: str) -> str:
    """One line for an HTTP failure during setup."""

    if isinstance(e, ServerUnreachable):
        return f"error: {what}: server not answering ({e.message})"
    if isinstance(e, ApiError):
        if e.status == 401:
            return f"error: {what}: the operator token was refused (401); check --token / --data-dir"
        if e.status == 403:
            return f"error: {what}: this token may not do that (403); use the operator token"
        return f"error: {what}: {e.status} {e}"
    return f"error: {what}: {e}"


async def resolve_credentials(
    reactor: Any, args: argparse.Namespace, out: Callable[[str], None], http: Any = None
) -> list[Credentials]:
    """Provision, or check the one meter given, talking to the HTTP API.

    ``http`` is treq's API (a ``StubTreq`` in tests).
    """
    from twisted.internet.defer import FirstError

    token = find_token(args.token, args.data_dir)
    if args.id is not None:
        start_wh = round(args.start_kwh * 1000) if args.start_kwh is not None else None
        if token is None:
            return [Credentials(args.id, args.meter, args.key, None, start_wh or 0)]
        client = MeterdClient(args.server, token, http=http, reactor=reactor)
        try:
            listing = await client.meters(args.id)
        except ServerUnreachable as e:
            out(f"warning: cannot check the meter over HTTP ({e.message}); sending anyway")
            return [Credentials(args.id, args.meter, args.key, None, start_wh or 0)]
        except ApiError as e:
            if e.status == 404:
                raise Fatal(f"error: unknown customer {args.id} (not registered on {args.server})") from None
            if e.status in (401, 403):  # a customer token of someone else, say: just go on
                out(f"warning: cannot check the meter over HTTP ({e.status}); sending anyway")
                return [Credentials(args.id, args.meter, args.key, None, start_wh or 0)]
            raise Fatal(explain_api_error(e, "checking the meter")) from None
        known = {int(m["id_medidor"]): m for m in listing.get("meters", [])}
        if args.meter not in known:
            have = ", ".join(str(k) for k in sorted(known)) or "none"
            raise Fatal(f"error: customer {args.id} has no meter {args.meter} (meters: {have})")
        last = known[args.meter].get("last_kwh")
        server_wh = round(float(last) * 1000) if last is not None else 0
        if start_wh is None:
            start_wh = server_wh
        elif start_wh < server_wh:
            raise Fatal(
                f"error: --start-kwh {start_wh / 1000:.3f} is below the server's register "
                f"{server_wh / 1000:.3f} kWh; readings would be rejected"
            )
        return [Credentials(args.id, args.meter, args.key, None, start_wh)]

    if token is None:
        raise Fatal(
            "error: no operator token: pass --token, set METERD_TOKEN, or run beside the server "
            f"(looked in {Path(args.data_dir or 'meterd-data') / 'operator.token'})"
        )
    count = args.fleet or 1
    client = MeterdClient(args.server, token, http=http, reactor=reactor)
    if count > 1:
        out(f"provisioning {count} customers and meters on {args.server}...")
    try:
        creds = await provision(client, count, args.concurrency)
    except FirstError as e:
        err = e.subFailure.value
        assert err is not None  # a Failure always holds its exception
        raise Fatal(explain_api_error(err, "provisioning")) from None
    except (ApiError, Fatal) as e:
        raise Fatal(explain_api_error(e, "provisioning")) from None
    if count == 1:
        c = creds[0]
        out(f"provisioned customer {c.customer_id} token {c.token}")
        out(f"provisioned meter {c.customer_id}/{c.meter_id} key {c.key}")
    else:
        out(f"provisioned {count} meters")
    if args.credentials:
        save_credentials(Path(args.credentials), creds)
        out(f"credentials saved to {args.credentials}")
    return creds


def save_credentials(path: Path, creds: list[Credentials]) -> None:
    doc = [{"id": c.customer_id, "token": c.token, "id_medidor": c.meter_id, "key": c.key} for c in creds]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)


# -- running ---------------------------------------------------------------------


def build_meters(creds: list[Credentials], seed: int, now: float, buffer: int) -> list[SimMeter]:
    """One household model per meter, each from ``seed`` and its position."""
    meters = []
    for i, c in enumerate(creds):
        model = LoadModel.from_seed(f"{seed}/{i}")
        outbox = Outbox(capacity=buffer, rng=random.Random(f"{seed}/outbox/{i}"))
        meters.append(SimMeter(c.customer_id, c.meter_id, bytes.fromhex(c.key), model, outbox, now, c.start_wh, i))
    return meters


class _Controller:
    """The stdin commands' view of the running simulator."""

    def __init__(self, sim: Simulator, quit: Any) -> None:
        self._sim = sim
        self._quit = quit

    @property
    def interval(self) -> float:
        return self._sim.interval

    def set_interval(self, seconds: float) -> None:
        self._sim.set_interval(seconds)

    def spike(self, kw: float | None, meter_number: int | None) -> str:
        return self._sim.spike(kw, meter_number)

    def set_load(self, kw: float) -> str:
        return self._sim.set_load(kw)

    def status_text(self) -> str:
        return self._sim.status_text()

    def quit(self) -> None:
        self._quit()

    def say(self, text: str) -> None:
        self._sim.say(text)


def _tune_socket(port: Any) -> None:
    sock = port.getHandle()
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError:
            pass


async def run(reactor: Any, args: argparse.Namespace) -> int:
    """Everything after option parsing; returns the exit status."""
    from twisted.internet import stdio

    tty = sys.stdout.isatty()

    def out(text: str) -> None:
        sys.stdout.write((wrap_message(text, terminal_width() - 1) if tty else text) + "\n")
        sys.stdout.flush()

    host, port = udp_target(args)
    try:
        ip = await reactor.resolve(host)
    except DNSLookupError:
        raise Fatal(f"error: cannot resolve UDP host {host!r}") from None
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    if args.seed is None:
        out(f"seed {seed} (pass --seed {seed} to repeat this run)")
    creds = await resolve_credentials(reactor, args, out)

    now = reactor.seconds()
    meters = build_meters(creds, seed, now, args.buffer)
    proto = AckProtocol(None)  # type: ignore[arg-type]  # set below, once the simulator exists
    udp = reactor.listenUDP(0, proto, maxPacketSize=8192)
    _tune_socket(udp)
    # Not connect()ed: on epoll a connected UDP socket that receives an ICMP
    # "port unreachable" is torn down by Twisted (EPOLLERR without EPOLLIN), so a
    # server restart would kill the meter. A silent server shows as missing acks.
    target = (ip, port)

    def send(datagram: bytes) -> None:
        udp.write(datagram, target)

    faults = FaultInjector(send, reactor, args.loss, args.dup, args.reorder, random.Random(f"{seed}/faults"))
    transmit = faults if faults.active else send

    cmd_box: list[CommandProtocol] = []

    def write(data: bytes) -> None:
        if cmd_box and cmd_box[0].transport is not None:
            cmd_box[0].transport.write(data)

    status = StatusLine(write, tty=tty, log_every=args.log_every)
    sim = Simulator(
        meters,
        transmit,
        reactor,
        status,
        interval=args.interval,
        backfill_s=(args.backfill or 0.0) * 86400.0,
        backfill_rate=args.backfill_rate,
        window=args.window,
        drain_timeout=args.drain_timeout,
        ack_warning=args.ack_warning,
        target=f"UDP {host}:{port}",
    )
    proto.simulator = sim
    if args.load_kw:
        sim.say(sim.set_load(args.load_kw, start=-math.inf))
    finished: Deferred[bool] = Deferred()

    chained = [False]

    def finish(drained: bool | Failure) -> None:
        if not finished.called:
            finished.callback(drained)

    def quit() -> None:
        d = sim.quit()
        if not chained[0]:
            chained[0] = True
            d.addBoth(finish)

    protocol = CommandProtocol(_Controller(sim, quit))
    cmd_box.append(protocol)
    stdio.StandardIO(protocol, reactor=reactor)

    interrupts = [0]

    def on_signal(signum: int, frame: Any) -> None:
        interrupts[0] += 1
        if interrupts[0] == 1:
            reactor.callFromThread(quit)
        else:  # a second ^C: stop without waiting
            reactor.callFromThread(finish, False)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.duration:
        reactor.callLater(args.duration, quit)

    sim.start()
    drained = await finished
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(sim.summary(), indent=1) + "\n")
    t = sim.totals()
    sim.say(
        f"done: sent {t['sent']} acked {t['acked']} resent {t['resent']} pending {t['pending']}"
        f" dropped {t['dropped']}" + (f"; injected loss {faults.lost} dup {faults.duplicated} reorder {faults.reordered}" if faults.active else "")
    )
    udp.stopListening()
    return EXIT_OK if drained else EXIT_PENDING


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    status = [EXIT_OK]

    def done(code: int) -> None:
        status[0] = code

    def failed(f: Any) -> None:
        if f.check(Fatal):
            msg = str(f.value)
            sys.stderr.write((msg if msg.startswith(("error", "warning")) else "error: " + msg) + "\n")
        else:
            sys.stderr.write(f"error: {f.getErrorMessage()}\n")
            f.printTraceback(file=sys.stderr)
        status[0] = EXIT_ERROR

    def start() -> None:
        d = Deferred.fromCoroutine(run(reactor, args))
        d.addCallbacks(done, failed)
        d.addBoth(lambda _: reactor.callLater(0.05, reactor.stop))

    core: IReactorCore = reactor
    core.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    return status[0]
