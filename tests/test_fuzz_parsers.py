"""Property tests of the parsers that see untrusted bytes first.

Every byte that reaches meterd from the network goes through
``meterd.datagram`` (UDP) or ``meterd.web.params`` (HTTP) and then
``meterd.readings``. Each of these documents exactly one way to refuse input
(``DatagramError``, ``InvalidField``, ``ApiError`` with 400/415); anything else
escaping would be a 500 over HTTP or a dead reactor callback over UDP. The
hypothesis deadline also catches inputs that are cheap to send and expensive
to refuse (a huge exponent used to cost minutes in ``as_int``).
"""

from __future__ import annotations

import json
import string
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meterd.datagram import (
    MAX_ACKS,
    DatagramError,
    decode_ack,
    encode_acks,
    parse_payload,
    sign,
    split_signature,
    verify,
)
from meterd.readings import InvalidField, as_int, kwh_to_wh, parse_reading, timestamp_us
from meterd.taxid import make_cpf
from meterd.web import params
from meterd.web.app import all_routes
from meterd.web.errors import ApiError
from tests.support import examples

NOW_S = 1_764_000_000.0
FUZZ = settings(max_examples=examples(300), deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])

# Numbers as an attacker would write them: signs, fractions, exponents up to a
# billion, the special names, surrounding blanks, digits from other scripts.
numeric_text = st.one_of(
    st.from_regex(r"\s?[+-]?\d{1,20}(\.\d{0,20})?([eE][+-]?\d{1,10})?\s?", fullmatch=True),
    st.sampled_from(["NaN", "nan", "-Infinity", "Infinity", "inf", "sNaN", "1_000", "٣", "0x10", "", " ", "1e", "--1", ".", "1e999999999", "-1e-999999999"]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    numeric_text,
)
# What a JSON encoder can send at all (NaN and Infinity are not JSON).
finite_scalars = json_scalars.filter(lambda v: not (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")))))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
FIELDS = ("id", "id_medidor", "valor", "timestamp", "seq", "name", "kind", "periodo", "ligacao", "mode", "tz", "cursor", "alarm_id")
field_maps = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), json_values, max_size=7)
valid_ids = st.integers(min_value=100_000_000, max_value=999_999_998).map(lambda n: make_cpf(str(n)))
# Readings close to valid, so the fuzzing reaches the checks after the first one.
near_readings = st.fixed_dictionaries(
    {
        "id": valid_ids | json_scalars,
        "id_medidor": st.integers(min_value=-3, max_value=2**40) | numeric_text | json_scalars,
        "valor": st.decimals(allow_nan=True, places=4).map(str) | numeric_text | json_scalars,
        "timestamp": st.floats(min_value=9e8, max_value=NOW_S + 1000) | numeric_text | json_scalars,
    },
    optional={"seq": st.integers(min_value=-1, max_value=2**64) | numeric_text | json_scalars},
)


def _csv(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# -- UDP: datagram framing and payloads ------------------------------------------


@FUZZ
@given(st.binary(max_size=1100))
@example(b"")
@example(b"\n")
@example(b"1,2,3,4\n" + b"a" * 64)
@example(b"1,2,3,4\n" + b"A" * 64)
def test_split_signature_never_raises_and_keeps_every_byte(data: bytes) -> None:
    payload, signature = split_signature(data)
    if signature is None:
        assert payload == data
    else:
        assert len(signature) == 64 and set(signature) <= set(b"0123456789abcdef")
        assert payload + b"\n" + signature == data


@FUZZ
@given(st.binary(max_size=1024), st.binary(min_size=32, max_size=32))
def test_sign_then_split_gives_back_payload_and_a_signature_that_verifies(payload: bytes, key: bytes) -> None:
    got, signature = split_signature(sign(payload, key))
    assert got == payload and signature is not None
    assert verify(got, signature, key)


@FUZZ
@given(st.binary(min_size=1, max_size=300), st.binary(min_size=32, max_size=32), st.integers(min_value=0, max_value=64 * 8 - 1))
def test_a_flipped_bit_anywhere_in_a_signed_datagram_fails_verification(payload: bytes, key: bytes, bit: int) -> None:
    datagram = bytearray(sign(payload, key))
    position = len(datagram) - 1 - (bit % len(datagram))
    datagram[position] ^= 1 << (bit % 8)
    got, signature = split_signature(bytes(datagram))
    assert signature is None or not verify(got, signature, key)


@FUZZ
@given(st.binary(max_size=1024))
@example(b"\xff\xfe")
@example(b"{")
@example(b"[1,2]")
@example(b'{"id": NaN}')
@example(b"1,2,3")
@example(b"1,2,3,4,5")
@example(b"   ")
def test_parse_payload_raises_only_datagram_error(payload: bytes) -> None:
    try:
        fields = parse_payload(payload)
    except DatagramError as e:
        assert e.reason in {"not_utf8", "empty", "bad_json", "bad_csv"}
        return
    assert isinstance(fields, dict)


@FUZZ
@given(st.text(max_size=300) | st.builds(lambda d: json.dumps(d), field_maps) | st.builds(lambda d: json.dumps(d), near_readings))
def test_parse_payload_then_parse_reading_raise_only_documented_errors(text: str) -> None:
    try:
        reading = parse_reading(parse_payload(text.encode("utf-8", "surrogatepass")), NOW_S)
    except (DatagramError, InvalidField):
        return
    assert reading.meter_id >= 1 and reading.wh >= 0


@FUZZ
@given(near_readings)
def test_csv_readings_validate_like_json_ones(fields: dict[str, Any]) -> None:
    """Both payload forms go through one validation, so they agree on every input."""
    texts = [_csv(fields[k]) for k in ("id", "id_medidor", "valor", "timestamp")]
    # CSV cannot carry a comma inside a field, and trims blanks around each one;
    # and a payload that starts with "{" is JSON by the wire rule, whatever follows.
    if any("," in t or t != t.strip() or not t for t in texts) or texts[0].startswith("{"):
        return
    csv = ",".join(_csv(fields[k]) for k in ("id", "id_medidor", "valor", "timestamp")).encode("utf-8", "surrogatepass")
    outcomes = []
    for payload in (csv, json.dumps({k: _csv(fields[k]) for k in ("id", "id_medidor", "valor", "timestamp")}).encode("utf-8", "surrogatepass")):
        try:
            outcomes.append(parse_reading(parse_payload(payload), NOW_S))
        except DatagramError as e:
            outcomes.append(e.reason)
        except InvalidField as e:
            outcomes.append(e.code)
    if "bad_csv" not in outcomes and "not_utf8" not in outcomes and "empty" not in outcomes:
        assert outcomes[0] == outcomes[1]


@FUZZ
@given(valid_ids, st.integers(min_value=1, max_value=2**31 - 1), st.integers(min_value=0, max_value=10**15), st.integers(min_value=946_684_800_000_000, max_value=int(NOW_S * 1_000_000)))
def test_a_valid_reading_survives_the_csv_wire_exactly(cid: str, meter: int, wh: int, ts_us: int) -> None:
    payload = f"{cid},{meter},{wh // 1000}.{wh % 1000:03d},{ts_us // 1_000_000}.{ts_us % 1_000_000:06d}".encode()
    reading = parse_reading(parse_payload(payload), NOW_S)
    assert (reading.customer_id, reading.meter_id, reading.wh, reading.ts, reading.seq) == (cid, meter, wh, ts_us, None)


@FUZZ
@given(st.binary(max_size=1100), st.binary(min_size=32, max_size=32))
def test_decode_ack_never_raises_and_refuses_anything_unsigned(data: bytes, key: bytes) -> None:
    assert decode_ack(data, key) is None or split_signature(data)[1] is not None


@FUZZ
@given(valid_ids, st.integers(min_value=1, max_value=2**31 - 1), st.lists(st.integers(min_value=0, max_value=2**63 - 1), max_size=250), st.binary(min_size=32, max_size=32))
def test_acks_round_trip_in_signed_datagrams_that_fit(cid: str, meter: int, seqs: list[int], key: bytes) -> None:
    datagrams = list(encode_acks(cid, meter, seqs, key))
    got: list[int] = []
    for d in datagrams:
        assert len(d) <= 4096
        decoded = decode_ack(d, key)
        assert decoded is not None and decoded[:2] == (cid, meter) and len(decoded[2]) <= MAX_ACKS
        got += decoded[2]
        assert decode_ack(d, bytes(b ^ 1 for b in key)) is None
    assert got == seqs


# -- the numeric coercions every way in shares ---------------------------------


@FUZZ
@given(json_scalars)
@example("1e999999999")
@example("-1e999999999")
@example("9" * 5000)
def test_numeric_coercions_raise_only_invalid_field_and_fast(value: Any) -> None:
    for convert in (lambda v: as_int("n", v), lambda v: as_int("n", v, minimum=1, maximum=2**31 - 1), lambda v: kwh_to_wh("valor", v), lambda v: timestamp_us(v, NOW_S)):
        try:
            result = convert(value)
        except InvalidField as e:
            assert e.code in {"invalid_type", "invalid_number", "not_finite", "invalid_integer", "out_of_range", "negative", "too_precise", "timestamp_too_old", "timestamp_in_future"}
            continue
        assert isinstance(result, int) and not isinstance(result, bool)


@FUZZ
@given(st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False))
def test_kwh_with_three_decimals_is_exact_wh(value: Any) -> None:
    assert kwh_to_wh("valor", str(value)) == int(value * 1000)


# -- HTTP: the request parameter parser -------------------------------------------

query_strings = st.one_of(
    st.binary(max_size=200),
    st.lists(st.tuples(st.sampled_from(FIELDS) | st.text(max_size=5), st.text(max_size=10)), max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    ),
)
bodies = st.one_of(
    st.binary(max_size=300),
    field_maps.map(lambda d: json.dumps(d).encode()),
    near_readings.map(lambda d: json.dumps(d).encode()),
    st.sampled_from([b"[]", b"[" * 5000, b"{" * 5000, b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1e999}', b'\xef\xbb\xbf{"a":1}', b'{"a": "\xff"}', b"null", b"1", b"{}"]),
)
content_types = st.one_of(st.none(), st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", "", ";;", "\x00"]), st.text(max_size=20))


@FUZZ
@given(bodies, content_types, query_strings)
def test_params_parse_raises_only_400_or_415(body: bytes, content_type: str | None, query: bytes) -> None:
    try:
        merged = params.parse(body, content_type, query)
    except ApiError as e:
        assert (e.status, e.code) in {(400, "malformed_json"), (400, "conflicting_parameter"), (415, "unsupported_media_type")}
        json.dumps(e.body())  # the error itself can always be sent
        return
    assert isinstance(merged, dict) and all(isinstance(k, str) for k in merged)


@FUZZ
@given(field_maps | near_readings)
def test_typed_accessors_raise_only_400(fields: dict[str, Any]) -> None:
    for route in all_routes():  # every field of every route
        for field in route.fields:
            try:
                field.value(fields)
            except ApiError as e:
                assert e.status == 400 and e.code and all(c in string.ascii_lowercase + "_" for c in e.code)


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), st.text(alphabet=string.printable, max_size=8), max_size=4), st.dictionaries(st.sampled_from(FIELDS), finite_scalars, max_size=4))
def test_body_and_query_merge_or_conflict_never_silently_pick_one(query: dict[str, str], body: dict[str, Any]) -> None:
    from urllib.parse import urlencode

    try:
        merged = params.parse(json.dumps(body).encode(), "application/json", urlencode(query).encode())
    except ApiError as e:
        assert e.code == "conflicting_parameter"
        assert any(k in body and params._scalar(body[k]) != v for k, v in query.items())
        return
    for key, value in body.items():
        assert merged[key] == value
    for key, value in query.items():
        assert params._scalar(merged[key]) == value


def test_a_payload_starting_with_a_brace_is_json_even_if_it_looks_like_csv() -> None:
    # the rule hypothesis once tripped over: "{" picks the JSON form, and this is not JSON
    with pytest.raises(DatagramError) as refused:
        parse_payload(b"{,1,0.0000,900000000.0")
    assert refused.value.reason == "bad_json"
