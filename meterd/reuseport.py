"""Listening sockets that several meterd processes on one host share (``--reuse-port``).

Twisted's endpoints and ``listenUDP`` cannot set ``SO_REUSEPORT``, so these
bind the socket themselves and hand it to the reactor (``IReactorSocket``'s
``adoptStreamPort``/``adoptDatagramPort``). The kernel then spreads incoming
datagrams and connections over the processes by a hash of the peer's address
and port, so a meter keeps talking to one process and a keep-alive HTTP
connection stays on one.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from meterd.twisted_internals import tcp_endpoint_address

__all__ = ["SharedTCPEndpoint", "shared_socket"]


def shared_socket(kind: socket.SocketKind, interface: str, port: int, backlog: int = 50) -> socket.socket:
    """A bound (and, for TCP, listening) non-blocking socket with SO_REUSEPORT set."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's own TCP ports do
        sock.bind((interface, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@implementer(IStreamServerEndpoint)
class SharedTCPEndpoint:
    """A TCP server endpoint whose port other processes may listen on too."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = 50) -> None:
        self._reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    @classmethod
    def from_string(cls, reactor: Any, description: str) -> SharedTCPEndpoint:
        """The same port, interface and backlog as a ``tcp:``/``tcp6:`` endpoint string.

        ValueError for any other kind (``ssl:``, ``unix:``...): only a plain
        TCP port can be shared this way.
        """
        endpoint = serverFromString(reactor, description)
        if not isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint)):
            raise ValueError(f"{description!r} is not a tcp: endpoint; --reuse-port shares plain TCP ports only")
        return cls(reactor, *tcp_endpoint_address(endpoint))

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        try:
            sock = shared_socket(socket.SOCK_STREAM, self.interface, self.port, self.backlog)
        except OSError as e:
            return fail(e)
        try:
            return succeed(self._reactor.adoptStreamPort(sock.fileno(), sock.family, factory))
        finally:
            sock.close()  # the reactor holds its own duplicate of the descriptor
