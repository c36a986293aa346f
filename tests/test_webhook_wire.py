"""What a webhook delivery is, as pure functions: the URL check, the body, the signature, the backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meterd import credentials, webhook_retry, webhook_wire
from meterd.alarm_book import Alarm, Event
from meterd.webhook_wire import EventDetail, InvalidUrl, check_url
from tests.support import ROOT

SECRET = "whsec_0123"
T = 1_764_000_000
CID = "12345678909"


def detail(event_type: str = "raised", tz: str = "America/Sao_Paulo") -> EventDetail:
    alarm = Alarm(7, CID, "demand", 2, 1_764_000_000_000, None, None, 12.3456, 10.0, "Demanda de 12,346 kW acima do limite: atenção")
    return EventDetail(Event(42, 7, CID, event_type, 1_764_000_001_500), alarm, tz)


# -- the signature ------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() -> None:
    payload = b'{"event":"raised"}'
    independent = hmac.new(SECRET.encode(), f"{T}.".encode() + payload, hashlib.sha256).hexdigest()
    assert independent == "93f4597f05ed476ed42dfd34e573f303055436359cadcf12226e66aaaad683d1"  # the vector, pinned
    assert webhook_wire.signature(SECRET, T, payload) == f"t={T},v1={independent}"
    assert webhook_wire.signed_string(T, payload) == b'1764000000.{"event":"raised"}'


@pytest.mark.parametrize(
    "change, accepted",
    [
        (lambda h, b, now: (h, b, now), True),
        (lambda h, b, now: (h, b, now + webhook_wire.TOLERANCE_S), True),  # at the edge of the window
        (lambda h, b, now: (h, b, now + webhook_wire.TOLERANCE_S + 1), False),  # a replay, later
        (lambda h, b, now: (h, b, now - webhook_wire.TOLERANCE_S - 1), False),  # signed in the future
        (lambda h, b, now: (h, b + b" ", now), False),  # the body changed
        (lambda h, b, now: (h.replace(f"t={T}", f"t={T + 1}"), b, now), False),  # the timestamp changed
        (lambda h, b, now: (webhook_wire.signature("whsec_other", T, b), b, now), False),  # another secret
        (lambda h, b, now: (h.split(",")[0], b, now), False),  # no v1
        (lambda h, b, now: (h.split(",")[1], b, now), False),  # no t
        (lambda h, b, now: ("garbage", b, now), False),
        (lambda h, b, now: (h.replace(f"t={T}", "t=-5"), b, now), False),
        (lambda h, b, now: (h.upper().replace("T=", "t=").replace("V1=", "v1="), b, now), False),  # hex in capitals
    ],
)
def test_a_receiver_accepts_only_a_fresh_signature_of_the_exact_body(change, accepted) -> None:
    payload = webhook_wire.body(3, detail())
    header, payload, now = change(webhook_wire.signature(SECRET, T, payload), payload, float(T))
    assert webhook_wire.verify(SECRET, header, payload, now) is accepted


def test_the_readme_receiver_example_checks_what_meterd_sends() -> None:
    """The ten lines in the README, run as printed, agree with meterd's own signature and refuse what they must."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "def verified" in b]
    assert len(example.strip().splitlines()) <= 10
    namespace: dict[str, object] = {}
    exec(example, namespace)  # noqa: S102 - the documentation's own code
    verified = namespace["verified"]
    payload = webhook_wire.body(3, detail())
    headers = {k.decode(): v[0].decode() for k, v in webhook_wire.headers(SECRET, int(__import__("time").time()), 3, detail(), payload).items()}
    assert verified(SECRET, headers, payload)  # type: ignore[operator]
    assert not verified("whsec_other", headers, payload)  # type: ignore[operator]
    assert not verified(SECRET, headers, payload + b"x")  # type: ignore[operator]
    stale = {**headers, "Meterd-Signature": webhook_wire.signature(SECRET, T - 3600, payload)}
    assert not verified(SECRET, stale, payload)  # type: ignore[operator]


# -- the body and headers -----------------------------------------------------------------


def test_the_body_says_which_delivery_whose_what_happened_and_to_which_alarm() -> None:
    payload = webhook_wire.body(3, detail("acked"))
    assert json.loads(payload) == {
        "delivery_id": "3-42",
        "webhook_id": 3,
        "id": CID,
        "event": {"event_id": 42, "alarm_id": 7, "type": "acked", "at": "2025-11-24T13:00:01-03:00"},
        "alarm": {
            "alarm_id": 7, "rule": "demand", "id_medidor": 2, "raised_at": "2025-11-24T13:00:00-03:00", "cleared_at": None,
            "acked_at": None, "value": 12.346, "threshold": 10.0, "message": "Demanda de 12,346 kW acima do limite: atenção",
        },
    }
    assert "atenção".encode() in payload  # UTF-8 as it is, no escapes
    assert json.loads(webhook_wire.body(3, detail(tz="Asia/Tokyo")))["event"]["at"] == "2025-11-25T01:00:01+09:00"


