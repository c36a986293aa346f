"""``python -m bench [--quick] [--only PHASE,...]``: run the benchmark, print one table (the phases are below).

Phases (the targets are docs/performance.md's), each with its baseline measured in the same run:
  ingest   signed, acked, durable UDP readings from many meters vs a bare Twisted UDP loop that only parses JSON
  http     /getFatura and /getAlarme with 32 keep-alive connections during 10,000 readings/s of ingest,
           vs a bare twisted.web resource returning constant JSON
  history  /getConsumoHist kind=Y over one year of one-minute readings vs the same with hourly readings
  rss      server RSS with 100,000 registered meters vs the same server with none
  scaleout (only when asked for) the ingest load on one meterd on SQLite vs one and two meterd processes
           (--reuse-port, one UDP port) on one PostgreSQL database (--pg DSN, or $METERD_BENCH_PG)
  attack   (only when asked for) unauthenticated clients, each attack on a fresh meterd beside the same server quiet:
           200 connections pipelining without reading, slowloris from one address, twice the UDP intake, and a good
           fleet's first-try acks under a garbage flood with --udp-workers 0 and 1
  search   (only when asked for) /buscaClientes over 100,000 customers vs /health on the same connections
  export   (only when asked for) a year of one-minute readings as one streamed CSV vs a plain SQL loop over the rows
  portal   (only when asked for) each web portal page's server-side time for a customer with a year of one-minute readings,
           vs the JSON route the page is built on
  billing  (only when asked for) a billing run of 100,000 customers vs one plain query of their readings (bench/billing.py)
  webhooks (only when asked for) alarm events at a steady rate delivered to a receiver on loopback: delivery lag
           and events/s vs the receiver's own round trip for a plain POST (bench/webhooks.py)
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import billing, pg, search, webhooks
from bench.common import median, metric_values, percentile, python, subprocess_env
from bench.export import phase_export
from bench.portal import phase_portal
from bench.report import Report, Row, ms, rate, ratio
from bench.server import Baseline, Meterd, raise_rmem_max, rmem_max
from meterd.service import UDP_RECEIVE_BUFFER

PHASES = ("ingest", "http", "history", "rss", "scaleout", "attack", "search", "export", "portal", "billing", "webhooks")
# scaleout needs a PostgreSQL server, attack floods the machine for about three minutes: asked for by name
DEFAULT_PHASES = ("ingest", "http", "history", "rss")
SCALEOUT_SOCKETS = 16  # source ports per sender process, so SO_REUSEPORT has something to spread
# The target is 60,000/s stored; the stored rate counts whole flushes (~3,500
# readings each) at both ends of its window, ~140/s either way, so an offer of
# exactly 60,000/s can read below it with every reading acknowledged.
DEFAULT_RATE = 61_000
OFFER_OVER_BASE = 0.31  # the default offer against the bare loop's rate: the target is >= 0.30x


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- helpers ------------------------------------------------------------------


def prepare(work: Path, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    spec = {**spec, "data_dir": str(work / name)}
    spec_path, out_path = work / f"{name}-spec.json", work / f"{name}-prepared.json"
    spec_path.write_text(json.dumps(spec))
    subprocess.run([python(), "-m", "bench.prepare", str(spec_path), str(out_path)], env=subprocess_env(), check=True)
    return json.loads(out_path.read_text())


class Senders:
    """UDP sender processes (bench.loadgen), built before the timed phase and started together."""

    def __init__(self, port: int, meters: list[dict[str, Any]], processes: int, rate: float, duration: float,
                 seq_base: int, *, acks: bool = True, drain: float = 3.0, sockets: int = 1, ack_within: float | None = None) -> None:
        self.procs = []
        start_ms = int(time.time() * 1000)
        for k in range(processes):
            config = {
                "host": "127.0.0.1", "port": port, "meters": meters[k::processes], "rate": rate / processes,
                "duration": duration, "seq_base": seq_base, "start_ms": start_ms, "acks": acks, "drain": drain,
                "sockets": sockets, **({"ack_within": ack_within} if ack_within is not None else {}),
            }
            proc = subprocess.Popen([python(), "-m", "bench.loadgen"], env=subprocess_env(),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(config) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a load generator failed to start")

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def results(self) -> dict[str, Any]:
        parts = []
        for proc in self.procs:
            assert proc.stdout is not None
            parts.append(json.loads(proc.stdout.readline()))
            proc.wait()
        total: dict[str, Any] = {k: sum(p[k] for p in parts) for k in ("sent", "acked", "send_errors", "ack_datagrams", "bad_acks")
                                 + (("acked_within",) if "acked_within" in parts[0] else ())}
        total["send_seconds"] = max(p["send_seconds"] for p in parts)
        total["max_lag_s"] = max(p["max_lag_s"] for p in parts)
        # Percentiles of the union are not derivable from the parts; report the worst part's (conservative).
        for key in ("ack_p50_s", "ack_p99_s", "ack_max_s"):
            values = [p[key] for p in parts if p[key] is not None]
            total[key] = max(values) if values else None
        return total


def record_profile(a: argparse.Namespace, server: Meterd, path: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    """With ``--profile``: py-spy records the server's main process for ``seconds`` (workers not included)."""
    if not a.profile:
        return None
    return subprocess.Popen([a.profile, "record", "-p", str(server.pid), "-d", str(int(seconds)), "-r", "200",
                             "-f", "raw", "-o", str(path), "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def udp_kernel_drops() -> int:
    """Datagrams the kernel dropped for full receive buffers (all sockets): Udp RcvbufErrors."""
    lines = Path("/proc/net/snmp").read_text().splitlines()
    udp = [line.split() for line in lines if line.startswith("Udp:")]
    return int(udp[1][udp[0].index("RcvbufErrors")])


def stored_count(server: Meterd) -> float:
    return metric_values(server.metrics(), "meterd_readings_total").get('{outcome="stored"}', 0.0)


def received_count(server: Meterd) -> float:
    return metric_values(server.metrics(), "meterd_datagrams_received_total").get("", 0.0)


def http_load(port: int, requests: list[tuple[str, str | None]], duration: float, connections: int = 32) -> dict[str, Any]:
    config = {"host": "127.0.0.1", "port": port, "requests": requests, "duration": duration, "connections": connections, "warmup": 0.5}
    done = subprocess.run([python(), "-m", "bench.http_load"], input=json.dumps(config) + "\n", env=subprocess_env(),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def sequential_latency(port: int, path: str, token: str, n: int, warmup: int = 5) -> tuple[list[float], int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times, status, body = [], 0, None
    for i in range(warmup + n):
        started = time.perf_counter()
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - started
        status = response.status
        if i >= warmup:
            times.append(elapsed)
    conn.close()
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw
    return times, status, body


# -- phases -------------------------------------------------------------------


def phase_ingest(a: argparse.Namespace, report: Report, work: Path, server: Meterd, fleet: list[dict[str, Any]]) -> None:
    report.section(f"ingest: signed, acked, --durability full, {len(fleet):,} meters, {a.duration:g} s")
    log(f"UDP baseline: bare Twisted loop parsing JSON, blasted unpaced for {a.baseline_duration:g} s")
    base = Baseline("udp", work).start()
    blast = Senders(base.port, fleet, 1, 0, a.baseline_duration, 1, acks=False)
    c0, p0 = base.udp_count(attempts=5), base.sample()
    t0 = time.perf_counter()
    blast.go()
    blasted = blast.results()
    c1 = base.udp_count(attempts=10)  # answered after the queued backlog: elapsed runs to the answer
    elapsed = time.perf_counter() - t0
    p1 = base.sample()
    base.stop()
    if c0 is None or c1 is None:
        raise RuntimeError("the UDP baseline did not report its count")
    base_rate = (c1 - c0) / elapsed
    base_cpu = (p1.cpu_s - p0.cpu_s) / elapsed
    report.note(f"UDP baseline: 1 unpaced sender offered {blasted['sent'] / blasted['send_seconds']:,.0f}/s; "
                f"the bare loop parsed {base_rate:,.0f}/s at {base_cpu:.0%} CPU, RSS {p1.rss_mb:.0f} MB")

    # The target is both 60,000/s and 0.30x the bare loop: offering only 60,000/s
    # could not show the second whenever the bare loop parses more than 200,000/s.
    offer = a.rate or max(DEFAULT_RATE, 1000 * math.ceil(OFFER_OVER_BASE * base_rate / 1000))
    if not a.rate:
        report.note(f"offered rate: the larger of {DEFAULT_RATE:,}/s and {OFFER_OVER_BASE:.2f}x the bare loop's rate")
    log(f"building {int(offer * a.duration):,} signed datagrams in {a.senders} sender processes")
    senders = Senders(server.udp_port, fleet, a.senders, offer, a.duration, 1, drain=3.0)
    stored_start, drops0, s0, m0 = stored_count(server), udp_kernel_drops(), server.sample(), server.metrics()
    profiler = record_profile(a, server, work / "ingest-profile.txt", a.duration)
    log(f"ingest: {offer:,.0f} readings/s for {a.duration:g} s")
    t0 = time.perf_counter()
    senders.go()
    # The stored rate is taken in steady state: readings are stored a flush
    # cycle after they are sent, so a window from the first send would count
    # that cycle's worth of the end as missing. CPU is over the whole phase.
    ramp = min(5.0, a.duration / 6)
    time.sleep(ramp)
    stored0, steady0 = stored_count(server), time.perf_counter()
    time.sleep(max(0.0, a.duration - ramp))
    stored1, s1, m1 = stored_count(server), server.sample(), server.metrics()
    window = time.perf_counter() - t0
    steady = time.perf_counter() - steady0
    res = senders.results()
    stored_final, drops1 = stored_count(server), udp_kernel_drops()
    if profiler is not None:
        profiler.wait()
        report.note(f"py-spy profile (raw collapsed stacks) of the ingest phase: {work / 'ingest-profile.txt'}")
    stored_rate = (stored1 - stored0) / steady
    offered = res["sent"] / res["send_seconds"]
    acked_pct = 100.0 * res["acked"] / res["sent"] if res["sent"] else 0.0
    cpu = (s1.cpu_s - s0.cpu_s) / window
    drops = metric_values(server.metrics(), "meterd_datagrams_dropped_total")
    report.add(Row("offered rate", rate(offered), target=f">= {offer:,.0f}/s", ok=offered >= 0.97 * offer))
    report.add(Row("stored rate", rate(stored_rate), rate(base_rate), ratio(stored_rate, base_rate),
                   ">= 60,000/s, >= 0.30x", ok=stored_rate >= 60_000 and stored_rate >= 0.3 * base_rate))
    report.add(Row("stored / sent (after drain)", f"{stored_final - stored_start:,.0f} / {res['sent']:,}",
                   ratio=f"{(stored_final - stored_start) / max(1, res['sent']):.1%}"))
    report.add(Row("acknowledged", f"{acked_pct:.2f} %", target="100 %", ok=res["acked"] == res["sent"]))
    report.add(Row("ack latency p50", ms(res["ack_p50_s"])))
    report.add(Row("ack latency p99", ms(res["ack_p99_s"]), target="< 200 ms",
                   ok=res["ack_p99_s"] is not None and res["ack_p99_s"] < 0.2))
    report.add(Row("server CPU", f"{cpu:.0%}", f"{base_cpu:.0%}", ratio(cpu / max(stored_rate, 1), base_cpu / max(base_rate, 1)) + " per reading"))
    report.add(Row("server RSS (peak)", f"{s1.rss_mb:.0f} MB ({s1.hwm_mb:.0f})", f"{p1.rss_mb:.0f} MB", ratio(s1.rss_mb, p1.rss_mb)))
    report.note(f"ingest: {a.senders} paced sender processes, ack p50/p99 are the worst sender's; max sender lag "
                f"{res['max_lag_s'] * 1000:.0f} ms; kernel UDP receive-buffer drops during the phase: {drops1 - drops0:,}; "
                f"server drops by reason: {', '.join(f'{k}={v:,.0f}' for k, v in drops.items()) or 'none'}; "
                f"bad/unparsed acks: {res['bad_acks']}")
    report.note(flush_note(m0, m1, window, stored1 - stored_start))


def flush_note(m0: str, m1: str, window: float, stored: float) -> str:
    """How the server batched the phase: flushes/s, readings and seconds per flush, acks/s."""

    def delta(name: str) -> float:
        return metric_values(m1, name).get("", 0.0) - metric_values(m0, name).get("", 0.0)

    flushes = delta("meterd_flushes_total")
    if not flushes:
        return "ingest: no flush during the phase"
    buckets = metric_values(m1, "meterd_flush_seconds_bucket")
    before = metric_values(m0, "meterd_flush_seconds_bucket")
    within_100ms = buckets.get('{le="0.1"}', 0.0) - before.get('{le="0.1"}', 0.0)
    return (f"ingest: {flushes / window:.1f} flushes/s, {stored / flushes:,.0f} stored readings and "
            f"{1000 * delta('meterd_flush_seconds_sum') / flushes:.0f} ms per flush on average, "
            f"{(flushes - within_100ms) / flushes:.1%} of flushes over 100 ms, "
            f"{delta('meterd_acks_sent_total') / window:,.0f} ack datagrams/s")


def phase_http(a: argparse.Namespace, report: Report, work: Path, server: Meterd, fleet: list[dict[str, Any]]) -> None:
    report.section(f"HTTP: 32 keep-alive connections, {a.http_duration:g} s per route, during {a.http_ingest_rate:,.0f} readings/s of ingest")
    log("web baseline: bare twisted.web resource, constant JSON")
    base = Baseline("web", work).start()
    b = http_load(base.port, [("/", None)], a.http_duration)
    base.stop()
    customers = fleet[:32]
    total = 2 * (a.http_duration + 0.5) + 6
    log(f"background ingest at {a.http_ingest_rate:,.0f}/s for {total:.0f} s")
    senders = Senders(server.udp_port, fleet, 1, a.http_ingest_rate, total, 10_000_000, drain=3.0)
    senders.go()
    time.sleep(1.0)
    for route, limit in (("/getFatura", 0.25), ("/getAlarme", 0.5)):
        log(f"{route}: 32 connections")
        profile_path = work / f"http{route.replace('/', '-')}-profile.txt"
        profiler = record_profile(a, server, profile_path, a.http_duration)
        r = http_load(server.http_port, [(f"{route}?id={c['id']}", c["token"]) for c in customers], a.http_duration)
        if profiler is not None:
            profiler.wait()
            report.note(f"py-spy profile (raw collapsed stacks) of {route}: {profile_path}")
        ok_count = r["statuses"].get("200", 0)
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items()))
        if ok_count == 0:
            codes = "/".join(sorted(r["statuses"])) or "no answer"
            report.add(Row(f"{route} requests/s", f"n/a ({codes})", rate(b["rps"]), "n/a", f">= {limit}x"))
            report.add(Row(f"{route} p50 / p99", f"n/a ({codes})", f"{ms(b['p50_s'])} / {ms(b['p99_s'])}", "", "p99 < 50 ms"))
            report.note(f"{route} answered only {statuses} ({r['rps']:,.0f}/s, p99 {ms(r['p99_s'])}); not counted")
            continue
        rps = ok_count / a.http_duration
        report.add(Row(f"{route} requests/s", rate(rps), rate(b["rps"]), ratio(rps, b["rps"]), f">= {limit}x",
                       ok=rps >= limit * b["rps"]))
        report.add(Row(f"{route} p50 / p99", f"{ms(r['p50_s'])} / {ms(r['p99_s'])}", f"{ms(b['p50_s'])} / {ms(b['p99_s'])}",
                       ratio(r["p99_s"], b["p99_s"]), "p99 < 50 ms", ok=r["p99_s"] is not None and r["p99_s"] < 0.05))
        if set(r["statuses"]) != {"200"}:
            report.note(f"{route} statuses: {statuses}")
    res = senders.results()
    report.add(Row("background ingest acked", f"{100.0 * res['acked'] / max(1, res['sent']):.2f} % of {res['sent']:,}",
                   target="100 %", ok=res["acked"] == res["sent"]))
    report.note(f"web baseline measured alone (no ingest) with the same client: {b['rps']:,.0f}/s; "
                f"background ingest ack p99 {ms(res['ack_p99_s'])}")


def phase_history(a: argparse.Namespace, report: Report, server: Meterd, history: list[dict[str, Any]]) -> None:
    report.section(f"history: /getConsumoHist kind=Y periodo=0, median of {a.history_requests} sequential requests")
    results = []
    for h in history:
        path = f"/getConsumoHist?id={h['id']}&kind=Y&periodo=0"
        times, status, body = sequential_latency(server.http_port, path, h["token"], a.history_requests)
        results.append((h, median(times), status, body))
    (minute, m_med, m_status, m_body), (hourly, h_med, h_status, h_body) = results
    ok = m_status == 200 and h_status == 200
    report.add(Row(f"Y over {minute['readings']:,} one-minute readings", ms(m_med) if m_status == 200 else f"HTTP {m_status}",
                   f"{ms(h_med)} ({hourly['readings']:,} hourly)", ratio(m_med, h_med), "< 20 ms, <= 2x",
                   ok=ok and m_med is not None and h_med is not None and m_med < 0.02 and m_med <= 2 * h_med))
    if ok:
        report.note(f"history totals: minute data {m_body.get('total_kwh')} kWh in {len(m_body.get('buckets', []))} buckets, "
                    f"hourly data {h_body.get('total_kwh')} kWh; time is client-observed over loopback (the server exposes "
                    "no per-request timing), keep-alive, idle server")
    else:
        report.note(f"history answers: minute {m_status} {str(m_body)[:200]}, hourly {h_status} {str(h_body)[:200]}")


def phase_rss(a: argparse.Namespace, report: Report, work: Path) -> None:
    report.section(f"memory: {a.rss_meters:,} registered meters")
    log(f"registering {a.rss_meters:,} customers with one meter each, offline")
    started = time.perf_counter()
    prepare(work, "rss", {"customers": a.rss_meters, "secrets": False})
    prep_s = time.perf_counter() - started
    samples = {}
    workers = ("--udp-workers", str(a.udp_workers), "--http-workers", str(a.http_workers))
    for name, data_dir_name, args in (("rss", "rss", ()), ("empty", "empty", ()), ("workers", "rss", workers)):
        data_dir = work / data_dir_name
        data_dir.mkdir(exist_ok=True)
        started = time.perf_counter()
        server = Meterd(data_dir, *args).start()
        ready_s = time.perf_counter() - started
        time.sleep(3.0 if args else 1.0)  # the workers load the meters' keys and customers' token hashes
        samples[name] = (server.sample(), ready_s)
        server.stop()
    full, empty, with_workers = samples["rss"][0], samples["empty"][0], samples["workers"][0]
    report.add(Row(f"server RSS, {a.rss_meters:,} meters", f"{full.rss_mb:.0f} MB", f"{empty.rss_mb:.0f} MB (no meters)",
                   ratio(full.rss_mb, empty.rss_mb), "< 300 MB" if a.rss_meters >= 100_000 else "",
                   ok=full.rss_mb < 300 if a.rss_meters >= 100_000 else None))
    report.add(Row(f"  with {a.udp_workers} UDP + {a.http_workers} HTTP workers", f"{with_workers.rss_mb:.0f} MB",
                   f"{full.rss_mb:.0f} MB (none)", ratio(with_workers.rss_mb, full.rss_mb)))
    report.add(Row("start-up to /health", f"{samples['rss'][1]:.1f} s", f"{samples['empty'][1]:.1f} s"))
    report.note(f"memory phase: {a.rss_meters:,} customers + meters bulk-inserted offline through the store's writer pool "
                f"in {prep_s:.1f} s (not through the API), then the server started on that data dir; RSS read 1 s after /health "
                f"(3 s with workers; their RSS counted with meterd's); the target is for meterd's defaults (no workers)")


def _masked(dsn: str) -> str:
    """The DSN as printed: without a password."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"(password=)\S+", r"\1***", dsn))


def _measure_ingest(a: argparse.Namespace, servers: list[Meterd], fleet: list[dict[str, Any]], postmaster: int | None) -> dict[str, Any]:
    """The ingest phase's measurement, summed over the processes that share the UDP port."""
    senders = Senders(servers[0].udp_port, fleet, a.senders, a.scaleout_rate, a.scaleout_duration, 1,
                      drain=3.0, sockets=SCALEOUT_SOCKETS)
    stored0 = sum(stored_count(s) for s in servers)
    received0 = [received_count(s) for s in servers]
    cpu0 = [s.sample().cpu_s for s in servers]
    pg0, drops0 = pg.cpu_by_pid(postmaster), udp_kernel_drops()
    t0 = time.perf_counter()
    senders.go()
    time.sleep(a.scaleout_duration)
    stored1 = sum(stored_count(s) for s in servers)
    cpu1 = [s.sample().cpu_s for s in servers]
    pg1 = pg.cpu_by_pid(postmaster)
    window = time.perf_counter() - t0
    res = senders.results()
    stored_final = sum(stored_count(s) for s in servers)
    received = [received_count(s) - r0 for s, r0 in zip(servers, received0)]
    dropped: dict[str, float] = {}
    for s in servers:
        for k, v in metric_values(s.metrics(), "meterd_datagrams_dropped_total").items():
            dropped[k] = dropped.get(k, 0.0) + v
    return {
        "offered": res["sent"] / res["send_seconds"],
        "sent": res["sent"],
        "stored_rate": (stored1 - stored0) / window,
        "stored_after_drain": stored_final - stored0,
        "acked_pct": 100.0 * res["acked"] / res["sent"] if res["sent"] else 0.0,
        "ack_p50_s": res["ack_p50_s"],
        "ack_p99_s": res["ack_p99_s"],
        "cpu": [(c1 - c0) / window for c0, c1 in zip(cpu0, cpu1)],
        "pg_cpu": pg.cpu_between(pg0, pg1) / window if postmaster is not None else None,
        "received": received,
        "kernel_drops": udp_kernel_drops() - drops0,
        "dropped": dropped,
        "max_lag_s": res["max_lag_s"],
    }


def phase_scaleout(a: argparse.Namespace, report: Report, work: Path) -> None:
    """One and two meterd processes on one PostgreSQL beside one on SQLite, same load, same run."""
    dsn = a.pg
    facts, why = pg.probe(dsn)
    if facts is None:
        report.note(f"scaleout skipped: PostgreSQL not reachable at {_masked(dsn)} ({why}); give --pg DSN or METERD_BENCH_PG, "
                    "or create the database: psql -d postgres -c 'CREATE DATABASE meterd_bench'")
        return
    postmaster = pg.postmaster_of(facts["pid"])
    report.section(f"scale-out: signed, acked, --durability full, {a.meters:,} meters, {a.scaleout_rate:,.0f}/s offered "
                   f"for {a.scaleout_duration:g} s per configuration; ratio to 1x SQLite")
    configs = (("SQLite, 1 process", None, 1), ("PostgreSQL, 1 process", dsn, 1), ("PostgreSQL, 2 processes", dsn, 2))
    results: list[tuple[str, dict[str, Any]]] = []
    prep_notes = []
    for label, db, processes in configs:
        name = f"scaleout-{'pg' if db else 'sqlite'}{processes}"
        log(f"scaleout {label}: preparing {a.meters:,} meters offline" + (" (public schema dropped and recreated)" if db else ""))
        servers: list[Meterd] = []
        try:
            prepared = prepare(work, name, {"customers": a.meters, **({"db": db} if db else {})})
            prep_notes.append(f"{prepared['seconds']:.1f} s")
            extra = ("--db", db, *(("--reuse-port",) if processes > 1 else ())) if db else ()
            for k in range(processes):
                data_dir = work / name  # SQLite: the file prepare built; PostgreSQL: operator.token only
                if k > 0:  # every process of one deployment shares the operator token (docs/scale-out.md)
                    data_dir = work / f"{name}-{k + 1}"
                    data_dir.mkdir(exist_ok=True)
                    shutil.copy2(servers[0].data_dir / "operator.token", data_dir / "operator.token")
                servers.append(Meterd(data_dir, "--durability", "full", *extra,
                                      udp_port=servers[0].udp_port if servers else None).start())
            log(f"scaleout {label}: {a.scaleout_rate:,.0f} readings/s for {a.scaleout_duration:g} s")
            results.append((label, _measure_ingest(a, servers, prepared["customers"], postmaster)))
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            report.note(f"scaleout {label}: not measured ({' '.join(str(e).split())[:300]})")
        finally:
            for server in servers:
                code = server.stop()
                if code not in (0, -15):
                    report.note(f"scaleout {label}: meterd exited with status {code}; log: {server.log_path}")
    if not results or results[0][0] != configs[0][0]:
        report.note("scaleout: no SQLite figures to compare with")
        return
    base = results[0][1]

    def rows(figure: str, value: Any, ratio_of: Any) -> None:
        for i, (label, r) in enumerate(results):
            report.add(Row(f"{figure}, {label}", value(r), "" if i == 0 else value(base),
                           "" if i == 0 else ratio(ratio_of(r), ratio_of(base))))

    rows("stored rate", lambda r: rate(r["stored_rate"]), lambda r: r["stored_rate"])
    rows("acked", lambda r: f"{r['acked_pct']:.2f} %", lambda r: r["acked_pct"])
    rows("ack p50 / p99", lambda r: f"{ms(r['ack_p50_s'])} / {ms(r['ack_p99_s'])}", lambda r: r["ack_p99_s"])
    rows("meterd CPU (sum)", lambda r: f"{sum(r['cpu']):.0%}" + (f" ({' + '.join(f'{c:.0%}' for c in r['cpu'])})" if len(r["cpu"]) > 1 else ""),
         lambda r: sum(r["cpu"]))
    rows("meterd CPU per reading", lambda r: f"{1e6 * sum(r['cpu']) / max(r['stored_rate'], 1):.0f} us",
         lambda r: sum(r["cpu"]) / max(r["stored_rate"], 1))
    if all(r["pg_cpu"] is not None for _, r in results[1:]):
        for label, r in results[1:]:
            report.add(Row(f"PostgreSQL CPU, {label}", f"{r['pg_cpu']:.0%}"))

        def with_db(r: dict[str, Any]) -> float:  # SQLite runs inside meterd: its CPU is meterd's
            return (sum(r["cpu"]) + (r["pg_cpu"] if r is not base else 0.0)) / max(r["stored_rate"], 1)

        rows("CPU per reading, meterd + database", lambda r: f"{1e6 * with_db(r):.0f} us", with_db)
    for label, r in results:
        if len(r["received"]) > 1:
            total = sum(r["received"]) or 1.0
            split = " / ".join(f"{n:,.0f} ({n / total:.0%})" for n in r["received"])
            both = all(n > 0 for n in r["received"])
            report.add(Row(f"UDP datagrams per process, {label}", split, target="every process > 0", ok=both))
    for label, r in results:
        drops = ", ".join(f"{k}={v:,.0f}" for k, v in r["dropped"].items()) or "none"
        report.note(f"scaleout {label}: offered {r['offered']:,.0f}/s; stored/sent after a 3 s drain "
                    f"{r['stored_after_drain']:,.0f} / {r['sent']:,}; max sender lag {r['max_lag_s'] * 1000:.0f} ms; "
                    f"kernel UDP drops {r['kernel_drops']:,}; server drops {drops}")
    report.note(f"scaleout: {a.senders} paced sender processes x {SCALEOUT_SOCKETS} sockets (each meter keeps one source port, "
                "so SO_REUSEPORT spreads meters, not readings, over the processes); ack p50/p99 are the worst sender's; "
                "each configuration on a freshly prepared database; ratios are to 1x SQLite in the same run")
    report.note(f"scaleout provisioning: offline through the store code (bench/prepare.py: SqliteStore, or PostgresStore "
                f"after DROP SCHEMA public CASCADE; CREATE SCHEMA public on {_masked(dsn)}): {a.meters:,} customers and meters "
                f"bulk-inserted in {' / '.join(prep_notes)}; not through the HTTP API")
    report.note(f"scaleout PostgreSQL {facts['server_version']}: fsync={facts['fsync']}, synchronous_commit={facts['synchronous_commit']}, "
                f"shared_buffers={facts['shared_buffers']}; " + ("PostgreSQL CPU is the postmaster and all its children, on this machine"
                                                              if postmaster is not None else "the server is not on this machine: its CPU is not measured")
                + f"; meterd, PostgreSQL and the senders share {os.cpu_count()} CPUs")


# -- attack: unauthenticated clients -----------------------------------------


ATTACK_FLEET = 200  # the garbage flood's good meters
ATTACK_FLEET_EVERY = 0.5  # seconds between two readings of one good meter
HEALTH_EVERY = 0.1
HEALTH_LIMIT = 0.100  # the target for /health's p99 under each attack
PIPELINE_CONNECTIONS = 200
PIPELINE_RSS_GROWTH_MB = 150  # the target: peak <= idle + 150 MB
NEAR_IDLE_MB = 20  # "near idle" 5 s after the attackers close: within this of the idle RSS
SLOWLORIS_ATTEMPTS = 1000
SWEEP_S = 1.0  # meterd.web.request.SWEEP_INTERVAL: the header deadline is checked once a second
UDP_PROBE_RATE = 150_000.0  # more than this 2-CPU machine takes in: the probe measures saturation
PIPELINE_SOURCES = ["127.0.1.1", "127.0.1.2"]  # 100 connections from each, under the cap of 128 per address
POLL_SOURCE = "127.0.0.2"  # /health is polled from an address of its own: the attackers' caps are not its
GARBAGE_SENDERS = 2


class AttackClient:
    """A ``bench.attack`` process (see there), set up before the timed part and started with :meth:`go`."""

    def __init__(self, **config: Any) -> None:
        self.kind = config["kind"]
        self.proc = subprocess.Popen([python(), "-m", "bench.attack"], env=subprocess_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"host": "127.0.0.1", **config}) + "\n")
        self.proc.stdin.flush()

    def ready(self) -> AttackClient:
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {self.kind} client failed to start (exit status {self.proc.wait()})")
        return self

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.wait()
        if not line:
            raise RuntimeError(f"the {self.kind} client exited with status {self.proc.returncode} and no result")
        return dict(json.loads(line))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def reason_delta(m0: str, m1: str, name: str) -> dict[str, int]:
    """A counter labelled by ``reason``: how much each reason grew from ``m0`` to ``m1``."""

    def values(text: str) -> dict[str, float]:
        return {re.sub(r'^\{reason="(.*)"\}$', r"\1", k): v for k, v in metric_values(text, name).items()}

    before, after = values(m0), values(m1)
    return {k: int(v - before.get(k, 0.0)) for k, v in sorted(after.items()) if v > before.get(k, 0.0)}


