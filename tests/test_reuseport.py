"""``--reuse-port``'s sockets, in process: two listeners on one TCP port, both serving."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor

from meterd.reuseport import SharedTCPEndpoint, shared_socket
from tests.support import free_port


class Named(Protocol):
    """Says which listener accepted the connection, then closes it."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.factory.name)  # type: ignore[attr-defined]
        self.transport.loseConnection()


class Reader(Protocol):
    def __init__(self) -> None:
        self.data = b""
        from twisted.internet.defer import Deferred

        self.done: Any = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.data)


def named_factory(name: bytes) -> Factory:
    factory = Factory.forProtocol(Named)
    factory.name = name  # type: ignore[attr-defined]
    return factory


def test_the_endpoint_string_gives_port_interface_and_backlog() -> None:
    endpoint = SharedTCPEndpoint.from_string(MemoryReactor(), "tcp:8888:interface=127.0.0.1:backlog=7")
    assert (endpoint.port, endpoint.interface, endpoint.backlog) == (8888, "127.0.0.1", 7)
    assert SharedTCPEndpoint.from_string(MemoryReactor(), "tcp6:8888").interface == "::"
    for refused in ("unix:/tmp/meterd.sock", "ssl:8888:privateKey=/nonexistent.pem"):
        with pytest.raises((ValueError, OSError)):
            SharedTCPEndpoint.from_string(MemoryReactor(), refused)


def test_a_plain_socket_cannot_take_a_shared_port_but_another_shared_one_can() -> None:
    port = free_port()
    first = shared_socket(socket.SOCK_STREAM, "127.0.0.1", port)
    try:
        plain = socket.socket()
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))
        plain.close()
        second = shared_socket(socket.SOCK_STREAM, "127.0.0.1", port)
        second.close()
        datagrams = [shared_socket(socket.SOCK_DGRAM, "127.0.0.1", port) for _ in range(2)]
        for sock in datagrams:
            sock.close()
    finally:
        first.close()


@pytest_twisted.ensureDeferred
async def test_two_listeners_share_one_port_and_both_accept() -> None:
    port = free_port()
    listeners = [
        await SharedTCPEndpoint(reactor, port, "127.0.0.1").listen(named_factory(name)) for name in (b"a", b"b")
    ]
    try:
        assert {listener.getHost().port for listener in listeners} == {port}
        seen = set()
        for _ in range(64):  # the kernel hashes each new connection's source port to one listener
            reader = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Reader())
            seen.add(await reader.done)
            if seen == {b"a", b"b"}:
                break
        assert seen == {b"a", b"b"}
        # one stops: the other still takes every connection
        await listeners.pop(0).stopListening()
        for _ in range(8):
            reader = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Reader())
            assert await reader.done == b"b"
    finally:
        for listener in listeners:
            await listener.stopListening()
