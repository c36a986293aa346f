"""Unauthenticated clients for the ``attack`` phase: ``python -m bench.attack`` (one JSON config line on stdin).

Each kind runs in its own process, so what it costs lands on a core of its
own as far as the machine allows, never in the harness's or the server's:

* ``poll``: ``GET /health`` every ``interval`` seconds, on one kept-alive
  connection or a fresh one each time (``fresh``), optionally from another
  loopback address (``bind``, e.g. 127.0.0.2, which the server counts apart
  from 127.0.0.1): the latency of each poll, or why it had no answer. A poll
  is timed from its send (its connect, when fresh) to the end of the answer;
  polls are due on a fixed schedule, and one that overruns delays the next
  rather than adding a burst after it.
* ``pipeline``: ``connections`` connections (spread over the source
  addresses ``bind``) that each write pipelined requests for ``path`` as fast
  as the socket takes them and never read an answer. Their receive buffers are fixed at ``rcvbuf`` bytes (64 KiB), as a
  client that stops reading has, so the answers cannot hide in the kernel on
  the attacker's side (this machine would autotune each up to 32 MB).
* ``slowloris``: keeps ``attempts`` connections open from one address, each
  sending its request's header one byte every ``interval`` seconds; every
  ``interval`` the connections the server closed are opened again. Counts the
  connections accepted and refused (closed before any answer), and for each
  one that got an answer, its status and how long after its first byte.
* ``garbage``: floods a UDP port, unpaced, with a mix of datagrams no meter
  sent: random bytes (half with a signature-shaped last line), oversized
  datagrams, well-formed signed readings of meters nobody registered, and
  well-formed readings of registered meters (``meters``) with wrong
  signatures.

Protocol with the parent, as ``bench.loadgen``'s: the config line; "ready"
on stdout when set up; "go" on stdin; one JSON result line on stdout.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import random
import resource
import select
import socket
import sys
import time
from typing import Any

from bench.common import cpf
from bench.http_load import parse_response

perf = time.perf_counter


def _request(host: str, port: int, path: str, close: bool = False) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n").encode()


def _handshake() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


# -- poll ------------------------------------------------------------------------


def poll(config: dict[str, Any]) -> dict[str, Any]:
    host, port, path = config["host"], int(config["port"]), config.get("path", "/health")
    interval, duration = float(config.get("interval", 0.1)), float(config["duration"])
    fresh, bind, timeout = bool(config.get("fresh", False)), config.get("bind"), float(config.get("timeout", 5.0))
    request = _request(host, port, path, close=fresh)
    sock: socket.socket | None = None

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(timeout)
        if bind:
            s.bind((bind, 0))
        s.connect((host, port))
        return s

    if not fresh:
        sock = connect()
    polls: list[tuple[float, float | None, str]] = []  # (seconds since go, latency or None, status or error)
    _handshake()
    t0 = perf()
    k = 0
    while True:
        due = t0 + k * interval
        if due - t0 >= duration:
            break
        now = perf()
        if due > now:
            time.sleep(due - now)
        started = perf()
        try:
            if sock is None:
                sock = connect()
            sock.sendall(request)
            buf = bytearray()
            while (parsed := parse_response(buf)) is None:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed by the server")
                buf += data
            polls.append((started - t0, perf() - started, str(parsed[0])))
            if fresh:
                sock.close()
                sock = None
        except (OSError, ValueError) as e:
            polls.append((started - t0, None, type(e).__name__))
            if sock is not None:
                sock.close()
            sock = None
        k = max(k + 1, int((perf() - t0) / interval) + 1)
    if sock is not None:
        sock.close()
    return {"polls": polls}


# -- pipeline --------------------------------------------------------------------


def pipeline(config: dict[str, Any]) -> dict[str, Any]:
    host, port, path = config["host"], int(config["port"]), config.get("path", "/openapi.json")
    n, duration, rcvbuf = int(config["connections"]), float(config["duration"]), int(config.get("rcvbuf", 65536))
    sources = config.get("bind") or [None]
    request = _request(host, port, path)
    blob = memoryview(request * 256)
    socks: dict[int, socket.socket] = {}
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window it offers
        if sources[i % len(sources)]:
            s.bind((sources[i % len(sources)], 0))
        s.connect((host, port))
        s.setblocking(False)
        socks[s.fileno()] = s
    offset = dict.fromkeys(socks, 0)  # where in the request the next byte is
    poller = select.epoll()
    for fd in socks:
        poller.register(fd, select.EPOLLOUT)
    sent = 0
    closed = 0
    _handshake()
    t0 = perf()
    deadline = t0 + duration
    while (left := deadline - perf()) > 0:
        for fd, event in poller.poll(min(0.1, left)):
            s = socks[fd]
            try:
                if event & (select.EPOLLERR | select.EPOLLHUP):
                    raise ConnectionResetError
                k = s.send(blob[offset[fd]:])
            except BlockingIOError:
                continue
            except OSError:
                closed += 1
                poller.unregister(fd)
                continue
            sent += k
            offset[fd] = (offset[fd] + k) % len(request)
    for s in socks.values():
        s.close()  # unread answers in its buffer: the kernel resets the connection
    return {"connections": n, "closed_by_server": closed, "bytes_sent": sent, "requests_sent": sent // len(request),
            "seconds": perf() - t0}


# -- slowloris -------------------------------------------------------------------


def slowloris(config: dict[str, Any]) -> dict[str, Any]:
    host, port = config["host"], int(config["port"])
    attempts, interval, duration = int(config["attempts"]), float(config.get("interval", 2.0)), float(config["duration"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < attempts + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, attempts + 64) if hard != resource.RLIM_INFINITY else attempts + 64, hard))
    # Never a whole header: the request line and a header, one byte at a time, then header lines forever.
    trickle = _request(host, port, "/health")[:-2] + b"X-a: b\r\n" * 10_000
    live: dict[int, dict[str, Any]] = {}  # fd -> {sock, first, sent, answer}
    poller = select.epoll()
    opened = refused = answered = failed = 0
    statuses: dict[str, int] = {}
    answer_after: list[float] = []  # seconds from a connection's first byte to the server's answer

    def open_one() -> None:
        nonlocal opened, failed
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, errno.EINPROGRESS):
            failed += 1
            s.close()
            return
        opened += 1
        live[s.fileno()] = {"sock": s, "first": None, "sent": 0, "answer": b""}
        poller.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

    def close(fd: int) -> None:
        nonlocal refused, answered
        c = live.pop(fd)
        poller.unregister(fd)
        c["sock"].close()
        if c["answer"]:
            answered += 1
            status = c["answer"][9:12].decode("ascii", "replace")
            statuses[status] = statuses.get(status, 0) + 1
            if c["first"] is not None:
                answer_after.append(c["answered_at"] - c["first"])
        else:
            refused += 1

    def read(fd: int) -> None:
        c = live[fd]
        try:
            data = c["sock"].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            if not c["answer"]:
                c["answered_at"] = perf()
            c["answer"] += data
        else:
            close(fd)

    def trickle_all() -> None:
        for c in list(live.values()):
            try:
                c["sock"].send(trickle[c["sent"]:c["sent"] + 1])
            except (BlockingIOError, OSError):
                continue  # not connected yet, or closed: its read will tell
            if c["first"] is None:
                c["first"] = perf()
            c["sent"] += 1

    _handshake()
    t0 = perf()
    deadline = t0 + duration
    next_round = t0
    while (now := perf()) < deadline:
        if now >= next_round:
            while len(live) < attempts:
                open_one()
            time.sleep(0.05)  # let the handshakes finish before the first byte
            trickle_all()
            next_round += interval
        for fd, _ in poller.poll(max(0.0, min(next_round, deadline) - perf())):
            if fd in live:
                read(fd)
    held_at_end = len(live)
    for fd in list(live):
        live[fd]["sock"].close()
    return {"opened": opened, "refused": refused, "answered": answered, "connect_failed": failed, "statuses": statuses,
            "answer_after_s": sorted(answer_after), "held_at_end": held_at_end,
            "seconds": perf() - t0}


# -- garbage ---------------------------------------------------------------------


def garbage_pool(meters: list[dict[str, Any]], count: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    """``count`` datagrams, the kinds in turn; and how many of each kind."""
    rng = random.Random(seed)
    now = time.time()
    kinds = ("random", "random_signed_shape", "oversized", "unknown_meter", "bad_signature")
    pool: list[bytes] = []
    made = dict.fromkeys(kinds, 0)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind == "random":
            d = rng.randbytes(rng.randint(1, 1000))
        elif kind == "random_signed_shape":  # passes the signature's shape; fails as a payload
            d = rng.randbytes(rng.randint(1, 900)) + b"\n" + rng.randbytes(32).hex().encode()
        elif kind == "oversized":
            d = b"{" + rng.randbytes(rng.randint(1200, 8000))
        else:
            if kind == "unknown_meter":  # a valid CPF nobody registered, signed with a key nobody has
                cid, meter, key = cpf(50_000_000 + i), 1, rng.randbytes(32)
            else:  # a registered meter, a signature that is not its key's
                m = meters[i % len(meters)]
                cid, meter, key = m["id"], m["meter"], rng.randbytes(32)
            ts = now + rng.uniform(-60, 60)
            payload = (f'{{"id":"{cid}","id_medidor":{meter},"valor":{rng.randint(1, 10**6)}.{rng.randint(0, 999):03d},'
                       f'"timestamp":{ts:.3f},"seq":{rng.randint(1, 10**9)}}}').encode()
            d = payload + b"\n" + hmac.digest(key, payload, hashlib.sha256).hex().encode()
        pool.append(d)
        made[kind] += 1
    return pool, made


def garbage(config: dict[str, Any]) -> dict[str, Any]:
    duration = float(config["duration"])
    pool, made = garbage_pool(config["meters"], int(config.get("pool", 5000)), int(config.get("seed", os.getpid())))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.connect((config["host"], int(config["port"])))
    send = sock.send
    sent = errors = 0
    _handshake()
    t0 = perf()
    deadline = t0 + duration
    while perf() < deadline:
        for d in pool:
            try:
                send(d)
            except OSError:
                errors += 1
        sent += len(pool)
    seconds = perf() - t0
    sock.close()
    return {"sent": sent, "send_errors": errors, "seconds": seconds, "pool": made}


KINDS = {"poll": poll, "pipeline": pipeline, "slowloris": slowloris, "garbage": garbage}


def main() -> None:
    config = json.loads(sys.stdin.readline())
    result = KINDS[config["kind"]](config)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
