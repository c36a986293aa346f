"""The benchmark harness runs end to end and prints its table (issue 8).

Runs ``python -m bench --quick --only history`` in a subprocess: it prepares a
data dir offline, starts a real ``twistd -n meterd`` and queries it, so it
checks the harness's moving parts without the long load phases. The scale-out
phase (issue 9) gets a tiny run when the bench PostgreSQL is reachable, and a
check that without it the phase is one note line. The attack phase runs
``--quick`` (about 45 s): its rows are checked, not its figures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes: the full suite's, not the fast loop's

ROOT = Path(__file__).resolve().parent.parent


def test_quick_history_phase_prints_the_table() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "history"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "meterd benchmark (quick)" in out
    assert "figure" in out and "baseline" in out and "ratio" in out
    row = next(line for line in out.splitlines() if line.startswith("Y over 525,600 one-minute readings"))
    assert " ms" in row and "8,760 hourly" in row and "x" in row
    assert "HTTP " not in row  # both history queries answered 200


def test_unknown_phase_is_refused() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "nonsense"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown phase(s): nonsense" in done.stderr


def _bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_scaleout_without_postgresql_is_one_note() -> None:
    done = _bench("--only", "scaleout", "--pg", "postgresql://nobody@127.0.0.1:1/none")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    skipped = [line for line in done.stdout.splitlines() if "scaleout skipped: PostgreSQL not reachable" in line]
    assert len(skipped) == 1
    assert "[scale-out" not in done.stdout


def test_scaleout_tiny_run_spreads_meters_over_two_processes() -> None:
    """About 10 s: 64 meters, 2,000 readings/s for 1 s per configuration (empties the bench database)."""
    from bench.pg import default_dsn, probe

    facts, why = probe(default_dsn())
    if facts is None:
        pytest.skip(f"no PostgreSQL for the bench: {why}")
    done = _bench("--quick", "--only", "scaleout", "--meters", "64", "--scaleout-rate", "2000", "--scaleout-duration", "1",
                  timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    for label in ("SQLite, 1 process", "PostgreSQL, 1 process", "PostgreSQL, 2 processes"):
        row = next(line for line in lines if line.startswith(f"stored rate, {label}"))
        assert "/s" in row
        acked = next(line for line in lines if line.startswith(f"acked, {label}"))
        assert re.split(r"\s{2,}", acked)[1] == "100.00 %"  # everything offered was acked
    split = next(line for line in lines if line.startswith("UDP datagrams per process, PostgreSQL, 2 processes"))
    assert split.rstrip().endswith("PASS")  # both processes received datagrams
    assert "0.00x" not in "\n".join(line for line in lines if line.startswith("stored rate"))


ATTACK_ROWS = (
    "pipelining: server RSS peak",
    "pipelining: server RSS 2 s after close",
    "pipelining: kernel queues of meterd's connections, peak",
    "pipelining: /health p99",
    "slowloris: /health from 127.0.0.2 answered",
    "slowloris: /health p99",
    "slowloris: attacker connections refused",
    "slowloris: first byte to 408",
    "UDP overload: offered",
    "UDP overload: /health p99",
    "UDP overload: server RSS peak",
    "UDP overload: dropped by meterd / kernel",
    *(f"garbage flood, --udp-workers {w}: {figure}" for w in (0, 1)
      for figure in ("first-try acks", "good ack p99 (of acked)", "garbage offered", "dropped by meterd / kernel")),
)


def test_quick_attack_phase_prints_its_rows() -> None:
    """Every attack's rows are in the table, each with a figure: which pass is the full run's to say, not this test's."""
    done = _bench("--quick", "--only", "attack", "--attack-duration", "0.5", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert "not measured" not in out, out
    lines = out.splitlines()
    assert any(line.startswith("[attack: unauthenticated clients") for line in lines)
    for figure in ATTACK_ROWS:
        row = next((line for line in lines if line.startswith(figure + "  ")), None)
        assert row is not None, f"no row {figure!r} in:\n{out}"
        value = re.split(r"\s{2,}", row)[1]
        assert value and not value.startswith("n/a"), row
    assert "[ingest" not in out and "[HTTP" not in out  # only the phase asked for


def test_export_phase_exports_every_row_with_its_figures() -> None:
    done = _bench("--quick", "--only", "export", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("meterd's port:", "2 HTTP workers:"))]
    assert len(rows) == 10, done.stdout
    assert all("PASS" in line for line in rows if "rows exported" in line), done.stdout  # the figures are not checked, the rows are
    assert all(re.search(r"[0-9,]+/s\s+[0-9,]+/s \(plain SQL\)\s+[0-9.]+x", line) for line in rows if "rows/s" in line), done.stdout
    assert all(re.search(r"\d+ MB peak\s+\d+ MB before\s+\+-?[0-9.]+ MB", line) for line in rows if "server RSS" in line), done.stdout


def test_quick_portal_phase_times_every_page_against_its_json_route() -> None:
    done = _bench("--quick", "--only", "portal", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if "(/portal/" in line]
    assert len(rows) == 8, done.stdout
    for row in rows:
        assert "HTTP " not in row and "p99 < 50 ms" in row, row  # every page and its JSON route answered 200
        assert re.search(r"[\d.]+ / [\d.]+ ms \(client [\d.]+\)\s+/get\w+ [\d.]+ / [\d.]+ ms\s+[\d.]+x", row), row
    assert "the first request of each page" in done.stdout


def test_quick_webhooks_phase_delivers_every_event_in_order() -> None:
    """200 events/s for 3 s twice, a burst, against a receiver on loopback."""
    done = _bench("--quick", "--only", "webhooks", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    caused = next(line for line in lines if line.startswith("alarm events caused / recorded / delivered"))
    assert caused.rstrip().endswith("PASS"), done.stdout
    for figure in ("delivery lag p50", "delivery lag p99", "delivered events/s, steady"):
        row = next(line for line in lines if line.startswith(figure))
        assert "n/a" not in row and "x" in row, row
