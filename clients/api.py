"""A small treq client for the meterd HTTP API (DESIGN §3).

The console and the meter simulator's provisioning both talk to the server;
keeping the routes, the bearer header and the error model in one module means a
change to the contract is made once, and every caller sees the same typed
:class:`ApiError` carrying the server's own ``code`` and ``message`` instead of
having to pick apart HTTP responses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

from twisted.internet import error as ierror
from twisted.internet import protocol
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure
from twisted.web import client as webclient
from twisted.web.http import PotentialDataLoss

from meterd.credentials import OPERATOR_TOKEN_FILE

__all__ = [
    "ApiError",
    "IncompleteAnswer",
    "Receiver",
    "ServerUnreachable",
    "UNREACHABLE_REASONS",
    "MeterdClient",
    "find_token",
    "DEFAULT_SERVER",
    "DEFAULT_DATA_DIR",
    "TOKEN_ENV",
]

DEFAULT_SERVER = "http://127.0.0.1:8888"
DEFAULT_DATA_DIR = "meterd-data"
TOKEN_ENV = "METERD_TOKEN"

#: Why nothing answered: connection refused, no answer in time, host name
#: not found, or the connection failed some other way (reset, closed).
UNREACHABLE_REASONS = ("refused", "timeout", "dns", "failed")

#: Failures that mean "no server answered", as opposed to "the server said no".
_UNREACHABLE = (
    ierror.ConnectError,  # includes ConnectionRefusedError, DNSLookupError, TCPTimedOutError
    ierror.ConnectionLost,
    ierror.ConnectionDone,
    ierror.TimeoutError,
    CancelledError,  # treq cancels the request when its timeout expires
    webclient.ResponseNeverReceived,
    webclient.ResponseFailed,
)


class ApiError(Exception):
    """An error answer from the server, with its HTTP status and error code.

    ``str(e)`` is ``"<code>: <message>"`` so a caller can show it as one line.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.code!r}, {self.message!r})"


class ServerUnreachable(ApiError):
    """No HTTP answer at all: refused, reset, DNS failure or timeout.

    A separate type lets pollers report "server went away" once and keep trying,
    while real API errors are shown as they are. ``reason`` is one of
    :data:`UNREACHABLE_REASONS`, so a client can word each case in its own
    language (a timeout is not a refusal) instead of showing ``message``.
    """

    def __init__(self, message: str, *, reason: str = "failed", server: str = "", timeout: float | None = None) -> None:
        super().__init__(0, "unreachable", message)
        self.reason = reason
        self.server = server
        self.timeout = timeout


class IncompleteAnswer(ApiError):
    """A streamed answer that ended before its end: the server failed, or the connection broke, midway."""

    def __init__(self, message: str) -> None:
        super().__init__(200, "incomplete_answer", message)


class _Body(protocol.Protocol):
    """A streamed body, to ``write`` piece by piece; cut, as an :class:`IncompleteAnswer`, after ``idle`` s without a byte.

    As treq's ``collect`` (a ``write`` that raises ends the download with
    its error), with the pause between pieces bounded.
    """

    def __init__(self, write: Callable[[bytes], None], finished: Deferred[None], clock: IReactorTime, idle: float,
                 stalled: str) -> None:
        self._write = write
        self._finished: Deferred[None] | None = finished
        self._clock = clock
        self._idle = idle
        self._stalled = stalled
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._idle, self._stall)

    def dataReceived(self, data: bytes) -> None:
        if self._finished is None:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle)
        try:
            self._write(data)
        except BaseException:
            self._end(Failure())

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if reason.check(webclient.ResponseDone, PotentialDataLoss):
            self._end(None)
        else:
            self._end(reason)

    def _stall(self) -> None:
        self._timer = None
        self._end(Failure(IncompleteAnswer(self._stalled)))

    def _end(self, failure: Failure | None) -> None:
        """Fire once: the body is whole (None), or it failed; a failure closes the connection."""
        finished, self._finished = self._finished, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if finished is None:
            return
        if failure is None:
            finished.callback(None)
            return
        if self.transport is not None:
            self.transport.loseConnection()
        finished.errback(failure)