def test_headers_carry_the_delivery_id_the_event_type_and_the_signature_of_that_body() -> None:
    payload = webhook_wire.body(3, detail("cleared"))
    headers = webhook_wire.headers(SECRET, T, 3, detail("cleared"), payload)
    assert headers[b"Meterd-Delivery"] == [b"3-42"]
    assert headers[b"Meterd-Event"] == [b"cleared"]
    assert headers[b"Content-Type"] == [b"application/json; charset=utf-8"]
    assert webhook_wire.verify(SECRET, headers[b"Meterd-Signature"][0].decode(), payload, T)
    assert webhook_wire.delivery_id(3, 42) != webhook_wire.delivery_id(34, 2)


def test_webhook_secrets_are_random_and_shaped_as_documented() -> None:
    secrets = {credentials.new_webhook_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(re.fullmatch(r"whsec_[0-9a-f]{64}", s) for s in secrets)


# -- the URL ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "https://alarmes.example.com/meterd?token=abc&x=1", "HTTPS://EXAMPLE.COM",
    "https://xn--alarmes-6ya.example.com/", "http://host/path%20with%20space", "  http://trimmed/  ",
])
def test_urls_meterd_posts_to(url: str) -> None:
    assert check_url(url) == url.strip()


@pytest.mark.parametrize("url, why", [
    ("ftp://example.com/", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("http://", "no host"),
    ("http:///path", "no host"),
    ("http://user:pass@example.com/", "user name or password"),
    ("http://example.com/#frag", "fragment"),
    ("http://example.com/#", "fragment"),
    ("http://example.com:99999/", "port"),
    ("http://example.com:0/", "port"),
    ("http://[::1/", "does not parse"),
    ("http://a..b/", "host name"),
    ("http://[::1]:9000/", "host name or IPv4"),  # treq cannot send to an IPv6 literal: refused at once
    ("http://ex_ample.com/", "host name"),
    ("http://-x-.com/", "host name"),
    ("http://example.com:port/", "port"),
    ("http://exämple.com/", "ASCII"),
    ("http://example.com/a b", "ASCII"),
    ("http://example.com/a\nb", "ASCII"),
    ("", "1 to"),
    ("http://example.com/" + "a" * 2000, "1 to"),
    (42, "string"),
])
def test_urls_refused_with_the_reason(url: object, why: str) -> None:
    with pytest.raises(InvalidUrl, match=re.escape(why)):
        check_url(url)


# -- the backoff --------------------------------------------------------------------------


def test_waits_double_from_a_second_to_the_bound() -> None:
    top = [webhook_retry.delay(n, 0.999999) for n in range(1, 12)]
    assert top == pytest.approx([1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300], rel=1e-5)
    assert [webhook_retry.delay(n, 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]  # jitter scales into the upper half
    assert webhook_retry.delay(3, 0.5, bound=2.0) == 1.5
    assert webhook_retry.delay(10_000, 0.5) == 225.0  # no overflow, however many failures
    for bad in ((0, 0.5), (1, 1.0), (1, -0.1)):
        with pytest.raises(ValueError):
            webhook_retry.delay(*bad)


@given(st.integers(1, 200), st.floats(0, 1, exclude_max=True), st.floats(0.5, 3600))
def test_a_wait_is_never_past_the_bound_nor_under_half_the_doubled_delay(failures: int, jitter: float, bound: float) -> None:
    wait = webhook_retry.delay(failures, jitter, bound)
    full = min(bound, 2.0 ** (failures - 1))
    assert full / 2 <= wait <= full <= bound


def test_the_log_names_only_where_a_webhook_goes_not_its_path_or_query() -> None:
    assert webhook_wire.origin("https://hooks.example.com/services/T0/B0/s3cr3t?x=1") == "https://hooks.example.com"
    assert webhook_wire.origin("HTTP://10.0.0.5:9000/ana") == "http://10.0.0.5:9000"


@given(st.text(max_size=80) | st.builds(lambda rest: "http://" + rest, st.text(max_size=60)))
def test_any_text_is_a_url_or_an_invalid_url_error(text: str) -> None:
    try:
        url = check_url(text)
    except InvalidUrl:
        return
    assert url.startswith(("http://", "https://", "HTTP", "Http", "hTTP")) or url[:5].lower() in ("http:", "https")
