"""Crash test: SIGKILL the server under a lossy fleet, restart it, lose nothing.

A fleet of simulated meters (``python -m clients.meter``, with injected loss,
duplication and reordering) sends to a real ``twistd -n meterd``. The server is
killed with SIGKILL mid-stream, so whatever it held in memory (the pending
batch, a transaction in progress, acks not yet sent) is gone, and it is
restarted on the same data dir and the same ports. The meters never learn of
the crash except through missing acks: they keep what was not acknowledged and
resend it. At the end every meter's stored register and month's history must
equal the simulator's own account to the Wh, every reading the simulator saw
acknowledged must be in the readings table, and SQLite must pass
``PRAGMA integrity_check``.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import pytest

from meterd.store import readings_log
from tests.support import Twistd, http, subprocess_env

pytestmark = pytest.mark.slow  # real processes: the full suite's, not the fast loop's

FLEET = 30
INTERVAL = 0.2
BEFORE_KILL = 2.5  # seconds of traffic before the SIGKILL
DOWN = 1.5  # seconds the server stays dead while the meters keep sending
AFTER_RESTART = 2.5  # seconds of traffic after the restart, before `quit`
SP = ZoneInfo("America/Sao_Paulo")  # meterd's default --tz, which the provisioned customers get


def _report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Show the figures in CI output with or without ``-s`` (the issue quotes them)."""
    print(text)
    with capsys.disabled():
        sys.stdout.write("\n" + text + "\n")
        sys.stdout.flush()


def _restart_on_same_ports(old: Twistd) -> Twistd:
    """A new server on the old one's data dir and ports, so the meters find it again."""
    new = Twistd(old.data_dir, *old.args)
    new.http_port, new.udp_port, new.url = old.http_port, old.udp_port, old.url
    return new


def _wh(kwh: float | None) -> int | None:
    return None if kwh is None else round(kwh * 1000)