def counter_delta(m0: str, m1: str, name: str, labels: str = "") -> float:
    return metric_values(m1, name).get(labels, 0.0) - metric_values(m0, name).get(labels, 0.0)


def reasons(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v:,}" for k, v in d.items()) or "none"


def tcp_kernel_mb() -> float:
    """The kernel's memory for every TCP socket on the machine (/proc/net/sockstat): in nobody's RSS."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return 0.0


def listen_overflows() -> int:
    """Connections the kernel dropped for a full accept queue, machine-wide (TcpExt ListenOverflows)."""
    lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines() if line.startswith("TcpExt:")]
    return int(lines[1][lines[0].index("ListenOverflows")])


def queued_mb(port: int) -> tuple[float, float]:
    """Bytes (MB) in the kernel's receive and send queues of the TCP connections on local ``port`` (/proc/net/tcp).

    The requests received and not yet read by the server, and the answers it
    wrote that the client has not taken: memory the server's sockets hold,
    in no process's RSS.
    """
    rx = tx = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "0A":  # not the listening socket
            t, r = fields[4].split(":")
            tx += int(t, 16)
            rx += int(r, 16)
    return rx / 2**20, tx / 2**20


def health_figures(result: dict[str, Any]) -> dict[str, Any]:
    polls = result["polls"]
    times = [latency for _, latency, status in polls if latency is not None and status == "200"]
    slow_at = [t for t, latency, _ in polls if latency is None or latency >= HEALTH_LIMIT]
    return {"polls": len(polls), "answered": len(times), "p50": percentile(times, 50), "p99": percentile(times, 99),
            "max": max(times) if times else None, "slow": sum(1 for t in times if t >= HEALTH_LIMIT),
            "slow_at": (min(slow_at), max(slow_at)) if slow_at else None,  # when the slow or unanswered polls were sent
            "failures": sorted({status for _, latency, status in polls if latency is None or status != "200"})}


def poller(server: Meterd, duration: float, **options: Any) -> AttackClient:
    return AttackClient(kind="poll", port=server.http_port, path="/health", interval=HEALTH_EVERY, duration=duration, **options)


def quiet_health(a: argparse.Namespace, server: Meterd, **options: Any) -> dict[str, Any]:
    """The baseline: the same polls as during the attack, on the same server, with nothing else running."""
    client = poller(server, a.attack_quiet, **options).ready()
    client.go()
    return health_figures(client.result())


def health_row(label: str, during: dict[str, Any], quiet: dict[str, Any]) -> Row:
    every = during["answered"] == during["polls"] > 0
    value = ms(during["p99"]) + ("" if every else f" ({during['polls'] - during['answered']} unanswered)")
    return Row(f"{label}: /health p99", value, ms(quiet["p99"]), ratio(during["p99"], quiet["p99"]), "< 100 ms",
               ok=every and during["p99"] is not None and during["p99"] < HEALTH_LIMIT)


def health_note(label: str, during: dict[str, Any], quiet: dict[str, Any], how: str) -> str:
    return (f"{label}: /health polled every {HEALTH_EVERY * 1000:.0f} ms ({how}): {during['answered']}/{during['polls']} answered, "
            f"p50/p99/max {ms(during['p50'])} / {ms(during['p99'])} / {ms(during['max'])}, {during['slow']} over {HEALTH_LIMIT * 1000:.0f} ms"
            + (" (sent {:.1f}-{:.1f} s into the attack)".format(*during["slow_at"]) if during["slow_at"] else "")
            + (f" (no answer: {', '.join(during['failures'])})" if during["failures"] else "")
            + f"; quiet: {quiet['answered']}/{quiet['polls']}, {ms(quiet['p50'])} / {ms(quiet['p99'])} / {ms(quiet['max'])}")


def peaks_while(server: Meterd, clients: list[AttackClient], timeout: float, every: float = 0.25) -> dict[str, float]:
    """Peaks of meterd's RSS (with its workers), of its HTTP connections' kernel queues and of all TCP memory, until a client ends."""
    peaks = dict.fromkeys(("rss", "queued", "rx", "tx", "tcp"), 0.0)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and all(c.proc.poll() is None for c in clients):
        rx, tx = queued_mb(server.http_port)
        if rx + tx > peaks["queued"]:
            peaks.update(queued=rx + tx, rx=rx, tx=tx)
        peaks["rss"] = max(peaks["rss"], server.sample().rss_mb)
        peaks["tcp"] = max(peaks["tcp"], tcp_kernel_mb())
        time.sleep(every)
    return peaks


def pending(server: Meterd) -> int | None:
    with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
        return json.loads(r.read()).get("pending")


def wait_stored(server: Meterd, timeout: float) -> float | None:
    """Seconds until no reading waits to be stored; None past ``timeout``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pending(server) == 0:
            return time.perf_counter() - t0
        time.sleep(0.2)
    return None


