"""The hot path's shortcuts give exactly what the general code gives.

Each shortcut (inline field checks, orjson on bytes, the C HMAC object, one
bisect per span) is compared with the straightforward code it bypasses, over
generated inputs that hit both sides of every branch.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd import datagram
from meterd.datagram import DatagramError, Key, decode_ack, encode_acks, parse_payload, sign, verify
from meterd.readings import InvalidField, _parse_general, parse_reading
from meterd.registers import any_in_span, in_span
from tests.support import examples

NOW = 1_764_000_100.0
C = "12345678909"


def outcome(fn: Any, *args: Any) -> Any:
    """What ``fn`` returns, or the error code it raises."""
    try:
        return fn(*args)
    except InvalidField as e:
        return ("invalid", e.code)
    except DatagramError as e:
        return ("datagram", e.reason)


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**64), 2**64),
    st.decimals(min_value=0, max_value=10**13, places=4).map(float),  # plenty of exact 3-decimal values
    st.sampled_from([0.0, -0.0, 1.0005, 1234.567, 946_684_800.0, NOW + 300, NOW + 300.001, 2**31 - 1, 2**31, 2**63 - 1, 2**63]),
    st.text(max_size=6),
    st.none(),
    st.booleans(),
)
timestamps = st.one_of(numbers, st.integers(0, 400_000).map(lambda ms: NOW - 100 + ms / 1000))


@settings(max_examples=examples(1500), deadline=None)
@given(
    cid=st.one_of(st.just(C), st.just(""), st.just("123"), numbers),
    meter=numbers,
    ts=timestamps,
    kwh=numbers,
    seq=numbers,
    has_seq=st.booleans(),
)
def test_parse_reading_fast_path_matches_the_general_path(cid, meter, ts, kwh, seq, has_seq):
    fields = {"id": cid, "id_medidor": meter, "timestamp": ts, "valor": kwh}
    if has_seq:
        fields["seq"] = seq
    assert outcome(parse_reading, fields, NOW) == outcome(_parse_general, fields, NOW)


def test_parse_reading_fast_path_result_is_a_reading():
    r = parse_reading({"id": C, "id_medidor": 3, "timestamp": 1_764_000_000.5, "valor": 1.5, "seq": 7}, NOW)
    assert (r.customer_id, r.meter_id, r.ts, r.wh, r.seq) == (C, 3, 1_764_000_000_500_000, 1500, 7)
    assert r == _parse_general({"id": C, "id_medidor": 3, "timestamp": 1_764_000_000.5, "valor": 1.5, "seq": 7}, NOW)


_parse_payload_general = datagram._parse_text  # parse_payload without its orjson-on-bytes shortcut


payloads = st.one_of(
    st.binary(max_size=40).map(lambda b: b"{" + b),
    st.binary(max_size=40),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=5)), max_size=4).map(
        orjson.dumps
    ),
    st.tuples(
        st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**63 - 1), max_size=3).map(orjson.dumps),
        st.sampled_from([b"", b" ", b"\n", b"\t\r\n", b"\x0c", b"\x1c", "\u3000".encode(), b"\x85", b"x", b"\xff"]),
    ).map(lambda t: t[0] + t[1]),
)


@settings(max_examples=examples(1500), deadline=None)
@given(payloads)
def test_parse_payload_matches_the_decode_strip_path(payload):
    assert outcome(parse_payload, payload) == outcome(_parse_payload_general, payload)


@settings(max_examples=examples(300), deadline=None)
@given(key=st.binary(min_size=32, max_size=32), payload=st.binary(max_size=300), flip=st.integers(0, 63))
def test_keyed_signatures_are_plain_hmac_sha256(key, payload, flip):
    signature = hmac.new(key, payload, hashlib.sha256).hexdigest().encode()
    k = Key(key)
    assert sign(payload, k) == sign(payload, key) == payload + b"\n" + signature
    assert verify(payload, signature, k) and verify(payload, signature, key)
    forged = bytearray(signature)
    forged[flip] = ord("0") if forged[flip] != ord("0") else ord("1")
    assert not verify(payload, bytes(forged), k) and not verify(payload, bytes(forged), key)


@pytest.mark.parametrize("n", [0, 1, 100, 101, 250])
def test_ack_datagrams_keep_their_wire_format(n):
    key = b"\x11" * 32
    seqs = list(range(n))
    datagrams = encode_acks(C, 2, iter(seqs), Key(key))
    chunks = [seqs[i : i + 100] for i in range(0, n, 100)]
    assert datagrams == [sign(orjson.dumps({"id": C, "id_medidor": 2, "acks": c}), key) for c in chunks]
    assert [decode_ack(d, key) for d in datagrams] == [(C, 2, c) for c in chunks]


bounds = st.one_of(st.none(), st.integers(0, 30))


@settings(max_examples=examples(1000), deadline=None)
@given(times=st.lists(st.integers(0, 30), max_size=8).map(sorted), lo=bounds, hi=bounds)
def test_any_in_span_is_any_of_in_span(times, lo, hi):
    assert any_in_span(times, (lo, hi)) == any(in_span(ts, (lo, hi)) for ts in times)
