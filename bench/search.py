"""The ``search`` phase: finding customers among 100,000 (target: "joao" answers in under 50 ms).

Customers with realistic Brazilian names (:mod:`bench.names`, accents and
all) are bulk-inserted offline through the store's writer pool, search words
included, by this module run as ``python -m bench.search SPEC OUT`` (its own
process, as :mod:`bench.prepare`); then meterd starts on that data dir with
its defaults and the phase times ``/buscaClientes`` from a client over
keep-alive connections: a one-word name ("joao"), a CPF prefix, two words
("maria silva"...), and the page after the first (with the first page's
cursor). The baseline is ``/health`` over the same connections in the same
run: the cost of the HTTP path, authentication and a store round trip, so
the ratio says what the search itself adds.
"""

from __future__ import annotations

import http.client
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from bench.common import percentile, python, subprocess_env
from bench.names import people
from bench.report import Report, Row, ms, ratio
from bench.server import Meterd
from meterd import credentials
from meterd.store import schema
from meterd.store.sqlite import SqliteStore

__all__ = ["phase"]

TARGET_S = 0.050
TWO_WORDS = ["maria silva", "jose santos", "ana oliveira", "antonio souza", "joao pereira", "francisca lima"]
CONNECTIONS = 4


def prepare(work: Path, count: int) -> dict[str, Any]:
    """Build the data dir in a process of its own; what was inserted, and how long it took."""
    spec, out = work / "search-spec.json", work / "search-prepared.json"
    spec.write_text(json.dumps({"data_dir": str(work / "search"), "customers": count}))
    subprocess.run([python(), "-m", "bench.search", str(spec), str(out)], env=subprocess_env(), check=True)
    return json.loads(out.read_text())


async def _build(spec: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(spec["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    everyone = list(people(spec["customers"]))
    now_ms = int(time.time() * 1000)
    store = SqliteStore(str(data_dir / "meterd.sqlite3"), durability="normal")
    await store.start()
    try:
        def insert(txn: Any) -> None:
            txn.executemany(
                f"INSERT INTO customers ({schema.CUSTOMER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(cid, name, "mono", 10_000, 1_000_000, "America/Sao_Paulo", credentials.token_hash(cid), now_ms) for cid, name in everyone],
            )
            txn.executemany(schema.WORDS_INSERT, [row for cid, name in everyone for row in schema.word_rows(cid, name)])

        await store._write(insert)
    finally:
        await store.stop()
    return {"seconds": time.perf_counter() - started, "ids": [cid for cid, _ in everyone[:1000]]}


class Client:
    """Sequential requests over a few keep-alive connections, taken in turn; client-observed seconds per request."""

    def __init__(self, port: int, token: str) -> None:
        self.connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(CONNECTIONS)]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.turn = 0

    def get(self, path: str) -> tuple[float, int, Any]:
        conn = self.connections[self.turn % len(self.connections)]
        self.turn += 1
        started = time.perf_counter()
        conn.request("GET", path, headers=self.headers)
        response = conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - started
        return elapsed, response.status, json.loads(raw)

    def close(self) -> None:
        for conn in self.connections:
            conn.close()


def _search(q: str, cursor: str | None = None) -> str:
    return "/buscaClientes?" + urlencode({"q": q, **({"cursor": cursor} if cursor else {})})


def phase(report: Report, work: Path, count: int, requests: int) -> None:
    report.section(f"search: /buscaClientes over {count:,} customers, {requests} requests per query")
    prepared = prepare(work, count)
    server = Meterd(work / "search").start()
    client = Client(server.http_port, server.token)
    rng = random.Random(29)
    try:
        for _ in range(20):  # warm-up: connections, the page cache
            client.get(_search("joao"))
            client.get("/health")
        # The pages after the first, each asked with the cursor of the one before.
        cursors, cursor = [], None
        for _ in range(10):
            _, _, body = client.get(_search("joao", cursor))
            cursor = body["cursor"]
            if cursor is None:
                break
            cursors.append(cursor)
        prefixes = [cid[:3] for cid in rng.sample(prepared["ids"], 50)]
        queries = {
            '"joao" (first page)': lambda i: _search("joao"),
            "CPF prefix (3 digits)": lambda i: _search(prefixes[i % len(prefixes)]),
            'two words ("maria silva"...)': lambda i: _search(TWO_WORDS[i % len(TWO_WORDS)]),
            '"joao", a page after the first': lambda i: _search("joao", cursors[i % len(cursors)]),
        }
        order = [(name, i) for i in range(requests) for name in [*queries, "/health"]]  # interleaved: same moments
        times: dict[str, list[float]] = {name: [] for name in [*queries, "/health"]}
        found: dict[str, list[int]] = {name: [] for name in queries}
        failed: dict[str, int] = {}
        for name, i in order:
            elapsed, status, body = client.get("/health" if name == "/health" else queries[name](i))
            if status != 200:
                failed[name] = failed.get(name, 0) + 1
                continue
            times[name].append(elapsed)
            if name in found:
                found[name].append(len(body["results"]))
    finally:
        client.close()
        server.stop()
    base50, base99 = percentile(times["/health"], 50), percentile(times["/health"], 99)
    for name in queries:
        p50, p99 = percentile(times[name], 50), percentile(times[name], 99)
        ok = not failed.get(name) and p99 is not None and p99 < TARGET_S
        report.add(Row(f"{name} p50 / p99", f"{ms(p50)} / {ms(p99)}", f"{ms(base50)} / {ms(base99)}",
                       f"{ratio(p50, base50)} / {ratio(p99, base99)}", "p99 < 50 ms", ok=ok))
    results = {name: f"{min(n)}-{max(n)}" if n else "none" for name, n in found.items()}
    report.note(f"search: {count:,} customers bulk-inserted offline with their search words in {prepared['seconds']:.1f} s "
                f"(names drawn with Brazilian frequencies, accents included); baseline: /health over the same "
                f"{CONNECTIONS} keep-alive connections, interleaved with the searches; results per page "
                + ", ".join(f"{name}: {n}" for name, n in results.items())
                + (f"; FAILED requests: {failed}" if failed else ""))


def main(argv: list[str]) -> None:
    """``python -m bench.search SPEC OUT``: build the data dir the spec names, write what was built."""
    spec = json.loads(Path(argv[1]).read_text())

    async def run(reactor: Any) -> None:
        Path(argv[2]).write_text(json.dumps(await _build(spec)))

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main(sys.argv)