class Receiver(Protocol):
    """Where :meth:`MeterdClient.download` puts a body as it arrives."""

    def begin(self, headers: Mapping[str, str]) -> None:
        """The answer is a success; its headers (names in lower case), before any of the body."""

    def write(self, data: bytes) -> None:
        """The next piece of the body (raising stops the download)."""


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset optional parameters so the server applies its own defaults."""
    return {k: v for k, v in params.items() if v is not None}


def _as_query(params: Mapping[str, Any]) -> str:
    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return str(v)

    return urlencode({k: text(v) for k, v in _clean(params).items()})


def _decode_error(status: int, body: bytes) -> ApiError:
    """Map an error body to ApiError, tolerating proxies that answer in HTML."""
    text = body.decode("utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        code = err.get("code")
        message = err.get("message")
        if isinstance(code, str) and code:
            return ApiError(status, code, str(message) if message is not None else "")
    return ApiError(status, f"http_{status}", text[:200])


class MeterdClient:
    """Thin async wrapper around the meterd routes.

    Every method returns a Deferred firing with the decoded JSON object, or
    failing with :class:`ApiError` (:class:`ServerUnreachable` when nothing
    answered). ``http`` is anything with treq's ``request``/``content`` API:
    the ``treq`` module by default, a ``treq.testing.StubTreq`` in tests.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        http: Any = None,
        timeout: float | None = 10.0,
        reactor: Any = None,
    ) -> None:
        if http is None:
            import treq

            http = treq
        self.server = server.rstrip("/")
        self.token = token or None
        self.timeout = timeout
        self._http = http
        self._reactor = reactor

    # -- plumbing -----------------------------------------------------------

    def _headers(self, with_body: bool) -> dict[bytes, list[bytes]]:
        headers: dict[bytes, list[bytes]] = {b"Accept": [b"application/json"]}
        if with_body:
            headers[b"Content-Type"] = [b"application/json; charset=utf-8"]
        if self.token:
            headers[b"Authorization"] = [b"Bearer " + self.token.encode("utf-8")]
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Send one request and decode the answer (public for odd routes/tests)."""
        return self._request(method, path, query=query, body=body)

    @inlineCallbacks
    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        status, raw, _ = yield self._exchange(method, path, query=query, body=body)
        try:
            doc = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise ApiError(
                status, "bad_response", raw.decode("utf-8", "replace")[:200]
            ) from None
        if not isinstance(doc, dict):
            raise ApiError(status, "bad_response", "expected a JSON object")
        return doc

    @inlineCallbacks
    def _exchange(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None,
        body: Mapping[str, Any] | None,
    ) -> Any:
        """One request: ``(status, body bytes, response)`` of a 2xx answer, else the error raised."""
        url = self.server + path
        if query:
            qs = _as_query(query)
            if qs:
                url += "?" + qs
        kwargs: dict[str, Any] = {"headers": self._headers(body is not None)}
        if body is not None:
            kwargs["data"] = json.dumps(_clean(body)).encode("utf-8")
        if self.timeout:
            kwargs["timeout"] = self.timeout
        if self._reactor is not None:
            kwargs["reactor"] = self._reactor
        try:
            response = yield self._http.request(method, url, **kwargs)
            raw = yield self._http.content(response)
        except _UNREACHABLE as e:
            reason = _reason(e)
            raise ServerUnreachable(
                self._describe(e, reason), reason=reason, server=self.server, timeout=self.timeout
            ) from None
        status = int(response.code)
        if not 200 <= status < 300:
            raise _decode_error(status, raw)
        return status, raw, response

    @inlineCallbacks
    def download(self, path: str, query: Mapping[str, Any], receiver: Receiver, *, accept: str = "text/csv") -> Any:
        """GET ``path`` and give its body to ``receiver`` piece by piece as it arrives, never whole in memory.

        Fires with None once the body is complete. An error answer fails
        with :class:`ApiError` as :meth:`request` does; a body cut short,
        with :class:`IncompleteAnswer`, and so does a body that stops coming:
        the timeout is for the answer to begin, and then for each pause in
        its body. A long body takes as long as it takes while it keeps
        coming; a server or a network that stalls midway does not leave the
        caller waiting for ever.
        """
        url = self.server + path
        qs = _as_query(query)
        if qs:
            url += "?" + qs
        headers = self._headers(False)
        headers[b"Accept"] = [accept.encode("ascii")]
        kwargs: dict[str, Any] = {"headers": headers, "unbuffered": True}
        if self.timeout:
            kwargs["timeout"] = self.timeout
        if self._reactor is not None:
            kwargs["reactor"] = self._reactor
        try:
            response = yield self._http.request("GET", url, **kwargs)
            status = int(response.code)
            if not 200 <= status < 300:
                raise _decode_error(status, (yield self._http.content(response)))
        except _UNREACHABLE as e:
            reason = _reason(e)
            raise ServerUnreachable(self._describe(e, reason), reason=reason, server=self.server, timeout=self.timeout) from None
        receiver.begin({k.decode("latin-1").lower(): v[-1].decode("latin-1") for k, v in response.headers.getAllRawHeaders()})
        if not self.timeout:
            body = self._http.collect(response, receiver.write)
        else:
            body = Deferred()
            clock = self._reactor
            if clock is None:
                from twisted.internet import reactor as clock
            stalled = f"{self.server}: the answer stopped for {self.timeout:g} s before its end"
            response.deliverBody(_Body(receiver.write, body, clock, self.timeout, stalled))
        try:
            yield body
        except (webclient.ResponseFailed, ierror.ConnectionLost, ierror.ConnectionDone) as e:
            raise IncompleteAnswer(f"{self.server}: the answer ended before its end ({self._describe(e, 'failed')})") from None

    def _describe(self, e: BaseException, reason: str) -> str:
        if reason == "timeout":
            return f"{self.server}: no answer within {self.timeout:g} s"
        if isinstance(e, (webclient.ResponseNeverReceived, webclient.ResponseFailed)):
            reasons = getattr(e, "reasons", None) or []
            inner = "; ".join(r.getErrorMessage() for r in reasons) if reasons else ""
            return f"{self.server}: connection failed{': ' + inner if inner else ''}"
        if isinstance(e, ierror.ConnectionRefusedError):
            return f"{self.server}: connection refused"
        return f"{self.server}: {e.__class__.__name__}: {e}".rstrip(": ")

    # -- routes -------------------------------------------------------------

    def register_customer(
        self,
        id: str,
        name: str,
        *,
        ligacao: str | None = None,
        limite_kw: float | None = None,
        limite_kwh: float | None = None,
        tz: str | None = None,
    ) -> Deferred[dict[str, Any]]:
        return self._request(
            "POST",
            "/cadCliente",
            body={
                "id": id,
                "name": name,
                "ligacao": ligacao,
                "limite_kw": limite_kw,
                "limite_kwh": limite_kwh,
                "tz": tz,
            },
        )

    def register_meter(self, id: str, *, mode: str | None = None) -> Deferred[dict[str, Any]]:
        return self._request("POST", "/cadMedidor", body={"id": id, "mode": mode})

    def new_token(self, id: str) -> Deferred[dict[str, Any]]:
        """A new token for the customer (operator): the old one stops working."""
        return self._request("POST", "/novoToken", body={"id": id})

    def new_key(self, id: str, id_medidor: int) -> Deferred[dict[str, Any]]:
        """A new key for the meter (operator): the old one stops working."""
        return self._request("POST", "/novaChave", body={"id": id, "id_medidor": id_medidor})

    def meters(self, id: str) -> Deferred[dict[str, Any]]:
        return self._request("GET", "/getMedidores", query={"id": id})

    # operations (operator)

    def search_customers(self, q: str, *, cursor: str | None = None, limite: int | None = None) -> Deferred[dict[str, Any]]:
        """A page of customers found by CPF/CNPJ prefix or name words; ``cursor`` asks the next page."""
        return self._request("GET", "/buscaClientes", query={"q": q, "cursor": cursor, "limite": limite})

    def customer(self, id: str) -> Deferred[dict[str, Any]]:
        """A customer's record: fields, meters and their state, active alarms."""
        return self._request("GET", "/getCliente", query={"id": id})

    def update_customer(
        self,
        id: str,
        *,
        name: str | None = None,
        ligacao: str | None = None,
        tz: str | None = None,
        limite_kw: float | str | None = None,
        limite_kwh: float | str | None = None,
    ) -> Deferred[dict[str, Any]]:
        """Change the fields given (the others stay as they are)."""
        return self._request(
            "POST",
            "/alteraCliente",
            body={"id": id, "name": name, "ligacao": ligacao, "tz": tz, "limite_kw": limite_kw, "limite_kwh": limite_kwh},
        )

    def audit(self, id: str | None = None, *, cursor: str | None = None, limite: int | None = None) -> Deferred[dict[str, Any]]:
        """A page of the audit log, newest first (one customer's, or everyone's)."""
        return self._request("GET", "/getAuditoria", query={"id": id, "cursor": cursor, "limite": limite})

    def retire_meter(self, id: str, id_medidor: int, valor: float | str, timestamp: float) -> Deferred[dict[str, Any]]:
        """Retire a meter at its final reading."""
        return self._request(
            "POST", "/retiraMedidor", body={"id": id, "id_medidor": id_medidor, "valor": valor, "timestamp": timestamp}
        )

    def replace_meter(
        self, id: str, id_medidor: int, valor: float | str, timestamp: float, *, mode: str | None = None
    ) -> Deferred[dict[str, Any]]:
        """Register the meter that replaces retired meter ``id_medidor``; its key is in the answer, once."""
        return self._request(
            "POST",
            "/substituiMedidor",
            body={"id": id, "id_medidor": id_medidor, "valor": valor, "timestamp": timestamp, "mode": mode},
        )

    def post_reading(
        self,
        id: str,
        id_medidor: int,
        valor: float | str,
        timestamp: float,
        seq: int | None = None,
    ) -> Deferred[dict[str, Any]]:
        return self._request(
            "POST",
            "/postConsumo",
            body={
                "id": id,
                "id_medidor": id_medidor,
                "valor": valor,
                "timestamp": timestamp,
                "seq": seq,
            },
        )

    def history(
        self, id: str, kind: str, periodo: int = 0, id_medidor: int | None = None
    ) -> Deferred[dict[str, Any]]:
        return self._request(
            "GET",
            "/getConsumoHist",
            query={"id": id, "kind": kind, "periodo": periodo, "id_medidor": id_medidor},
        )

    def bill(self, id: str, periodo: int = 0) -> Deferred[dict[str, Any]]:
        return self._request("GET", "/getFatura", query={"id": id, "periodo": periodo})

    def bill_code(self, id: str, periodo: int, codigo: str, receiver: Receiver) -> Deferred[None]:
        """An issued bill's payment code as SVG (``codigo``: ``pix`` or ``barras``), given to ``receiver``."""
        return self.download("/getFaturaCodigo", {"id": id, "periodo": periodo, "codigo": codigo}, receiver, accept="image/svg+xml")

    def start_billing(self, periodo: int) -> Deferred[dict[str, Any]]:
        """Start (or resume) the billing run of the month ``periodo`` months back (operator)."""
        return self._request("POST", "/faturamento", body={"periodo": periodo})

    def billing_run(self, execucao: int | None = None) -> Deferred[dict[str, Any]]:
        """A billing run's state; the latest one by default (operator)."""
        return self._request("GET", "/getFaturamento", query={"execucao": execucao})

    def billing_result(self, execucao: int, formato: str, receiver: Receiver) -> Deferred[None]:
        """Every bill a run issued, as CSV or JSON Lines, streamed to ``receiver`` (operator)."""
        accept = "text/csv" if formato == "csv" else "application/jsonl"
        return self.download("/getFaturamentoResultado", {"execucao": execucao, "formato": formato}, receiver, accept=accept)

    def alarms(self, id: str, cursor: int | None = None) -> Deferred[dict[str, Any]]:
        return self._request("GET", "/getAlarme", query={"id": id, "cursor": cursor})

    def ack_alarm(self, id: str, alarm_id: int) -> Deferred[dict[str, Any]]:
        return self._request("POST", "/ackAlarme", body={"id": id, "alarm_id": alarm_id})

    def register_webhook(self, url: str, id: str | None = None) -> Deferred[dict[str, Any]]:
        """A webhook for the alarm events of one customer, or of all (operator); the answer holds its secret, once."""
        return self._request("POST", "/cadWebhook", body={"url": url, "id": id})

    def webhooks(self) -> Deferred[dict[str, Any]]:
        """The alarm webhooks and how their delivery goes (operator)."""
        return self._request("GET", "/getWebhooks")

    def remove_webhook(self, webhook_id: int) -> Deferred[dict[str, Any]]:
        return self._request("POST", "/removeWebhook", body={"webhook_id": webhook_id})

    def health(self) -> Deferred[dict[str, Any]]:
        return self._request("GET", "/health")


