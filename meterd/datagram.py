"""The UDP wire format of DESIGN §4: payloads, signatures and acknowledgements.

Pure: shared by the server's datagram protocol and the meter simulator, so both
sides of the wire are one piece of code and cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

import orjson

MAX_DATAGRAM = 1024  # the payload (DESIGN §4); a signature line may follow it
SIGNATURE_HEX = 64
MAX_SIGNED = MAX_DATAGRAM + 1 + SIGNATURE_HEX
MAX_ACKS = 100
_HEX = b"0123456789abcdef"


class DatagramError(ValueError):
    """A payload that cannot be a reading; ``reason`` is the metrics label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Key:
    """A meter's HMAC key, keyed once.

    Copying a keyed HMAC state costs about half of a one-shot ``hmac.digest``
    (which redoes the key schedule and, on OpenSSL 3, the digest lookup), and
    the server signs or verifies twice per reading.

    On CPython with OpenSSL, ``hmac.HMAC`` wraps a C object (``_hmac``) that
    has the same ``copy``/``update``/``hexdigest`` methods; the wrapper's
    Python-level ``copy`` and ``hexdigest`` cost a third of each signature, so
    the C object is used directly when there is one.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        keyed = hmac.new(key, digestmod=hashlib.sha256)
        self._keyed: Any = getattr(keyed, "_hmac", None) or keyed

    def mac(self, payload: bytes) -> bytes:
        h = self._keyed.copy()
        h.update(payload)
        return h.hexdigest().encode()

    def verify(self, payload: bytes, signature: bytes) -> bool:
        """Constant-time check of ``signature`` (64 lowercase hex bytes) over ``payload``."""
        return hmac.compare_digest(self.mac(payload), signature)


def _mac(key: bytes | Key, payload: bytes) -> bytes:
    if isinstance(key, Key):
        return key.mac(payload)
    return hmac.digest(key, payload, "sha256").hex().encode()


def sign(payload: bytes, key: bytes | Key) -> bytes:
    """Return the signed datagram ``PAYLOAD \\n hex(HMAC-SHA256(key, PAYLOAD))``."""
    return payload + b"\n" + _mac(key, payload)


def split_signature(data: bytes) -> tuple[bytes, bytes | None]:
    """Split a datagram into payload and signature (``None`` when unsigned).

    A trailing line counts as a signature only when it is exactly 64 lowercase
    hex characters, so an unsigned CSV or JSON payload is never mistaken for one.
    """
    cut = data.rfind(b"\n")
    if cut < 0:
        return data, None
    tail = data[cut + 1 :]
    if len(tail) == SIGNATURE_HEX and not tail.translate(None, _HEX):
        return data[:cut], tail
    return data, None


def verify(payload: bytes, signature: bytes, key: bytes | Key) -> bool:
    """Constant-time check of a signature produced by :func:`sign`."""
    return hmac.compare_digest(_mac(key, payload), signature)


def parse_payload(payload: bytes) -> dict[str, Any]:
    """Decode a JSON or CSV reading into a dict of raw fields.

    Values are left as the sender wrote them (numbers or strings); the shared
    reading validation of :mod:`meterd.readings` decides what they mean.

    A JSON object is first handed to orjson as bytes: orjson checks UTF-8
    itself, so the common datagram skips a decode and a strip. Anything that
    fails there takes the general path, which names the reason.
    """
    if payload[:1] == b"{":
        try:
            fields = orjson.loads(payload)
        except ValueError:
            pass
        else:
            if type(fields) is dict:
                return fields
    return _parse_text(payload)


def _parse_text(payload: bytes) -> dict[str, Any]:
    """The general path of :func:`parse_payload`: decode, strip, then JSON or CSV."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DatagramError("not_utf8", "payload is not UTF-8") from None
    if not text:
        raise DatagramError("empty", "empty payload")
    if text[0] == "{":
        try:
            fields = orjson.loads(text)
        except ValueError:
            raise DatagramError("bad_json", "payload is not valid JSON") from None
        if not isinstance(fields, dict):
            raise DatagramError("bad_json", "payload is not a JSON object")
        return fields
    parts = [p.strip(" \t") for p in text.split(",")]
    if len(parts) != 4:
        raise DatagramError("bad_csv", "CSV payload needs id,id_medidor,valor,timestamp")
    return dict(zip(("id", "id_medidor", "valor", "timestamp"), parts))


def encode_acks(customer_id: str, meter_id: int, seqs: Iterable[int], key: bytes | Key) -> list[bytes]:
    """Signed ack datagrams for one meter, at most ``MAX_ACKS`` seqs each.

    A list, not a generator: the server encodes one per meter per flush, and
    a generator's setup cost as much as the JSON.
    """
    batch = list(seqs)
    if 0 < len(batch) <= MAX_ACKS:  # the usual case: one datagram
        return [sign(orjson.dumps({"id": customer_id, "id_medidor": meter_id, "acks": batch}), key)]
    return [
        sign(orjson.dumps({"id": customer_id, "id_medidor": meter_id, "acks": batch[start : start + MAX_ACKS]}), key)
        for start in range(0, len(batch), MAX_ACKS)
    ]


def send_acks(sendto: Callable[[bytes, Any], Any], customer_id: str, meter_id: int, seqs: Iterable[int], key: bytes | Key,
              address: Any) -> tuple[int, int]:
    """Sign and send a meter its acks; return how many datagrams went out and how many did not.

    Stops at the first send that fails (a full socket buffer, a vanished
    route): the meter resends those readings, and is acked then. The unsent
    are counted so an operator can tell lost acks from lost readings.
    """
    datagrams = encode_acks(customer_id, meter_id, seqs, key)
    sent = 0
    for datagram in datagrams:
        try:
            sendto(datagram, address)
        except OSError:
            break
        sent += 1
    return sent, len(datagrams) - sent


def send_ack_rows(sendto: Callable[[bytes, Any], Any], key_for: Callable[[tuple[str, int]], Key | None],
                  rows: Iterable[tuple[str, int, list[int], str, int]]) -> tuple[int, int]:
    """A flush's acks, one row ``(customer_id, meter_id, seqs, host, port)`` per meter, each signed with
    its meter's key (a meter ``key_for`` no longer knows is skipped); datagrams sent and unsent."""
    sent = unsent = 0
    for customer_id, meter_id, seqs, host, port in rows:
        key = key_for((customer_id, meter_id))
        if key is not None:
            ok, failed = send_acks(sendto, customer_id, meter_id, seqs, key, (host, port))
            sent += ok
            unsent += failed
    return sent, unsent


def decode_ack(data: bytes, key: bytes | Key) -> tuple[str, int, list[int]] | None:
    """Return ``(id, id_medidor, seqs)`` of a validly signed ack, else ``None``.

    Meters must ignore anything unsigned or forged: an attacker who could fake
    acks could make a meter discard readings it never delivered.
    """
    payload, signature = split_signature(data)
    if signature is None or not verify(payload, signature, key):
        return None
    try:
        body = orjson.loads(payload)
        acks = [int(s) for s in body["acks"]]
        return str(body["id"]), int(body["id_medidor"]), acks
    except (ValueError, KeyError, TypeError):
        return None