def attack_server(a: argparse.Namespace, work: Path, name: str, *args: str) -> tuple[Meterd, list[dict[str, Any]]]:
    """A fresh meterd (its defaults, but for ``args``) on a freshly prepared data dir of ``a.meters`` meters."""
    prepared = prepare(work, name, {"customers": a.meters})
    return Meterd(work / name, *args).start(), prepared["customers"]


def stopped(report: Report, label: str, server: Meterd) -> None:
    code = server.stop()
    if code not in (0, -15):
        report.note(f"{label}: meterd exited with status {code}; log: {server.log_path}")


def attack_pipelining(a: argparse.Namespace, report: Report, work: Path) -> None:
    server, _ = attack_server(a, work, "attack-pipeline")
    clients: list[AttackClient] = []
    try:
        with urllib.request.urlopen(server.url + "/openapi.json", timeout=10) as r:
            answer_size = len(r.read())
        quiet = quiet_health(a, server, bind=POLL_SOURCE)
        idle = server.sample().rss_mb
        log(f"attack pipelining: {PIPELINE_CONNECTIONS} connections pipelining GET /openapi.json, reading nothing, {a.attack_duration:g} s")
        tcp0, m0 = tcp_kernel_mb(), server.metrics()
        attacker = AttackClient(kind="pipeline", port=server.http_port, connections=PIPELINE_CONNECTIONS, bind=PIPELINE_SOURCES,
                                path="/openapi.json", duration=a.attack_duration)
        polls = poller(server, a.attack_duration, bind=POLL_SOURCE)
        clients = [attacker, polls]
        for c in clients:
            c.ready()
        cpu0 = server.sample().cpu_s
        for c in clients:
            c.go()
        peaks = peaks_while(server, clients, a.attack_duration + 10)
        flood, during = attacker.result(), health_figures(polls.result())
        cpu = (server.sample().cpu_s - cpu0) / flood["seconds"]
        m1 = server.metrics()
        time.sleep(a.attack_after_close)
        after, m2 = server.sample().rss_mb, server.metrics()
        queued_after = sum(queued_mb(server.http_port))
    finally:
        for c in clients:
            c.kill()
        stopped(report, "pipelining", server)
    answered = counter_delta(m0, m1, "meterd_http_requests_total", '{route="/openapi.json",status="200"}')
    peak = peaks["rss"]
    report.add(Row("pipelining: server RSS peak", f"{peak:.0f} MB (+{peak - idle:.0f})", f"{idle:.0f} MB idle", ratio(peak, idle),
                   f"<= idle + {PIPELINE_RSS_GROWTH_MB} MB", ok=peak <= idle + PIPELINE_RSS_GROWTH_MB))
    report.add(Row(f"pipelining: server RSS {a.attack_after_close:g} s after close", f"{after:.0f} MB (+{after - idle:.0f})",
                   f"{idle:.0f} MB idle", ratio(after, idle), f"<= idle + {NEAR_IDLE_MB} MB", ok=after <= idle + NEAR_IDLE_MB))
    report.add(Row("pipelining: kernel queues of meterd's connections, peak", f"{peaks['queued']:,.0f} MB",
                   f"{queued_after:.0f} MB {a.attack_after_close:g} s after close"))
    report.add(health_row("pipelining", during, quiet))
    report.note(f"pipelining: {PIPELINE_CONNECTIONS} connections from {' and '.join(PIPELINE_SOURCES)} wrote {flood['requests_sent']:,} "
                f"pipelined GET /openapi.json ({flood['bytes_sent'] / 2**20:,.0f} MiB) in {flood['seconds']:.1f} s, reading nothing "
                f"(64 KiB receive buffers); meterd answered {answered:,.0f} of them ({answer_size:,} B each) at {cpu:.0%} CPU; "
                f"{flood['closed_by_server']} attacker connections closed by meterd; HTTP refusals: "
                f"{reasons(reason_delta(m0, m2, 'meterd_http_refusals_total'))}; at the peak the kernel held {peaks['rx']:,.0f} MB of requests "
                f"meterd had not read and {peaks['tx']:,.0f} MB of answers the attackers had not taken in its connections' queues "
                f"(/proc/net/tcp; kernel memory, in no RSS), all TCP sockets on the machine {tcp0:.0f} MB before, {peaks['tcp']:,.0f} MB at the peak")
    report.note(health_note("pipelining", during, quiet, f"one kept-alive connection from {POLL_SOURCE}"))


