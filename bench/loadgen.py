"""UDP meter traffic from a separate process: ``python -m bench.loadgen``.

The machine running the benchmark also runs the server, so the sender must
cost as little as possible: every datagram is built and signed before the
timed phase, the timed loop is ``socket.send`` on a connected socket paced in
chunks, and acks are read from the same socket (the server acks the address a
reading came from) between chunks, without verifying their signatures.

With ``"sockets": N`` in the config the meters are spread over N connected
sockets (meter m always on socket m % N, so each meter keeps one source port,
as a real meter does): SO_REUSEPORT hashes by source port, so one socket
would put all of a sender's traffic on one of the server processes.

With ``"ack_within": S`` the result also counts the readings acknowledged
within S seconds of their send (``acked_within``): each reading is sent once,
so that is the first-try ack count.

Protocol with the parent: one JSON config line on stdin; "ready" on stdout
when the datagrams are built; then "go" on stdin; one JSON result line on stdout.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from typing import Any

from meterd.datagram import Key, sign

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover
    loads = json.loads

CHUNK = 32
EPOCH_MS = 1_600_000_000_000


def register_wh(ts_ms: int) -> int:
    """A register that is a function of time only, so phases can never make it go backwards."""
    return 1_000_000 + (ts_ms - EPOCH_MS) // 20


def build(meters: list[dict[str, Any]], per_meter: int, per_meter_rate: float, seq_base: int, start_ms: int) -> list[bytes]:
    """Round-robin over meters: datagram ``j * len(meters) + m`` is meter m's j-th reading."""
    step_ms = max(1, int(1000 / per_meter_rate)) if per_meter_rate > 0 else 1
    keys = [Key(bytes.fromhex(m["key"])) for m in meters]
    ids = [(m["id"], m["meter"]) for m in meters]
    out: list[bytes] = []
    for j in range(per_meter):
        for m, (cid, mid) in enumerate(ids):
            ts = start_ms + j * step_ms + m % step_ms
            wh = register_wh(ts)
            payload = (
                f'{{"id":"{cid}","id_medidor":{mid},"valor":{wh // 1000}.{wh % 1000:03d},'
                f'"timestamp":{ts // 1000}.{ts % 1000:03d},"seq":{seq_base + j}}}'
            ).encode()
            out.append(sign(payload, keys[m]))
    return out


def run(config: dict[str, Any], datagrams: list[bytes], socks: list[socket.socket]) -> dict[str, Any]:
    meters = config["meters"]
    n_meters = len(meters)
    index_of = {m["id"]: i for i, m in enumerate(meters)}
    seq_base = config["seq_base"]
    rate = float(config["rate"])
    duration = float(config["duration"])
    paced = rate > 0
    n = len(datagrams)
    chunk_times = [0.0] * (n // CHUNK + 1)
    acked = bytearray(n)
    latencies: list[float] = []
    ack_datagrams = 0
    bad_acks = 0
    # Datagram i is meter i % n_meters's, sent from that meter's socket.
    sends = [socks[(i % n_meters) % len(socks)].send for i in range(n)] if len(socks) > 1 else None
    send = socks[0].send
    recvs = [s.recv for s in socks]
    poller = select.epoll() if len(socks) > 1 else None
    by_fd: dict[int, Any] = {}
    if poller is not None:
        for s in socks:
            poller.register(s.fileno(), select.EPOLLIN)
            by_fd[s.fileno()] = s.recv
    dontwait = socket.MSG_DONTWAIT
    perf = time.perf_counter
    send_errors = 0
    max_lag = 0.0

    def drain() -> None:
        if poller is None:
            drain_one(recvs[0])
        else:
            for fd, _ in poller.poll(0):
                drain_one(by_fd[fd])

    def drain_one(recv: Any) -> None:
        nonlocal ack_datagrams, bad_acks
        now = perf()
        while True:
            try:
                data = recv(4096, dontwait)
            except BlockingIOError:
                return
            except OSError:
                return
            ack_datagrams += 1
            try:
                body = loads(data.rpartition(b"\n")[0])
                m = index_of[body["id"]]
                for seq in body["acks"]:
                    i = (seq - seq_base) * n_meters + m
                    if 0 <= i < n and not acked[i]:
                        acked[i] = 1
                        latencies.append(now - chunk_times[i // CHUNK])
            except (ValueError, KeyError, TypeError):
                bad_acks += 1

    t0 = perf()
    deadline = t0 + duration
    sent = 0
    i = 0
    if paced:
        while i < n:
            now = perf()
            allowed = (now - t0) * rate
            if i < allowed:
                lag = (allowed - i) / rate
                if lag > max_lag:
                    max_lag = lag
                end = min(n, i + CHUNK)
                if sends is None:
                    for d in datagrams[i:end]:
                        try:
                            send(d)
                        except OSError:
                            send_errors += 1
                else:
                    for k in range(i, end):
                        try:
                            sends[k](datagrams[k])
                        except OSError:
                            send_errors += 1
                chunk_times[i // CHUNK] = perf()
                i = end
                drain()
            else:
                drain()
                time.sleep(min(0.001, (i - allowed) / rate))
        sent = n
    else:
        while True:
            if sends is None:
                for d in datagrams:
                    try:
                        send(d)
                    except OSError:
                        send_errors += 1
            else:
                for k, d in enumerate(datagrams):
                    try:
                        sends[k](d)
                    except OSError:
                        send_errors += 1
            sent += n
            if perf() >= deadline:
                break
    send_seconds = perf() - t0
    if config.get("acks", True):
        until = perf() + float(config.get("drain", 3.0))
        while perf() < until and len(latencies) < n:
            drain()
            time.sleep(0.002)
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q / 100 * len(latencies)))]

    result = {
        "sent": sent,
        "send_seconds": send_seconds,
        "send_errors": send_errors,
        "max_lag_s": max_lag,
        "acked": len(latencies),
        "ack_datagrams": ack_datagrams,
        "bad_acks": bad_acks,
        "ack_p50_s": pct(50),
        "ack_p99_s": pct(99),
        "ack_max_s": latencies[-1] if latencies else None,
    }
    if "ack_within" in config:  # acked within this many seconds of the send (each reading is sent once: first try)
        within = float(config["ack_within"])
        result["acked_within"] = sum(1 for x in latencies if x <= within)
    return result


def main() -> None:
    config = json.loads(sys.stdin.readline())
    meters = config["meters"]
    rate = float(config["rate"])
    duration = float(config["duration"])
    if rate > 0:
        total = int(rate * duration)
        per_meter = -(-total // len(meters))
        per_meter_rate = rate / len(meters)
    else:
        per_meter = max(1, int(config.get("cycle", 20_000)) // len(meters))
        per_meter_rate = 0
    datagrams = build(meters, per_meter, per_meter_rate, config["seq_base"], int(config["start_ms"]))
    if rate > 0:
        datagrams = datagrams[: int(rate * duration)]
    socks = []
    count = max(1, min(int(config.get("sockets", 1)), len(meters)))
    buffer = max(256 * 1024, 4 * 1024 * 1024 // count)
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
        sock.connect((config["host"], int(config["port"])))
        socks.append(sock)
    print("ready", flush=True)
    sys.stdin.readline()
    result = run(config, datagrams, socks)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
