"""``Screen``: the per-datagram checks shared by the reactor's port and the UDP workers.

Every drop reason is exercised through ``MeterProtocol`` in test_udp.py; these
tests pin what the workers rely on: the reading itself, the meter of an
unknown-meter rejection, and which key checks a signature.
"""

from __future__ import annotations

import pytest

from meterd.datagram import sign
from meterd.readings import Reading
from meterd.screen import Rejected, Screen

C = "12345678909"
KEY = bytes.fromhex("11" * 32)
NOW = 1_764_000_100.0
PAYLOAD = b'{"id": "12345678909", "id_medidor": 1, "valor": 1.5, "timestamp": 1764000000.5, "seq": 7}'


def screen(keys: dict[tuple[str, int], bytes] | None = None, *, require_signature: bool = True) -> Screen:
    return Screen((keys if keys is not None else {(C, 1): KEY}).get, require_signature=require_signature)


def test_a_signed_reading_of_a_known_meter_passes() -> None:
    assert screen().reading(sign(PAYLOAD, KEY), NOW) == Reading(C, 1, 1_764_000_000_500_000, 1500, 7)


def test_an_unknown_meter_is_rejected_with_its_id_so_it_can_be_looked_up() -> None:
    with pytest.raises(Rejected) as e:
        screen({}).reading(sign(PAYLOAD, KEY), NOW)
    assert (e.value.reason, e.value.meter) == ("unknown_meter", (C, 1))


@pytest.mark.parametrize(
    "data, reason",
    [
        (sign(PAYLOAD, bytes(32)), "bad_signature"),  # another key
        (PAYLOAD, "unsigned"),
        (sign(b"{not json", KEY), "bad_json"),
        (b"x" * 2000, "too_large"),
    ],
)
def test_rejections_name_the_reason_and_no_meter(data: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as e:
        screen().reading(data, NOW)
    assert (e.value.reason, e.value.meter) == (reason, None)


def test_unsigned_readings_pass_when_signatures_are_not_required_but_signed_ones_are_checked() -> None:
    open_screen = screen(require_signature=False)
    assert open_screen.reading(PAYLOAD, NOW).seq == 7
    with pytest.raises(Rejected, match="bad_signature"):
        open_screen.reading(sign(PAYLOAD, bytes(32)), NOW)


def test_the_key_is_looked_up_on_every_datagram_so_a_new_key_takes_effect() -> None:
    keys = {(C, 1): KEY}
    s = screen(keys)
    new = bytes.fromhex("22" * 32)
    keys[(C, 1)] = new
    assert s.reading(sign(PAYLOAD, new), NOW).meter_id == 1
    with pytest.raises(Rejected, match="bad_signature"):
        s.reading(sign(PAYLOAD, KEY), NOW)


def test_key_for_signs_a_known_meters_acks_with_its_own_key() -> None:
    from meterd.datagram import decode_ack, encode_acks

    s = screen()
    key = s.key_for((C, 1))
    assert key is not None and s.key_for((C, 1)) is key  # made once, then reused
    [ack] = encode_acks(C, 1, [7], key)
    assert decode_ack(ack, KEY) == (C, 1, [7])
    assert s.key_for((C, 2)) is None


def test_a_datagram_is_refused_in_the_cheapest_order_length_shape_meter_then_hmac(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a flood of garbage, what is cheap to check is checked first: a signature is only ever
    verified for a well-formed reading of a known meter."""
    from meterd import datagram

    verified: list[bytes] = []
    real = datagram.Key.verify
    monkeypatch.setattr(datagram.Key, "verify", lambda self, payload, signature: verified.append(payload) or real(self, payload, signature))
    forged = bytes(32)

    def reason(data: bytes, keys: dict[tuple[str, int], bytes] | None = None) -> str:
        with pytest.raises(Rejected) as e:
            screen(keys).reading(data, NOW)
        return e.value.reason

    assert reason(sign(b"{" + b" " * 2000 + b"}", forged)) == "too_large"  # length, before anything is parsed
    assert reason(sign(b"not a reading", forged)) == "bad_csv"  # shape
    assert reason(sign(PAYLOAD.replace(b'"id_medidor": 1', b'"id_medidor": -1'), forged)) == "out_of_range"
    assert reason(sign(PAYLOAD, forged), {}) == "unknown_meter"  # a meter nobody registered: no HMAC computed
    assert verified == []
    assert reason(sign(PAYLOAD, forged)) == "bad_signature"  # last, and only for a known meter
    assert verified == [PAYLOAD]


def test_a_retired_meters_reading_after_its_final_one_is_refused_only_once_it_is_authentic() -> None:
    retired = {(C, 1): 1_764_000_000_000_000}  # the final reading, half a second before PAYLOAD's
    s = Screen({(C, 1): KEY}.get, require_signature=True, retired=retired)
    with pytest.raises(Rejected) as e:
        s.reading(sign(PAYLOAD, KEY), NOW)
    assert (e.value.reason, e.value.meter) == ("meter_retired", None)
    with pytest.raises(Rejected, match="bad_signature"):  # a forgery is a forgery first
        s.reading(sign(PAYLOAD, bytes(32)), NOW)
    retired[(C, 1)] = 1_764_000_000_500_000  # retired at this very reading: it is the final one, still taken
    assert s.reading(sign(PAYLOAD, KEY), NOW).ts == 1_764_000_000_500_000
