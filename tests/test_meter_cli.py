"""Options, provisioning and the meter check, against fakes (no server)."""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

import pytest
import pytest_twisted
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.web.resource import Resource
from twisted.web.server import Request

from clients.api import ApiError
from clients.meter.cli import Fatal, build_meters, build_parser, check_args, provision, resolve_credentials, udp_target
from meterd.taxid import is_cpf

KEY = "ab" * 32


def _args(*argv: str) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    check_args(parser, args)
    return args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "choose --id/--meter/--key"),
        (["--provision", "--fleet", "3"], "alternatives"),
        (["--id", "52998224725", "--meter", "1"], "all of --id, --meter and --key"),
        (["--id", "12345678900", "--meter", "1", "--key", KEY], "--id"),
        (["--id", "52998224725", "--meter", "1", "--key", "abc"], "64 hex"),
        (["--provision", "--loss", "1.5"], "between 0 and 1"),
        (["--provision", "--interval", "0"], "positive"),
        (["--provision", "--fleet", "0"], "at least 1"),
        (["--provision", "--server", "ftp://x"], "http"),
        (["--provision", "--start-kwh", "3"], "--start-kwh"),
    ],
)
def test_bad_options_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _args(*argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_defaults_and_formatted_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METERD_SERVER", raising=False)
    monkeypatch.delenv("METERD_UDP", raising=False)
    args = _args("--id", "529.982.247-25", "--meter", "2", "--key", KEY.upper())
    assert args.id == "52998224725" and args.key == KEY and args.meter == 2
    assert args.interval == 1.0 and args.drain_timeout == 10.0 and args.server == "http://127.0.0.1:8888"
    assert udp_target(args) == ("127.0.0.1", 8080)


def test_udp_target(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METERD_UDP", raising=False)
    assert udp_target(_args("--provision", "--server", "http://meters.example:9000")) == ("meters.example", 8080)
    assert udp_target(_args("--provision", "--udp", "10.0.0.1:9999")) == ("10.0.0.1", 9999)
    assert udp_target(_args("--provision", "--udp", "[::1]:7")) == ("::1", 7)
    with pytest.raises(Fatal):
        udp_target(_args("--provision", "--udp", "x:99999"))


class FakeClient:
    """Stands in for MeterdClient: the first CPF it sees already exists."""

    def __init__(self) -> None:
        self.customers: dict[str, str] = {}
        self.first = True

    def register_customer(self, id: str, name: str, **kw: Any) -> Deferred[dict[str, Any]]:
        assert is_cpf(id)
        if self.first:
            self.first = False
            d: Deferred[dict[str, Any]] = Deferred()
            d.errback(ApiError(409, "customer_exists", "already registered"))
            return d
        self.customers[id] = name
        return succeed({"id": id, "name": name, "token": f"tok-{id}"})

    def register_meter(self, id: str, mode: str | None = None) -> Deferred[dict[str, Any]]:
        assert mode == "register" and id in self.customers
        return succeed({"id": id, "id_medidor": 1, "mode": mode, "key": KEY})


@pytest_twisted.ensureDeferred
async def test_provision_registers_customers_with_valid_cpfs_and_retries_conflicts() -> None:
    client = FakeClient()
    creds = await provision(client, 5, concurrency=2, rng=random.Random(4))
    assert len(creds) == 5 and len({c.customer_id for c in creds}) == 5
    assert all(is_cpf(c.customer_id) and c.meter_id == 1 and c.key == KEY for c in creds)
    assert creds[0].token == f"tok-{creds[0].customer_id}"
    meters = build_meters(creds, seed=1, now=1.7e9, buffer=10)
    assert [m.index for m in meters] == list(range(5)) and meters[0].outbox.capacity == 10
    assert meters[0].model.params != meters[1].model.params


class Meters(Resource):
    isLeaf = True

    def __init__(self, doc: dict[str, Any] | None, status: int = 200) -> None:
        super().__init__()
        self.doc = doc
        self.status = status
        self.auth: list[bytes | None] = []

    def render_GET(self, request: Request) -> bytes:
        self.auth.append(request.getHeader(b"authorization"))
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        if self.status != 200:
            return json.dumps({"error": {"code": "not_found", "message": "no such customer"}}).encode()
        return json.dumps(self.doc).encode()


def _single(*extra: str) -> argparse.Namespace:
    return _args("--id", "52998224725", "--meter", "1", "--key", KEY, "--token", "op", *extra)


@pytest_twisted.ensureDeferred
async def test_existing_meter_starts_from_the_servers_register() -> None:
    res = Meters({"id": "52998224725", "meters": [{"id_medidor": 1, "mode": "register", "last_kwh": 12.345}]})
    [c] = await resolve_credentials(None, _single(), lambda s: None, http=StubTreq(res))
    assert c.start_wh == 12345 and c.customer_id == "52998224725" and res.auth == [b"Bearer op"]


@pytest_twisted.ensureDeferred
async def test_start_kwh_below_the_server_is_refused() -> None:
    res = Meters({"id": "52998224725", "meters": [{"id_medidor": 1, "mode": "register", "last_kwh": 12.345}]})
    with pytest.raises(Fatal, match="below the server's register"):
        await resolve_credentials(None, _single("--start-kwh", "1"), lambda s: None, http=StubTreq(res))


@pytest_twisted.ensureDeferred
async def test_unknown_customer_and_unknown_meter() -> None:
    with pytest.raises(Fatal, match="unknown customer 52998224725"):
        await resolve_credentials(None, _single(), lambda s: None, http=StubTreq(Meters(None, 404)))
    res = Meters({"id": "52998224725", "meters": [{"id_medidor": 2, "mode": "register", "last_kwh": None}]})
    with pytest.raises(Fatal, match="has no meter 1 \\(meters: 2\\)"):
        await resolve_credentials(None, _single(), lambda s: None, http=StubTreq(res))


@pytest_twisted.ensureDeferred
async def test_without_a_token_the_meter_is_trusted(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("METERD_TOKEN", raising=False)
    args = _args("--id", "52998224725", "--meter", "1", "--key", KEY, "--data-dir", str(tmp_path), "--start-kwh", "2.5")
    [c] = await resolve_credentials(None, args, lambda s: None, http=StubTreq(Meters(None, 500)))
    assert c.start_wh == 2500


@pytest_twisted.ensureDeferred
async def test_provision_without_token_says_where_it_looked(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("METERD_TOKEN", raising=False)
    with pytest.raises(Fatal, match="no operator token.*operator.token"):
        await resolve_credentials(None, _args("--provision", "--data-dir", str(tmp_path)), lambda s: None)


@pytest_twisted.ensureDeferred
async def test_provision_with_a_rejected_token() -> None:
    class Unauthorized(Resource):
        isLeaf = True

        def render_POST(self, request: Request) -> bytes:
            request.setResponseCode(401)
            return b'{"error": {"code": "unauthorized", "message": "bad token"}}'

    with pytest.raises(Fatal, match="operator token was refused"):
        await resolve_credentials(None, _args("--provision", "--token", "bad"), lambda s: None, http=StubTreq(Unauthorized()))


def test_help_shows_every_default() -> None:
    parser = build_parser()
    for action in parser._actions:  # argparse keeps no public list of them
        if action.default not in (None, False, argparse.SUPPRESS) and action.help != argparse.SUPPRESS:
            assert "(default" in (action.help or ""), action.option_strings
    text = parser.format_help()
    for option, default in (("--backfill-rate", "2000"), ("--window", "2000"), ("--buffer", "10000"),
                            ("--drain-timeout", "10"), ("--ack-warning", "5"), ("--concurrency", "16")):  # fmt: skip
        block = text[text.index("\n  " + option) :]  # its line in the list, not the usage
        assert f"(default {default})" in " ".join(block[:200].split()), option
    assert "--load-kw KW" in text and "load 12" in text


def test_load_kw_option() -> None:
    assert _args("--provision").load_kw == 0.0
    assert _args("--provision", "--load-kw", "12.5").load_kw == 12.5
    with pytest.raises(SystemExit):
        _args("--provision", "--load-kw", "-1")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import meterd

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"python -m clients.meter {meterd.__version__}\n"


def test_server_and_udp_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERD_SERVER", "http://meters.example:9000")
    monkeypatch.setenv("METERD_UDP", "10.0.0.2:9999")
    args = _args("--provision")
    assert args.server == "http://meters.example:9000" and udp_target(args) == ("10.0.0.2", 9999)
    assert _args("--provision", "--udp", "10.0.0.3:7").udp == "10.0.0.3:7"  # an option still wins