def _reason(e: BaseException) -> str:
    """Which of :data:`UNREACHABLE_REASONS` a transport failure is.

    treq's timeout cancels the request: before the connection is made that is
    a ``CancelledError``; once the request is sent, twisted.web wraps it in
    ``ResponseNeverReceived``. Both are a server that did not answer in time.
    """
    if isinstance(e, (webclient.ResponseNeverReceived, webclient.ResponseFailed)):
        reasons = getattr(e, "reasons", None) or []
        if any(r.check(CancelledError) for r in reasons):
            return "timeout"
        return "failed"
    if isinstance(e, (CancelledError, ierror.TimeoutError, ierror.TCPTimedOutError)):
        return "timeout"
    if isinstance(e, ierror.ConnectionRefusedError):
        return "refused"
    if isinstance(e, ierror.DNSLookupError):
        return "dns"
    return "failed"


def find_token(explicit: str | None, data_dir: str | None) -> str | None:
    """Pick credentials the way an operator expects beside a running server.

    Order: an explicit ``--token``, then ``$METERD_TOKEN``, then
    ``<data_dir or ./meterd-data>/operator.token``. Blank values count as unset
    so an empty environment variable does not mask the token file.
    """
    if explicit and explicit.strip():
        return explicit.strip()
    env = os.environ.get(TOKEN_ENV, "")
    if env.strip():
        return env.strip()
    path = Path(data_dir or DEFAULT_DATA_DIR) / OPERATOR_TOKEN_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None
