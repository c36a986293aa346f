"""Pix "copia e cola": the static BR Code printed on a bill, its parser and its QR.

A static BR Code is the text a payer's banking app reads from the QR code (or
from the clipboard, hence "copia e cola") to pay the utility by Pix.  Its layout
is EMV QRCPS-MPM as profiled by the Banco Central's *Manual de Padrões para
Iniciação do Pix*: a flat sequence of TLV fields, each ``ID`` (2 digits) +
``length`` (2 digits) + ``value``, some of them templates holding TLV fields of
their own, ending in a CRC.  The fields this module writes, in order:

====  ==========================================  ================================
ID    field                                       value written
====  ==========================================  ================================
00    Payload Format Indicator                    ``01``
26    Merchant Account Information (template)     ``00`` GUI ``br.gov.bcb.pix``,
                                                  ``01`` the receiver's Pix key
52    Merchant Category Code                      ``0000`` (not informed)
53    Transaction Currency                        ``986`` (BRL, ISO 4217)
54    Transaction Amount                          ``123.45``: dot, 2 decimals
58    Country Code                                ``BR``
59    Merchant Name                               ASCII, at most 25 characters
60    Merchant City                               ASCII, at most 15 characters
62    Additional Data Field Template              ``05`` the txid
63    CRC                                         CRC16-CCITT-FALSE, 4 hex digits
====  ==========================================  ================================

Why a *static* code: a dynamic one needs a PSP API call per bill, a
certificate and a location URL; the static code is computed from the bill
alone, offline, and the txid in it still lets the utility match the credit
notice from its bank to the bill.

Pure module: no Twisted, no I/O.  ``qr_svg`` uses segno, a maintained QR
library, rather than a hand-written QR encoder.
"""

from __future__ import annotations

import binascii
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import segno

from meterd import taxid
from meterd.paycodes import BILL_NUMBER_DIGITS, PaymentCodeError, check_bill_number, whole_cents

__all__ = [
    "BRCode",
    "brcode",
    "crc16",
    "normalize_text",
    "parse_brcode",
    "qr_svg",
    "txid_for_bill",
    "validate_key",
]

GUI: Final = "br.gov.bcb.pix"
MAX_NAME: Final = 25
MAX_CITY: Final = 15
MAX_TXID: Final = 25
MAX_AMOUNT_CHARS: Final = 13
#: 77 = 99 (the longest TLV value) - 18 (``0014br.gov.bcb.pix``) - 4 (the key's
#: own ID and length): the longest key that fits in field 26, and the DICT's
#: limit for e-mail keys.
MAX_KEY: Final = 77
#: A bill number written into a txid: "FAT" + 17 digits, 20 characters.
TXID_PREFIX: Final = "FAT"

_MCC: Final = "0000"
_CURRENCY: Final = "986"
_COUNTRY: Final = "BR"
_MAX_AMOUNT: Final = Decimal("9999999999.99")  # the most that fits in 13 characters
_TXID_RE: Final = re.compile(r"[A-Za-z0-9]{1,25}")
_AMOUNT_RE: Final = re.compile(r"\d+(?:\.\d{1,2})?")
_PHONE_RE: Final = re.compile(r"\+55[1-9]{2}9\d{8}")
# The DICT's e-mail pattern: lower case, no spaces, a dotted domain.
_EMAIL_RE: Final = re.compile(
    r"[a-z0-9.!#$&'*+/=?^_`{|}~-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+"
)
_EVP_RE: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_DIGITS: Final = frozenset("0123456789")
# EMV's common character set: printable ASCII.
_PRINTABLE: Final = frozenset(chr(c) for c in range(0x20, 0x7F))


@dataclass(frozen=True)
class BRCode:
    """The content of a static Pix BR Code, as ``parse_brcode`` reads it.

    ``amount`` is ``None`` when the code leaves the amount to the payer (field
    54 absent), which ``brcode`` never writes but others' codes may.  ``txid``
    is ``"***"`` when the code carries none.
    """

    key: str
    name: str
    city: str
    amount: Decimal | None
    txid: str


# ---------------------------------------------------------------------------
# Building


