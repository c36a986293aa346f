"""The Unicode line editor under insults' ServerProtocol, byte by byte as a terminal sends them."""

from __future__ import annotations

from twisted.conch.insults.insults import ServerProtocol
from twisted.internet.testing import StringTransport

from clients.console.lineedit import UnicodeLineEditor

LEFT, HOME, UP = b"\x1b[D", b"\x1b[H", b"\x1b[A"
BACKSPACE, CONTROL_H, ENTER = b"\x7f", b"\x08", b"\r"


class Recorder(UnicodeLineEditor):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.decode("utf-8"))


def terminal() -> tuple[ServerProtocol, Recorder, StringTransport]:
    proto = ServerProtocol(Recorder)
    tr = StringTransport()
    proto.makeConnection(tr)
    editor = proto.terminalProtocol
    assert isinstance(editor, Recorder)
    tr.clear()
    return proto, editor, tr


def test_letters_split_across_reads_are_decoded_whole() -> None:
    proto, editor, tr = terminal()
    for byte in "João Ñandú".encode():
        proto.dataReceived(bytes([byte]))  # "ã" and "Ñ" arrive as two reads each
    assert tr.value().decode() == "João Ñandú"  # echoed as typed
    proto.dataReceived(ENTER)
    assert editor.lines == ["João Ñandú"]


def test_backspace_erases_a_whole_letter_and_its_cells() -> None:
    proto, editor, tr = terminal()
    proto.dataReceived("Conceiçõ".encode())
    tr.clear()
    proto.dataReceived(BACKSPACE)
    assert tr.value() == b"\x1b[1D\x1b[1P"  # one cell back, one deleted: "õ" is one cell
    proto.dataReceived("王明".encode())
    tr.clear()
    proto.dataReceived(CONTROL_H)  # some terminals send ^H for backspace
    assert tr.value() == b"\x1b[2D\x1b[2P"  # a wide letter is two cells
    proto.dataReceived("ão".encode() + ENTER)
    assert editor.lines == ["Conceiç王ão"]


def test_cursor_moves_count_cells_and_insert_in_the_middle() -> None:
    proto, editor, tr = terminal()
    proto.dataReceived("a王b".encode())
    tr.clear()
    proto.dataReceived(LEFT + LEFT)
    assert tr.value() == b"\x1b[1D\x1b[2D"
    tr.clear()
    proto.dataReceived(HOME)
    assert tr.value() == b"\x1b[1D"  # only "a" is left of the cursor
    proto.dataReceived("é".encode() + ENTER)
    assert editor.lines == ["éa王b"]


def test_a_combining_accent_stays_with_its_letter() -> None:
    proto, editor, tr = terminal()
    proto.dataReceived("Joa\u0303o".encode())  # "ã" typed as "a" + combining tilde
    proto.dataReceived(LEFT)
    tr.clear()
    proto.dataReceived(BACKSPACE)  # erases "a" and its tilde together
    assert tr.value() == b"\x1b[1D\x1b[1P"
    proto.dataReceived(ENTER)
    assert editor.lines == ["Joo"]
    proto.dataReceived("\u0303x".encode() + ENTER)  # nothing before it to carry the accent
    assert editor.lines[-1] == "x"


def test_control_characters_are_not_typed() -> None:
    proto, editor, tr = terminal()
    proto.dataReceived(b"a\x01\x0b\x0cb\t" + ENTER)
    assert editor.lines == ["ab"]


def test_a_secret_is_neither_echoed_nor_remembered() -> None:
    proto, editor, tr = terminal()
    proto.dataReceived(b"visible" + ENTER)
    editor.secret = True
    tr.clear()
    proto.dataReceived("s3crêt".encode() + BACKSPACE + LEFT + UP + b"t" + ENTER)
    assert editor.lines[-1] == "s3crtê"  # edited blind: the UP arrow did not fetch history
    assert b"s3cr" not in tr.value() and b"\x1b[" not in tr.value().replace(b"\r\n", b"")
    assert editor.secret is False  # one line only
    proto.dataReceived(UP)
    assert b"visible" in tr.value()  # history holds the line before, not the secret
    proto.dataReceived(ENTER)
    assert editor.lines[-1] == "visible"
