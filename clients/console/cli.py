"""Command line of ``python -m clients.console``: interactive menus or subcommands.

Subcommands and flags follow DESIGN §8 exactly (``cliente``, ``medidor``,
``medidores``, ``fatura``, ``historico``, ``alarmes``, ``ack``; global
``--server --token --json --lang`` before the subcommand) so scripts written
against the design keep working.

Exit status of a subcommand: 0 success, 1 the server refused (its error on
stderr), 2 bad input caught before sending, 3 server unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Callable, Sequence, TextIO

from twisted.internet.defer import Deferred, ensureDeferred

from clients.api import DEFAULT_SERVER, TOKEN_ENV, ApiError, MeterdClient, ServerUnreachable, find_token

from .menu import Invalid, describe_error, parse_taxid
from .messages import LANGS, Messages
from .render import Renderer

__all__ = ["build_parser", "main", "run_command", "EXIT_OK", "EXIT_API", "EXIT_INPUT", "EXIT_UNREACHABLE"]

EXIT_OK = 0
EXIT_API = 1
EXIT_INPUT = 2
EXIT_UNREACHABLE = 3

COMMANDS = ("cliente", "medidor", "medidores", "fatura", "historico", "alarmes", "ack")


def _lang_from(argv: Sequence[str]) -> str:
    """--lang decides the language of --help itself, so peek at it first."""
    for i, arg in enumerate(argv):
        if arg in COMMANDS:
            break
        if arg == "--lang" and i + 1 < len(argv):
            return argv[i + 1] if argv[i + 1] in LANGS else "pt"
        if arg.startswith("--lang="):
            value = arg.split("=", 1)[1]
            return value if value in LANGS else "pt"
    env = os.environ.get("METERD_LANG", "")
    return env if env in LANGS else "pt"


def build_parser(m: Messages) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clients.console", description=m("cli.description"))
    p.add_argument("--server", default=os.environ.get("METERD_SERVER", DEFAULT_SERVER), help=m("help.server"))
    p.add_argument("--token", default=None, help=m("help.token", env=TOKEN_ENV))
    p.add_argument("--data-dir", default=None, help=m("help.data_dir"))
    p.add_argument("--json", action="store_true", help=m("help.json"))
    p.add_argument("--lang", choices=LANGS, default=m.lang, help=m("help.lang"))
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS", help=m("help.poll"))
    p.add_argument("--plain", action="store_true", help=m("help.plain"))
    who = p.add_mutually_exclusive_group()
    who.add_argument("--operator", action="store_true", help=m("help.operator"))
    who.add_argument("--customer", metavar="ID", default=None, help=m("help.customer"))

    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("cliente", help=m("help.cmd.cliente"))
    c.add_argument("--id", required=True, help=m("help.id"))
    c.add_argument("--name", required=True, help=m("help.name"))
    c.add_argument("--ligacao", choices=("mono", "bi", "tri"), help=m("help.ligacao"))
    c.add_argument("--limite-kw", type=float, help=m("help.limite_kw"))
    c.add_argument("--limite-kwh", type=float, help=m("help.limite_kwh"))
    c.add_argument("--tz", help=m("help.tz"))

    c = sub.add_parser("medidor", help=m("help.cmd.medidor"))
    c.add_argument("--id", required=True, help=m("help.id"))
    c.add_argument("--mode", choices=("register", "interval"), help=m("help.mode"))

    c = sub.add_parser("medidores", help=m("help.cmd.medidores"))
    c.add_argument("--id", required=True, help=m("help.id"))

    c = sub.add_parser("fatura", help=m("help.cmd.fatura"))
    c.add_argument("--id", required=True, help=m("help.id"))
    c.add_argument("--periodo", type=int, default=0, help=m("help.periodo_bill"))

    c = sub.add_parser("historico", help=m("help.cmd.historico"))
    c.add_argument("--id", required=True, help=m("help.id"))
    c.add_argument("--kind", required=True, type=str.upper, choices=("D", "M", "Y"), help=m("help.kind"))
    c.add_argument("--periodo", type=int, default=0, help=m("help.periodo_hist"))
    c.add_argument("--medidor", type=int, default=None, help=m("help.medidor"))

    c = sub.add_parser("alarmes", help=m("help.cmd.alarmes"))
    c.add_argument("--id", required=True, help=m("help.id"))
    c.add_argument("--cursor", type=int, default=None, help=m("help.cursor"))

    c = sub.add_parser("ack", help=m("help.cmd.ack"))
    c.add_argument("--id", required=True, help=m("help.id"))
    c.add_argument("--alarm", type=int, required=True, help=m("help.alarm"))
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
) -> int:
    """Run one subcommand; print the result; return the exit status."""
    try:
        cid = parse_taxid(m, args.id)
        if getattr(args, "periodo", 0) is not None and getattr(args, "periodo", 0) < 0:
            raise Invalid(m("invalid.nonnegative"))
        cmd = args.command
        if cmd == "cliente":
            call = client.register_customer(
                cid, args.name, ligacao=args.ligacao, limite_kw=args.limite_kw, limite_kwh=args.limite_kwh, tz=args.tz
            )
            view: Callable[[dict[str, Any]], str] = renderer.customer_created
        elif cmd == "medidor":
            call, view = client.register_meter(cid, mode=args.mode), renderer.meter_created
        elif cmd == "medidores":
            call, view = client.meters(cid), renderer.meters
        elif cmd == "fatura":
            call, view = client.bill(cid, args.periodo), renderer.bill
        elif cmd == "historico":
            if args.medidor is not None and args.medidor < 1:
                raise Invalid(m("invalid.positive_int", value=str(args.medidor)))
            call, view = client.history(cid, args.kind, args.periodo, id_medidor=args.medidor), renderer.history
        elif cmd == "alarmes":
            call, view = client.alarms(cid, args.cursor), renderer.alarms
        elif cmd == "ack":
            if args.alarm < 1:
                raise Invalid(m("invalid.positive_int", value=str(args.alarm)))
            call = client.ack_alarm(cid, args.alarm)
            view = lambda doc: m("result.acked", alarm_id=doc.get("alarm_id", args.alarm)) + "\n"  # noqa: E731
        else:  # pragma: no cover - argparse restricts the choices
            raise Invalid(cmd)
    except Invalid as e:
        stderr.write(str(e) + "\n")
        return EXIT_INPUT
    try:
        doc = await call
    except ApiError as e:
        if args.json:
            stderr.write(json.dumps({"error": {"code": e.code, "message": e.message}}, ensure_ascii=False) + "\n")
        else:
            stderr.write(describe_error(e, m) + "\n")
        return EXIT_UNREACHABLE if isinstance(e, ServerUnreachable) else EXIT_API
    if args.json:
        stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
    else:
        stdout.write(view(doc))
    return EXIT_OK


def _interactive(reactor: Any, args: argparse.Namespace, m: Messages, renderer: Renderer) -> Deferred[None]:
    from twisted.internet import stdio

    from .frontend import LineFrontend, TerminalFrontend
    from .menu import Menu, Output

    customer_id = None
    if args.customer:
        customer_id = parse_taxid(m, args.customer)

    def make_client(token: str | None) -> MeterdClient:
        return MeterdClient(args.server, token, reactor=reactor)

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
        )

    done: Deferred[None] = Deferred()
    if sys.stdin.isatty() and sys.stdout.isatty():
        from twisted.conch.insults.insults import ServerProtocol

        stdio.StandardIO(ServerProtocol(TerminalFrontend, menu_factory, done), reactor=reactor)
    else:
        stdio.StandardIO(LineFrontend(menu_factory, done), reactor=reactor)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    m = Messages(_lang_from(argv))
    args = build_parser(m).parse_args(argv)
    m = Messages(args.lang)
    if not _check_server(args.server):
        sys.stderr.write(m("error.bad_server", server=args.server) + "\n")
        return EXIT_INPUT
    if args.poll <= 0:
        sys.stderr.write(m("invalid.number", value=str(args.poll)) + "\n")
        return EXIT_INPUT
    color = sys.stdout.isatty() and not args.plain and not os.environ.get("NO_COLOR")
    width = shutil.get_terminal_size((100, 24)).columns if color else 100
    renderer = Renderer(m, color=color, width=width)

    if args.command:
        from twisted.internet import reactor

        token = find_token(args.token, args.data_dir)
        client = MeterdClient(args.server, token, reactor=reactor)
        return _run_reactor(lambda: ensureDeferred(run_command(args, client, m, renderer, sys.stdout, sys.stderr)))

    if args.customer:
        try:
            parse_taxid(m, args.customer)
        except Invalid as e:
            sys.stderr.write(str(e) + "\n")
            return EXIT_INPUT

    from twisted.internet import reactor

    if sys.stdin.isatty() and sys.stdout.isatty():
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setraw(fd)
        try:
            return _run_reactor(lambda: _interactive(reactor, args, m, renderer))
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
            sys.stdout.write("\n")
    return _run_reactor(lambda: _interactive(reactor, args, m, renderer))


def _run_reactor(start: Callable[[], Deferred[Any]]) -> int:
    """Run the reactor until ``start()``'s Deferred fires; return its int (or 0)."""
    from twisted.internet import reactor

    result: dict[str, Any] = {"code": EXIT_OK}

    def go() -> None:
        d = start()

        def finish(value: Any) -> None:
            if isinstance(value, int) and not isinstance(value, bool):
                result["code"] = value
            reactor.stop()  # type: ignore[attr-defined]

        def crash(failure: Any) -> None:
            sys.stderr.write(f"{failure.type.__name__}: {failure.getErrorMessage()}\n")
            result["code"] = EXIT_API
            reactor.stop()  # type: ignore[attr-defined]

        d.addCallbacks(finish, crash)

    reactor.callWhenRunning(go)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return result["code"]
