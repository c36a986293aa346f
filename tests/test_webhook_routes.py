"""The operator's webhook routes on an in-process meterd, and a delivery through its whole path.

Registration answers the secret once and never again; the list shows how
delivery goes; removal stops it. An alarm raised by a posted reading reaches
a receiver on loopback through meterd's own wiring (the alarm service tells
the webhooks), and ``/metrics`` reports it per webhook.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from meterd import webhook_wire
from meterd.taxid import make_cpf
from tests.support import LiveServer, start_server, until
from tests.web_support import call

CID = make_cpf("529982247")


class Receiver(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[tuple[dict[str, str], bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.posts.append(({k.decode(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}, request.content.read()))
        return b""


async def customer_with_meter(server: LiveServer, limite_kw: float = 10) -> None:
    status, body, _ = await call(server, "POST", "/cadCliente", json_body={"id": CID, "name": "Ana", "limite_kw": limite_kw})
    assert status == 201, body
    status, body, _ = await call(server, "POST", "/cadMedidor", json_body={"id": CID})
    assert status == 201, body


@pytest_twisted.ensureDeferred
async def test_register_list_and_remove_and_the_secret_is_shown_once(server: LiveServer) -> None:
    await customer_with_meter(server)
    status, everyone, _ = await call(server, "POST", "/cadWebhook", json_body={"url": " https://alarmes.example.com/meterd "})
    assert status == 201, everyone
    assert (everyone["webhook_id"], everyone["url"], everyone["id"], everyone["cursor"]) == (1, "https://alarmes.example.com/meterd", None, 0)
    assert re.fullmatch(r"whsec_[0-9a-f]{64}", everyone["secret"])
    status, one, _ = await call(server, "POST", "/cadWebhook", json_body={"url": "http://10.0.0.5:9000/ana", "id": f"{CID[:3]}.{CID[3:6]}.{CID[6:9]}-{CID[9:]}"})
    assert (status, one["webhook_id"], one["id"]) == (201, 2, CID)
    assert one["secret"] != everyone["secret"]
    status, listed, _ = await call(server, "GET", "/getWebhooks")
    assert status == 200
    assert [(w["webhook_id"], w["id"], w["cursor"], w["backlog"], w["failures"]) for w in listed["webhooks"]] == [(1, None, 0, 0, 0), (2, CID, 0, 0, 0)]
    assert everyone["secret"] not in json.dumps(listed) and one["secret"] not in json.dumps(listed)
    status, removed, _ = await call(server, "POST", "/removeWebhook", json_body={"webhook_id": 1})
    assert (status, removed["webhook_id"], removed["url"]) == (200, 1, "https://alarmes.example.com/meterd")
    assert everyone["secret"] not in json.dumps(removed)
    status, again, _ = await call(server, "POST", "/removeWebhook", json_body={"webhook_id": 1})
    assert (status, again["error"]["code"]) == (404, "unknown_webhook")
    status, listed, _ = await call(server, "GET", "/getWebhooks")
    assert [w["webhook_id"] for w in listed["webhooks"]] == [2]


@pytest_twisted.ensureDeferred
async def test_an_alarm_raised_by_a_posted_reading_reaches_the_receiver_and_the_metrics(tmp_path: Path) -> None:
    receiver = Receiver()
    port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
    server = await start_server(tmp_path / "data", "--alarm-window", "60")
    try:
        await customer_with_meter(server, limite_kw=1)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"
        status, hook, _ = await call(server, "POST", "/cadWebhook", json_body={"url": url, "id": CID})
        assert status == 201
        now = int(time.time())
        for ts, valor in ((now - 40, 1.0), (now - 20, 1.5), (now - 5, 2.0)):  # 1 kWh in 35 s: ~100 kW
            status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": CID, "id_medidor": 1, "valor": valor, "timestamp": ts})
            assert status == 201, body

        async def delivered() -> bool:
            return bool(receiver.posts)

        await until(delivered, 10)
        headers, payload = receiver.posts[0]
        assert webhook_wire.verify(hook["secret"], headers["Meterd-Signature"], payload, time.time())
        event: dict[str, Any] = json.loads(payload)
        assert (event["id"], event["event"]["type"], event["alarm"]["rule"], event["alarm"]["id_medidor"]) == (CID, "raised", "demand", 1)
        assert headers["Meterd-Delivery"] == f"{hook['webhook_id']}-{event['event']['event_id']}"
        status, metrics, _ = await server.call("GET", "/metrics")
        text = metrics.decode()
        assert f'meterd_webhook_deliveries_total{{webhook="{hook["webhook_id"]}"}} 1.0' in text
        assert f'meterd_webhook_lag_seconds_count{{webhook="{hook["webhook_id"]}"}} 1.0' in text
        assert "meterd_webhooks_delivering 1.0" in text
        status, listed, _ = await call(server, "GET", "/getWebhooks")
        (shown,) = listed["webhooks"]
        assert (shown["cursor"], shown["backlog"], shown["delivered_by"]) == (event["event"]["event_id"], 0, "meterd")
        assert shown["last_success"] is not None and shown["last_failure"] is None
    finally:
        await server.stop()
        await port.stopListening()


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")  # Twisted's own TLS server side, in this test's receiver
@pytest_twisted.ensureDeferred
async def test_an_https_receiver_is_held_to_its_certificate(tmp_path: Path) -> None:
    """A receiver whose certificate nobody signed gets nothing: the failure says why, and the event waits."""
    import twisted.test
    from twisted.internet import ssl

    pem = (Path(twisted.test.__file__).parent / "server.pem").read_bytes()
    certificate = ssl.PrivateCertificate.loadPEM(pem)
    receiver = Receiver()
    port = reactor.listenSSL(0, Site(receiver), certificate.options(), interface="127.0.0.1")
    server = await start_server(tmp_path / "data", "--alarm-window", "60", "--webhook-max-backoff", "60")
    try:
        await customer_with_meter(server, limite_kw=1)
        status, hook, _ = await call(server, "POST", "/cadWebhook", json_body={"url": f"https://localhost:{port.getHost().port}/hook"})
        assert status == 201
        now = int(time.time())
        for ts, valor in ((now - 40, 1.0), (now - 5, 2.0)):
            status, body, _ = await server.call("POST", "/postConsumo", json_body={"id": CID, "id_medidor": 1, "valor": valor, "timestamp": ts})
            assert status == 201, body

        async def refused() -> Any:
            status, listed, _ = await call(server, "GET", "/getWebhooks")
            (shown,) = listed["webhooks"]
            return shown if shown["failures"] else None

        shown = await until(refused, 10)
        assert "certificate" in shown["last_error"].lower(), shown["last_error"]
        assert shown["backlog"] == 1 and shown["last_success"] is None
        assert receiver.posts == []
    finally:
        await server.stop()
        await port.stopListening()
