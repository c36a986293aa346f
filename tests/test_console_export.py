"""The console's ``exportar``: the file, its name, the progress bar, and what a failure leaves behind.

``run_export`` runs against an in-process meterd over loopback with the
console's own client; the real subprocess is in test_console_e2e.py.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from clients.api import MeterdClient
from clients.console.cli import EXIT_API, EXIT_INPUT, EXIT_OK, build_parser, run_command
from clients.console.export import ERASE_LINE, FALLBACK_NAME, ExportFile, Progress, suggested_name
from clients.console.messages import Messages
from clients.console.render import Renderer
from meterd.taxid import make_cpf
from tests.support import LiveServer, start_server, until

A = make_cpf("529982247")
B = make_cpf("168995350")
N = 50


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "disposition, name",
    [
        ("attachment; filename=\"leituras-Joao.csv\"; filename*=UTF-8''leituras-Jo%C3%A3o.csv", "leituras-João.csv"),
        ('attachment; filename="leituras-Joao.csv"', "leituras-Joao.csv"),
        ("attachment; filename*=UTF-8''..%2F..%2F.bashrc", FALLBACK_NAME),  # a hidden file, out of this directory: never
        ("attachment; filename*=UTF-8''%2Fetc%2Fpasswd", "passwd"),
        ('attachment; filename="a\\\\b.csv"', "b.csv"),
        (None, FALLBACK_NAME),
        ("inline", FALLBACK_NAME),
    ],
)
def test_the_servers_file_name_is_used_as_a_bare_name(disposition: str | None, name: str) -> None:
    assert suggested_name(disposition) == name


def test_the_bar_fits_the_terminal_counts_rows_and_is_not_redrawn_too_often() -> None:
    drawn: list[str] = []
    now = [0.0]
    progress = Progress(drawn.append, Messages("pt"), 60, clock=lambda: now[0])
    progress.update(236_520, 525_600)
    progress.update(300_000, 525_600)  # at once: not drawn
    now[0] = 0.2
    progress.update(525_600, 525_600)
    assert len(drawn) == 2 and all(d.startswith(ERASE_LINE) for d in drawn)
    first, last = (d.removeprefix(ERASE_LINE) for d in drawn)
    assert "45%" in first and "236.520 de 525.600 linhas" in first and len(first) <= 60
    assert "100%" in last and "░" not in last and "█" in last
    progress.clear()
    assert drawn[-1] == ERASE_LINE
    english = Progress(drawn.append, Messages("en"), 80, ascii_only=True)
    english.update(5, 10)
    assert "#" in drawn[-1] and "5 of 10 rows" in drawn[-1] and "█" not in drawn[-1]


def test_a_file_is_whole_under_its_name_or_not_there_at_all(tmp_path: Path) -> None:
    headers = {"content-disposition": "attachment; filename*=UTF-8''leituras-Z%C3%A9.csv", "x-total-count": "2"}
    export = ExportFile(None, directory=tmp_path)
    export.begin(headers)
    export.write(b"h\r\nrow 1\r\n")
    assert [p.name for p in tmp_path.iterdir()] == [".leituras-Zé.csv.parcial"]  # hidden until it is complete
    export.write(b"row 2\r\n")
    assert export.finish() == tmp_path / "leituras-Zé.csv" and export.rows == 2 and export.total == 2
    assert (tmp_path / "leituras-Zé.csv").read_bytes() == b"h\r\nrow 1\r\nrow 2\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["leituras-Zé.csv"]
    failed = ExportFile(str(tmp_path / "other.csv"))
    failed.begin(headers)
    failed.write(b"h\r\n")
    failed.abandon()
    assert [p.name for p in tmp_path.iterdir()] == ["leituras-Zé.csv"]


# -- run_export against a real meterd ----------------------------------------------------------------


@pytest_twisted.async_yield_fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    s = await start_server(tmp_path_factory.mktemp("console-export") / "data")
    tokens = {}
    for cid in (A, B):
        status, body, _ = await s.call("POST", "/cadCliente", json_body={"id": cid, "name": "Zé Ninguém", "tz": "America/Sao_Paulo"})
        assert status == 201
        tokens[cid] = body["token"]
        await s.call("POST", "/cadMedidor", json_body={"id": cid})
    start = int(time.time()) - 100 * 60
    for i in range(N):
        status, body, _ = await s.call("POST", "/postConsumo", json_body={"id": A, "id_medidor": 1, "valor": f"{i * 1.5:.3f}", "timestamp": start + i * 60})
        assert status == 201, body
    s.customer_tokens = tokens
    yield s
    await s.stop()


async def export(server: LiveServer, argv: list[str], token: str | None = None, *, tty: bool = False,
                 stdout_bytes: io.BytesIO | None = None) -> tuple[int, str, str]:
    m = Messages("pt")
    args = build_parser(m).parse_args(["exportar", *argv])
    out, err = io.StringIO(), (Terminal() if tty else io.StringIO())
    client = MeterdClient(server.url, token or server.token)
    if stdout_bytes is not None:
        args.saida = "-"
    code = await run_command_with_stdout(args, client, m, out, err, stdout_bytes)
    return code, out.getvalue(), err.getvalue()


async def run_command_with_stdout(args: argparse.Namespace, client: MeterdClient, m: Messages, out: io.StringIO, err: io.StringIO,
                                  stdout_bytes: io.BytesIO | None) -> int:
    if stdout_bytes is None:
        return await run_command(args, client, m, Renderer(m), out, err)
    from clients.console.cli import run_export

    return await run_export(args, args.id, client, m, out, err, binary_stdout=stdout_bytes)


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest_twisted.ensureDeferred
async def test_exportar_writes_every_reading_to_the_file_named_and_says_where(server: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "mine.csv"
    code, out, err = await export(server, ["--id", A, "--saida", str(target)], tty=True)
    assert code == EXIT_OK, err
    rows = rows_of(target)
    assert rows[0] == ["id_medidor", "timestamp", "valor_kwh", "consumo_kwh", "estimated"]
    assert [r[2] for r in rows[1:]] == [f"{i * 1.5:.3f}" for i in range(N)]
    assert out == f"Gravado em {target}: {N} linhas, 0 MB.\n"
    assert f"{N} de {N} linhas" in err and "100%" in err and err.endswith(ERASE_LINE)  # the bar, erased at the end


@pytest_twisted.ensureDeferred
async def test_exportar_names_the_file_as_the_server_suggests_in_a_directory(server: LiveServer, tmp_path: Path) -> None:
    code, out, err = await export(server, ["--id", A, "--kind", "A", "--historico", "--saida", str(tmp_path), "--json"])
    assert code == EXIT_OK, err
    [written] = tmp_path.iterdir()
    assert written.name.startswith(f"historico-Zé-Ninguém-{A}-") and written.suffix == ".csv"
    assert json.loads(out) == {"file": str(written), "rows": 12, "bytes": written.stat().st_size}
    assert err == ""  # no terminal: no bar


@pytest_twisted.ensureDeferred
async def test_exportar_to_stdout_and_by_period(server: LiveServer) -> None:
    piped = io.BytesIO()
    code, out, err = await export(server, ["--id", A, "--kind", "D", "--periodo", "3"], stdout_bytes=piped)
    assert code == EXIT_OK, err
    assert piped.getvalue() == b"id_medidor,timestamp,valor_kwh,consumo_kwh,estimated\r\n"  # three days ago: none
    assert out == "" and "Exportadas 0 linhas" in err


@pytest_twisted.ensureDeferred
async def test_a_refused_export_writes_nothing(server: LiveServer, tmp_path: Path) -> None:
    target = tmp_path / "theirs.csv"
    code, out, err = await export(server, ["--id", A, "--saida", str(target)], token=server.customer_tokens[B])
    assert code == EXIT_API and out == "" and "403" in err
    assert list(tmp_path.iterdir()) == []


class Stalling(Resource):
    """A CSV export that sends its header and first row, then nothing more, ever."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.gone: list[Failure] = []

    def render_GET(self, request: Request) -> object:
        request.setHeader("content-type", "text/csv; charset=utf-8")
        request.setHeader("content-disposition", 'attachment; filename="leituras.csv"')
        request.write(b"id,id_medidor,timestamp,valor\r\n" + f"{A},1,1796000000,1.000\r\n".encode())
        request.notifyFinish().addErrback(self.gone.append)
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_an_export_whose_answer_stalls_ends_after_the_timeout_and_writes_nothing(tmp_path: Path) -> None:
    stalling = Stalling()
    port = reactor.listenTCP(0, Site(stalling), interface="127.0.0.1")
    try:
        m = Messages("pt")
        args = build_parser(m).parse_args(["--timeout", "0.5", "exportar", "--id", A, "--saida", str(tmp_path / "l.csv")])
        out, err = io.StringIO(), io.StringIO()
        client = MeterdClient(f"http://127.0.0.1:{port.getHost().port}", "t", timeout=args.timeout)
        code = await run_command(args, client, m, Renderer(m), out, err)
        assert code == EXIT_API and out.getvalue() == ""
        assert "interrompida antes do fim; nada foi gravado" in err.getvalue()
        assert list(tmp_path.iterdir()) == []  # not even the hidden partial file
        await until(lambda: succeed(stalling.gone), 30)  # the console closed the connection
    finally:
        await port.stopListening()


@pytest.mark.parametrize("argv", [["--historico"], ["--kind", "M", "--inicio", "2026-01-01"]])
@pytest_twisted.ensureDeferred
async def test_exportar_refuses_what_cannot_be_asked_before_asking(server: LiveServer, argv: list[str]) -> None:
    code, out, err = await export(server, ["--id", A, *argv])
    assert code == EXIT_INPUT and out == "" and err.strip()


def test_dates_as_people_write_them_become_the_apis() -> None:
    m = Messages("pt")
    args = build_parser(m).parse_args(["exportar", "--id", A, "--inicio", "05/11/2026", "--fim", "2026-11-30T18:00"])
    assert (args.inicio, args.fim) == ("2026-11-05", "2026-11-30T18:00:00")
    with pytest.raises(SystemExit):
        build_parser(m).parse_args(["exportar", "--id", A, "--inicio", "ontem"])
