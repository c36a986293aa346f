"""Build a data dir offline with the server's own store code, before the server starts.

Run as ``python -m bench.prepare SPEC.json OUT.json`` in its own process. What
the benchmark measures is the server reading this data (queries, start-up
RSS), not how fast it can be loaded, so customers and meters are bulk-inserted
through the store's writer pool and history goes through ``SqliteStore.ingest``
(the same plan, rollups and meter state as live ingest) in large batches.

With ``"db": "postgresql://..."`` in the spec the same is done through
``PostgresStore`` instead, after dropping and recreating the bench database's
``public`` schema (so every run starts from an empty database; the store's
own migrations then create the tables).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import task
from twisted.internet.defer import ensureDeferred

from meterd import credentials
from meterd.readings import US_PER_MS, Reading
from meterd.store.sql import _CUSTOMER_COLUMNS, _METER_COLUMNS, SqlStore
from meterd.store.sqlite import SqliteStore

from bench.common import cpf

BATCH = 5000


def _people(first: int, count: int, with_secrets: bool) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[dict[str, Any]]]:
    now_ms = int(time.time() * 1000)
    customers, meters, out = [], [], []
    for n in range(first, first + count):
        cid = cpf(n)
        token = credentials.new_token()
        key = credentials.new_meter_key()
        customers.append((cid, f"Bench {n}", "mono", 10_000_000, 100_000_000, "America/Sao_Paulo", credentials.token_hash(token), now_ms))
        meters.append((cid, 1, "register", key, now_ms))
        if with_secrets:
            out.append({"id": cid, "token": token, "meter": 1, "key": key})
    return customers, meters, out


def reset_postgres(dsn: str) -> None:
    """Empty the bench database: everything meterd created lives in ``public``."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


def open_store(spec: dict[str, Any], data_dir: Path) -> SqlStore:
    if spec.get("db"):
        from meterd.store.postgres import PostgresStore

        return PostgresStore(spec["db"], durability="normal")
    return SqliteStore(str(data_dir / "meterd.sqlite3"), durability="normal")


async def build(reactor: Any, spec: dict[str, Any]) -> dict[str, Any]:
    data_dir = Path(spec["data_dir"])
    data_dir.mkdir(parents=True, exist_ok=True)
    if spec.get("db"):
        reset_postgres(spec["db"])
    store = open_store(spec, data_dir)
    await store.start()
    result: dict[str, Any] = {"customers": [], "history": []}
    started = time.perf_counter()
    try:
        customers, meters, out = _people(0, spec.get("customers", 0), spec.get("secrets", True))
        histories = spec.get("history", [])
        hc, hm, hout = _people(10_000_000, len(histories), True)
        customers += hc
        meters += hm

        def insert(txn: Any) -> None:
            txn.executemany(store.sql(f"INSERT INTO customers ({_CUSTOMER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), customers)
            txn.executemany(store.sql(f"INSERT INTO meters ({_METER_COLUMNS}) VALUES (?, ?, ?, ?, ?)"), meters)

        await store._write(insert)
        # The store keeps meters' newest state in memory; restart so it sees the new meters.
        await store.stop()
        store = open_store(spec, data_dir)
        await store.start()
        result["customers"] = out
        end_ms = (int(time.time() * 1000) // 60_000) * 60_000 - 60_000
        for who, h in zip(hout, histories):
            step_ms = int(h["step_s"] * 1000)
            count = int(h["days"] * 86_400_000 // step_ms)
            first_ms = end_ms - (count - 1) * step_ms
            wh_per_step = max(1, int(h.get("watts", 600) * step_ms / 3_600_000))
            loaded = 0
            for start in range(0, count, BATCH):
                batch = [
                    Reading(who["id"], 1, (first_ms + i * step_ms) * US_PER_MS, 1_000_000 + i * wh_per_step + (i * 7919) % 3, None)
                    for i in range(start, min(count, start + BATCH))
                ]
                outcomes = await store.ingest(batch, int(time.time() * 1000))
                loaded += sum(1 for o in outcomes if o.value == "stored")
            result["history"].append({**who, "step_s": h["step_s"], "readings": loaded, "first_ms": first_ms, "last_ms": end_ms})
    finally:
        await store.stop()
    result["seconds"] = time.perf_counter() - started
    return result


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[1]).read_text())

    async def run(reactor: Any) -> None:
        result = await build(reactor, spec)
        Path(argv[2]).write_text(json.dumps(result))

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main(sys.argv)
