"""The ``billing`` phase: a billing run of 100,000 customers, each with a meter and a month of readings.

``python -m bench --only billing`` prepares the data dir offline (``python -m
bench.billing SPEC OUT`` in its own process: customers and meters
bulk-inserted through the store's writer pool, the readings through
``SqliteStore.ingest``, as ``bench/prepare.py`` does), starts meterd on it,
and measures:

* the run (``POST /faturamento periodo=1``, polled through ``/getFaturamento``):
  its duration, bills/s and meterd's RSS while it runs; ``/health`` is asked
  all along, and its latency shows whether the reactor kept serving;
* a second run of the same month, which must issue none;
* the baseline, in the same run: reading the same readings with one plain
  query (``SELECT customer_id, meter_id, ts, wh FROM readings``) in a fresh
  Python process, the least any run that looks at every reading must spend.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from bench.common import cpf, median, python, subprocess_env
from bench.report import Report, Row, ms, rate, ratio
from bench.server import Meterd
from meterd import credentials, periods
from meterd.readings import US_PER_MS, Reading
from meterd.store.schema import CUSTOMER_COLUMNS, METER_COLUMNS
from meterd.store.sqlite import SqliteStore

TZ = "America/Sao_Paulo"
TARGET_S = 60.0
INGEST_BATCH = 20_000


def month_readings(n: int, start_ms: int, end_ms: int, step_ms: int, now_ms: int) -> list[tuple[int, int]]:
    """(ts in us, register Wh) of meter ``n``: one every ``step_ms`` from a step before the month to a step after (none after now)."""
    first = start_ms - step_ms + (n * 7919) % step_ms  # the meters do not all read at the same instant
    last = min(end_ms + step_ms, now_ms - 60_000)
    watts = 200 + n % 1_000  # 0.2-1.2 kW on average: 144-864 kWh a month
    return [
        ((first + i * step_ms) * US_PER_MS, 1_000_000 + n * 13 + i * watts * step_ms // 3_600_000)
        for i in range((last - first) // step_ms + 1)
    ]


async def build(spec: dict[str, Any]) -> dict[str, Any]:
    """The data dir: ``customers`` customers with one register meter and a month of readings each."""
    data_dir = Path(spec["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    n_customers, step_ms = spec["customers"], int(spec["step_h"] * 3_600_000)
    tz = ZoneInfo(TZ)
    now_ms = int(time.time() * 1000)
    start_ms, end_ms = periods.month_range(*periods.months_back(now_ms, tz, 1), tz)
    created_ms = start_ms - 365 * 86_400_000
    token_hash = credentials.token_hash(credentials.new_token())
    ids = [cpf(n) for n in range(n_customers)]
    started = time.perf_counter()
    store = SqliteStore(str(data_dir / "meterd.sqlite3"), durability="normal")
    await store.start()

    def insert(txn: Any) -> None:
        txn.executemany(
            f"INSERT INTO customers ({CUSTOMER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(cid, f"Cliente {n}", ("mono", "bi", "tri")[n % 3], 10_000_000, 100_000_000, TZ, f"{token_hash}{n}", created_ms)
             for n, cid in enumerate(ids)],
        )
        txn.executemany(f"INSERT INTO meters ({METER_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                        [(cid, 1, "register", "ab" * 32, created_ms) for cid in ids])

    await store._write(insert)
    await store.stop()  # the store keeps its meters' state in memory: reopen to see them
    store = SqliteStore(str(data_dir / "meterd.sqlite3"), durability="normal")
    await store.start()
    loaded = 0
    try:
        batch: list[Reading] = []
        for n, cid in enumerate(ids):
            batch += [Reading(cid, 1, ts, wh, None) for ts, wh in month_readings(n, start_ms, end_ms, step_ms, now_ms)]
            if len(batch) >= INGEST_BATCH:
                loaded += len(await store.ingest(batch, now_ms))
                batch = []
        if batch:
            loaded += len(await store.ingest(batch, now_ms))
    finally:
        await store.stop()
    return {"customers": n_customers, "readings": loaded, "seconds": time.perf_counter() - started,
            "referencia": time.strftime("%Y-%m", time.gmtime((start_ms + 86_400_000) / 1000))}


def prepare(work: Path, customers: int, step_h: float) -> dict[str, Any]:
    """Build the data dir in a process of its own (it runs a reactor)."""
    spec = {"data_dir": str(work / "billing"), "customers": customers, "step_h": step_h}
    spec_path, out_path = work / "billing-spec.json", work / "billing-prepared.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run([python(), "-m", "bench.billing", str(spec_path), str(out_path)], env=subprocess_env(), check=True)
    result: dict[str, Any] = json.loads(out_path.read_text())
    return result


def plain_read_seconds(db: Path) -> tuple[float, int]:
    """The baseline: every reading, one plain query, in a fresh process (cold Python, warm page cache)."""
    code = (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True)\n"
        "t = time.perf_counter()\n"
        "rows = conn.execute('SELECT customer_id, meter_id, ts, wh FROM readings UNION ALL SELECT customer_id, meter_id, ts, wh"
        " FROM readings_log_0 UNION ALL SELECT customer_id, meter_id, ts, wh FROM readings_log_1').fetchall()\n"
        "print(time.perf_counter() - t, len(rows))\n"
    )
    done = subprocess.run([python(), "-c", code, str(db)], capture_output=True, text=True, check=True)
    seconds, count = done.stdout.split()
    return float(seconds), int(count)


def _request(server: Meterd, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    token = (server.data_dir / "operator.token").read_text().strip()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, data=data, method=method, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


class HealthProbe(threading.Thread):
    """``/health`` every 50 ms while the run runs: how long the reactor made requests wait."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.times: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            t = time.perf_counter()
            with urllib.request.urlopen(self.url + "/health", timeout=30) as r:
                r.read()
            self.times.append(time.perf_counter() - t)


