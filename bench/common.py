"""Small helpers shared by the harness: ports, process stats, percentiles, ids."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env() -> dict[str, str]:
    """The harness's children import meterd and bench from the checkout, not an installed copy."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("METERD_TOKEN", None)
    return env


def python() -> str:
    return sys.executable


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system, all threads) and memory of a process and its children at one instant.

    meterd's UDP workers (``--udp-workers``) are child processes doing part of
    the server's work, so they are counted with it.
    """

    cpu_s: float
    rss_mb: float
    hwm_mb: float


def _own_sample(pid: int) -> tuple[int, float, float, float]:
    """(parent pid, CPU seconds, RSS MB, peak RSS MB) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / CLK_TCK  # utime, stime, cutime, cstime
    rss = hwm = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    return int(fields[1]), cpu, rss, hwm


def proc_sample(pid: int) -> ProcSample:
    _, cpu, rss, hwm = _own_sample(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            try:
                ppid, c, r, h = _own_sample(int(entry))
            except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
                continue
            if ppid == pid:
                cpu, rss, hwm = cpu + c, rss + r, hwm + h
    return ProcSample(cpu, rss, hwm)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of unsorted values (``None`` when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def cpf(n: int) -> str:
    """The n-th synthetic CPF: distinct for distinct n, never all-equal digits."""
    from meterd.taxid import make_cpf

    base = f"{100_000_000 + n * 7 + 1:09d}"[-9:]
    return make_cpf(base)


def http(method: str, url: str, token: str | None = None, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def metric_values(text: str, name: str) -> dict[str, float]:
    """Samples of one Prometheus metric, keyed by their label string ("" when unlabelled)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name):
            head, _, value = line.rpartition(" ")
            rest = head[len(name):]
            if rest and rest[0] not in "{":
                continue
            try:
                out[rest] = float(value)
            except ValueError:
                pass
    return out