def brcode(*, key: str, name: str, city: str, amount: Decimal, txid: str) -> str:
    """The static BR Code ("Pix copia e cola") for one payment of ``amount``.

    ``name`` and ``city`` go through :func:`normalize_text` (accents removed,
    cut to 25 and 15 characters); everything else is refused with a
    :class:`~meterd.paycodes.PaymentCodeError` rather than changed, because a
    wrong key or amount must never reach a bill.  ``txid`` is usually
    ``txid_for_bill(number)``.
    """
    key = validate_key(key)
    fields = [
        _tlv("00", "01"),
        _tlv("26", _tlv("00", GUI) + _tlv("01", key)),
        _tlv("52", _MCC),
        _tlv("53", _CURRENCY),
        _tlv("54", _format_amount(amount)),
        _tlv("58", _COUNTRY),
        _tlv("59", normalize_text(name, MAX_NAME, "name")),
        _tlv("60", normalize_text(city, MAX_CITY, "city")),
        _tlv("62", _tlv("05", _check_txid(txid))),
    ]
    body = "".join(fields) + "6304"
    return body + f"{crc16(body):04X}"


def crc16(text: str) -> int:
    """CRC16-CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR).

    The BR Code's field 63 is this CRC over everything before its value,
    including the ``6304`` of the field itself.  ``binascii.crc_hqx`` is that
    CRC when started at 0xFFFF, so no hand-written loop is needed.
    """
    return binascii.crc_hqx(text.encode("ascii"), 0xFFFF)


def txid_for_bill(bill_number: int) -> str:
    """The txid of a bill's Pix code: ``"FAT"`` + the bill number in 17 digits.

    The txid comes back in the credit notice the utility's bank sends for each
    Pix received, so it must identify the bill.  Fixed width (20 characters,
    below the limit of 25) keeps the ids sortable and easy to grep in a bank
    statement; the prefix leaves room for other kinds of charge later.  The 17
    digits are also the room the FEBRABAN barcode leaves the bill number, so one
    bill number fits both codes.
    """
    return f"{TXID_PREFIX}{check_bill_number(bill_number):0{BILL_NUMBER_DIGITS}d}"


def normalize_text(text: str, limit: int, field: str = "text") -> str:
    """``text`` as the BR Code can carry it: ASCII, single-spaced, at most ``limit``.

    The layout allows only EMV's common character set (printable ASCII) in the
    name and city, so accents are removed
    (Unicode NFKD, then the combining marks dropped: ``"São Paulo"`` becomes
    ``"Sao Paulo"``, ``"Ç"`` becomes ``"C"``); runs of whitespace become one
    space.  Case is kept as written: the manual's own example is ``"Fulano de
    Tal"``, and the receiver's registered name, not this one, is what the payer's
    app confirms.  Text longer than ``limit`` is cut there (the field is a
    label, and a company's legal name is often longer than 25 characters); a
    character with no ASCII form (``"€"``, ``"–"``) is refused instead of being
    silently dropped.
    """
    if not isinstance(text, str):
        raise PaymentCodeError(field, f"must be a string, not {type(text).__name__}")
    decomposed = unicodedata.normalize("NFKD", " ".join(text.split()))
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c))
    for c in ascii_text:
        if c not in _PRINTABLE:
            raise PaymentCodeError(
                field, f"character {c!r} cannot be written in a Pix code (ASCII only)"
            )
    if not ascii_text:
        raise PaymentCodeError(field, "must not be empty")
    return ascii_text[:limit].rstrip()


