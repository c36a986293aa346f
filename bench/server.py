"""``twistd -n meterd`` (or a baseline) as a subprocess on free loopback ports."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from bench.common import free_port, metric_values, proc_sample, python, subprocess_env, ProcSample
from meterd.service import UDP_RECEIVE_BUFFER


class Child:
    """A server process the harness started, with its log and its /proc numbers."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def sample(self) -> ProcSample:
        return proc_sample(self.proc.pid)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def _wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.log_path.name}: exited with {self.proc.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.05)
        raise RuntimeError(f"{url} did not answer in {timeout}s:\n{self.log_path.read_text()[-3000:]}")


class Meterd(Child):
    switch_interval: float | None = None  # experiment: sys.setswitchinterval in the server before twistd runs

    def __init__(self, data_dir: Path, *args: str, udp_port: int | None = None) -> None:
        """``udp_port``: share another process's port (pass ``--reuse-port`` in ``args`` to both)."""
        self.data_dir = data_dir
        self.http_port = free_port()
        self.udp_port = udp_port or free_port(socket.SOCK_DGRAM)
        self.args = args
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-twistd.log"

    def start(self, timeout: float = 60) -> "Meterd":
        if self.switch_interval is None:
            launcher = [str(Path(python()).parent / "twistd")]
        else:
            launcher = [python(), "-c", f"import sys; sys.argv[0] = 'twistd'; sys.setswitchinterval({self.switch_interval!r}); "
                        "from twisted.scripts.twistd import run; run()"]
        cmd = [*launcher, "-n", "--pidfile=", "meterd", "--http", f"tcp:{self.http_port}:interface=127.0.0.1",
               "--udp", str(self.udp_port), "--udp-interface", "127.0.0.1", "--data-dir", str(self.data_dir), *self.args]
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.data_dir.parent, env=subprocess_env(), stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_http(self.url + "/health", timeout)
        self._wait_workers(timeout)
        return self

    def _wait_workers(self, timeout: float) -> None:
        """Until the workers asked for serve their ports: figures are of the configuration named."""
        wanted = {f"meterd_{flag[2:].replace('-', '_')}": float(value)
                  for flag, value in zip(self.args, self.args[1:]) if flag in ("--udp-workers", "--http-workers")}
        deadline = time.monotonic() + timeout
        while any(metric_values(self.metrics(), name).get("", 0.0) != n for name, n in wanted.items()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"meterd's workers did not start in {timeout}s:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    @property
    def token(self) -> str:
        return (self.data_dir / "operator.token").read_text().strip()

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return r.read().decode()


class Baseline(Child):
    """``python -m bench.baseline udp PORT RCVBUF`` or ``web PORT``."""

    def __init__(self, kind: str, work_dir: Path) -> None:
        self.kind = kind
        self.port = free_port(socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / f"baseline-{kind}.log"

    def start(self, timeout: float = 20) -> "Baseline":
        self._log = open(self.log_path, "ab")
        receive_buffer = [str(UDP_RECEIVE_BUFFER)] if self.kind == "udp" else []  # meterd's, as the baseline imports none of it
        self.proc = subprocess.Popen([python(), "-m", "bench.baseline", self.kind, str(self.port), *receive_buffer],
                                     env=subprocess_env(), stdout=self._log, stderr=subprocess.STDOUT)
        if self.kind == "web":
            self._wait_http(self.url + "/", timeout)
        else:
            deadline = time.monotonic() + timeout
            while self.udp_count(0.2) is None:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"UDP baseline did not start:\n{self.log_path.read_text()[-3000:]}")
        return self

    def udp_count(self, timeout: float = 2.0, attempts: int = 1) -> int | None:
        """Datagrams the UDP baseline has parsed so far (asked over a control datagram).

        Under a flood the question itself can be dropped by the kernel, and
        the answer comes only after the backlog ahead of it: retry.
        """
        for _ in range(attempts):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                try:
                    s.sendto(b"__count__", ("127.0.0.1", self.port))
                    data, _ = s.recvfrom(100)
                    return int(data)
                except (OSError, ValueError):
                    continue
        return None


def rmem_max() -> int | None:
    try:
        return int(Path("/proc/sys/net/core/rmem_max").read_text())
    except (OSError, ValueError):
        return None


def raise_rmem_max(wanted: int) -> tuple[int | None, str]:
    """Let the server's SO_RCVBUF request be granted; only possible as root. Returns (value, note)."""
    current = rmem_max()
    if current is None or current >= wanted:
        return current, ""
    try:
        Path("/proc/sys/net/core/rmem_max").write_text(str(wanted))
        return rmem_max(), f"raised net.core.rmem_max {current} -> {wanted}"
    except OSError as e:
        return current, f"net.core.rmem_max is {current} and could not be raised ({e.strerror}); SO_RCVBUF is capped"
