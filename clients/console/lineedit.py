"""conch's line editor for terminals that type UTF-8: any letter, edited whole.

conch's ``RecvLine`` receives the terminal's bytes one by one from insults'
``ServerProtocol`` and keeps only printable ASCII: ``João`` arrives as ``Jo``,
two bytes it drops, and ``o``. :class:`UnicodeLineEditor` decodes the byte
stream incrementally (a letter's bytes may come in separate reads) and keeps
any printable character. Each entry of ``lineBuffer`` is then one character's
UTF-8 bytes, not one byte, so everything conch does by joining the buffer
(drawing it, handing over the line, history) works unchanged, and backspace
removes a whole letter. Cursor movements count terminal cells, not entries:
a CJK character or an emoji is two cells wide, a combining accent none (it is
kept with the letter before it).

A line can also be read in *secret* mode (tokens): nothing typed is echoed,
the cursor does not move, and the line is not added to the history.
"""

from __future__ import annotations

import codecs
from typing import Any

from rich.cells import cell_len
from twisted.conch.recvline import HistoricRecvLine, RecvLine

__all__ = ["UnicodeLineEditor"]

#: ^H: what some terminals send for backspace (insults knows only DEL).
CONTROL_H = b"\x08"


def _cells(entries: list[bytes]) -> int:
    return sum(cell_len(e.decode("utf-8")) for e in entries)


class UnicodeLineEditor(HistoricRecvLine):
    """``HistoricRecvLine`` over UTF-8 characters (see the module docstring)."""

    secret = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.keyHandlers[CONTROL_H] = self.handle_BACKSPACE

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        if keyID in self.keyHandlers or not isinstance(keyID, bytes):
            self._decoder.reset()  # a key in the middle of a letter's bytes ends it
            super().keystrokeReceived(keyID, modifier)
            return
        for ch in self._decoder.decode(keyID):
            if ch.isprintable():
                self.characterReceived(ch.encode("utf-8"), False)

    def characterReceived(self, ch: bytes, moreCharactersComing: bool) -> None:
        if cell_len(ch.decode("utf-8")) == 0:
            # A combining mark (or variation selector) belongs to the letter
            # before it; alone at the start of the line there is nothing to
            # put it on.
            if self.lineBufferIndex > 0:
                self.lineBuffer[self.lineBufferIndex - 1] += ch
                if not self.secret:
                    self.terminal.write(ch)
            return
        if self.secret:
            self.lineBuffer.insert(self.lineBufferIndex, ch)
            self.lineBufferIndex += 1
            return
        super().characterReceived(ch, moreCharactersComing)

    def _deliverBuffer(self, buf: bytes) -> None:
        """A history line typed back in, a character (not a byte) at a time."""
        for ch in buf.decode("utf-8", errors="replace"):
            self.characterReceived(ch.encode("utf-8"), True)

    # -- cursor and deletion, in cells --------------------------------------

    def cells_after_cursor(self) -> int:
        """How far the cursor is from the end of the typed text, on screen."""
        return 0 if self.secret else _cells(self.lineBuffer[self.lineBufferIndex :])

    def _back(self, cells: int) -> None:
        if cells and not self.secret:
            self.terminal.cursorBackward(cells)

    def _forward(self, cells: int) -> None:
        if cells and not self.secret:
            self.terminal.cursorForward(cells)

    def handle_LEFT(self) -> None:
        if self.lineBufferIndex > 0:
            self.lineBufferIndex -= 1
            self._back(_cells(self.lineBuffer[self.lineBufferIndex : self.lineBufferIndex + 1]))

    def handle_RIGHT(self) -> None:
        if self.lineBufferIndex < len(self.lineBuffer):
            self._forward(_cells(self.lineBuffer[self.lineBufferIndex : self.lineBufferIndex + 1]))
            self.lineBufferIndex += 1

    def handle_HOME(self) -> None:
        self._back(_cells(self.lineBuffer[: self.lineBufferIndex]))
        self.lineBufferIndex = 0

    def handle_END(self) -> None:
        self._forward(_cells(self.lineBuffer[self.lineBufferIndex :]))
        self.lineBufferIndex = len(self.lineBuffer)

    def handle_BACKSPACE(self) -> None:
        if self.lineBufferIndex > 0:
            self.lineBufferIndex -= 1
            width = _cells([self.lineBuffer.pop(self.lineBufferIndex)])
            if width and not self.secret:
                self.terminal.cursorBackward(width)
                self.terminal.deleteCharacter(width)

    def handle_DELETE(self) -> None:
        if self.lineBufferIndex < len(self.lineBuffer):
            width = _cells([self.lineBuffer.pop(self.lineBufferIndex)])
            if width and not self.secret:
                self.terminal.deleteCharacter(width)

    def handle_TAB(self) -> None:
        """Tabs have no use in these forms; conch's would pad the line's end."""

    # -- secret lines --------------------------------------------------------

    def drawInputLine(self) -> None:
        typed = b"" if self.secret else b"".join(self.lineBuffer)
        self.terminal.write(self.ps[self.pn] + typed)

    def handle_UP(self) -> None:
        if not self.secret:
            super().handle_UP()

    def handle_DOWN(self) -> None:
        if not self.secret:
            super().handle_DOWN()

    def handle_RETURN(self) -> None:
        if self.secret:
            self.secret = False
            RecvLine.handle_RETURN(self)  # past HistoricRecvLine: a secret is not history
        else:
            super().handle_RETURN()