def attack_slowloris(a: argparse.Namespace, report: Report, work: Path) -> None:
    timeout = a.attack_header_timeout
    server, _ = attack_server(a, work, "attack-slowloris", "--header-timeout", f"{timeout:g}")
    clients: list[AttackClient] = []
    try:
        quiet = quiet_health(a, server, fresh=True, bind=POLL_SOURCE)
        log(f"attack slowloris: {SLOWLORIS_ATTEMPTS:,} half-open requests from 127.0.0.1, --header-timeout {timeout:g}, "
            f"{a.slowloris_duration:g} s")
        m0, overflows0 = server.metrics(), listen_overflows()
        attacker = AttackClient(kind="slowloris", port=server.http_port, attempts=SLOWLORIS_ATTEMPTS,
                                interval=a.slowloris_interval, duration=a.slowloris_duration)
        polls = poller(server, a.slowloris_duration, fresh=True, bind=POLL_SOURCE)
        clients = [attacker, polls]
        for c in clients:
            c.ready()
        cpu0 = server.sample().cpu_s
        for c in clients:
            c.go()
        loris, during = attacker.result(), health_figures(polls.result())
        cpu = (server.sample().cpu_s - cpu0) / loris["seconds"]
        overflows = listen_overflows() - overflows0
        time.sleep(0.5)
        m1 = server.metrics()
    finally:
        for c in clients:
            c.kill()
        stopped(report, "slowloris", server)
    refusals = reason_delta(m0, m1, "meterd_http_refusals_total")
    capped = refusals.get("too_many_connections_from_address", 0)
    timed_out = loris["answer_after_s"]
    # meterd refuses at its first sweep past the deadline; a quarter second more for scheduling on a busy machine
    on_time = bool(timed_out) and timeout <= timed_out[0] and timed_out[-1] <= timeout + SWEEP_S + 0.25
    every = during["answered"] == during["polls"] > 0
    report.add(Row(f"slowloris: /health from {POLL_SOURCE} answered", f"{during['answered']}/{during['polls']}",
                   f"{quiet['answered']}/{quiet['polls']}", target="every poll", ok=every))
    report.add(health_row("slowloris", during, quiet))
    report.add(Row("slowloris: attacker connections refused", f"{capped:,} of {loris['opened']:,}",
                   "cap 128 per address", f"{capped / max(1, loris['opened']):.0%}"))
    span = f"{timed_out[0]:.2f}-{timed_out[-1]:.2f} s ({len(timed_out):,} conns)" if timed_out else "n/a (no 408)"
    report.add(Row("slowloris: first byte to 408", span, f"--header-timeout {timeout:g} s", target=f"{timeout:g}-{timeout + SWEEP_S:g} s",
                   ok=on_time))
    report.note(f"slowloris: {SLOWLORIS_ATTEMPTS:,} connections kept open from 127.0.0.1, each sending its header one byte every "
                f"{a.slowloris_interval:g} s and reopened when closed: {loris['opened']:,} opened, "
                f"{loris['refused']:,} closed with no answer, {loris['answered']:,} answered ({reasons(loris['statuses'])}); "
                f"meterd's refusals: {reasons(refusals)}; meterd's CPU {cpu:.0%}; "
                f"the kernel dropped {overflows:,} connection attempts "
                f"for a full accept queue (TcpExt ListenOverflows, machine-wide; a dropped SYN is retried after 1 s); "
                f"the 408s' times are from the attacker's first byte to the answer "
                f"(meterd checks the deadline every {SWEEP_S:g} s; the target allows 0.25 s more for scheduling)")
    report.note(health_note("slowloris", during, quiet, f"a new connection each time, from {POLL_SOURCE}"))