def validate_key(key: str) -> str:
    """``key`` if it is a Pix key written the way the DICT stores it, else PaymentCodeError.

    The five kinds: CPF (11 digits) and CNPJ (14 digits), check digits verified;
    a mobile phone as ``+55`` DDD ``9XXXXXXXX``; an e-mail in lower case, at most
    77 characters; a random key (EVP), a lower-case UUID with hyphens.  Nothing
    is reformatted: the key in the code must be byte for byte the registered
    one, or the payer's bank finds no receiver (or the wrong one: many phone
    numbers without ``+55`` are also valid CPFs).
    """
    if not isinstance(key, str):
        raise PaymentCodeError("key", f"must be a string, not {type(key).__name__}")
    if not key:
        raise PaymentCodeError("key", "must not be empty")
    if len(key) > MAX_KEY:
        raise PaymentCodeError("key", f"longer than {MAX_KEY} characters ({len(key)})")
    if all(c in _DIGITS for c in key):
        if len(key) == 11:
            ok, kind = taxid.is_cpf(key), "CPF"
        elif len(key) == 14:
            ok, kind = taxid.is_cnpj(key), "CNPJ"
        else:
            raise PaymentCodeError(
                "key", f"{len(key)} digits is neither a CPF (11) nor a CNPJ (14)"
            )
        if not ok:
            raise PaymentCodeError("key", f"not a valid {kind} (check digits)")
        return key
    if key.startswith("+"):
        if _PHONE_RE.fullmatch(key) is None:
            raise PaymentCodeError(
                "key", "a phone key is +55, the 2-digit DDD and a 9-digit mobile number"
            )
        return key
    if "@" in key:
        if _EMAIL_RE.fullmatch(key) is None:
            raise PaymentCodeError(
                "key", "not an e-mail key (lower case, no spaces, user@domain.tld)"
            )
        return key
    if _EVP_RE.fullmatch(key) is None:
        raise PaymentCodeError(
            "key",
            "not a Pix key: expected a CPF, a CNPJ, +55 phone, an e-mail "
            "or a random key (lower-case UUID)",
        )
    return key


def _tlv(tag: str, value: str) -> str:
    # Every value written fits the 2-digit length: the longest is field 26,
    # and MAX_KEY is what makes it at most 99.
    return f"{tag}{len(value):02d}{value}"


def _format_amount(amount: Decimal) -> str:
    """Exactly two decimals with a dot; refused, never rounded, if not whole cents."""
    cents = whole_cents(amount, "amount", _MAX_AMOUNT)
    return f"{cents // 100}.{cents % 100:02d}"


def _check_txid(txid: str) -> str:
    if not isinstance(txid, str) or _TXID_RE.fullmatch(txid) is None:
        raise PaymentCodeError("txid", f"must be 1 to {MAX_TXID} letters or digits (got {txid!r})")
    return txid


# ---------------------------------------------------------------------------
# Parsing


def parse_brcode(payload: str) -> BRCode:
    """Split and check a static Pix BR Code; raises PaymentCodeError naming the bad field.

    Checks: printable ASCII only; every TLV's length fits; ``00`` = ``01`` comes
    first and ``63`` (4 upper-case hex digits) last, with the CRC matching; the
    mandatory fields are there with the Pix GUI (any case) and a valid key,
    currency 986, country BR, name up to 25 and city up to 15 characters, an
    amount of at most 13 characters with at most 2 decimals, and a txid of 1-25
    letters or digits (or ``***``).  Fields this module does not write
    (point of initiation ``01``, postal code ``61``, ``26``'s description ``02``
    ...) are allowed and ignored, so codes from other generators validate.
    """
    if not isinstance(payload, str):
        raise PaymentCodeError("payload", f"must be a string, not {type(payload).__name__}")
    for c in payload:
        if c not in _PRINTABLE:
            raise PaymentCodeError("payload", f"character {c!r} is not printable ASCII")
    fields = list(_split(payload, "payload"))
    if not fields or fields[0] != ("00", "01"):
        raise PaymentCodeError("field 00", "the payload must start with 000201")
    tag, crc = fields[-1]
    if tag != "63":
        raise PaymentCodeError("field 63", "the CRC must be the last field")
    if re.fullmatch(r"[0-9A-F]{4}", crc) is None:
        raise PaymentCodeError("field 63", f"the CRC must be 4 upper-case hex digits (got {crc!r})")
    expected = f"{crc16(payload[:-4]):04X}"
    if crc != expected:
        raise PaymentCodeError("field 63", f"CRC is {crc}, the payload's is {expected}")
    top: dict[str, str] = {}
    for tag, value in fields:
        if tag in top:
            raise PaymentCodeError(f"field {tag}", "appears twice")
        top[tag] = value

    key = _pix_key(top)
    _expect(top, "52", r"\d{4}", "4 digits")
    _expect(top, "53", _CURRENCY, "986 (BRL)")
    _expect(top, "58", _COUNTRY, "BR")
    name = _expect(top, "59", rf".{{1,{MAX_NAME}}}", f"1 to {MAX_NAME} characters")
    city = _expect(top, "60", rf".{{1,{MAX_CITY}}}", f"1 to {MAX_CITY} characters")
    amount = None
    if "54" in top:
        text = top["54"]
        if len(text) > MAX_AMOUNT_CHARS or _AMOUNT_RE.fullmatch(text) is None:
            raise PaymentCodeError(
                "field 54", f"amount must be digits, a dot and up to 2 decimals, "
                f"at most {MAX_AMOUNT_CHARS} characters (got {text!r})"
            )
        amount = Decimal(text)
    return BRCode(key=key, name=name, city=city, amount=amount, txid=_parsed_txid(top))


