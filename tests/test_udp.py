"""``MeterProtocol``: what a datagram becomes, and every reason it is dropped; the socket's receive buffer.

The protocol is wired to a real ``Ingest`` over a fake store, a ``Clock`` and a
``FakeDatagramTransport`` that records what the server sends, so a test can
follow one datagram from ``datagramReceived`` to the ack on the wire.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import formatEvent, globalLogPublisher

from meterd.datagram import MAX_DATAGRAM, decode_ack, sign
from meterd.directory import Directory
from meterd.ingest import Ingest
from meterd.metrics import Metrics
from meterd.readings import Outcome, Reading
from meterd.service import set_receive_buffer
from meterd.store.base import Customer, Meter
from meterd.udp import MeterProtocol
from tests.support import examples

C = "12345678909"
K1_HEX = "11" * 32
K2_HEX = "22" * 32
K1 = bytes.fromhex(K1_HEX)
K2 = bytes.fromhex(K2_HEX)
NOW = 1_764_000_100.0
TS = 1_764_000_000.5
ADDR = ("198.51.100.3", 50123)


class RecordingStore:
    """Stores everything (or answers what ``outcome`` says) and remembers it."""

    shared = False  # one process: the directory holds every meter

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.outcome = Outcome.STORED

    def ingest(self, readings: list[Reading], received_ms: int) -> Deferred[list[Outcome]]:
        self.readings.extend(readings)
        return succeed([self.outcome] * len(readings))


class Harness:
    def __init__(self, *, auth: bool = True, max_pending: int = 1000) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.metrics = Metrics()
        self.store = RecordingStore()
        self.directory = Directory()
        self.directory.add_customer(Customer(C, "Ana", "mono", 1, 1, "America/Sao_Paulo", "hash", 0))
        self.directory.add_meter(Meter(C, 1, "register", K1_HEX, 0))
        self.directory.add_meter(Meter(C, 2, "interval", K2_HEX, 0))
        self.ingest = Ingest(self.store, self.clock, self.metrics, max_pending=max_pending)  # type: ignore[arg-type]
        self.ingest.startService()
        self.protocol = MeterProtocol(self.directory, self.ingest, self.metrics, self.clock, require_signature=auth)
        self.transport = FakeDatagramTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes, addr: tuple[str, int] = ADDR) -> None:
        self.protocol.datagramReceived(data, addr)

    def flush(self) -> list[Reading]:
        self.clock.advance(1)
        return self.store.readings

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def dropped(self, reason: str) -> float:
        return self.sample("meterd_datagrams_dropped_total", reason=reason)

    def all_drops(self) -> float:
        return sum(
            s.value
            for metric in self.metrics.registry.collect()
            for s in metric.samples
            if s.name == "meterd_datagrams_dropped_total"
        )


def payload(**fields: Any) -> bytes:
    body = {"id": C, "id_medidor": 1, "valor": 1234.567, "timestamp": TS, "seq": 42}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


CSV = b"12345678909,1,57.53,1764000000.12"


# -- accepted datagrams ------------------------------------------------------------


def test_signed_json_is_stored_and_acked_with_a_signed_ack():
    h = Harness()
    h.send(sign(payload(), K1))
    assert h.transport.written == []  # nothing before the commit
    assert h.flush() == [Reading(C, 1, 1_764_000_000_500_000, 1_234_567, 42)]
    [(ack, addr)] = h.transport.written
    assert addr == ADDR
    assert decode_ack(ack, K1) == (C, 1, [42])
    assert decode_ack(ack, K2) is None  # signed with the meter's own key
    assert h.sample("meterd_datagrams_received_total") == 1
    assert h.sample("meterd_acks_sent_total") == 1
    assert h.sample("meterd_readings_total", outcome="stored") == 1
    assert h.all_drops() == 0


def test_duplicates_are_acked_again_but_refused_readings_are_not():
    h = Harness()
    h.store.outcome = Outcome.DUPLICATE
    h.send(sign(payload(seq=7), K1))
    h.flush()
    assert [decode_ack(d, K1) for d, _ in h.transport.written] == [(C, 1, [7])]
    for outcome in (Outcome.CONFLICT, Outcome.BACKWARDS):
        h.store.outcome = outcome
        h.send(sign(payload(seq=8), K1))
        h.flush()
    assert len(h.transport.written) == 1


def test_json_numbers_may_be_strings():
    h = Harness()
    h.send(sign(payload(id="123.456.789-09", id_medidor="2", valor="0.001", timestamp=str(TS), seq="9"), K2))
    assert h.flush() == [Reading(C, 2, 1_764_000_000_500_000, 1, 9)]
    assert decode_ack(h.transport.written[0][0], K2) == (C, 2, [9])


def test_a_reading_without_seq_is_stored_but_not_acked():
    h = Harness()
    h.send(sign(payload(seq=...), K1))
    assert h.flush() == [Reading(C, 1, 1_764_000_000_500_000, 1_234_567, None)]
    assert h.transport.written == []


def test_signed_csv_is_accepted_with_auth_on():
    h = Harness()
    h.send(sign(CSV, K1))
    assert h.flush() == [Reading(C, 1, 1_764_000_000_120_000, 57_530, None)]


def test_unsigned_csv_of_the_assignment_works_without_auth():
    h = Harness(auth=False)
    h.send(CSV)
    h.send(b" 12345678909 , 2 , 1.5 , 1764000001 \n")  # spaces and a trailing newline are fine
    assert h.flush() == [Reading(C, 1, 1_764_000_000_120_000, 57_530, None), Reading(C, 2, 1_764_000_001_000_000, 1_500, None)]
    assert h.transport.written == []  # no seq, no ack
    assert h.all_drops() == 0


def test_unsigned_json_with_seq_is_acked_without_auth():
    h = Harness(auth=False)
    h.send(payload(seq=5))
    h.flush()
    assert decode_ack(h.transport.written[0][0], K1) == (C, 1, [5])


def test_a_signed_datagram_is_still_checked_without_auth():
    h = Harness(auth=False)
    h.send(sign(payload(), K2))  # meter 1's payload, meter 2's key
    assert h.flush() == []
    assert h.dropped("bad_signature") == 1


def test_a_datagram_of_exactly_the_maximum_size_is_accepted():
    h = Harness()
    body = payload()
    padded = b"{" + b" " * (MAX_DATAGRAM - len(body) - 65) + body[1:]
    data = sign(padded, K1)
    assert len(data) == MAX_DATAGRAM
    h.send(data)
    assert len(h.flush()) == 1


def test_acks_are_split_into_datagrams_of_at_most_100_seqs():
    h = Harness()
    for seq in range(250):
        h.send(sign(payload(timestamp=TS + seq, seq=seq), K1))
    h.flush()
    decoded = [decode_ack(d, K1) for d, _ in h.transport.written]
    assert [len(acks) for _, _, acks in decoded] == [100, 100, 50]  # type: ignore[misc]
    assert [s for _, _, acks in decoded for s in acks] == list(range(250))  # type: ignore[misc]
    assert all(len(d) <= MAX_DATAGRAM for d, _ in h.transport.written)
    assert h.sample("meterd_acks_sent_total") == 3


def test_acks_for_a_meter_that_vanished_or_without_transport_are_skipped():
    h = Harness()
    h.protocol.send_acks([(C, 9, [1], *ADDR)])
    assert h.transport.written == []
    h.protocol.transport = None
    h.protocol.send_acks([(C, 1, [1], *ADDR)])  # after stopListening: no crash
    assert h.sample("meterd_acks_sent_total") == 0


def test_an_ack_that_cannot_be_sent_is_counted_as_unsent():
    class Refusing(FakeDatagramTransport):
        def write(self, packet: bytes, addr: Any = None) -> None:
            raise OSError("network unreachable")

    h = Harness()
    h.protocol.transport = Refusing()
    h.send(sign(payload(), K1))
    h.flush()
    assert h.sample("meterd_acks_sent_total") == 0
    assert h.sample("meterd_acks_unsent_total") == 1
    assert len(h.store.readings) == 1


# -- dropped datagrams ------------------------------------------------------------------


SIGNED_OK = sign(payload(), K1)

DROPS = [
    # (reason, datagram, auth)
    ("unsigned", payload(), True),
    ("unsigned", CSV, True),
    ("unsigned", SIGNED_OK[:-1], True),  # truncated signature: no longer a signature at all
    ("unsigned", SIGNED_OK[:-64] + SIGNED_OK[-64:].upper(), True),  # signatures are lowercase hex
    ("bad_json", SIGNED_OK[:-1], False),  # without auth the tail is just bad JSON
    ("invalid_number", sign(CSV, K1)[:-1], False),  # ... or a bad CSV timestamp
    ("bad_signature", sign(payload(), K2), True),
    ("bad_signature", SIGNED_OK[:-1] + (b"1" if SIGNED_OK.endswith(b"0") else b"0"), True),  # one hex digit off
    ("bad_signature", payload(valor=2) + SIGNED_OK[-65:], True),  # the value changed under a valid signature
    ("bad_signature", sign(payload(), bytes.fromhex(K1_HEX.upper())[:31]), True),  # a truncated key
    ("too_large", sign(b"{" + b" " * 1000 + payload()[1:], K1), True),
    ("too_large", b"x" * 5000, False),
    ("unknown_meter", sign(payload(id_medidor=3), K1), True),
    ("unknown_meter", sign(payload(id="98765432100"), K1), True),
    ("unknown_meter", CSV.replace(b",1,", b",3,"), False),
    ("not_utf8", sign(b"\xff\xfe" + payload(), K1), True),
    ("empty", sign(b"", K1), True),
    ("empty", b"   ", False),
    ("bad_json", sign(b"{not json", K1), True),
    ("bad_csv", sign(b"[1, 2]", K1), False),  # only "{" starts JSON; anything else is CSV
    ("bad_json", b'{"id": 1', False),
    ("bad_csv", b"12345678909,1,57.53", False),
    ("bad_csv", b"12345678909,1,57.53,1764000000,9", False),
    ("missing_field", sign(payload(valor=...), K1), True),
    ("missing_field", b"12345678909,1,,1764000000", False),
    ("negative", sign(payload(valor=-1), K1), True),
    ("bad_json", sign(b'{"id": "12345678909", "id_medidor": 1, "valor": NaN, "timestamp": 1764000000}', K1), True),
    ("invalid_number", b"12345678909,1,inf,1764000000", False),
    ("invalid_number", b"12345678909,1,lots,1764000000", False),
    ("invalid_type", sign(payload(valor=True), K1), True),
    ("invalid_type", sign(payload(valor=[1]), K1), True),
    ("too_precise", sign(payload(valor=1.0005), K1), True),
    ("out_of_range", sign(payload(valor=1e13), K1), True),
    ("out_of_range", sign(payload(id_medidor=0), K1), True),
    ("out_of_range", sign(payload(seq=-1), K1), True),
    ("invalid_integer", sign(payload(id_medidor=1.5), K1), True),
    ("timestamp_in_future", sign(payload(timestamp=NOW + 301), K1), True),
    ("timestamp_too_old", sign(payload(timestamp=946_684_799), K1), True),
    ("invalid_id", sign(payload(id="12345678900"), K1), True),  # check digits wrong
    ("invalid_id", b"11111111111,1,1,1764000000", False),
]


@pytest.mark.parametrize(("reason", "data", "auth"), DROPS, ids=[f"{r}-{i}" for i, (r, _, _) in enumerate(DROPS)])
def test_dropped_and_counted_by_reason(reason: str, data: bytes, auth: bool):
    h = Harness(auth=auth)
    h.send(data)
    assert h.ingest.pending == 0
    assert h.flush() == []
    assert h.transport.written == []  # never an answer to a dropped datagram
    assert h.dropped(reason) == 1
    assert h.all_drops() == 1
    assert h.sample("meterd_datagrams_received_total") == 1


def test_timestamp_just_inside_the_future_window_is_accepted():
    h = Harness()
    h.send(sign(payload(timestamp=NOW + 300), K1))
    assert len(h.flush()) == 1


def test_overload_drops_and_counts():
    h = Harness(max_pending=2)
    for seq in range(4):
        h.send(sign(payload(timestamp=TS + seq, seq=seq), K1))
    assert h.dropped("overloaded") == 2
    assert [r.seq for r in h.flush()] == [0, 1]
    assert decode_ack(h.transport.written[0][0], K1) == (C, 1, [0, 1])


# -- properties ---------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=1100), auth=st.booleans())
def test_property_random_bytes_never_raise_and_never_reach_ingest(data: bytes, auth: bool):
    h = Harness(auth=auth)
    h.send(data)
    assert h.ingest.pending == 0
    assert h.flush() == []
    assert h.transport.written == []
    assert h.all_drops() == 1


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet=st.sampled_from(list("0123456789.,-eE+ {}[]\":naifNIdt_\n")), max_size=80),
    auth=st.booleans(),
)
def test_property_reading_like_text_never_raises(text: str, auth: bool):
    h = Harness(auth=auth)
    h.send(text.encode())
    submitted = h.ingest.pending
    assert h.all_drops() + submitted == 1
    if auth:
        assert submitted == 0
    h.flush()


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_property_any_change_to_a_signed_datagram_is_refused(data: st.DataObject):
    original = sign(payload(), K1)
    kind = data.draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
    i = data.draw(st.integers(0, len(original) - 1))
    if kind == "flip":
        bit = data.draw(st.integers(0, 7))
        tampered = original[:i] + bytes([original[i] ^ (1 << bit)]) + original[i + 1 :]
    elif kind == "truncate":
        tampered = original[:i]
    elif kind == "append":
        tampered = original + data.draw(st.binary(min_size=1, max_size=10))
    else:
        tampered = original[:i] + data.draw(st.binary(min_size=1, max_size=3)) + original[i:]
    h = Harness(auth=True)
    h.send(tampered)
    assert h.flush() == []
    assert h.transport.written == []
    assert h.all_drops() == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
plausible = {
    "id": st.sampled_from([C, "123.456.789-09", "98765432100", ""]) | json_values,
    "id_medidor": st.sampled_from([1, 2, "1", 0, -1, 2**31, 1.0]) | json_values,
    "valor": st.sampled_from([0, 1.5, "2.25", -0.0, 1e300]) | st.decimals(allow_nan=True).map(str) | json_values,
    "timestamp": st.sampled_from([TS, str(TS), NOW + 299, 0]) | st.decimals(allow_nan=True).map(str) | json_values,
    "seq": st.sampled_from([0, 1, 2**63 - 1, 2**63, "7"]) | json_values,
}


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.fixed_dictionaries({}, optional=plausible),
    signed=st.booleans(),
    auth=st.booleans(),
)
def test_property_any_json_fields_are_either_a_valid_reading_or_one_counted_drop(fields, signed, auth):
    h = Harness(auth=auth)
    body = json.dumps(fields).encode()
    h.send(sign(body, K1) if signed else body)
    submitted = h.flush()
    assert h.all_drops() + len(submitted) == 1
    for reading in submitted:
        assert reading.customer_id == C and reading.wh >= 0
        assert reading.meter_id == 1 if signed else reading.meter_id in (1, 2)  # signed with meter 1's key
        assert signed or not auth


@pytest.mark.slow
def test_a_huge_exponent_is_refused_without_building_the_number():
    # Parsing runs before the signature check, on the reactor thread: an
    # integer field like "1e999999999" must be refused by the number grammar
    # (its exponent is past the bound), never turned into a billion-digit int
    # (that would hang the server).
    # Run in a subprocess so a regression fails this test instead of hanging the suite.
    import subprocess
    import sys

    from tests.support import ROOT, subprocess_env

    code = (
        "from meterd.readings import InvalidField, as_int\n"
        "try:\n    as_int('id_medidor', '1e999999999', minimum=1, maximum=2**31 - 1)\n"
        "except InvalidField as e:\n    print(e.code)\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=subprocess_env())
    except subprocess.TimeoutExpired:
        pytest.fail("as_int('1e999999999') did not return within 60 s: it builds the integer before checking it")
    assert result.stdout.strip() == "invalid_number", result.stderr


def test_the_1024_byte_limit_is_on_the_payload_not_on_its_signature_line():
    h = Harness()
    body = payload()
    padded = b"{" + b" " * (MAX_DATAGRAM - len(body)) + body[1:]
    assert len(padded) == MAX_DATAGRAM
    h.send(sign(padded, K1))
    assert len(h.flush()) == 1
    h.send(sign(padded[:1] + b" " + padded[1:], K1))
    assert h.dropped("too_large") == 1


def test_a_receive_buffer_the_kernel_capped_is_granted_smaller_and_logged() -> None:
    limit = int(Path("/proc/sys/net/core/rmem_max").read_text())
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        small = 64 * 1024  # under any limit Linux ships with
        assert set_receive_buffer(sock, small) == small and events == []
        granted = set_receive_buffer(sock, 2 * limit)
    finally:
        sock.close()
        globalLogPublisher.removeObserver(events.append)
    assert granted == limit
    [event] = events
    assert f"the UDP receive buffer is {limit} bytes, not the {2 * limit} asked for" in formatEvent(event)
    assert f"net.core.rmem_max={2 * limit}" in formatEvent(event)