def attack_udp_overload(a: argparse.Namespace, report: Report, work: Path) -> None:
    server, fleet = attack_server(a, work, "attack-udp")
    clients: list[AttackClient] = []
    try:
        quiet = quiet_health(a, server, bind=POLL_SOURCE)
        idle = server.sample().rss_mb
        log(f"attack UDP overload: probing the intake at {UDP_PROBE_RATE:,.0f}/s for {a.udp_probe:g} s")
        # One sender process: on two CPUs a second one would take the core meterd reads on.
        probe = Senders(server.udp_port, fleet, 1, UDP_PROBE_RATE, a.udp_probe, 1, acks=False, drain=0.0)
        counts = [(time.perf_counter(), received_count(server))]
        probe.go()
        while time.perf_counter() - counts[0][0] < a.udp_probe:
            time.sleep(0.5)
            counts.append((time.perf_counter(), received_count(server)))
        # The intake is the best 1 s of the probe: past the start, and past any stall of a shared machine.
        intake = max((c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in zip(counts, counts[2:]))
        probed = probe.results()
        probe_offered = probed["sent"] / probed["send_seconds"]
        if wait_stored(server, 60) is None:
            report.note("UDP overload: the probe's readings were still pending after 60 s")
        offer = 2 * intake
        log(f"attack UDP overload: building {int(offer * a.attack_duration):,} signed readings for {offer:,.0f}/s")
        senders = Senders(server.udp_port, fleet, a.senders, offer, a.attack_duration, 10_000_000, acks=False, drain=0.0)
        polls = poller(server, a.attack_duration, bind=POLL_SOURCE).ready()
        clients = [polls]
        m0, cpu0 = server.metrics(), server.sample().cpu_s
        t0 = time.perf_counter()
        senders.go()
        polls.go()
        peak = peaks_while(server, clients, a.attack_duration + 10)["rss"]
        during = health_figures(polls.result())
        sent = senders.results()
        window = time.perf_counter() - t0
        m1, cpu = server.metrics(), (server.sample().cpu_s - cpu0) / window
        stored_after = wait_stored(server, 60)
    finally:
        for c in clients:
            c.kill()
        stopped(report, "UDP overload", server)
    offered = sent["sent"] / sent["send_seconds"]
    received = counter_delta(m0, m1, "meterd_datagrams_received_total")
    dropped = reason_delta(m0, m1, "meterd_datagrams_dropped_total")
    kernel = counter_delta(m0, m1, "meterd_udp_kernel_drops_total")
    stored = counter_delta(m0, m1, "meterd_readings_total", '{outcome="stored"}')
    report.add(Row("UDP overload: offered", rate(offered), f"{rate(intake)} intake", ratio(offered, intake), ">= 2x intake",
                   ok=offered >= 0.97 * offer))
    report.add(health_row("UDP overload", during, quiet))
    report.add(Row("UDP overload: server RSS peak", f"{peak:.0f} MB (+{peak - idle:.0f})", f"{idle:.0f} MB idle", ratio(peak, idle)))
    report.add(Row("UDP overload: dropped by meterd / kernel", f"{sum(dropped.values()):,} / {kernel:,.0f}", f"of {sent['sent']:,} sent",
                   f"{sum(dropped.values()) / max(1, sent['sent']):.0%} / {kernel / max(1, sent['sent']):.0%}"))
    report.note(f"UDP overload: meterd's defaults (no UDP workers); intake probed at saturation: 1 sender offered "
                f"{probe_offered:,.0f}/s for {a.udp_probe:g} s and meterd read {intake:,.0f}/s in its best second"
                + (" (the probe did not saturate it: the intake is a lower bound)" if intake >= 0.95 * probe_offered else "")
                + f"; then {a.senders} senders offered {offered:,.0f}/s of signed readings of {len(fleet):,} meters for {a.attack_duration:g} s: "
                f"meterd read {received / window:,.0f}/s and stored {stored / window:,.0f}/s at {cpu:.0%} CPU; drops by reason: {reasons(dropped)}; "
                f"the kernel dropped {kernel:,.0f} on meterd's socket; "
                + (f"the backlog was stored {stored_after:.1f} s after the load" if stored_after is not None
                   else "the backlog was still pending 60 s after the load"))
    report.note(health_note("UDP overload", during, quiet, f"one kept-alive connection from {POLL_SOURCE}"))


def attack_garbage(a: argparse.Namespace, report: Report, work: Path, workers: int) -> dict[str, Any]:
    label = f"garbage flood, --udp-workers {workers}"
    server, customers = attack_server(a, work, f"attack-garbage{workers}", "--udp-workers", str(workers))
    fleet = customers[:ATTACK_FLEET]
    clients: list[AttackClient] = []
    fleet_rate = ATTACK_FLEET / ATTACK_FLEET_EVERY
    try:
        log(f"attack {label}: {ATTACK_FLEET} good meters alone for {a.attack_duration:g} s")
        quiet = Senders(server.udp_port, fleet, 1, fleet_rate, a.attack_duration, 1, drain=a.ack_within + 0.5, ack_within=a.ack_within)
        m0 = server.metrics()
        quiet.go()
        calm = quiet.results()
        m1 = server.metrics()
        log(f"attack {label}: the same with {GARBAGE_SENDERS} garbage senders flooding the port")
        good = Senders(server.udp_port, fleet, 1, fleet_rate, a.attack_duration, 1_000_000, drain=a.ack_within + 0.5,
                       ack_within=a.ack_within)
        flood_s = 0.5 + a.attack_duration + a.ack_within + 0.5  # the flood runs until the last reading's ack window closes
        clients = [AttackClient(kind="garbage", port=server.udp_port, meters=[{"id": m["id"], "meter": m["meter"]} for m in fleet],
                                duration=flood_s, seed=k) for k in range(GARBAGE_SENDERS)]
        for c in clients:
            c.ready()
        m2, cpu0, t0 = server.metrics(), server.sample().cpu_s, time.perf_counter()
        for c in clients:
            c.go()
        time.sleep(0.5)
        good.go()
        flooded = good.results()
        junk = [c.result() for c in clients]
        m3, cpu = server.metrics(), (server.sample().cpu_s - cpu0) / (time.perf_counter() - t0)
    finally:
        for c in clients:
            c.kill()
        stopped(report, label, server)
    sent_junk = sum(j["sent"] for j in junk)
    return {"label": label, "calm": calm, "flooded": flooded, "junk_rate": sent_junk / max(j["seconds"] for j in junk),
            "junk_sent": sent_junk, "pool": junk[0]["pool"],
            "calm_kernel": counter_delta(m0, m1, "meterd_udp_kernel_drops_total"),
            "kernel": counter_delta(m2, m3, "meterd_udp_kernel_drops_total"),
            "dropped": reason_delta(m2, m3, "meterd_datagrams_dropped_total"),
            "received": counter_delta(m2, m3, "meterd_datagrams_received_total"), "cpu": cpu}


def phase_attack(a: argparse.Namespace, report: Report, work: Path) -> None:
    """Unauthenticated clients against a fresh meterd each, each beside the same server's quiet figures."""
    report.section(f"attack: unauthenticated clients, {a.attack_duration:g} s each; baselines: the same server, quiet")
    for step in (attack_pipelining, attack_slowloris, attack_udp_overload):
        try:
            step(a, report, work)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            report.note(f"attack: {step.__name__} not measured ({' '.join(str(e).split())[:300]})")
    for workers in (0, 1):
        try:
            g = attack_garbage(a, report, work, workers)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            report.note(f"attack: garbage flood with --udp-workers {workers} not measured ({' '.join(str(e).split())[:300]})")
            continue
        calm, flooded = g["calm"], g["flooded"]
        first = 100.0 * flooded["acked_within"] / max(1, flooded["sent"])
        calm_first = 100.0 * calm["acked_within"] / max(1, calm["sent"])
        report.add(Row(f"{g['label']}: first-try acks", f"{first:.2f} % of {flooded['sent']:,}",
                       f"{calm_first:.2f} % (no flood)", ratio(first, calm_first)))
        report.add(Row(f"{g['label']}: good ack p99 (of acked)", ms(flooded["ack_p99_s"]) if flooded["acked"] else "none acked",
                       ms(calm["ack_p99_s"]),
                       ratio(flooded["ack_p99_s"], calm["ack_p99_s"])))
        report.add(Row(f"{g['label']}: garbage offered", rate(g["junk_rate"]), "", ""))
        everything = max(1, g["junk_sent"] + flooded["sent"])
        report.add(Row(f"{g['label']}: dropped by meterd / kernel", f"{sum(g['dropped'].values()):,} / {g['kernel']:,.0f}",
                       f"of {everything:,} sent", f"{sum(g['dropped'].values()) / everything:.0%} / {g['kernel'] / everything:.0%}"))
        report.note(f"{g['label']}: {ATTACK_FLEET} meters, one signed reading each every {ATTACK_FLEET_EVERY:g} s "
                    f"({ATTACK_FLEET / ATTACK_FLEET_EVERY:,.0f}/s) for {a.attack_duration:g} s, each sent once: first-try = acked within "
                    f"{a.ack_within:g} s; no flood {calm['acked']:,}/{calm['sent']:,} acked at all, kernel drops {g['calm_kernel']:,.0f}; "
                    f"under the flood {flooded['acked']:,}/{flooded['sent']:,} acked at all; {GARBAGE_SENDERS} garbage senders, unpaced, "
                    f"{g['junk_sent']:,} datagrams ({reasons(g['pool'])} in every {sum(g['pool'].values()):,}); meterd "
                    f"(with its workers) at {g['cpu']:.0%} CPU read {g['received']:,.0f} datagrams in all and dropped {reasons(g['dropped'])}; "
                    f"the kernel dropped {g['kernel']:,.0f}")


# -- main ---------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short phases and less data (about a minute)")
    ap.add_argument("--only", default=",".join(DEFAULT_PHASES),
                    help=f"comma-separated phases: {','.join(PHASES)} (default: {','.join(DEFAULT_PHASES)})")
    ap.add_argument("--rate", type=float, help=f"offered ingest rate, readings/s (default: {DEFAULT_RATE:,} or "
                                               f"{OFFER_OVER_BASE}x the bare loop's rate, whichever is higher; quick 30,000)")
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--udp-workers", type=int, default=1, help="meterd --udp-workers for the ingest and HTTP phases (default 1)")
    ap.add_argument("--http-workers", type=int, default=2, help="meterd --http-workers for the ingest and HTTP phases (default 2)")
    ap.add_argument("--senders", type=int, default=2, help="UDP sender processes for the ingest phase")
    ap.add_argument("--duration", type=float, help="ingest phase seconds (30; quick 5)")
    ap.add_argument("--pg", metavar="DSN", default=pg.default_dsn(),
                    help=f"scaleout: PostgreSQL database, emptied by the run (default $METERD_BENCH_PG or {pg.DEFAULT_DSN})")
    ap.add_argument("--scaleout-duration", type=float, help="scaleout seconds per configuration (15; quick 5)")
    ap.add_argument("--scaleout-rate", type=float, help="scaleout offered rate, readings/s (default: --rate)")
    ap.add_argument("--attack-duration", type=float, help="attack: seconds of each attack (10; quick 3)")
    ap.add_argument("--profile", metavar="PY_SPY", help="path to py-spy: record the server during the ingest phase")
    ap.add_argument("--switch-interval", type=float, help="experiment: run the server with sys.setswitchinterval(S)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (data dirs, logs, profile)")
    ap.add_argument("--raise-rmem-max", action="store_true",
                    help=f"as root, raise net.core.rmem_max to the {UDP_RECEIVE_BUFFER:,} bytes meterd asks of its UDP socket "
                         "(a machine-wide setting, left raised; without it the report says what the limit is)")
    a = ap.parse_args(argv)
    a.phases = [p.strip() for p in a.only.split(",") if p.strip()]
    unknown = set(a.phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    a.duration = a.duration or (5.0 if a.quick else 30.0)
    a.baseline_duration = 3.0 if a.quick else 10.0
    a.http_duration = 3.0 if a.quick else 10.0
    a.http_ingest_rate = 10_000.0
    a.history_requests = 20 if a.quick else 50
    a.rss_meters = 20_000 if a.quick else 100_000
    if a.quick and not a.rate:
        a.rate = 30_000.0
    a.scaleout_duration = a.scaleout_duration or (5.0 if a.quick else 15.0)
    a.scaleout_rate = a.scaleout_rate or a.rate or DEFAULT_RATE
    a.attack_duration = a.attack_duration or (3.0 if a.quick else 10.0)
    a.attack_quiet = 1.5 if a.quick else 5.0  # the quiet baseline's /health polls
    a.attack_after_close = 2.0 if a.quick else 5.0  # pipelining: RSS this long after the attackers close
    a.attack_header_timeout = 2.0 if a.quick else 5.0  # meterd --header-timeout for slowloris: its 408s within the phase
    a.slowloris_interval = 1.0 if a.quick else 2.0
    # long enough for the first connections' 408s, and for reopened ones to be refused or held again
    a.slowloris_duration = max(a.attack_duration, a.attack_header_timeout + SWEEP_S + 2 * a.slowloris_interval)
    a.udp_probe = 1.5 if a.quick else 3.0
    a.ack_within = 1.0 if a.quick else 2.0  # garbage flood: a reading acknowledged within this long of its only send: first try
    return a


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="meterd-bench-"))
    report = Report(f"meterd benchmark{' (quick)' if a.quick else ''}: {os.cpu_count()} CPUs, "
                    f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}")
    load_before = os.getloadavg()
    if a.raise_rmem_max:
        rmem, note = raise_rmem_max(UDP_RECEIVE_BUFFER)  # what meterd asks for
    else:
        rmem, note = rmem_max(), "left as it was; --raise-rmem-max raises it"
    report.note(f"net.core.rmem_max = {rmem}" + (f" ({note})" if note else ""))
    Meterd.switch_interval = a.switch_interval
    if a.switch_interval is not None:
        report.note(f"EXPERIMENT: the server ran with sys.setswitchinterval({a.switch_interval}) (default 0.005)")
    server = None
    try:
        needs_main = {"ingest", "http", "history"} & set(a.phases)
        if needs_main:
            log(f"preparing the data dir offline: {a.meters:,} meters, a year of one-minute and of hourly readings")
            prepared = prepare(work, "main", {"customers": a.meters, "history": [{"step_s": 60, "days": 365}, {"step_s": 3600, "days": 365}]})
            report.note(f"data dir prepared offline with the store's own code in {prepared['seconds']:.1f} s "
                        f"({a.meters:,} customers with one meter; history loaded through SqliteStore.ingest)")
            server = Meterd(work / "main", "--durability", "full", "--udp-workers", str(a.udp_workers),
                            "--http-workers", str(a.http_workers)).start()
            fleet = prepared["customers"]
            if "ingest" in a.phases:
                phase_ingest(a, report, work, server, fleet)
            if "http" in a.phases:
                phase_http(a, report, work, server, fleet)
            if "history" in a.phases:
                phase_history(a, report, server, prepared["history"])
            code = server.stop()
            if code not in (0, -15):  # twistd re-raises the SIGTERM it shut down on
                report.note(f"meterd exited with status {code}; log: {server.log_path}")
            server = None
        if "rss" in a.phases:
            phase_rss(a, report, work)
        if "scaleout" in a.phases:
            phase_scaleout(a, report, work)
        if "attack" in a.phases:
            phase_attack(a, report, work)
        if "search" in a.phases:
            search.phase(report, work, 20_000 if a.quick else 100_000, 100 if a.quick else 300)
        if "export" in a.phases:
            phase_export(a, report, work, prepare, log)
        if "portal" in a.phases:
            phase_portal(a, report, work, prepare, log)
        if "billing" in a.phases:  # long (a minute of preparation): asked for by name
            billing.phase(report, work, 20_000 if a.quick else 100_000, 24.0, a.profile)
        if "webhooks" in a.phases:
            webhooks.phase(report, work, quick=a.quick, log=log)
    finally:
        if server is not None:
            server.stop()
        if a.keep or a.profile:
            report.note(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    report.note(f"load average (1 min) before/after the run: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs"
                + (" -- OTHER WORK WAS RUNNING ON THIS MACHINE; figures are pessimistic" if load_before[0] > 0.7 else ""))
    print(report.render(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
