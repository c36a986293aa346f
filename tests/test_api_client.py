"""clients.api against an in-memory fake of the meterd HTTP API (StubTreq)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from clients.api import ApiError, IncompleteAnswer, MeterdClient, ServerUnreachable, find_token


class Recorder(Resource):
    """Answers every path with a scripted (status, body) and records requests."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []
        self.answer: tuple[int, bytes, str] = (200, b'{"ok": true}', "application/json")

    def render(self, request: Request) -> bytes:
        body = request.content.read()
        uri = request.uri.decode()
        auth = request.getHeader("authorization")
        self.calls.append(
            {
                "method": request.method.decode(),
                "path": urlsplit(uri).path,
                "query": {k: v[0] for k, v in parse_qs(urlsplit(uri).query).items()},
                "body": json.loads(body) if body else None,
                "auth": auth,
                "ctype": request.getHeader("content-type"),
            }
        )
        status, payload, ctype = self.answer
        request.setResponseCode(status)
        request.setHeader("content-type", ctype)
        return payload


@pytest.fixture
def fake() -> Recorder:
    return Recorder()


def client(fake: Recorder, token: str | None = "s3cret") -> MeterdClient:
    return MeterdClient("http://meterd.test:8888/", token, http=StubTreq(fake), timeout=None)


@pytest_twisted.inlineCallbacks
def test_register_customer_posts_json_with_bearer(fake: Recorder) -> Any:
    fake.answer = (201, json.dumps({"id": "52998224725", "token": "tk"}).encode(), "application/json")
    doc = yield client(fake).register_customer("529.982.247-25", "Ana", ligacao="bi")
    assert doc == {"id": "52998224725", "token": "tk"}
    (call,) = fake.calls
    assert call["method"] == "POST"
    assert call["path"] == "/cadCliente"
    # unset optionals are left out so the server's defaults apply
    assert call["body"] == {"id": "529.982.247-25", "name": "Ana", "ligacao": "bi"}
    assert call["auth"] == "Bearer s3cret"
    assert call["ctype"].startswith("application/json")


@pytest_twisted.inlineCallbacks
def test_no_token_no_authorization_header(fake: Recorder) -> Any:
    yield client(fake, token=None).health()
    assert fake.calls[0]["auth"] is None
    assert fake.calls[0]["path"] == "/health"
    assert fake.calls[0]["method"] == "GET"


@pytest.mark.parametrize(
    "call, method, path, query, body",
    [
        (lambda c: c.register_meter("1", mode="interval"), "POST", "/cadMedidor", {}, {"id": "1", "mode": "interval"}),
        (lambda c: c.register_meter("1"), "POST", "/cadMedidor", {}, {"id": "1"}),
        (lambda c: c.meters("1"), "GET", "/getMedidores", {"id": "1"}, None),
        (
            lambda c: c.post_reading("1", 2, 10.5, 1764000000.5, seq=7),
            "POST",
            "/postConsumo",
            {},
            {"id": "1", "id_medidor": 2, "valor": 10.5, "timestamp": 1764000000.5, "seq": 7},
        ),
        (
            lambda c: c.history("1", "M", 2, id_medidor=3),
            "GET",
            "/getConsumoHist",
            {"id": "1", "kind": "M", "periodo": "2", "id_medidor": "3"},
            None,
        ),
        (lambda c: c.history("1", "D"), "GET", "/getConsumoHist", {"id": "1", "kind": "D", "periodo": "0"}, None),
        (lambda c: c.bill("1", 1), "GET", "/getFatura", {"id": "1", "periodo": "1"}, None),
        (lambda c: c.alarms("1"), "GET", "/getAlarme", {"id": "1"}, None),
        (lambda c: c.alarms("1", cursor=42), "GET", "/getAlarme", {"id": "1", "cursor": "42"}, None),
        (lambda c: c.ack_alarm("1", 9), "POST", "/ackAlarme", {}, {"id": "1", "alarm_id": 9}),
    ],
)
@pytest_twisted.inlineCallbacks
def test_routes(fake: Recorder, call: Any, method: str, path: str, query: dict, body: Any) -> Any:
    yield call(client(fake))
    (got,) = fake.calls
    assert (got["method"], got["path"], got["query"], got["body"]) == (method, path, query, body)


@pytest_twisted.inlineCallbacks
def test_error_body_becomes_api_error(fake: Recorder) -> Any:
    err = {"error": {"code": "unknown_customer", "message": "cliente 1 não existe"}}
    fake.answer = (404, json.dumps(err).encode(), "application/json; charset=utf-8")
    with pytest.raises(ApiError) as info:
        yield client(fake).meters("1")
    e = info.value
    assert not isinstance(e, ServerUnreachable)
    assert (e.status, e.code, e.message) == (404, "unknown_customer", "cliente 1 não existe")
    assert str(e) == "unknown_customer: cliente 1 não existe"


@pytest_twisted.inlineCallbacks
def test_non_json_error_body(fake: Recorder) -> Any:
    fake.answer = (502, b"<html>" + b"x" * 500 + b"</html>", "text/html")
    with pytest.raises(ApiError) as info:
        yield client(fake).health()
    e = info.value
    assert e.status == 502
    assert e.code == "http_502"
    assert e.message == ("<html>" + "x" * 500)[:200]


@pytest_twisted.inlineCallbacks
def test_json_error_without_error_object(fake: Recorder) -> Any:
    fake.answer = (503, b'{"status": "down"}', "application/json")
    with pytest.raises(ApiError) as info:
        yield client(fake).health()
    assert (info.value.status, info.value.code) == (503, "http_503")
    assert info.value.message == '{"status": "down"}'


