"""Byte-level frontends that connect a :class:`~clients.console.menu.Menu` to stdio.

* :class:`LineFrontend` — a plain ``LineReceiver`` for pipes and scripts (and
  the tests' ``StringTransport``): the terminal, if any, does the line editing.
* :class:`TerminalFrontend` — for a real terminal in raw mode, built on
  conch's ``HistoricRecvLine``: the console owns the input line, so an alarm
  banner can be printed *above* it and the half-typed line redrawn intact,
  with arrow keys and history for free.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.conch.recvline import HistoricRecvLine
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from .menu import Menu, Output

__all__ = ["LineFrontend", "TerminalFrontend", "MenuFactory"]

MenuFactory = Callable[[Output], Menu]


@implementer(IHalfCloseableProtocol)
class LineFrontend(LineReceiver):
    """Menu over a byte stream of ``\\n``-terminated lines."""

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(self, menu_factory: MenuFactory, done: Deferred[None] | None = None) -> None:
        self.menu_factory = menu_factory
        self.done: Deferred[None] = done if done is not None else Deferred()
        self.menu: Menu | None = None
        self._prompt = ""
        self._at_prompt = False

    def connectionMade(self) -> None:
        self.menu = self.menu_factory(self)
        self.menu.start()

    def lineReceived(self, line: bytes) -> None:
        self._at_prompt = False
        assert self.menu is not None
        self.menu.feed(line.decode("utf-8", errors="replace"))

    def lineLengthExceeded(self, line: bytes) -> None:
        # A runaway paste should not close the console; drop it as one bad line.
        assert self.menu is not None
        self.menu.feed("")

    # IHalfCloseableProtocol: stdin closed while stdout is still writable.
    def readConnectionLost(self) -> None:
        if self.menu is not None:
            self.menu.eof()

    def writeConnectionLost(self) -> None:
        self.quit()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(None)

    # Output
    def show(self, text: str) -> None:
        self._at_prompt = False
        self.transport.write(text.encode("utf-8"))

    def prompt(self, text: str) -> None:
        self._prompt = text
        self._at_prompt = True
        self.transport.write(text.encode("utf-8"))

    def notify(self, text: str) -> None:
        """Banner on its own lines, then the prompt again if one was showing."""
        lead = "\n" if self._at_prompt else ""
        self.transport.write((lead + text).encode("utf-8"))
        if self._at_prompt:
            self.transport.write(self._prompt.encode("utf-8"))

    def quit(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class TerminalFrontend(HistoricRecvLine):
    """Raw-mode terminal line editor driving the menu (see module docstring)."""

    ps = (b"", b"")

    def __init__(self, menu_factory: MenuFactory, done: Deferred[None] | None = None) -> None:
        super().__init__()
        self.menu_factory = menu_factory
        self.done: Deferred[None] = done if done is not None else Deferred()
        self.menu: Menu | None = None

    def initializeScreen(self) -> None:
        # RecvLine resets (clears) the screen here; a console should not wipe
        # the user's scrollback, so only set the editing mode.
        self.setInsertMode()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.menu = self.menu_factory(self)
        self.menu.start()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(None)

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        if keyID == b"\x03":  # ^C: raw mode delivers it as a byte, not SIGINT
            self.terminal.nextLine()
            self.quit()
            return
        if keyID == b"\x04" and not self.lineBuffer:  # ^D on an empty line
            self.terminal.nextLine()
            assert self.menu is not None
            self.menu.eof()
            return
        super().keystrokeReceived(keyID, modifier)

    def lineReceived(self, line: bytes) -> None:
        # The prompt has been answered; until the menu asks again, any
        # type-ahead is drawn without a stale prompt in front of it.
        self.ps = (b"", b"")
        assert self.menu is not None
        self.menu.feed(line.decode("utf-8", errors="replace"))

    def _write(self, text: str) -> None:
        # insults' ServerProtocol.write turns "\n" into "\r\n" for raw mode.
        self.terminal.write(text.replace("\r\n", "\n").encode("utf-8"))

    # Output
    def show(self, text: str) -> None:
        self._write(text)

    def prompt(self, text: str) -> None:
        self.ps = (text.encode("utf-8"), text.encode("utf-8"))
        self.pn = 0
        self.drawInputLine()
        back = len(self.lineBuffer) - self.lineBufferIndex
        if back:
            self.terminal.cursorBackward(back)

    def notify(self, text: str) -> None:
        """Erase the input line, print the banner, redraw prompt and typing."""
        self.terminal.write(b"\r")
        self.terminal.eraseLine()
        self._write(text)
        self.drawInputLine()
        back = len(self.lineBuffer) - self.lineBufferIndex
        if back:
            self.terminal.cursorBackward(back)

    def quit(self) -> None:
        # ServerProtocol.loseConnection() resets the terminal, which clears
        # the screen and the output the user may still want to read; close
        # the byte transport underneath it instead.
        inner = getattr(self.terminal, "transport", None)
        if inner is not None:
            inner.loseConnection()
