"""Command line of ``python -m clients.console``: interactive menus or subcommands.

Subcommands and flags follow DESIGN §8 (``cliente``, ``medidor``,
``medidores``, ``fatura``, ``historico``, ``alarmes``, ``ack``; global
``--server --token --json --lang``), so scripts written against the design
keep working; the operator's management adds ``buscar``, ``ficha``,
``alterar``, ``retirar``, ``substituir`` and ``auditoria``, whose pages end
with the ``--cursor`` of the next; ``exportar`` writes a customer's readings
or history to a CSV file (:mod:`.export`); ``webhook``, ``webhooks`` and
``remove-webhook`` manage the alarm webhooks. The global options may come before or after the subcommand:
each subcommand repeats them with a default of ``SUPPRESS``, so a value given
after it overrides the one before and an absent one leaves it alone.

Everything printed, ``--help`` included, is in one language (``--lang``, or
``METERD_LANG``; Portuguese by default).

Exit status: 0 success, 1 the server refused (its error on stderr), 2 bad
input caught before sending, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar, cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

import meterd
from clients.api import DEFAULT_SERVER, TOKEN_ENV, ApiError, MeterdClient, ServerUnreachable, find_token

from . import billing
from .argparse_i18n import argparse_language
from .choices import KIND, LIGACAO, METER_MODE, Choice
from .errors import Invalid, describe_error
from .export import ExportFile, Progress
from .fields import parse_choice, parse_date_or_time, parse_int, parse_kwh, parse_positive_number, parse_taxid, parse_text, parse_url, parse_when
from .messages import LANGS, Messages
from .render import Renderer
from .waiting import Spinner

__all__ = ["build_parser", "main", "run_command", "EXIT_OK", "EXIT_API", "EXIT_INPUT", "EXIT_UNREACHABLE"]

EXIT_OK = 0
EXIT_API = 1
EXIT_INPUT = 2
EXIT_UNREACHABLE = 3

T = TypeVar("T")

LANG_ENV = "METERD_LANG"
SERVER_ENV = "METERD_SERVER"
DEFAULT_TIMEOUT = 10.0
DEFAULT_POLL = 30.0
BILLING_POLL = 0.5  # seconds between looks at a billing run's progress
DEFAULT_PAGE = 20
RESIZE_SETTLE = 0.15  # seconds without a new size before the screen is redrawn


def _lang_from(argv: Sequence[str]) -> str:
    """--lang decides the language of --help itself, so peek at it first,
    wherever it is on the line (up to a ``--``)."""
    lang = os.environ.get(LANG_ENV, "")
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--lang" and i + 1 < len(argv):
            lang = argv[i + 1]
        elif arg.startswith("--lang="):
            lang = arg.split("=", 1)[1]
    return lang if lang in LANGS else "pt"


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """A field parser (:mod:`.fields`) as an argparse type: a value refused
    there is argparse's one-line error here, in the same words."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except Invalid as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _seconds(m: Messages) -> Callable[[str], float]:
    return _arg(lambda t: float(parse_positive_number(m, t)))


def _whole(m: Messages, minimum: int) -> Callable[[str], int]:
    return _arg(lambda t: parse_int(m, t, minimum=minimum))


def _choice_arg(m: Messages, choice: Choice) -> Callable[[str], str]:
    """A flag taking a choice's label in the screen's language, or the API's value."""
    return _arg(lambda t: parse_choice(m, choice, t))


def _choice_metavar(m: Messages, choice: Choice) -> str:
    return "{" + ",".join(choice.labels(m)) + "}"


