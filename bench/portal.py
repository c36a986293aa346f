"""The ``portal`` phase: each page of the web portal for a customer with a year of one-minute readings.

A data dir with one customer whose meter sent a reading a minute for a year
(525,600 readings) is built offline (bench/prepare.py), meterd starts on it
with its defaults (no workers), and a logged-in browser asks each page
200 times in a row (80 with ``--quick``) over one keep-alive connection, after a
few requests of warm-up (the bill cache then holds the months a bill page
lists, as it does for a customer who comes back). Each page's time is the
server's own, from its ``Server-Timing`` header: from the request reaching
the portal to its answer, the API's queries and the rendering included. The
baseline is the JSON route the page is built on, asked the same way by the
customer's token in the same run (client-observed over loopback: the API has
no timing header), and the ratio compares the client-observed times of both.
"""

from __future__ import annotations

import argparse
import http.client
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bench.common import percentile
from bench.report import Report, Row, ratio
from bench.server import Meterd
from meterd.portal import routes

TARGET_S = 0.050  # every page under 50 ms, server-side
WARMUP = 5

#: (page, its path with query, the JSON route it is built on, that route's query)
PAGES = [
    ("overview", routes.OVERVIEW, "/getConsumoHist", {"kind": "M"}),
    ("history, month", routes.href(routes.HISTORY, kind="M"), "/getConsumoHist", {"kind": "M"}),
    ("history, day", routes.href(routes.HISTORY, kind="D"), "/getConsumoHist", {"kind": "D"}),
    ("history, year", routes.href(routes.HISTORY, kind="Y"), "/getConsumoHist", {"kind": "Y"}),
    ("history CSV, year", routes.href(routes.HISTORY_CSV, kind="Y"), "/getConsumoHist", {"kind": "Y"}),
    ("bill", routes.BILL, "/getFatura", {}),
    ("bill, last month", routes.href(routes.BILL, periodo=1), "/getFatura", {"periodo": 1}),
    ("alarms", routes.ALARMS, "/getAlarme", {}),
]


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f}"


class Browser:
    """One browser's keep-alive connection and cookie."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""

    def ask(self, method: str, path: str, body: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if self.cookie:
            sent["Cookie"] = self.cookie
        data = None
        if body is not None:
            data = urlencode(body).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=data, headers=sent)
        response = self.conn.getresponse()
        raw = response.read()
        named = {k.lower(): v for k, v in response.getheaders()}
        if "set-cookie" in named:
            self.cookie = named["set-cookie"].split(";")[0]
        return response.status, named, raw

    def log_in(self, customer_id: str, token: str) -> None:
        status, _, page = self.ask("GET", routes.LOGIN)
        csrf = re.search(rb'name="csrf" value="([0-9a-f]{64})"', page)
        if status != 200 or csrf is None:
            raise RuntimeError(f"the login page answered {status}")
        status, headers, _ = self.ask("POST", routes.LOGIN, {"csrf": csrf.group(1).decode(), "id": customer_id, "token": token})
        if status != 303 or headers.get("location") != routes.OVERVIEW:
            raise RuntimeError(f"login answered {status} to {headers.get('location')}")

    def times(self, path: str, n: int, headers: dict[str, str] | None = None) -> tuple[list[float], list[float], int, float | None]:
        """Of ``n`` requests after the warm-up: client-observed seconds, server seconds (Server-Timing), the
        last status; and the server's seconds for the very first request (cold caches)."""
        client, server, status, first = [], [], 0, None
        for i in range(WARMUP + n):
            started = time.perf_counter()
            status, named, _ = self.ask("GET", path, headers=headers)
            elapsed = time.perf_counter() - started
            timing = re.search(r"dur=([0-9.]+)", named.get("server-timing", ""))
            took = float(timing.group(1)) / 1000 if timing else None
            if i == 0:
                first = took
            if i < WARMUP:
                continue
            client.append(elapsed)
            if took is not None:
                server.append(took)
        return client, server, status, first


def phase_portal(a: argparse.Namespace, report: Report, work: Path, prepare: Any, log: Any) -> None:
    n = 4 * a.history_requests  # 200, quick 80: the p99 of 50 would be the slowest one
    report.section(f"portal: each page of a customer with a year of one-minute readings, {n} sequential requests, server-side")
    log("portal: preparing a customer with 525,600 one-minute readings")
    prepared = prepare(work, "portal", {"customers": 0, "history": [{"step_s": 60, "days": 365}]})
    customer = prepared["history"][0]
    server = Meterd(work / "portal").start()
    try:
        page_session, api = Browser(server.http_port), Browser(server.http_port)
        page_session.log_in(customer["id"], customer["token"])
        bearer = {"Authorization": f"Bearer {customer['token']}"}
        firsts = []
        for name, path, route, query in PAGES:
            log(f"portal: {name}")
            client, server_side, status, first = page_session.times(path, n)
            firsts.append(f"{name} {_ms(first)} ms")
            json_path = f"{route}?{urlencode({'id': customer['id'], **query})}"
            base, _, base_status, _ = api.times(json_path, n, bearer)
            if status != 200 or base_status != 200 or not server_side:
                report.add(Row(name, f"HTTP {status}", f"HTTP {base_status}", "n/a", f"p99 < {TARGET_S * 1000:.0f} ms", ok=False))
                continue
            p50, p99 = percentile(server_side, 50), percentile(server_side, 99)
            report.add(Row(
                f"{name} ({path})",
                f"{_ms(p50)} / {_ms(p99)} ms (client {_ms(percentile(client, 50))})",
                f"{route} {_ms(percentile(base, 50))} / {_ms(percentile(base, 99))} ms",
                ratio(percentile(client, 50), percentile(base, 50)),
                f"p99 < {TARGET_S * 1000:.0f} ms",
                ok=p99 is not None and p99 < TARGET_S,
            ))
        report.note("portal: the first request of each page, in the order asked (the history's queries and the bills not yet cached): " + ", ".join(firsts))
    finally:
        code = server.stop()
        if code not in (0, -15):
            report.note(f"portal phase: meterd exited with status {code}; log: {server.log_path}")
    report.note(
        f"portal: meterd with its defaults (no workers) on a data dir prepared offline ({customer['readings']:,} one-minute readings "
        f"in {prepared['seconds']:.1f} s); page times are the server's own (Server-Timing: API queries and rendering), p50 / p99 "
        f"after {WARMUP} requests of warm-up, with the client-observed p50 in brackets; the baseline is the JSON route the page is "
        "built on, client-observed p50 / p99 with the customer's token, and the ratio is client-observed page / JSON at p50"
    )