def _split(text: str, where: str) -> Iterator[tuple[str, str]]:
    pos = 0
    while pos < len(text):
        head = text[pos : pos + 4]
        if len(head) < 4 or not head.isdigit():
            raise PaymentCodeError(
                where, f"expected a 2-digit ID and 2-digit length at position {pos}"
            )
        tag, size = head[:2], int(head[2:])
        value = text[pos + 4 : pos + 4 + size]
        if len(value) != size:
            raise PaymentCodeError(
                f"field {tag}", f"declares {size} characters but only {len(value)} follow"
            )
        yield tag, value
        pos += 4 + size


def _expect(top: dict[str, str], tag: str, pattern: str, what: str) -> str:
    if tag not in top:
        raise PaymentCodeError(f"field {tag}", "missing")
    value = top[tag]
    if re.fullmatch(pattern, value) is None:
        raise PaymentCodeError(f"field {tag}", f"must be {what} (got {value!r})")
    return value


def _pix_key(top: dict[str, str]) -> str:
    """The key from the merchant account template (26-51) whose GUI is Pix's."""
    for tag in (f"{n:02d}" for n in range(26, 52)):
        if tag not in top:
            continue
        sub = dict(_split(top[tag], f"field {tag}"))
        if sub.get("00", "").lower() != GUI:
            continue
        if "01" not in sub:
            raise PaymentCodeError(f"field {tag}.01", "the Pix key is missing")
        try:
            return validate_key(sub["01"])
        except PaymentCodeError as e:
            raise PaymentCodeError(f"field {tag}.01", e.reason) from e
    raise PaymentCodeError("field 26", f"no merchant account with GUI {GUI}")


def _parsed_txid(top: dict[str, str]) -> str:
    if "62" not in top:
        raise PaymentCodeError("field 62", "missing (the txid is mandatory; *** when none)")
    sub = dict(_split(top["62"], "field 62"))
    txid = sub.get("05")
    if txid is None:
        raise PaymentCodeError("field 62.05", "the txid is missing")
    if txid != "***" and _TXID_RE.fullmatch(txid) is None:
        raise PaymentCodeError(
            "field 62.05",
            f"txid must be 1 to {MAX_TXID} letters or digits, or *** (got {txid!r})",
        )
    return txid


# ---------------------------------------------------------------------------
# QR


def qr_svg(payload: str) -> str:
    """The QR code of a BR Code as an SVG string to inline in an HTML bill.

    The payload is checked with :func:`parse_brcode` first: a QR code cannot be
    proof-read by eye, so a broken one must not be drawn.  Error correction M
    (segno raises it when that costs no extra size) survives a fold or a smudge
    on a printed bill.  The SVG has no XML declaration (it is invalid inside
    HTML), a ``viewBox`` instead of a fixed size so the page's CSS sizes it, a
    white background so it scans in a dark-mode mail client, a ``<title>`` for
    screen readers and the copia-e-cola text itself as ``<desc>``.
    """
    parse_brcode(payload)
    qr = segno.make(payload, error="m", micro=False)
    out = io.BytesIO()
    qr.save(
        out,
        kind="svg",
        xmldecl=False,
        svgns=True,
        nl=False,
        omitsize=True,
        dark="#000",
        light="#fff",
        title="QR Code Pix",
        desc=payload,
    )
    return out.getvalue().decode("ascii")