def _global_options(p: argparse.ArgumentParser, m: Messages, *, main: bool) -> None:
    """The options every subcommand takes too; only the main parser has defaults."""

    def default(value: Any) -> Any:
        return value if main else argparse.SUPPRESS

    server = os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    p.add_argument("--server", default=default(server), metavar=m("metavar.server"), help=m("help.server", default=server))
    p.add_argument("--token", default=default(None), metavar=m("metavar.token"), help=m("help.token", env=TOKEN_ENV))
    p.add_argument("--data-dir", default=default(None), metavar=m("metavar.dir"), help=m("help.data_dir"))
    p.add_argument("--json", action="store_true", default=default(False), help=m("help.json"))
    p.add_argument("--lang", choices=LANGS, default=default(m.lang), help=m("help.lang"))
    p.add_argument(
        "--timeout",
        type=_seconds(m),
        default=default(DEFAULT_TIMEOUT),
        metavar=m("metavar.seconds"),
        help=m("help.timeout", default=m.number(DEFAULT_TIMEOUT)),
    )
    p.add_argument("--plain", action="store_true", default=default(False), help=m("help.plain"))
    p.add_argument("--verbose", "-v", action="store_true", default=default(False), help=m("help.verbose"))


def build_parser(m: Messages) -> argparse.ArgumentParser:
    """The console's parser, its texts in ``m``'s language (argparse's own words
    too when built inside :func:`~.argparse_i18n.argparse_language`)."""
    p = argparse.ArgumentParser(prog="python -m clients.console", description=m("cli.description"), epilog=m("cli.epilog"))
    p.add_argument("--version", action="version", version=f"%(prog)s {meterd.__version__}", help=m("help.version"))
    _global_options(p, m, main=True)
    p.add_argument(
        "--poll",
        type=_seconds(m),
        default=DEFAULT_POLL,
        metavar=m("metavar.seconds"),
        help=m("help.poll", default=m.number(DEFAULT_POLL)),
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument("--operator", action="store_true", help=m("help.operator"))
    who.add_argument("--customer", metavar=m("metavar.id"), default=None, help=m("help.customer"))

    sub = p.add_subparsers(dest="command", metavar=m("metavar.command"))

    def command(name: str, *, customer: bool | None = True) -> argparse.ArgumentParser:
        """A subcommand; ``--id`` required (``customer``), optional (None: everyone's) or not taken (False)."""
        c = sub.add_parser(name, help=m(f"help.cmd.{name}"), description=m(f"help.cmd.{name}"), epilog=m("cli.epilog"))
        if customer is not False:
            c.add_argument("--id", required=bool(customer), metavar=m("metavar.id"), help=m("help.id" if customer else "help.id_optional"))
        return c

    def page_options(c: argparse.ArgumentParser) -> None:
        c.add_argument("--cursor", default=None, metavar=m("metavar.cursor"), help=m("help.page_cursor"))
        c.add_argument("--limite", type=_whole(m, 1), default=DEFAULT_PAGE, metavar=m("metavar.count"),
                       help=m("help.limite", default=DEFAULT_PAGE))

    def when_option(c: argparse.ArgumentParser) -> None:
        c.add_argument("--timestamp", type=_arg(lambda t: parse_when(m, t)), default=None, metavar=m("metavar.when"), help=m("help.quando"))

    def choice_option(c: argparse.ArgumentParser, flag: str, choice: Choice, help_key: str) -> None:
        labels = choice.labels(m)
        c.add_argument(
            flag,
            type=_choice_arg(m, choice),
            metavar=_choice_metavar(m, choice),
            help=m(help_key, choices=", ".join(labels), default=choice.label(m, choice.default)),
        )

    c = command("cliente")
    c.add_argument("--name", required=True, metavar=m("metavar.name"), help=m("help.name"))
    choice_option(c, "--ligacao", LIGACAO, "help.ligacao")
    c.add_argument("--limite-kw", type=_arg(lambda t: parse_positive_number(m, t)), metavar=m("metavar.kw"), help=m("help.limite_kw"))
    c.add_argument("--limite-kwh", type=_arg(lambda t: parse_positive_number(m, t)), metavar=m("metavar.kwh"), help=m("help.limite_kwh"))
    c.add_argument("--tz", metavar=m("metavar.tz"), help=m("help.tz"))

    c = command("medidor")
    choice_option(c, "--mode", METER_MODE, "help.mode")

    command("medidores")

    command("novo-token")

    c = command("nova-chave")
    c.add_argument("--medidor", type=_whole(m, 1), required=True, metavar=m("metavar.meter"), help=m("help.medidor_key"))

    c = command("fatura")
    c.add_argument("--periodo", type=_whole(m, 0), default=0, metavar=m("metavar.months"), help=m("help.periodo_bill"))
    c.add_argument("--codigo", choices=("pix", "barras"), default=None, help=m("help.codigo"))

    c = command("faturamento", customer=False)
    c.add_argument("--periodo", type=_whole(m, 1), default=1, metavar=m("metavar.months"), help=m("help.periodo_run"))
    c.add_argument("--execucao", type=_whole(m, 1), default=None, metavar=m("metavar.run"), help=m("help.execucao"))
    c.add_argument("--resultado", choices=("csv", "jsonl"), default=None, help=m("help.resultado"))

    c = command("historico")
    c.add_argument(
        "--kind", required=True, type=_choice_arg(m, KIND), metavar=_choice_metavar(m, KIND), help=m("help.kind")
    )
    c.add_argument("--periodo", type=_whole(m, 0), default=0, metavar=m("metavar.periods"), help=m("help.periodo_hist"))
    c.add_argument("--medidor", type=_whole(m, 1), default=None, metavar=m("metavar.meter"), help=m("help.medidor"))

    c = command("alarmes")
    c.add_argument("--cursor", type=_whole(m, 0), default=None, metavar=m("metavar.cursor"), help=m("help.cursor"))

    c = command("ack")
    c.add_argument("--alarm", type=_whole(m, 1), required=True, metavar=m("metavar.alarm"), help=m("help.alarm"))

    c = command("buscar", customer=False)
    c.add_argument("--texto", required=True, type=_arg(lambda t: parse_text(m, t)), metavar=m("metavar.text"), help=m("help.texto"))
    page_options(c)

    command("ficha")

    c = command("alterar")
    c.add_argument("--name", metavar=m("metavar.name"), help=m("help.name"))
    choice_option(c, "--ligacao", LIGACAO, "help.ligacao")
    c.add_argument("--tz", metavar=m("metavar.tz"), help=m("help.tz"))
    c.add_argument("--limite-kw", type=_arg(lambda t: parse_positive_number(m, t)), metavar=m("metavar.kw"), help=m("help.limite_kw"))
    c.add_argument("--limite-kwh", type=_arg(lambda t: parse_positive_number(m, t)), metavar=m("metavar.kwh"), help=m("help.limite_kwh"))

    c = command("retirar")
    c.add_argument("--medidor", type=_whole(m, 1), required=True, metavar=m("metavar.meter"), help=m("help.medidor_retire"))
    c.add_argument("--valor", type=_arg(lambda t: parse_kwh(m, t)), required=True, metavar=m("metavar.kwh"), help=m("help.valor_final"))
    when_option(c)

    c = command("substituir")
    c.add_argument("--medidor", type=_whole(m, 1), required=True, metavar=m("metavar.meter"), help=m("help.medidor_replace"))
    c.add_argument("--valor", type=_arg(lambda t: parse_kwh(m, t)), default="0", metavar=m("metavar.kwh"), help=m("help.valor_inicial"))
    when_option(c)
    c.add_argument("--mode", type=_choice_arg(m, METER_MODE), metavar=_choice_metavar(m, METER_MODE),
                   help=m("help.new_mode", choices=", ".join(METER_MODE.labels(m))))

    c = command("auditoria", customer=None)
    page_options(c)

    c = command("exportar")
    c.add_argument("--historico", action="store_true", help=m("help.historico_export"))
    c.add_argument("--kind", type=_choice_arg(m, KIND), metavar=_choice_metavar(m, KIND), help=m("help.kind_export"))
    c.add_argument("--periodo", type=_whole(m, 0), default=None, metavar=m("metavar.periods"), help=m("help.periodo_hist"))
    c.add_argument("--inicio", type=_arg(lambda t: parse_date_or_time(m, t)), metavar=m("metavar.date"), help=m("help.inicio"))
    c.add_argument("--fim", type=_arg(lambda t: parse_date_or_time(m, t)), metavar=m("metavar.date"), help=m("help.fim"))
    c.add_argument("--medidor", type=_whole(m, 1), default=None, metavar=m("metavar.meter"), help=m("help.medidor"))
    c.add_argument("--saida", "-o", default=None, metavar=m("metavar.file"), help=m("help.saida"))

    c = command("webhook", customer=None)
    c.add_argument("--url", required=True, type=_arg(lambda t: parse_url(m, t)), metavar=m("metavar.url"), help=m("help.url"))
    command("webhooks", customer=False)
    c = command("remove-webhook", customer=False)
    c.add_argument("--webhook", type=_whole(m, 1), required=True, metavar=m("metavar.webhook"), help=m("help.webhook"))

    for parser in sub.choices.values():
        _global_options(parser, m, main=False)
    return p


def _check_server(url: str) -> bool:
    return url.startswith(("http://", "https://")) and len(url.split("://", 1)[1]) > 0


async def run_command(
    args: argparse.Namespace,
    client: MeterdClient,
    m: Messages,
    renderer: Renderer,
    stdout: TextIO,
    stderr: TextIO,
    *,
    waiting: Spinner | None = None,
    progress: Progress | None = None,
    timer: IReactorTime | None = None,
    poll: float = BILLING_POLL,
    clock: Callable[[], float] = time.time,
) -> int:
    """Run one subcommand; print the result; return the exit status.

    ``waiting`` (on a terminal) says the server is being asked while it is;
    ``progress`` (on a terminal) draws a billing run's progress, polled every
    ``poll`` seconds on ``timer``; ``clock`` is what "now" is for a reading given no time.
    """
    if args.command == "faturamento":
        return await _billing(args, client, m, renderer, stdout, stderr, timer=timer, poll=poll, progress=progress)
    try:
        cid = parse_taxid(m, args.id) if getattr(args, "id", None) else ""
        cmd = args.command
        if cmd == "exportar":
            return await run_export(args, cid, client, m, stdout, stderr, waiting=waiting)
        if cmd == "webhook":
            call = client.register_webhook(args.url, cid or None)
            view: Callable[[dict[str, Any]], str] = renderer.webhook_created
        elif cmd == "webhooks":
            call, view = client.webhooks(), renderer.webhooks
        elif cmd == "remove-webhook":
            call, view = client.remove_webhook(args.webhook), renderer.webhook_removed
        elif cmd == "cliente":
            call = client.register_customer(
                cid, args.name, ligacao=args.ligacao, limite_kw=args.limite_kw, limite_kwh=args.limite_kwh, tz=args.tz
            )
            view = renderer.customer_created
        elif cmd == "medidor":
            call, view = client.register_meter(cid, mode=args.mode), renderer.meter_created
        elif cmd == "medidores":
            call, view = client.meters(cid), renderer.meters
        elif cmd == "novo-token":
            call, view = client.new_token(cid), renderer.new_token
        elif cmd == "nova-chave":
            call, view = client.new_key(cid, args.medidor), renderer.new_key
        elif cmd == "fatura" and args.codigo:
            return await _svg(args, client, cid, m, stdout, stderr)
        elif cmd == "fatura":
            call, view = client.bill(cid, args.periodo), renderer.bill
        elif cmd == "historico":
            call, view = client.history(cid, args.kind, args.periodo, id_medidor=args.medidor), renderer.history
        elif cmd == "alarmes":
            call, view = client.alarms(cid, args.cursor), renderer.alarms
        elif cmd == "ack":
            call = client.ack_alarm(cid, args.alarm)
            view = lambda doc: m("result.acked", alarm_id=doc.get("alarm_id", args.alarm)) + "\n"  # noqa: E731
        elif cmd == "buscar":
            call = client.search_customers(args.texto, cursor=args.cursor, limite=args.limite)
            view = lambda doc: renderer.search(doc, m("page.more_cli", cursor=doc.get("cursor")))  # noqa: E731
        elif cmd == "ficha":
            call, view = client.customer(cid), renderer.record
        elif cmd == "alterar":
            changes = {"name": args.name, "ligacao": args.ligacao, "tz": args.tz, "limite_kw": args.limite_kw, "limite_kwh": args.limite_kwh}
            if all(v is None for v in changes.values()):
                raise Invalid(m("result.nothing_to_change"))
            call, view = client.update_customer(cid, **changes), renderer.updated
        elif cmd == "retirar":
            call = client.retire_meter(cid, args.medidor, args.valor, _now_or(args.timestamp, clock))
            view = renderer.retired
        elif cmd == "substituir":
            call = client.replace_meter(cid, args.medidor, args.valor, _now_or(args.timestamp, clock), mode=args.mode)
            view = renderer.replaced
        elif cmd == "auditoria":
            call = client.audit(cid or None, cursor=args.cursor, limite=args.limite)
            view = lambda doc: renderer.audit(doc, m("page.more_cli", cursor=doc.get("cursor")))  # noqa: E731
        else:  # pragma: no cover - argparse restricts the choices
            raise Invalid(cmd)
    except Invalid as e:
        stderr.write(str(e) + "\n")
        return EXIT_INPUT
    try:
        doc = await _waiting_for(call, waiting, m("wait.connecting", server=client.server))
    except ApiError as e:
        _refused(e, args, m, stderr)
        return EXIT_UNREACHABLE if isinstance(e, ServerUnreachable) else EXIT_API
    if args.json:
        stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        stdout.write(view(doc))
    return EXIT_OK


async def _billing(
    args: argparse.Namespace,
    client: MeterdClient,
    m: Messages,
    renderer: Renderer,
    stdout: TextIO,
    stderr: TextIO,
    *,
    timer: IReactorTime | None,
    poll: float,
    progress: Progress | None,
) -> int:
    """``faturamento``: follow a run (exit 1 when it was cut short), or write what it issued."""
    if timer is None:
        from twisted.internet import reactor

        timer = cast(IReactorTime, reactor)
    try:
        if args.resultado:
            await billing.write_result(args, client, stdout)
            return EXIT_OK
        done = await billing.follow(args, client, m, renderer, stdout, clock=timer, poll=poll, progress=progress)
    except ApiError as e:
        _refused(e, args, m, stderr)
        return EXIT_UNREACHABLE if isinstance(e, ServerUnreachable) else EXIT_API
    return EXIT_OK if done else EXIT_API


async def _svg(args: argparse.Namespace, client: MeterdClient, cid: str, m: Messages, stdout: TextIO, stderr: TextIO) -> int:
    """``fatura --codigo``: the payment code's SVG, as the server drew it, on stdout."""
    out = billing.Output(stdout)
    try:
        await client.bill_code(cid, args.periodo, args.codigo, out)
    except ApiError as e:
        _refused(e, args, m, stderr)
        return EXIT_UNREACHABLE if isinstance(e, ServerUnreachable) else EXIT_API
    out.close()
    stdout.write("\n")
    return EXIT_OK


def _refused(e: ApiError, args: argparse.Namespace, m: Messages, stderr: TextIO) -> None:
    if args.json:
        stderr.write(json.dumps({"error": {"code": e.code, "message": e.message}}, ensure_ascii=False) + "\n")
    else:
        stderr.write(describe_error(e, m, verbose=args.verbose) + "\n")


async def run_export(
    args: argparse.Namespace, cid: str, client: MeterdClient, m: Messages, stdout: TextIO, stderr: TextIO,
    *, waiting: Spinner | None = None, binary_stdout: Any = None,
) -> int:
    """``exportar``: the readings (or, with ``--historico``, the history) as a CSV file; where it went on stdout."""
    if args.historico and args.kind is None:
        raise Invalid(m("invalid.historico_kind"))
    if args.kind is not None and (args.inicio or args.fim):
        raise Invalid(m("invalid.kind_or_dates"))
    if args.historico:
        path, query = "/getConsumoHist", {"kind": args.kind, "periodo": args.periodo or 0}
    else:
        path, query = "/getLeituras", {"kind": args.kind, "periodo": args.periodo, "inicio": args.inicio, "fim": args.fim}
    progress = None
    if _terminal(stderr):
        def draw(text: str) -> None:
            stderr.write(text)
            stderr.flush()

        progress = Progress(draw, m, shutil.get_terminal_size().columns, ascii_only=args.plain)
    if waiting is not None:
        waiting.start(m("wait.connecting", server=client.server))
    receiver = ExportFile(args.saida, progress=progress, began=waiting.stop if waiting else None, stdout=binary_stdout)
    try:
        await client.download(path, {"id": cid, "id_medidor": args.medidor, **query}, receiver)
    except ApiError as e:
        receiver.abandon()
        if waiting is not None:
            waiting.stop()
        stderr.write(describe_error(e, m, verbose=args.verbose) + "\n")
        return EXIT_UNREACHABLE if isinstance(e, ServerUnreachable) else EXIT_API
    except OSError as e:
        receiver.abandon()
        stderr.write(m("export.cannot_write", path=str(receiver.path or args.saida), reason=e.strerror or str(e)) + "\n")
        return EXIT_API
    written = receiver.finish()
    size = m.number(round(receiver.size / 1_000_000, 1))
    if args.json:
        report = {"file": None if written is None else str(written), "rows": receiver.rows, "bytes": receiver.size}
        (stderr if written is None else stdout).write(json.dumps(report, ensure_ascii=False) + "\n")
    elif written is None:
        stderr.write(m("export.done_stdout", rows=receiver.rows, size=size) + "\n")
    else:
        stdout.write(m("export.done", path=str(written), rows=receiver.rows, size=size) + "\n")
    return EXIT_OK


def _now_or(timestamp: float | None, clock: Callable[[], float]) -> float:
    return clock() if timestamp is None else timestamp


async def _waiting_for(call: Deferred[dict[str, Any]], waiting: Spinner | None, text: str) -> dict[str, Any]:
    """The answer to ``call``, with ``waiting`` turning meanwhile; it is erased
    before the caller prints anything, answer or error."""
    if waiting is None:
        return await call
    waiting.start(text)
    try:
        return await call
    finally:
        waiting.stop()


def _terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def _stream_spinner(stream: TextIO, clock: IReactorTime, ascii_only: bool) -> Spinner | None:
    """A spinner on ``stream`` if a person is watching it, else none."""
    if not _terminal(stream):
        return None

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return Spinner(write, clock, ascii_only=ascii_only)


def _stream_progress(stream: TextIO, ascii_only: bool, m: Messages) -> Progress | None:
    """A billing run's progress bar on ``stream`` if a person is watching it (pipes get nothing)."""
    if not _terminal(stream):
        return None

    def write(text: str) -> None:
        stream.write(text)
        stream.flush()

    return Progress(write, m, shutil.get_terminal_size().columns, ascii_only=ascii_only, key="billing.progress")


async def _reachable(reactor: Any, args: argparse.Namespace, m: Messages, ascii_only: bool) -> bool:
    """Ask ``/health`` before asking the person anything; say so if nobody answers.

    Any HTTP answer, even an error (a store that is down answers 503), means
    a server is there: the menus' own requests report what it says.
    """
    waiting = _stream_spinner(sys.stdout, reactor, ascii_only)
    health = MeterdClient(args.server, None, reactor=reactor, timeout=args.timeout).health()
    try:
        await _waiting_for(health, waiting, m("wait.connecting", server=args.server))
    except ServerUnreachable as e:
        sys.stderr.write(describe_error(e, m, verbose=args.verbose) + "\n")
        return False
    except ApiError:
        pass
    return True


def _echo_switch(fd: int) -> Callable[[bool], None]:
    """Turn a cooked terminal's echo on or off (for a secret typed at a LineFrontend)."""
    import termios

    def switch(on: bool) -> None:
        attrs = termios.tcgetattr(fd)
        attrs[3] = attrs[3] | termios.ECHO if on else attrs[3] & ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    return switch


async def _interactive(reactor: Any, args: argparse.Namespace, m: Messages, renderer: Renderer) -> int:
    from twisted.internet import stdio

    from .frontend import LineFrontend, TerminalFrontend
    from .menu import Menu, Output

    ascii_only = args.plain
    if not await _reachable(reactor, args, m, ascii_only):
        return EXIT_UNREACHABLE

    customer_id = parse_taxid(m, args.customer) if args.customer else None

    def make_client(token: str | None) -> MeterdClient:
        return MeterdClient(args.server, token, reactor=reactor, timeout=args.timeout)

    def menu_factory(out: Output) -> Menu:
        return Menu(
            out,
            msgs=m,
            renderer=renderer,
            make_client=make_client,
            clock=reactor,
            poll_interval=args.poll,
            operator_token=find_token(args.token, args.data_dir),
            customer_token=(args.token or os.environ.get(TOKEN_ENV, "").strip() or None),
            start_mode="operator" if args.operator else ("customer" if args.customer else None),
            customer_id=customer_id,
            verbose=args.verbose,
        )

    done: Deferred[None] = Deferred()
    if not (_terminal(sys.stdin) and _terminal(sys.stdout)):
        echo = _echo_switch(sys.stdin.fileno()) if _terminal(sys.stdin) else None
        stdio.StandardIO(LineFrontend(menu_factory, done, echo), reactor=reactor)
        await done
        return EXIT_OK

    import termios
    import tty

    from twisted.conch.insults.insults import ServerProtocol

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    previous = signal.getsignal(signal.SIGWINCH)
    try:
        terminal = ServerProtocol(TerminalFrontend, menu_factory, done, reactor, ascii_only)
        stdio.StandardIO(terminal, reactor=reactor)

        pending: list[Any] = []

        def resized() -> None:
            pending.clear()
            size = os.get_terminal_size(sys.stdout.fileno())
            frontend = terminal.terminalProtocol
            if isinstance(frontend, TerminalFrontend):  # None once stdio has closed: nothing to redraw
                frontend.terminalSize(size.columns, size.lines)

        def settle() -> None:
            # A window being dragged sends a burst of SIGWINCH: draw once it rests.
            if pending:
                pending[0].reset(RESIZE_SETTLE)
            else:
                pending.append(reactor.callLater(RESIZE_SETTLE, resized))

        signal.signal(signal.SIGWINCH, lambda signum, frame: reactor.callFromThread(settle))
        await done
    finally:
        signal.signal(signal.SIGWINCH, previous)
        termios.tcsetattr(fd, termios.TCSANOW, saved)
        sys.stdout.write("\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    m = Messages(_lang_from(argv))
    with argparse_language(m.lang):
        args = build_parser(m).parse_args(argv)
    if not _check_server(args.server):
        sys.stderr.write(m("error.bad_server", server=args.server) + "\n")
        return EXIT_INPUT
    color = _terminal(sys.stdout) and not args.plain and not os.environ.get("NO_COLOR")
    if _terminal(sys.stdout):
        size = shutil.get_terminal_size()
        renderer = Renderer(m, color=color, width=size.columns, height=size.lines)
    else:
        renderer = Renderer(m, color=False, width=100)

    if args.command:
        token = find_token(args.token, args.data_dir)

        def command(reactor: Any) -> Deferred[int]:
            client = MeterdClient(args.server, token, reactor=reactor, timeout=args.timeout)
            waiting = _stream_spinner(sys.stderr, reactor, args.plain)
            progress = _stream_progress(sys.stderr, args.plain, m)
            return ensureDeferred(
                run_command(args, client, m, renderer, sys.stdout, sys.stderr, waiting=waiting, progress=progress, timer=reactor)
            )

        return _run_reactor(command)

    if args.customer:
        try:
            parse_taxid(m, args.customer)
        except Invalid as e:
            sys.stderr.write(str(e) + "\n")
            return EXIT_INPUT
    return _run_reactor(lambda reactor: ensureDeferred(_interactive(reactor, args, m, renderer)))


def _run_reactor(start: Callable[[Any], Deferred[Any]]) -> int:
    """Run the reactor until ``start(reactor)``'s Deferred fires; return its int (or 0)."""
    from twisted.internet import reactor

    result: dict[str, Any] = {"code": EXIT_OK}

    def go() -> None:
        d = start(reactor)

        def finish(value: Any) -> None:
            if isinstance(value, int) and not isinstance(value, bool):
                result["code"] = value
            reactor.stop()

        def crash(failure: Any) -> None:
            sys.stderr.write(f"{failure.type.__name__}: {failure.getErrorMessage()}\n")
            result["code"] = EXIT_API
            reactor.stop()

        d.addCallbacks(finish, crash)

    reactor.callWhenRunning(go)
    reactor.run()
    return result["code"]
