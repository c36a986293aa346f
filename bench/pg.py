"""The PostgreSQL side of the scale-out phase: is it there, how is it set up, what CPU did it use.

On one machine the database competes with meterd and the senders for the same
CPUs, so its CPU is reported beside meterd's: a second meterd process that only
moves the bottleneck into PostgreSQL would otherwise look free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.common import CLK_TCK

DEFAULT_DSN = "postgresql:///meterd_bench"


def default_dsn() -> str:
    return os.environ.get("METERD_BENCH_PG") or DEFAULT_DSN


def probe(dsn: str) -> tuple[dict[str, Any] | None, str]:
    """Connect once: (facts about the server, "") or (None, why it cannot be used). Never raises."""
    try:
        import psycopg
    except ImportError as e:
        return None, f"psycopg is not installed ({e})"
    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            facts: dict[str, Any] = {"pid": conn.execute("SELECT pg_backend_pid()").fetchone()[0]}  # type: ignore[index]
            for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections"):
                facts[name] = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
            return facts, ""
    except Exception as e:  # any failure to connect means "skip", whatever the driver raises
        return None, " ".join(str(e).split()) or type(e).__name__


def postmaster_of(backend_pid: int) -> int | None:
    """The postmaster is every backend's parent; None when the server is not on this machine."""
    try:
        fields = Path(f"/proc/{backend_pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    ppid = int(fields[1])
    return ppid if ppid > 1 else None


def cpu_by_pid(postmaster: int | None) -> dict[int, float]:
    """CPU seconds of the postmaster and each of its children (backends, WAL writer, checkpointer...)."""
    if postmaster is None:
        return {}
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid = int(entry.name)
        if pid == postmaster or int(fields[1]) == postmaster:
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two samples; a process born in between counts from zero (one that died is lost)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
