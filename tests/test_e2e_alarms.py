"""Alarms end to end over HTTP (DESIGN §7): an in-process meterd on free ports.

A customer with ``limite_kw`` 2 posts register readings 25 Wh apart every 18 s
of timestamp (25 Wh * 3600 / 18 s = 5 kW), gets a demand alarm, acknowledges
it, posts a flat register (0 kW) and sees it clear; a client polling with the
cursor receives raised, acked and cleared once each. Then the meter falls
silent (``--silent-after 2``), and a restart keeps the alarms and the cursor.
Real time, a few seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from tests.support import LiveServer, start_server

CID = "52998224725"
OTHER = "11144477735"


async def _sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


class Poller:
    """A client that polls /getAlarme with the cursor it was given last."""

    def __init__(self, live: LiveServer, token: str) -> None:
        self.live = live
        self.token = token
        self.cursor: int | None = None
        self.events: list[dict[str, Any]] = []

    async def poll(self) -> dict[str, Any]:
        params = {"id": CID} if self.cursor is None else {"id": CID, "cursor": str(self.cursor)}
        status, body, _ = await self.live.call("GET", "/getAlarme", token=self.token, params=params)
        assert status == 200, body
        self.events += body["events"]
        self.cursor = body["cursor"]
        return body


async def _post(live: LiveServer, key: str, ts: float, wh: int) -> None:
    status, body, _ = await live.call(
        "POST", "/postConsumo", token=key,
        json_body={"id": CID, "id_medidor": 1, "valor": f"{wh / 1000:.3f}", "timestamp": ts},
    )
    assert status == 201, body


@pytest.mark.slow  # waits for a meter to fall silent on the real clock
@pytest_twisted.ensureDeferred
async def test_demand_ack_clear_silent_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    live = await start_server(data, "--silent-after", "2", "--alarm-window", "60")
    try:
        status, customer, _ = await live.call("POST", "/cadCliente", json_body={"id": CID, "name": "Ana", "limite_kw": 2})
        assert status == 201 and customer["limite_kw"] == 2
        token = customer["token"]
        status, other, _ = await live.call("POST", "/cadCliente", json_body={"id": OTHER, "name": "Bia"})
        assert status == 201
        status, meter, _ = await live.call("POST", "/cadMedidor", json_body={"id": CID})
        assert status == 201
        key = meter["key"]

        client = Poller(live, token)
        quiet = await client.poll()
        assert quiet == {"id": CID, "alarme": False, "active": [], "events": [], "cursor": quiet["cursor"]}

        # 5 kW: timestamps now-200 .. now-110, 25 Wh apart
        now = int(time.time())
        for i in range(6):
            await _post(live, key, now - 200 + 18 * i, 10_000 + 25 * i)
        body = await client.poll()
        assert body["alarme"] is True
        [alarm] = [a for a in body["active"] if a["rule"] == "demand"]
        assert alarm["id_medidor"] == 1 and alarm["value"] == 5.0 and alarm["threshold"] == 2.0
        assert alarm["message"] == "Demanda média de 5 kW acima do limite de 2 kW nos últimos 1 min"
        assert alarm["raised_at"].endswith("-03:00") and alarm["cleared_at"] is None and alarm["acked_at"] is None
        alarm_id = alarm["alarm_id"]

        # only this customer (or the operator) may acknowledge it
        status, err, _ = await live.call("POST", "/ackAlarme", token=other["token"], json_body={"id": CID, "alarm_id": alarm_id})
        assert status == 403
        status, err, _ = await live.call("POST", "/ackAlarme", json_body={"id": OTHER, "alarm_id": alarm_id})
        assert status == 404 and err["error"]["code"] == "unknown_alarm"
        status, acked, _ = await live.call("POST", "/ackAlarme", token=token, json_body={"id": CID, "alarm_id": alarm_id})
        assert status == 200 and acked["alarm_id"] == alarm_id and acked["acked_at"] is not None
        await client.poll()

        # the load drops to nothing: now-90 .. now, a flat register
        for i in range(6):
            await _post(live, key, now - 90 + 18 * i, 10_125)
        body = await client.poll()
        assert [a for a in body["active"] if a["rule"] == "demand"] == []
        for _ in range(3):  # polling on repeats nothing
            await client.poll()
        assert [e["type"] for e in client.events if e["alarm_id"] == alarm_id] == ["raised", "acked", "cleared"]
        ids = [e["event_id"] for e in client.events]
        assert ids == sorted(set(ids))

        # the meter stops sending: silent after 2 s (the timer checks every second)
        deadline = time.monotonic() + 6
        silent: list[dict[str, Any]] = []
        while not silent and time.monotonic() < deadline:
            await _sleep(0.25)
            body = await client.poll()
            silent = [a for a in body["active"] if a["rule"] == "silent"]
        [alarm_silent] = silent
        assert alarm_silent["id_medidor"] == 1 and alarm_silent["threshold"] == 2.0
        assert alarm_silent["message"].startswith("Medidor 1 sem leituras há ")

        status, err, _ = await live.call("GET", "/getAlarme", token=token, params={"id": CID, "cursor": "-1"})
        assert status == 400
        status, err, _ = await live.call("POST", "/ackAlarme", token=token, json_body={"id": CID, "alarm_id": 999})
        assert status == 404 and err["error"]["code"] == "unknown_alarm"
    finally:
        await live.stop()

    # a restart keeps the active alarm and the meaning of the client's cursor
    live = await start_server(data, "--silent-after", "600", "--alarm-window", "60")
    try:
        client.live = live
        seen = len(client.events)
        body = await client.poll()
        assert [a["alarm_id"] for a in body["active"]] == [alarm_silent["alarm_id"]]
        assert len(client.events) == seen  # nothing new, nothing repeated
        fresh = Poller(live, token)
        await fresh.poll()  # no cursor: the recent events
        assert [e["event_id"] for e in fresh.events] == [e["event_id"] for e in client.events]
        # the meter speaks again: the silent alarm clears, the event id continues
        await _post(live, key, time.time(), 10_125)
        await client.poll()
        cleared = client.events[seen:]
        assert [(e["alarm_id"], e["type"]) for e in cleared] == [(alarm_silent["alarm_id"], "cleared")]
        assert cleared[0]["event_id"] > client.events[seen - 1]["event_id"]
    finally:
        await live.stop()