def billing_run(server: Meterd) -> tuple[dict[str, Any], float, float, list[float]]:
    """One run of ``periodo`` 1: its final state, seconds, peak RSS (MB) and the /health latencies meanwhile."""
    probe = HealthProbe(server.url)
    probe.start()
    t0 = time.perf_counter()
    started = _request(server, "POST", "/faturamento", {"periodo": 1})
    peak = 0.0
    while True:
        state = _request(server, "GET", f"/getFaturamento?execucao={started['execucao']}")
        peak = max(peak, server.sample().rss_mb)
        if state["estado"] != "executando":
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    probe.stop.set()
    probe.join()
    return state, elapsed, peak, probe.times


def phase(report: Report, work: Path, customers: int, step_h: float, profile: str | None) -> None:
    report.section(f"billing: a run of {customers:,} customers, each with a meter and a month of readings")
    prepared = prepare(work, customers, step_h)
    report.note(f"billing: {customers:,} customers, {prepared['readings']:,} readings (one every {step_h:g} h around the month "
                f"{prepared['referencia']}), loaded offline through SqliteStore.ingest in {prepared['seconds']:.1f} s")
    base_s, base_rows = plain_read_seconds(work / "billing" / "meterd.sqlite3")
    server = Meterd(work / "billing").start()
    try:
        idle = server.sample().rss_mb
        profiler = None
        if profile:
            profiler = subprocess.Popen([profile, "record", "-p", str(server.pid), "-d", "300", "-r", "100", "-f", "raw", "--threads",
                                         "-o", str(work / "billing-profile.txt"), "--nonblocking"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        first, first_s, peak, health = billing_run(server)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes what it recorded when interrupted
            profiler.wait()
            report.note(f"py-spy profile (raw collapsed stacks) of the first run: {work / 'billing-profile.txt'}")
        second, second_s, _, _ = billing_run(server)
    finally:
        code = server.stop()
        if code not in (0, -15):
            report.note(f"meterd exited with status {code}; log: {server.log_path}")
    issued = first["emitidas"]
    report.add(Row(f"run of {customers:,} customers", f"{first_s:.1f} s", f"{base_s:.1f} s (plain read)", ratio(first_s, base_s),
                   f"< {TARGET_S:.0f} s, all issued", ok=first_s < TARGET_S and issued == customers))
    report.add(Row("bills issued / s", rate(issued / first_s), rate(base_rows / base_s) + " readings", ""))
    report.add(Row("second run: issued", f"{second['emitidas']:,} ({second['ja_emitidas']:,} already)", "", "", "0",
                   ok=second["emitidas"] == 0 and second["ja_emitidas"] == customers))
    report.add(Row("second run", f"{second_s:.1f} s", f"{first_s:.1f} s (first)", ratio(second_s, first_s)))
    report.add(Row("server RSS during the run (peak)", f"{peak:.0f} MB", f"{idle:.0f} MB (idle, before)", ratio(peak, idle)))
    if health:
        report.add(Row("/health during the run p50 / max", f"{ms(median(health))} / {ms(max(health))}", "", "",
                       f"{len(health)} requests"))
    report.note(f"billing baseline: one plain query read {base_rows:,} readings in {base_s:.2f} s in a fresh process "
                "(SQLite, page cache warm from the preparation); the run reads far fewer rows (the rollups around the month's edges) "
                "but prices, numbers, encodes and stores every bill")


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())

    async def run(reactor: Any) -> None:
        Path(argv[2]).write_text(json.dumps(await build(spec)))

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main(sys.argv)
