"""Every use meterd makes of Twisted's internals, in one place.

Each function here reaches past Twisted's public interfaces for something
they do not offer, and says what it relies on. All were read in, and are
tested against, the Twisted version below: after an upgrade, this module is
what to read again (the tests that exercise each are named in its docstring).
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

from twisted.application import internet
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint

#: The Twisted release every function below was checked against.
CHECKED_AGAINST = "26.10.0"


def limit_reads_per_turn(port: Any, nbytes: int) -> None:
    """Make a UDP port read at most ``nbytes`` of datagrams per reactor turn.

    ``twisted.internet.udp.Port.doRead`` reads until EAGAIN or until
    ``maxThroughput`` bytes (256 KB by default), a class attribute with no
    setter of its own. Tests: test_udp.py, test_udp_workers.py.
    """
    port.maxThroughput = nbytes


def datagram_socket(port: Any) -> socket.socket:
    """The socket of a UDP port, to ``sendto`` without ``Port.write``'s address checks.

    ``twisted.internet.udp.Port.socket``. Tests: test_udp.py, test_e2e_udp.py.
    """
    sock: socket.socket = port.socket
    return sock


def write_now(process: Any) -> None:
    """Write what a child process's stdin transport holds now, not when the reactor next polls.

    ``twisted.internet.process.Process.pipes[0]`` is its ``ProcessWriter``,
    whose ``doWrite`` is what the reactor calls when the pipe is writable;
    calling it writes what fits now. Nothing is done once stdin is closing:
    the reactor closes the pipe on what that last write returns.
    Tests: test_udp_workers.py (the pipe tests).
    """
    stdin = process.pipes.get(0)
    if stdin is not None and not stdin.disconnecting:
        stdin.doWrite()


def accept_one_per_wakeup(port: Any) -> None:
    """Make a listening TCP port accept one connection per wakeup.

    ``twisted.internet.tcp.Port.doRead`` accepts up to ``numberAccepts``
    connections per call and adapts that number as it goes (100 at first).
    Processes sharing a listening socket are all woken by each connection;
    taking one at a time lets them take turns, so a client's pool of
    connections spreads over them. Tests: test_http_workers.py.
    """
    def do_read(original: Any) -> None:
        port.numberAccepts = 1
        original()

    port.doRead = partial(do_read, port.doRead)


def request_gone(request: Any) -> bool:
    """Whether a twisted.web request's connection was lost before it was answered.

    ``twisted.web.server.Request._disconnected``, set by ``connectionLost``;
    the public ``notifyFinish`` would need a Deferred per request on the hot
    path. Tests: test_http_fast_path.py.
    """
    return bool(request._disconnected)


def tcp_endpoint_address(endpoint: TCP4ServerEndpoint | TCP6ServerEndpoint) -> tuple[int, str, int]:
    """(port, interface, backlog) of a TCP server endpoint that ``serverFromString`` parsed.

    Kept by the endpoint under its constructor's argument names
    (``_port``, ``_interface``, ``_backlog``). Tests: test_reuseport.py.
    """
    interface = endpoint._interface or ("::" if isinstance(endpoint, TCP6ServerEndpoint) else "")
    return endpoint._port, interface, endpoint._backlog


def service_reactor(service: internet._AbstractServer) -> Any:
    """The reactor an application ``internet`` service (``UDPServer``...) listens with.

    ``twisted.application.internet._maybeGlobalReactor``: the service's own
    ``reactor`` argument, or the global one. Tests: test_reuseport.py.
    """
    return internet._maybeGlobalReactor(service.reactor)


def at_request_line(channel: Any) -> bool:
    """Whether an HTTP channel is waiting for a request line (not a header line).

    ``twisted.web.http.HTTPChannel.__first_line`` (name-mangled): 1, or 2 after
    the one empty line tolerated between requests, until the request line is
    read. meterd answers an overlong request line 414 and an overlong header
    line 431. Tests: test_bad_input.py, test_http_guard.py.
    """
    return bool(channel._HTTPChannel__first_line)


def headers_size_so_far(channel: Any) -> int:
    """Bytes of the request line and headers an HTTP channel has received for the current request.

    ``HTTPChannel._receivedHeaderSize``, which its ``lineReceived`` checks
    against ``totalHeadersSize`` to answer a bare 400; meterd checks first,
    to answer 431 in its own shape. Tests: test_http_guard.py.
    """
    return int(channel._receivedHeaderSize)


def waiting_for_transport(channel: Any) -> bool:
    """Whether an HTTP channel's transport has paused it: its socket's buffer is full.

    ``twisted.web.http.HTTPChannel._waitingForTransport``, set by its
    ``pauseProducing`` and cleared by ``resumeProducing``. A producer
    registered with a request while it is set is not paused by the channel;
    meterd pauses it itself. Tests: test_streaming.py.
    """
    return bool(channel is not None and channel._waitingForTransport)
