"""End to end: a real ``twistd -n meterd`` and ``python -m clients.meter`` processes.

Proves exactly-once storage through injected loss, duplication and reordering:
the server's stored register and the month's history must equal what the
simulator says it measured, to the Wh.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # real processes: the full suite's, not the fast loop's

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).with_name("twistd")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.http_port = _free_port(socket.SOCK_STREAM)
        self.udp_port = _free_port(socket.SOCK_DGRAM)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.env.pop("METERD_TOKEN", None)
        self.log = open(tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [str(TWISTD), "-n", "--pidfile=", "meterd", "--data-dir", str(tmp / "data"),
             "--http", f"tcp:{self.http_port}:interface=127.0.0.1", "--udp", str(self.udp_port)],
            cwd=tmp, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.get("/health")["status"] == "ok":
                    break
            except (OSError, ValueError, KeyError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("meterd did not start:\n" + (tmp / "server.log").read_text())
            time.sleep(0.1)
        self.token = (tmp / "data" / "operator.token").read_text().strip()

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path)
        if getattr(self, "token", None):
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def meter(self, *args: str, stdin: bytes | None = None, wait_before_stdin: float = 0.0) -> tuple[int, str, str]:
        cmd = [sys.executable, "-m", "clients.meter", "--server", self.url,
               "--udp", f"127.0.0.1:{self.udp_port}", "--data-dir", str(self.dir / "data"),
               "--log-every", "1", *args]
        proc = subprocess.Popen(cmd, cwd=self.dir, env=self.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if wait_before_stdin:
            time.sleep(wait_before_stdin)
        try:
            out, err = proc.communicate(stdin, timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"meter simulator hung:\n{out.decode()}\n{err.decode()}") from None
        return proc.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("meterd"))
    yield s
    s.stop()


def _wh(kwh: float) -> int:
    return round(kwh * 1000)


def test_lossy_run_is_stored_exactly_once(server: Server) -> None:
    summary_path = server.dir / "summary.json"
    rc, out, err = server.meter(
        "--provision", "--interval", "0.05", "--loss", "0.3", "--dup", "0.1", "--reorder", "0.1",
        "--seed", "1", "--summary-json", str(summary_path),
        stdin=b"status\nquit\n", wait_before_stdin=3.0,
    )
    assert rc == 0, out + err
    assert "provisioned customer" in out and "provisioned meter" in out and "key" in out
    summary = json.loads(summary_path.read_text())
    [row] = summary["meters"]
    assert summary["drained"] is True
    assert row["pending"] == 0 and row["sent"] == row["acked"] >= 20 and row["resent"] > 0  # ~60 sent in 3 s; fewer on a busy machine
    meters = server.get(f"/getMedidores?id={row['id']}")["meters"]
    [stored] = [m for m in meters if m["id_medidor"] == row["id_medidor"]]
    assert _wh(stored["last_kwh"]) == _wh(row["register_kwh"])
    hist = server.get(f"/getConsumoHist?id={row['id']}&kind=M&periodo=0")
    assert _wh(hist["total_kwh"]) == _wh(row["energy_kwh"])


def test_fleet_drains_and_matches_the_server(server: Server) -> None:
    summary_path = server.dir / "fleet.json"
    rc, out, err = server.meter(
        "--fleet", "20", "--interval", "0.2", "--loss", "0.2", "--seed", "2", "--duration", "3",
        "--summary-json", str(summary_path),
    )
    assert rc == 0, out + err
    summary = json.loads(summary_path.read_text())
    assert len(summary["meters"]) == 20 and len({r["id"] for r in summary["meters"]}) == 20
    assert summary["totals"]["pending"] == 0
    for row in summary["meters"][:5]:
        [stored] = server.get(f"/getMedidores?id={row['id']}")["meters"]
        assert _wh(stored["last_kwh"]) == _wh(row["register_kwh"])


def test_existing_meter_continues_its_register_and_bad_key_is_reported(server: Server) -> None:
    creds = server.dir / "creds.json"
    rc, out, err = server.meter("--provision", "--interval", "0.2", "--duration", "1.5", "--seed", "3",
                                "--credentials", str(creds))
    assert rc == 0, out + err
    [c] = json.loads(creds.read_text())
    assert (creds.stat().st_mode & 0o777) == 0o600
    before = _wh(server.get(f"/getMedidores?id={c['id']}")["meters"][0]["last_kwh"])

    summary_path = server.dir / "again.json"
    rc, out, err = server.meter("--id", c["id"], "--meter", str(c["id_medidor"]), "--key", c["key"],
                                "--interval", "0.2", "--duration", "1.5", "--summary-json", str(summary_path))
    assert rc == 0, out + err
    [row] = json.loads(summary_path.read_text())["meters"]
    assert row["pending"] == 0 and _wh(row["register_kwh"]) >= before
    assert _wh(row["register_kwh"]) - _wh(row["energy_kwh"]) == before  # started from the server's register

    wrong = "0" * 64
    rc, out, err = server.meter("--id", c["id"], "--meter", str(c["id_medidor"]), "--key", wrong,
                                "--ack-warning", "1", "--duration", "1.6", "--drain-timeout", "0")
    assert rc == 3
    assert "no acknowledgement" in out and "--key" in out


def test_unknown_customer_and_meter_fail_with_one_line(server: Server) -> None:
    key = "ab" * 32
    rc, out, err = server.meter("--id", "529.982.247-25", "--meter", "1", "--key", key)
    assert rc == 1 and err.strip().splitlines() == [f"error: unknown customer 52998224725 (not registered on {server.url})"]


def test_server_down_is_one_line(server: Server) -> None:
    port = _free_port(socket.SOCK_STREAM)
    rc, out, err = server.meter("--provision", "--server", f"http://127.0.0.1:{port}")
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "not answering" in err and "connection refused" in err
