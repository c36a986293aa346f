"""Helpers shared by the tests: an in-process server on free loopback ports,
and a real ``twistd -n meterd`` subprocess."""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import treq
from twisted.internet import reactor

from bench.common import ROOT, free_port, http, subprocess_env
from meterd.options import Options
from meterd.service import Meterd, makeService



def zone_at_midday(now: float) -> str:
    """A fixed-offset IANA zone where ``now`` falls within half an hour of noon.

    A customer in it has the hours before and after ``now`` in one local day,
    month and year, whatever hour the test runs at.
    """
    hours = max(-12, min(14, round(12 - (now % 86400) / 3600)))
    return "Etc/UTC" if hours == 0 else f"Etc/GMT{-hours:+d}"  # the Etc/GMT signs are POSIX's: GMT-3 is UTC+3


def pg_schema() -> str:
    """The PostgreSQL schema this test process may wipe: one per xdist worker, so workers never share one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return f"test_{worker}" if worker else "public"


def pg_dsn() -> str:
    """``METERD_TEST_PG`` with this process's schema first on the search path; "" when unset."""
    dsn = os.environ.get("METERD_TEST_PG", "")
    if not dsn or pg_schema() == "public":
        return dsn
    from urllib.parse import quote

    # a URL still (meterd's --db wants postgresql://...), with libpq's options parameter
    return f"{dsn}{'&' if '?' in dsn else '?'}options={quote(f'-c search_path={pg_schema()}')}"


def reset_pg() -> None:
    """An empty schema for this process: what every PostgreSQL test starts from."""
    import psycopg

    with psycopg.connect(pg_dsn(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {pg_schema()} CASCADE")
        conn.execute(f"CREATE SCHEMA {pg_schema()}")


#: Set by tests/conftest.py when the run is the fast loop (``-m "not slow"``).
FAST_LOOP = False


def examples(n: int) -> int:
    """How many examples a property test draws: ``n``, or a few in the fast loop."""
    return min(n, 20) if FAST_LOOP else n


@dataclass
class LiveServer:
    """A meterd service running in this process's reactor."""

    core: Meterd
    url: str
    udp_port: int
    token: str
    data_dir: Path

    async def call(self, method: str, path: str, *, token: str | None = "operator", json_body: Any = None,
                   params: dict[str, Any] | None = None, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        """One request; returns (status, decoded JSON body or raw bytes, response)."""
        hdrs = dict(headers or {})
        if token == "operator":
            token = self.token
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        response = await treq.request(method, self.url + path, params=params, data=data, headers=hdrs, persistent=False)
        body = await response.content()
        try:
            decoded: Any = json.loads(body)
        except ValueError:
            decoded = body
        return response.code, decoded, response

    async def stop(self) -> None:
        await self.core.stopService()


def frame(message: dict[str, Any]) -> bytes:
    """A message as meterd and its workers frame it on their pipes (Int32StringReceiver, orjson)."""
    body = orjson.dumps(message)
    return struct.pack("!I", len(body)) + body


def split_frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        (n,) = struct.unpack("!I", data[:4])
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out


def frames(data: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(body) for body in split_frames(data)]


async def until(check: Any, timeout: float = 15) -> Any:
    """Poll the async ``check`` every 50 ms until it returns something true; that."""
    from twisted.internet.task import deferLater

    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await deferLater(reactor, 0.05, lambda: None)
    return result


def worker_pids(pool: Any) -> list[int]:
    """The pids of a worker pool's (UdpWorkers, HttpWorkers) running workers."""
    assert pool is not None
    return [link.transport.pid for link in pool.links.values()]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@contextmanager
def twistd_with_workers(data_dir: Path, kind: str, n: int) -> Iterator[Twistd]:
    """``twistd`` with ``n`` workers of ``kind`` ("udp", "http") serving; on leaving, SIGTERM stops it and them."""
    server = Twistd(data_dir, f"--{kind}-workers", str(n)).start()
    try:
        server.wait_for_metric(f"meterd_{kind}_workers {n}.0")
        workers = server.children()
        assert len(workers) == n
        yield server
    finally:
        code = server.stop()
    assert code in (0, -15), server.output()
    assert all(gone(pid) for pid in workers)
    assert all(f"{kind} worker {i} is serving the port" in server.output() for i in range(n))


async def http_workers_ready(server: LiveServer, n: int, timeout: float = 20) -> None:
    """Wait until ``n`` HTTP workers accept on the port (meterd's own port stops accepting then)."""
    workers = server.core.http_workers
    assert workers is not None

    async def ready() -> bool:
        return len(workers.ready_links()) >= n

    await until(ready, timeout)


#: In-process servers flush every 5 ms rather than 50: a test that posts readings
#: one by one waits for each flush, and batching is not what those tests test.
TEST_FLUSH_INTERVAL = 0.005


async def start_server(data_dir: Path, *args: str, flush_interval: float = TEST_FLUSH_INTERVAL, freeze_heap: bool = False) -> LiveServer:
    """meterd in this process; by default it leaves the heap unfrozen, this process's being pytest's (see ``Meterd.freeze_heap``)."""
    config = Options()
    config.parseOptions(
        ["--http", "tcp:0:interface=127.0.0.1", "--udp", "0", "--udp-interface", "127.0.0.1", "--data-dir", str(data_dir), *args]
    )
    core = makeService(config)
    core.ingest.flush_interval = flush_interval
    core.freeze_heap = freeze_heap
    core.startService()
    await core.ready
    assert core.http_port is not None
    token = (data_dir / "operator.token").read_text().strip()
    return LiveServer(core, f"http://127.0.0.1:{core.http_port.getHost().port}", core.udp_port.getHost().port, token, data_dir)


class Twistd:
    """``twistd -n meterd`` as a subprocess on free ports, for end-to-end tests."""

    def __init__(self, data_dir: Path, *args: str, nofile: int | None = None) -> None:
        self.data_dir = data_dir
        self.nofile = nofile  # the child's own descriptor limit (soft and hard), if set
        self.http_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.args = args
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-twistd.log"

    def start(self, timeout: float = 20) -> "Twistd":
        cmd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "meterd",
               "--http", f"tcp:{self.http_port}:interface=127.0.0.1", "--udp", str(self.udp_port),
               "--udp-interface", "127.0.0.1", "--data-dir", str(self.data_dir), *self.args]
        self.log = open(self.log_path, "ab")
        nofile = self.nofile

        def limit_descriptors() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            cmd, cwd=self.data_dir.parent, env=subprocess_env(), stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=limit_descriptors,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"twistd exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"twistd did not answer /health in {timeout}s:\n{self.log_path.read_text()}")

    @property
    def token(self) -> str:
        return (self.data_dir / "operator.token").read_text().strip()

    def stop(self, sig: int = 15, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout)
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_metric(self, line: str, timeout: float = 15) -> None:
        """Until ``/metrics`` shows ``line`` (e.g. ``meterd_http_workers 2.0``)."""
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
                if line in r.read().decode():
                    return
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def children(self) -> list[int]:
        """The pids of meterd's child processes (its workers)."""
        assert self.proc is not None
        pid = self.proc.pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


__all__ = ["FAST_LOOP", "examples", "pg_dsn", "pg_schema", "reset_pg", "LiveServer", "start_server", "http_workers_ready", "frame", "frames", "split_frames", "twistd_with_workers", "until", "worker_pids", "gone", "Twistd", "ROOT", "free_port", "http", "subprocess_env", "reactor"]
