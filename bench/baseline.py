"""The baselines: the least a Twisted process can do for the same traffic.

``udp PORT RCVBUF``: a bare DatagramProtocol that only parses each datagram's
JSON payload (no signature, no validation, no storage). ``web PORT``: a bare
twisted.web leaf resource that answers every request with a constant JSON body.
Same receive buffer (the harness passes meterd's) and same Site settings
(access log off) as meterd, so the ratios in the table measure meterd's own
work. Nothing of meterd is imported: the baseline's RSS is Twisted's alone.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site

BODY = json.dumps({"status": "ok", "answer": 42, "items": [{"a": 1}, {"b": 2}]}).encode()


class Parse(DatagramProtocol):
    def __init__(self) -> None:
        self.count = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if data == b"__count__":
            self.transport.write(str(self.count).encode(), addr)
            return
        payload = data.rpartition(b"\n")[0] or data
        try:
            json.loads(payload)
        except ValueError:
            return
        self.count += 1


class Constant(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return BODY


def main(argv: list[str]) -> None:
    kind, port = argv[1], int(argv[2])
    if kind == "udp":
        listening = reactor.listenUDP(port, Parse(), interface="127.0.0.1")  # type: ignore[attr-defined]
        listening.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(argv[3]))
    else:
        site = Site(Constant())
        site.log = lambda request: None  # type: ignore[method-assign]
        reactor.listenTCP(port, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv)
