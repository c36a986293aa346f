"""End to end: the real ``twistd -n meterd`` as a subprocess on free ports and
a temporary data dir. Register, post readings, restart, and find everything
still there; bad option values stop it at start with one clear line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from meterd.taxid import make_cpf
from tests.support import Twistd, free_port, http, subprocess_env
from tests.web_support import assert_documented, local_ts, periods_back, yesterday

CPF = "12345678909"


def get(server: Twistd, path: str, token: str | None, **params: Any) -> tuple[int, Any]:
    status, body = http("GET", f"{server.url}{path}?{urlencode(params)}", token)
    assert_documented(path, "GET", status, body)
    return status, body


def post(server: Twistd, path: str, token: str | None, body: dict[str, Any]) -> tuple[int, Any]:
    status, answer = http("POST", server.url + path, token, body)
    assert_documented(path, "POST", status, answer)
    return status, answer


def snapshot(server: Twistd, token: str) -> dict[str, Any]:
    """Everything a customer can read back."""
    day = yesterday()
    return {
        kind: get(server, "/getConsumoHist", token, id=CPF, kind=kind, periodo=periods_back(day, kind))[1]
        for kind in ("D", "M", "Y")
    } | {
        "bill": get(server, "/getFatura", token, id=CPF, periodo=periods_back(day, "M"))[1],
        "meters": get(server, "/getMedidores", token, id=CPF)[1],
    }


@pytest.mark.slow
def test_data_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    day = yesterday()
    server = Twistd(data).start()
    try:
        operator = server.token
        status, customer = post(server, "/cadCliente", operator, {"id": "123.456.789-09", "name": "Ana", "ligacao": "bi"})
        assert status == 201
        token = customer["token"]
        status, register_meter = post(server, "/cadMedidor", operator, {"id": CPF})
        assert (status, register_meter["id_medidor"], register_meter["mode"]) == (201, 1, "register")
        status, interval_meter = post(server, "/cadMedidor", operator, {"id": CPF, "mode": "interval"})
        assert (status, interval_meter["id_medidor"]) == (201, 2)
        key = register_meter["key"]
        for seq, (hour, valor) in enumerate(((10, 100), (11, 101.5), (13, "104.500"))):
            reading = {"id": CPF, "id_medidor": 1, "valor": valor, "timestamp": local_ts(day, hour), "seq": seq}
            assert post(server, "/postConsumo", key, reading) == (201, {"status": "stored"})
        for hour, minute, valor in ((15, 0, 0.25), (16, 30, 0.5)):
            reading = {"id": CPF, "id_medidor": "2", "valor": valor, "timestamp": local_ts(day, hour, minute)}
            assert post(server, "/postConsumo", operator, reading)[0] == 201
        before = snapshot(server, token)
    finally:
        assert server.stop() in (0, -15)  # twistd re-raises SIGTERM after a clean shutdown
    assert "meterd stopped" in server.output()
    assert "Traceback" not in server.output()

    # what was read before the restart, by hand (DESIGN §5: register 104.5 - 100; interval 0.25 + 0.5)
    assert before["D"]["total_kwh"] == 5.25
    assert before["D"]["meters"] == [{"id_medidor": 1, "total_kwh": 4.5}, {"id_medidor": 2, "total_kwh": 0.75}]
    assert [b["kwh"] for b in before["D"]["buckets"][10:17]] == [1.5, 1.5, 1.5, 0, 0, 0.25, 0.5]
    assert before["M"]["total_kwh"] == before["Y"]["total_kwh"] == 5.25
    assert (before["bill"]["consumo_kwh"], before["bill"]["faturado_kwh"]) == (5.25, 50)  # bi: 50 kWh minimum
    assert [m["last_kwh"] for m in before["meters"]["meters"]] == [104.5, 0.5]

    server = Twistd(data).start()  # new ports, same data dir
    try:
        assert server.token == operator  # the operator token is kept
        after = snapshot(server, token)  # the customer's token still works: its hash was stored
        assert after == before
        # the meter key still works, and idempotency survived: same reading = duplicate
        reading = {"id": CPF, "id_medidor": 1, "valor": 101.5, "timestamp": local_ts(day, 11), "seq": 1}
        assert post(server, "/postConsumo", key, reading) == (200, {"status": "duplicate"})
        status, answer = post(server, "/postConsumo", key, {**reading, "valor": 101.6})
        assert (status, answer["error"]["code"]) == (409, "conflict")
        status, answer = post(server, "/postConsumo", key, {**reading, "valor": 99, "timestamp": local_ts(day, 12)})
        assert (status, answer["error"]["code"]) == (422, "register_backwards")  # against the stored neighbours
        assert post(server, "/postConsumo", key, {**reading, "valor": 106, "timestamp": local_ts(day, 14)})[0] == 201
        assert get(server, "/getConsumoHist", token, id=CPF, kind="D", periodo=periods_back(day, "D"))[1]["total_kwh"] == 6.75
        status, answer = post(server, "/cadCliente", operator, {"id": CPF, "name": "Ana"})
        assert (status, answer["error"]["code"]) == (409, "customer_exists")
        assert post(server, "/cadMedidor", operator, {"id": CPF})[1]["id_medidor"] == 3
        other = make_cpf("987654321")
        assert post(server, "/cadCliente", operator, {"id": other, "name": "Bia"})[0] == 201
        status, answer = get(server, "/getFatura", token, id=other)
        assert status == 403
    finally:
        server.stop()


def twistd_command(data_dir: Path, *args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "meterd",
            "--http", f"tcp:{free_port()}:interface=127.0.0.1", "--udp", str(free_port()),
            "--udp-interface", "127.0.0.1", "--data-dir", str(data_dir), *args]


BAD_TARIFF = '[tarifa]\nte = 0.30\ntusd = "cheap"\n'

BAD_OPTIONS = [
    (("--udp", "99999"), "--udp"),
    (("--tz", "Mars/Base"), "--tz"),
    (("--durability", "maybe"), "--durability"),
    (("--http", "nonsense:1"), "--http"),
    (("--tariff", "{dir}/bad.toml"), "bad.toml"),
]
MORE_BAD_OPTIONS = [
    (("--udp", "http"), "--udp"),
    (("--udp", "-1"), "--udp"),
    (("--meter-mode", "cumulative"), "--meter-mode"),
    (("--limit-kw", "-5"), "--limit-kw"),
    (("--limit-kwh", "NaN"), "--limit-kwh"),
    (("--silent-after", "0"), "--silent-after"),
    (("--udp-interface", "localhost"), "--udp-interface"),
    (("--db", "mysql://localhost/x"), "--db"),
    (("--tariff", "{dir}/missing.toml"), "--tariff"),
    (("--http", "ssl:0:privateKey={dir}/missing.pem"), "--http"),
    (("--reuse-port", "--http", "unix:{dir}/meterd.sock"), "--reuse-port"),
    (("--http-workers", "x"), "--http-workers"),
    (("--http-workers", "65"), "--http-workers"),
    (("--http-workers", "-1"), "--http-workers"),
    (("--udp-workers", "1.5"), "--udp-workers"),
    (("--webhook-timeout", "0"), "--webhook-timeout"),
    (("--webhook-max-backoff", "-1"), "--webhook-max-backoff"),
    (("--webhook-max-backoff", "forever"), "--webhook-max-backoff"),
]


@pytest.mark.parametrize(("args", "names"), BAD_OPTIONS + MORE_BAD_OPTIONS)
def test_bad_option_values_are_usage_errors(tmp_path: Path, args: tuple[str, ...], names: str) -> None:
    """In process (fast): the same parser twistd uses refuses each with a one-line reason."""
    from twisted.python import usage

    from meterd.options import Options

    (tmp_path / "bad.toml").write_text(BAD_TARIFF)
    with pytest.raises(usage.UsageError) as refused:
        Options().parseOptions(["--data-dir", str(tmp_path / "data"), *(a.format(dir=tmp_path) for a in args)])
    message = str(refused.value)
    assert names in message and "\n" not in message


@pytest.mark.parametrize(("args", "mode"), [
    ((), "register"),
    (("--no-auth",), "interval"),  # the assignment's compatibility mode: its meters send each interval's energy
    (("--no-auth", "--meter-mode", "register"), "register"),
    (("--meter-mode", "interval"), "interval"),
])
def test_the_default_meter_mode_follows_no_auth(tmp_path: Path, args: tuple[str, ...], mode: str) -> None:
    from meterd.options import Options

    config = Options()
    config.parseOptions(["--data-dir", str(tmp_path / "data"), *args])
    assert config["meter-mode"] == mode
    help_text = " ".join(config.getUsage(width=80).split())
    assert "compatibility mode" in help_text and "interval with --no-auth" in help_text


@pytest.mark.slow
def test_bad_options_fail_at_start_with_one_clear_line(tmp_path: Path) -> None:
    """The real twistd: all at once (each is a Python start-up), then one verdict per option."""
    (tmp_path / "bad.toml").write_text(BAD_TARIFF)
    runs = []
    for i, (args, names) in enumerate(BAD_OPTIONS):
        data_dir = tmp_path / f"data{i}"
        cmd = twistd_command(data_dir, *(a.format(dir=tmp_path) for a in args))
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs.append((args, names, data_dir, proc))
    for args, names, data_dir, proc in runs:
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode != 0, (args, output)
        assert "Traceback" not in output, (args, output)
        last = [line for line in output.splitlines() if line.strip()][-1]
        assert names in last, (args, output)
        assert not (data_dir / "meterd.sqlite3").exists()  # it stopped before opening anything


@pytest.mark.slow
@pytest.mark.parametrize("busy", ["http", "udp", "both"])
def test_a_busy_port_ends_the_start_with_one_line_and_nothing_left_running(tmp_path: Path, busy: str) -> None:
    """meterd starts whole or not at all: a port it cannot bind ends it non-zero, in one line, no traceback,
    with no worker process left behind (both kinds of worker are asked for)."""
    http_holder = socket.socket()
    http_holder.bind(("127.0.0.1", 0))
    http_holder.listen()
    udp_holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_holder.bind(("127.0.0.1", 0))
    http_port = http_holder.getsockname()[1] if busy in ("http", "both") else free_port()
    udp_port = udp_holder.getsockname()[1] if busy in ("udp", "both") else free_port(socket.SOCK_DGRAM)
    cmd = [str(Path(sys.executable).parent / "twistd"), "-n", "--pidfile=", "meterd", "--http", f"tcp:{http_port}:interface=127.0.0.1",
           "--udp", str(udp_port), "--udp-interface", "127.0.0.1", "--data-dir", str(tmp_path / "data"),
           "--http-workers", "1", "--udp-workers", "1"]
    try:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = proc.communicate(timeout=60)
    finally:
        http_holder.close()
        udp_holder.close()
    assert proc.returncode != 0, output
    assert "Traceback" not in output and "Unhandled Error" not in output, output
    failures = [line for line in output.splitlines() if "cannot start" in line]
    what = "HTTP" if busy in ("http", "both") else "UDP"
    assert len(failures) == 1 and f"cannot listen for {what}" in failures[0] and "Address already in use" in failures[0], output
    assert "worker" not in output  # none was started, so none is left
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "data")], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout


@pytest.mark.slow
def test_twistd_meterd_version_prints_meterds_version(tmp_path: Path) -> None:
    import meterd

    done = subprocess.run([str(Path(sys.executable).parent / "twistd"), "-n", "meterd", "--version"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"meterd {meterd.__version__} (Twisted ")
