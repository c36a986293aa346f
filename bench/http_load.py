"""HTTP load from a separate process: ``python -m bench.http_load`` (JSON config on stdin).

N keep-alive connections, each sending its next request as soon as the
previous answer is complete (closed loop, no pipelining), on a bare asyncio
Protocol so the client costs as little CPU as possible: the server under test
shares the machine. Handles Content-Length and chunked bodies (twisted.web
answers ``request.write(); request.finish()`` chunked).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any


def parse_response(buf: bytearray) -> tuple[int, int] | None:
    """``(status, bytes consumed)`` of the first complete response in ``buf``, else ``None``."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buf[:head_end]).lower()
    status = int(head[9:12])
    pos = head_end + 4
    cl = head.find(b"\r\ncontent-length:")
    if cl >= 0:
        line_end = head.find(b"\r\n", cl + 2)
        length = int(head[cl + 17 : line_end if line_end >= 0 else len(head)])
        return (status, pos + length) if len(buf) >= pos + length else None
    if b"transfer-encoding: chunked" in head:
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            pos = line_end + 2 + size + 2
            if len(buf) < pos:
                return None
            if size == 0:
                return status, pos
    return status, pos  # no body


class Conn(asyncio.Protocol):
    def __init__(self, request: bytes, stats: "Stats") -> None:
        self.request = request
        self.stats = stats
        self.buf = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.fire()

    def fire(self) -> None:
        assert self.transport is not None
        if time.perf_counter() >= self.stats.deadline:
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            parsed = parse_response(self.buf)
            if parsed is None:
                return
            status, used = parsed
            del self.buf[:used]
            now = time.perf_counter()
            self.stats.record(status, now - self.sent_at, now)
            self.fire()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Stats:
    def __init__(self, start: float, warmup: float, duration: float) -> None:
        self.counted_from = start + warmup
        self.deadline = start + warmup + duration
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()

    def record(self, status: int, latency: float, now: float) -> None:
        if now >= self.counted_from and now <= self.deadline:
            self.latencies.append(latency)
            self.statuses[status] += 1


async def load(config: dict[str, Any]) -> dict[str, Any]:
    host, port = config["host"], int(config["port"])
    requests = [
        (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n").encode()
        for path, token in config["requests"]
    ]
    connections = int(config.get("connections", 32))
    warmup, duration = float(config.get("warmup", 0.5)), float(config["duration"])
    stats = Stats(time.perf_counter(), warmup, duration)
    loop = asyncio.get_running_loop()
    conns = []
    for c in range(connections):
        _, proto = await loop.create_connection(lambda c=c: Conn(requests[c % len(requests)], stats), host, port)
        conns.append(proto)
    await asyncio.wait([p.closed for p in conns], timeout=warmup + duration + 30)
    lat = sorted(stats.latencies)

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q / 100 * len(lat)))] if lat else None

    return {
        "requests": len(lat),
        "rps": len(lat) / duration,
        "p50_s": pct(50),
        "p99_s": pct(99),
        "statuses": {str(k): v for k, v in stats.statuses.items()},
    }


def main() -> None:
    config = json.loads(sys.stdin.readline())
    print(json.dumps(asyncio.run(load(config))), flush=True)


if __name__ == "__main__":
    main()
