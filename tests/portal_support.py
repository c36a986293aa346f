"""A browser's part in the portal's HTTP tests: a cookie jar, the CSRF field of
the page last shown, forms posted as a browser posts them, redirects not
followed (each test says where it expects to be sent)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from meterd.portal import routes
from tests.support import LiveServer

_CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names, the last value of each
    cookies: list[str]  # every Set-Cookie
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found, "no CSRF field on this page"
        return found.group(1)


@dataclass
class PortalClient:
    """One browser: its cookie, sent back as a browser does."""

    server: LiveServer
    cookie: str | None = None  # "name=value"
    history: list[Reply] = field(default_factory=list)

    async def request(self, method: str, path: str, *, form: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Reply:
        sent = dict(headers or {})
        if self.cookie:
            sent["Cookie"] = self.cookie
        data = None
        if form is not None:
            data = urlencode({k: str(v) for k, v in form.items()}).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        response = await treq.request(method, self.server.url + path, data=data, headers=sent, allow_redirects=False, persistent=False)
        body = await response.content()
        names = {k.decode().lower(): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()}
        cookies = [c.decode("latin-1") for c in response.headers.getRawHeaders(b"set-cookie") or []]
        for cookie in cookies:
            pair = cookie.split(";")[0]
            self.cookie = None if "Max-Age=0" in cookie else pair
        reply = Reply(response.code, names, cookies, body)
        self.history.append(reply)
        return reply

    async def get(self, path: str, **params: Any) -> Reply:
        return await self.request("GET", routes.href(path, **params))

    async def post(self, path: str, form: dict[str, Any], *, csrf_from: str | None = None) -> Reply:
        """POST ``form``, with the CSRF field of the page at ``csrf_from`` (the form's own page) unless ``form`` has one."""
        if "csrf" not in form:
            page = await self.get(csrf_from or path)
            form = {**form, "csrf": page.csrf()}
        return await self.request("POST", path, form=form)

    async def login(self, customer_id: str, token: str, **extra: Any) -> Reply:
        page = await self.get(routes.LOGIN)
        return await self.request("POST", routes.LOGIN, form={"csrf": page.csrf(), "id": customer_id, "token": token, **extra})

    async def login_operator(self, token: str) -> Reply:
        page = await self.get(routes.LOGIN)
        return await self.request("POST", routes.LOGIN_STAFF, form={"csrf": page.csrf(), "operator_token": token})


class Stream(Protocol):
    """A raw HTTP connection reading an event stream as it arrives."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True

    @property
    def ended(self) -> bool:
        """The server ended the answer (its last chunk) or the connection."""
        return self.closed or self.data.endswith(b"\r\n0\r\n\r\n")

    @property
    def status(self) -> int:
        return int(self.data.split(b" ", 2)[1]) if b" " in self.data else 0


async def open_stream(client: PortalClient, path: str, *, last_event_id: int | None = None) -> Stream:
    port = int(client.server.url.rsplit(":", 1)[1])
    stream = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Stream())
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: text/event-stream"]
    if client.cookie:
        lines.append(f"Cookie: {client.cookie}")
    if last_event_id is not None:
        lines.append(f"Last-Event-ID: {last_event_id}")
    assert stream.transport is not None
    stream.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return stream


async def raise_demand_alarm(server: LiveServer, customer_id: str, meter: int = 1, start: float | None = None) -> None:
    """Two readings of a register that ran 4 kWh in 40 s (360 kW): a demand alarm for any sane limit."""
    now = int(start or time.time())
    for ts, valor in ((now - 60, 0.0), (now - 20, 4.0)):
        status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": customer_id, "id_medidor": meter, "valor": valor, "timestamp": ts})
        assert status in (200, 201), body
