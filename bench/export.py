"""The ``export`` phase: a year of one-minute readings (525,600 rows) as one streamed CSV (``--quick``: 30 days).

One customer's readings are bulk-inserted offline through the store's writer
(``bench.prepare``), then exported from ``/getLeituras?format=csv`` twice:
from meterd's own port, and through an HTTP worker. The client reads as fast
as it can; the figures are the rows and bytes a second, the time to the first
byte, and the server's RSS (meterd with its workers) sampled every 50 ms
during the export against its RSS just before it. The baseline is the least
any export must do: the same rows read from the same SQLite file by a plain
SQL loop in this process (the union of ``readings`` and its two write logs,
in time order, ``fetchmany``), timed in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from bench.report import Report, Row, ms, rate, ratio
from bench.server import Meterd
from meterd.store import readings_log

RSS_EVERY = 0.05  # seconds between two samples of the server's RSS
FLAT_MB = 20  # RSS growth during the export that still counts as flat


def plain_sql_rate(database: Path, customer: str) -> tuple[float, int]:
    """(rows/s, rows) of a plain SQL loop over the customer's readings, in time order."""
    union = " UNION ".join(f"SELECT ts, wh FROM {t} WHERE customer_id = ? AND meter_id = 1" for t in readings_log.TABLES)
    conn = sqlite3.connect(database)
    try:
        started = time.perf_counter()
        cursor = conn.execute(f"{union} ORDER BY ts", (customer,) * len(readings_log.TABLES))
        rows = 0
        while batch := cursor.fetchmany(10_000):
            rows += len(batch)
        return rows / (time.perf_counter() - started), rows
    finally:
        conn.close()


class RssSampler(threading.Thread):
    """The server's RSS (with its workers) every RSS_EVERY seconds until stopped: the peak."""

    def __init__(self, server: Meterd) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak = 0.0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.server.sample().rss_mb)
            self.samples += 1
            self.done.wait(RSS_EVERY)

    def stop(self) -> float:
        self.done.set()
        self.join()
        return self.peak


def export_once(server: Meterd, customer: str, token: str) -> dict[str, Any]:
    """One whole export as fast as this client reads: timings, sizes and the server's RSS."""
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    before = server.sample().rss_mb
    sampler = RssSampler(server)
    sampler.start()
    started = time.perf_counter()
    conn.request("GET", f"/getLeituras?id={customer}&format=csv", headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    first = response.read1(65536)
    first_byte = time.perf_counter() - started
    size, lines, tail = len(first), first.count(b"\n"), first[-200:]
    while chunk := response.read1(1 << 20):
        size += len(chunk)
        lines += chunk.count(b"\n")
        tail = (tail + chunk)[-200:]
    elapsed = time.perf_counter() - started
    peak = sampler.stop()
    conn.close()
    return {
        "status": response.status, "total": int(response.getheader("X-Total-Count") or 0), "rows": lines - 1, "bytes": size,
        "seconds": elapsed, "first_byte": first_byte, "rss_before": before, "rss_peak": peak, "samples": sampler.samples,
        "last_line": tail.rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].decode(),
    }


def phase_export(a: argparse.Namespace, report: Report, work: Path, prepare: Any, log: Any) -> None:
    days = 30 if a.quick else 365
    span = f"{days} days" if a.quick else "a year"
    report.section(f"export: {span} of one-minute readings as one streamed CSV (/getLeituras?format=csv)")
    log(f"preparing one customer with {span} of one-minute readings, offline")
    prepared = prepare(work, "export", {"customers": 0, "secrets": False, "history": [{"step_s": 60, "days": days}]})
    who = prepared["history"][0]
    base_rate, base_rows = plain_sql_rate(work / "export" / "meterd.sqlite3", who["id"])
    report.note(f"export: {who['readings']:,} readings prepared offline in {prepared['seconds']:.1f} s; the plain SQL loop read "
                f"{base_rows:,} rows at {base_rate:,.0f}/s (sqlite3 in the bench process, fetchmany of 10,000)")
    for label, args in (("meterd's port", ()), (f"{a.http_workers} HTTP workers", ("--http-workers", str(a.http_workers)))):
        log(f"export through {label}")
        server = Meterd(work / "export", *args).start()
        try:
            warm = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)  # threads, imports, statements
            warm.request("GET", f"/getLeituras?id={who['id']}&format=csv&kind=D", headers={"Authorization": f"Bearer {who['token']}"})
            warm.getresponse().read()
            warm.close()
            time.sleep(0.5)
            r = export_once(server, who["id"], who["token"])
        finally:
            server.stop()
        whole = r["status"] == 200 and r["rows"] == r["total"] == base_rows
        rows_per_s, growth = r["rows"] / r["seconds"], r["rss_peak"] - r["rss_before"]
        report.add(Row(f"{label}: rows exported", f"{r['rows']:,} / {base_rows:,}", target="all", ok=whole))
        report.add(Row(f"{label}: rows/s", rate(rows_per_s), f"{rate(base_rate)} (plain SQL)", ratio(rows_per_s, base_rate)))
        report.add(Row(f"{label}: MB/s", f"{r['bytes'] / 1e6 / r['seconds']:.1f} MB/s", "", "", f"{r['bytes'] / 1e6:.1f} MB in {r['seconds']:.1f} s"))
        report.add(Row(f"{label}: first byte", ms(r["first_byte"]), target="< 1 s", ok=r["first_byte"] < 1.0))
        report.add(Row(f"{label}: server RSS", f"{r['rss_peak']:.0f} MB peak", f"{r['rss_before']:.0f} MB before", f"+{growth:.1f} MB",
                       f"< +{FLAT_MB} MB", ok=growth < FLAT_MB))
        report.note(f"export through {label}: HTTP {r['status']}, {r['rows']:,} rows of X-Total-Count {r['total']:,} "
                    f"({'all' if whole else 'NOT all'} of the {base_rows:,} stored), {r['samples']} RSS samples, last row {r['last_line']!r}")