def _last_status(path: Path) -> str:
    """The simulator's latest status line (``--log-every 1`` writes one per second)."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if "pending" in ln and "sent" in ln]
    return lines[-1] if lines else "(no status line yet)"


def _pending_in(status: str) -> int | None:
    m = re.search(r"pending (\d+)", status)
    return int(m.group(1)) if m else None


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" ([0-9.e+]+)"
    m = re.search(pattern, text)
    return float(m.group(1)) if m else 0.0


def _metrics(server: Twistd) -> str:
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as r:
        return str(r.read().decode())


def _wait_for(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the simulator did not provision its fleet:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


@pytest.mark.parametrize("options", [(), ("--udp-workers", "1")], ids=["reactor reads", "a udp worker reads"])
def test_sigkill_under_a_lossy_fleet_loses_no_acknowledged_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...]
) -> None:
    data_dir = tmp_path / "data"
    server = Twistd(data_dir, *options).start()
    restarted: Twistd | None = None
    sim: subprocess.Popen[bytes] | None = None
    creds_path, summary_path, sim_log = tmp_path / "creds.json", tmp_path / "summary.json", tmp_path / "meters.log"
    try:
        sim_out: IO[bytes] = open(sim_log, "wb")
        sim = subprocess.Popen(
            [sys.executable, "-m", "clients.meter", "--server", server.url, "--udp", f"127.0.0.1:{server.udp_port}",
             "--data-dir", str(data_dir), "--fleet", str(FLEET), "--interval", str(INTERVAL),
             "--loss", "0.2", "--dup", "0.1", "--reorder", "0.1", "--seed", "10", "--log-every", "1",
             "--drain-timeout", "40", "--summary-json", str(summary_path), "--credentials", str(creds_path)],
            cwd=tmp_path, env=subprocess_env(), stdin=subprocess.PIPE, stdout=sim_out, stderr=subprocess.STDOUT,
        )
        started_at = datetime.now(SP)
        _wait_for(creds_path, sim, sim_log, timeout=30)
        time.sleep(BEFORE_KILL)

        before_kill = _metrics(server)
        stored_before = _metric(before_kill, "meterd_readings_total", outcome="stored")
        server.stop(signal.SIGKILL)
        assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
        status_at_kill = _last_status(sim_log)
        time.sleep(DOWN)
        status_while_down = _last_status(sim_log)

        restarted = _restart_on_same_ports(server).start()
        time.sleep(AFTER_RESTART)
        assert sim.stdin is not None
        sim.stdin.write(b"quit\n")
        sim.stdin.close()
        try:
            rc = sim.wait(60)
        except subprocess.TimeoutExpired:
            sim.kill()
            raise AssertionError("the simulator hung on quit:\n" + sim_log.read_text(errors="replace")) from None
        sim_out.close()
        ended_at = datetime.now(SP)
        log_text = sim_log.read_text(errors="replace")
        assert rc == 0, f"simulator exit {rc} (3 = readings left unacknowledged):\n{log_text}"

        after = _metrics(restarted)
        summary = json.loads(summary_path.read_text())
        creds = {(c["id"], c["id_medidor"]): c for c in json.loads(creds_path.read_text())}
        totals = summary["totals"]
        done = re.search(r"done: .*", log_text)
        figures = (
            f"crash test figures: {FLEET} meters, interval {INTERVAL} s, loss 0.2 dup 0.1 reorder 0.1\n"
            f"  SIGKILL after {BEFORE_KILL:g} s ({stored_before:.0f} readings stored by then), down {DOWN:g} s,"
            f" restarted on the same data dir and ports, {AFTER_RESTART:g} s more, then quit\n"
            f"  meters at the kill:        {status_at_kill.strip()}\n"
            f"  meters while down:         {status_while_down.strip()}\n"
            f"  simulator {done.group(0) if done else '(no done line)'}\n"
            f"  readings sent {totals['sent']}, acked {totals['acked']}, resent (recovered through resends)"
            f" {totals['resent']}, pending {totals['pending']}, dropped from a full buffer {totals['dropped']}\n"
            f"  restarted server: stored {_metric(after, 'meterd_readings_total', outcome='stored'):.0f},"
            f" duplicates acked again {_metric(after, 'meterd_readings_total', outcome='duplicate'):.0f}"
        )
        _report(capsys, figures)

        assert summary["drained"] is True and totals["pending"] == 0, figures
        assert totals["dropped"] == 0, figures  # a dropped reading would be a hole on the meter's side
        assert totals["sent"] == totals["acked"], figures
        assert _pending_in(status_while_down) not in (None, 0), "the meters should have had readings in flight while the server was down\n" + figures

        # The month's history is exact only if the run stayed within one month in the customers' zone.
        straddles = (started_at.year, started_at.month) != (ended_at.year, ended_at.month)
        if straddles:
            _report(capsys, "crash test: the run straddled a month boundary (America/Sao_Paulo); history summed over periodo 0 and 1")
        for row in summary["meters"]:
            cid, mid = row["id"], row["id_medidor"]
            token = creds[(cid, mid)]["token"]
            status, body = http("GET", f"{restarted.url}/getMedidores?id={cid}", restarted.token)
            assert status == 200, body
            [stored] = [m for m in body["meters"] if m["id_medidor"] == mid]
            assert _wh(stored["last_kwh"]) == _wh(row["register_kwh"]), (cid, mid, stored, row)
            hist_wh = 0
            for periodo in (0, 1) if straddles else (0,):
                status, hist = http("GET", f"{restarted.url}/getConsumoHist?id={cid}&kind=M&periodo={periodo}", token)
                assert status == 200, hist
                hist_wh += _wh(hist["total_kwh"]) or 0
            assert hist_wh == _wh(row["energy_kwh"]), (cid, mid, hist_wh, row)

        restarted.stop(signal.SIGTERM)
        db = sqlite3.connect(f"file:{data_dir / 'meterd.sqlite3'}?mode=ro", uri=True)
        try:
            [(integrity,)] = db.execute("PRAGMA integrity_check").fetchall()
            # readings live in three tables (store/readings_log.py); a row in two of them is one reading
            stored = " UNION ".join(f"SELECT customer_id, meter_id, ts, wh FROM {table}" for table in readings_log.TABLES)
            counts = dict(((c, m), n) for c, m, n in db.execute(
                f"SELECT customer_id, meter_id, COUNT(*) FROM ({stored}) GROUP BY customer_id, meter_id"))
        finally:
            db.close()
        assert integrity == "ok", integrity
        for row in summary["meters"]:
            # Every reading has its own timestamp, so the table must hold exactly one row per reading
            # acknowledged: fewer would be an acknowledged reading lost in the crash, more a duplicate stored.
            n = counts.get((row["id"], row["id_medidor"]), 0)
            assert n == row["acked"] == row["sent"], (row, n)
        _report(capsys, f"crash test: {sum(counts.values())} rows in readings for {len(counts)} meters"
                        f" = {totals['acked']} acknowledged; PRAGMA integrity_check: {integrity}")
    finally:
        if sim is not None and sim.poll() is None:
            sim.kill()
            sim.wait()
        for s in (restarted, server):
            if s is not None and s.proc is not None and s.proc.poll() is None:
                s.stop(signal.SIGKILL)


def test_every_customer_committed_in_a_registration_burst_cut_by_sigkill_ends_with_a_working_token(tmp_path: Path) -> None:
    """A registration's 201, with the one-time token, may be lost to a crash after its commit: the
    customer is then registered with no token anyone knows. The operator gives it one (/novoToken)."""
    import concurrent.futures

    from meterd.taxid import make_cpf

    server = Twistd(tmp_path / "data").start()
    token = server.token
    ids = [make_cpf(str(300_000_000 + n)) for n in range(400)]
    answered: dict[str, str] = {}

    def register(cid: str) -> None:
        try:
            status, body = http("POST", server.url + "/cadCliente", token, {"id": cid, "name": "Rajada"}, timeout=5)
        except OSError:
            return  # the server died with this request in flight
        if status == 201:
            answered[cid] = body["token"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(register, cid) for cid in ids]
        deadline = time.monotonic() + 30
        while len(answered) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGKILL)  # in the middle of the burst
        server.proc.wait(20)
        concurrent.futures.wait(futures)
    server.stop()
    assert answered, "no registration was answered before the kill"

    with sqlite3.connect(tmp_path / "data" / "meterd.sqlite3") as conn:
        committed = {row[0] for row in conn.execute("SELECT id FROM customers")}
    assert set(answered) <= committed  # every 201 came after its commit
    orphans = committed - set(answered)

    again = Twistd(tmp_path / "data").start()
    try:
        for cid in orphans:
            status, body = http("POST", again.url + "/novoToken", token, {"id": cid})
            assert status == 200, body
            answered[cid] = body["token"]
        for cid in committed:
            status, body = http("GET", f"{again.url}/getMedidores?id={cid}", answered[cid])
            assert status == 200, (cid, body)
    finally:
        again.stop()
    print(f"registration burst: {len(committed)} committed, {len(orphans)} of them unanswered before the kill, all given a token")