@pytest_twisted.inlineCallbacks
def test_success_with_garbage_body(fake: Recorder) -> Any:
    fake.answer = (200, b"not json", "text/plain")
    with pytest.raises(ApiError) as info:
        yield client(fake).health()
    assert info.value.code == "bad_response"


class RefusingHttp:
    """Stands in for treq when nothing listens on the port."""

    def request(self, method: str, url: str, **kw: Any) -> defer.Deferred:
        return defer.fail(ConnectionRefusedError("Connection refused"))

    def content(self, response: Any) -> defer.Deferred:  # pragma: no cover - never reached
        raise AssertionError


@pytest_twisted.inlineCallbacks
def test_connection_refused_is_server_unreachable() -> Any:
    c = MeterdClient("http://127.0.0.1:1", None, http=RefusingHttp())
    with pytest.raises(ServerUnreachable) as info:
        yield c.health()
    assert info.value.status == 0
    assert info.value.code == "unreachable"
    assert "127.0.0.1:1" in info.value.message
    assert isinstance(info.value, ApiError)


class HangingHttp:
    def request(self, method: str, url: str, **kw: Any) -> defer.Deferred:
        return defer.fail(defer.CancelledError())

    def content(self, response: Any) -> defer.Deferred:  # pragma: no cover
        raise AssertionError


@pytest_twisted.inlineCallbacks
def test_timeout_is_server_unreachable() -> Any:
    c = MeterdClient("http://127.0.0.1:1", None, http=HangingHttp(), timeout=2)
    with pytest.raises(ServerUnreachable) as info:
        yield c.health()
    assert "2 s" in info.value.message


class Trickle(Resource):
    """A CSV answer whose body comes when the test writes it, and ends when the test says."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.gone: list[Failure] = []  # requests whose connection the client closed

    def render(self, request: Request) -> object:
        request.setHeader("content-type", "text/csv")
        request.write(b"h\r\n")
        request.notifyFinish().addErrback(self.gone.append)
        self.requests.append(request)
        return NOT_DONE_YET


class Kept:
    """A download's receiver that keeps the body; its ``full`` write fails as a full disk would."""

    def __init__(self, full: int = 0) -> None:
        self.body = b""
        self.writes = 0
        self.full = full

    def begin(self, headers: Any) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes == self.full:
            raise OSError(28, "No space left on device")
        self.body += data


def trickling(timeout: float) -> tuple[MeterdClient, Trickle, StubTreq, Clock]:
    clock, server = Clock(), Trickle()
    stub = StubTreq(server)
    return MeterdClient("http://meterd.test:8888", "s3cret", http=stub, timeout=timeout, reactor=clock), server, stub, clock


def outcome(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the download has not ended"
    return results[0]


def test_a_download_that_keeps_coming_takes_as_long_as_it_takes() -> None:
    c, server, stub, clock = trickling(timeout=10)
    kept = Kept()
    d = c.download("/getLeituras", {"id": "x"}, kept)
    stub.flush()
    for i in range(5):  # 45 s in all, never 10 s without a byte
        clock.advance(9)
        server.requests[0].write(b"row %d\r\n" % i)
        stub.flush()
    assert not d.called
    server.requests[0].finish()
    stub.flush()
    assert outcome(d) is None
    assert kept.body == b"h\r\n" + b"".join(b"row %d\r\n" % i for i in range(5))
    assert clock.getDelayedCalls() == []  # nothing left to fire later


def test_a_download_whose_body_stops_coming_is_cut_after_the_timeout() -> None:
    c, server, stub, clock = trickling(timeout=10)
    kept = Kept()
    d = c.download("/getLeituras", {"id": "x"}, kept)
    stub.flush()
    clock.advance(9)
    server.requests[0].write(b"row 1\r\n")
    stub.flush()
    clock.advance(9.9)
    assert not d.called
    clock.advance(0.1)  # 10 s since the last byte
    failure = outcome(d)
    assert isinstance(failure, Failure) and failure.check(IncompleteAnswer)
    assert failure.value.code == "incomplete_answer" and "10 s" in failure.value.message
    assert kept.body == b"h\r\nrow 1\r\n"
    stub.flush()
    assert len(server.gone) == 1  # the connection was closed, not left open
    assert clock.getDelayedCalls() == []


def test_a_receiver_that_fails_ends_the_download_with_its_error_and_closes_the_connection() -> None:
    c, server, stub, clock = trickling(timeout=10)
    d = c.download("/getLeituras", {"id": "x"}, Kept(full=2))
    stub.flush()
    server.requests[0].write(b"row 1\r\n")
    stub.flush()
    failure = outcome(d)
    assert isinstance(failure, Failure) and failure.check(OSError) and failure.value.errno == 28
    stub.flush()
    assert len(server.gone) == 1
    assert clock.getDelayedCalls() == []


def test_find_token_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "operator.token").write_text("  from-file\n")
    monkeypatch.setenv("METERD_TOKEN", "from-env")
    assert find_token("explicit", str(tmp_path)) == "explicit"
    assert find_token(None, str(tmp_path)) == "from-env"
    monkeypatch.setenv("METERD_TOKEN", "  ")
    assert find_token(None, str(tmp_path)) == "from-file"
    monkeypatch.delenv("METERD_TOKEN")
    assert find_token("", str(tmp_path)) == "from-file"
    assert find_token(None, str(tmp_path / "missing")) is None


def test_find_token_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METERD_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_token(None, None) is None
    (tmp_path / "meterd-data").mkdir()
    (tmp_path / "meterd-data" / "operator.token").write_text("op\n")
    assert find_token(None, None) == "op"
