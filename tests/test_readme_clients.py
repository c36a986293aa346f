"""The README's client commands, run exactly as printed against a live ``twistd -n meterd``.

The commands are read from README.md's ``sh`` code blocks. They run where the
README runs them: beside the server's ``./meterd-data`` and a ``.venv`` (here a
link to this interpreter's environment), with ``METERD_SERVER`` and
``METERD_UDP`` naming the test server's free ports instead of 8888 and 8080.
The one thing substituted in a command is the ``<customer token>`` placeholder.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pty_terminal import client_env
from tests.support import ROOT, Twistd

pytestmark = pytest.mark.slow

PLACEHOLDER = "<customer token>"
TOUR_CUSTOMER = "12345678909"  # the customer the README's API tour registers


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith(".venv/bin/python -m clients.")]


@pytest.fixture(scope="module")
def beside_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Twistd, Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("clone")
    (home / ".venv").symlink_to(Path(sys.executable).parent.parent)
    server = Twistd(home / "meterd-data").start()
    env = client_env(METERD_SERVER=server.url, METERD_UDP=f"127.0.0.1:{server.udp_port}")
    yield server, home, env
    server.stop()


def call(server: Twistd, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode() if body else None, method=method)
    req.add_header("Authorization", f"Bearer {server.token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.5)
    return result


def run_simulator(argv: list[str], home: Path, env: dict[str, str], server: Twistd) -> str:
    """Run until the server has its readings (and, with --load-kw, its alarm); then quit."""
    log = home / "simulator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=home, env=env, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
        try:
            found = until(lambda: re.search(r"provisioned customer (\d+)", log.read_text()), 30, log.read_text())
            customer = found.group(1)
            # `is not None`: a household drawing little at night keeps its register at 0.000 kWh for a while
            until(lambda: call(server, "GET", f"/getMedidores?id={customer}")["meters"][0]["last_kwh"] is not None, 30, "no reading stored")
            if "--load-kw" in argv:
                alarms = until(lambda: call(server, "GET", f"/getAlarme?id={customer}")["active"], 120, "no alarm")
                assert [a["rule"] for a in alarms] == ["demand"]
            assert proc.stdin is not None
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
            assert proc.wait(30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return log.read_text()


def test_readme_client_commands_run_as_printed(beside_server: tuple[Twistd, Path, dict[str, str]]) -> None:
    server, home, env = beside_server
    commands = readme_commands()
    assert any("clients.meter" in c and "--load-kw" in c for c in commands)
    assert any(c.split("#")[0].split() == [".venv/bin/python", "-m", "clients.console"] for c in commands)
    assert any(PLACEHOLDER in c for c in commands)
    token = call(server, "POST", "/cadCliente", {"id": "123.456.789-09", "name": "Ana", "ligacao": "bi"})["token"]
    call(server, "POST", "/cadMedidor", {"id": TOUR_CUSTOMER})
    call(server, "POST", "/postConsumo", {"id": TOUR_CUSTOMER, "id_medidor": 1, "valor": 1234.567, "timestamp": time.time()})

    for command in commands:
        argv = shlex.split(command.replace(PLACEHOLDER, token), comments=True)
        if argv[2] == "clients.meter":
            out = run_simulator(argv, home, env, server)
            assert "Traceback" not in out
        elif argv[3:4] == ["exportar"]:
            r = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            written = Path(re.fullmatch(r"Gravado em (.+): (\d+) linhas, .* MB\.\n", r.stdout)[1])  # type: ignore[index]
            assert written.parent == home and written.name.startswith(f"leituras-Ana-{TOUR_CUSTOMER}-")
            rows = written.read_text(encoding="utf-8").splitlines()
            assert rows[0] == "id_medidor,timestamp,valor_kwh,consumo_kwh,estimated" and rows[1].endswith(",1234.567,0.000,false")
        elif argv == [".venv/bin/python", "-m", "clients.console"]:
            r = subprocess.run(argv, cwd=home, env=env, input="0\n", capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert "1) Operador" in r.stdout and r.stdout.rstrip().endswith("Até logo.")
        else:
            r = subprocess.run(argv, cwd=home, env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            if "fatura" in argv:
                assert json.loads(r.stdout) == call(server, "GET", f"/getFatura?id={TOUR_CUSTOMER}&periodo=0")
            else:  # the operator's management (buscar, retirar): it did what the command says, in Portuguese
                assert r.stdout.strip() and "Traceback" not in r.stdout + r.stderr
