"""Byte-level frontends that connect a :class:`~clients.console.menu.Menu` to stdio.

* :class:`LineFrontend` — a plain ``LineReceiver`` for pipes and scripts (and
  the tests' ``StringTransport``): the terminal, if any, does the line editing.
* :class:`TerminalFrontend` — for a real terminal in raw mode, built on
  conch's ``HistoricRecvLine`` (made to type any Unicode letter by
  :class:`~clients.console.lineedit.UnicodeLineEditor`): the console owns the
  input line, so an alarm banner can be printed *above* it and the half-typed
  line redrawn intact, with arrow keys and history for free. It also follows
  the terminal's size, shows a spinner while the server is asked, and reads
  tokens without echoing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime, ITransport
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from .lineedit import UnicodeLineEditor
from .menu import Menu, Output
from .waiting import Spinner

__all__ = ["LineFrontend", "TerminalFrontend", "MenuFactory"]

MenuFactory = Callable[[Output], Menu]


@implementer(IHalfCloseableProtocol)
class LineFrontend(LineReceiver):
    """Menu over a byte stream of ``\\n``-terminated lines.

    Output goes to a pipe or a file (or stdin is one), so it shows no spinner
    and draws nothing twice. ``echo`` turns the terminal's own echo off for a
    secret answer and back on after it, when stdin is a terminal in its
    normal (cooked) mode.
    """

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(
        self,
        menu_factory: MenuFactory,
        done: Deferred[None] | None = None,
        echo: Callable[[bool], None] | None = None,
    ) -> None:
        self.menu_factory = menu_factory
        self.done: Deferred[None] = done if done is not None else Deferred()
        self.menu: Menu | None = None
        self._echo = echo
        self._echo_off = False
        self._prompt = ""
        self._at_prompt = False

    @property
    def stream(self) -> ITransport:
        """stdio (or a test's transport): there from ``connectionMade`` on, so whenever the menu talks."""
        assert self.transport is not None, "not connected yet"
        return self.transport

    def connectionMade(self) -> None:
        self.menu = self.menu_factory(self)
        self.menu.start()

    def lineReceived(self, line: bytes) -> None:
        self._at_prompt = False
        if self._echo_back_on():
            self.stream.write(b"\n")  # the Enter the terminal did not echo
        assert self.menu is not None
        self.menu.feed(line.decode("utf-8", errors="replace"))

    def _echo_back_on(self) -> bool:
        """Turn the terminal's echo back on if a secret turned it off; whether it did."""
        if self._echo is None or not self._echo_off:
            return False
        self._echo_off = False
        self._echo(True)
        return True

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
        self._echo_back_on()
        if not self.done.called:
            self.done.callback(None)

    # Output
    def show(self, text: str) -> None:
        self._at_prompt = False
        self.stream.write(text.encode("utf-8"))

    def prompt(self, text: str, *, secret: bool = False) -> None:
        self._prompt = text
        self._at_prompt = True
        self.stream.write(text.encode("utf-8"))
        if secret and self._echo is not None and not self._echo_off:
            self._echo_off = True
            self._echo(False)

    def busy(self, text: str | None) -> None:
        """Nothing to animate on a pipe: the answer follows."""

    def redraw(self, text: str) -> None:
        self.show(text)

    def notify(self, text: str) -> None:
        """Banner on its own lines, then the prompt again if one was showing."""
        lead = "\n" if self._at_prompt else ""
        self.stream.write((lead + text).encode("utf-8"))
        if self._at_prompt:
            self.stream.write(self._prompt.encode("utf-8"))

    def quit(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class TerminalFrontend(UnicodeLineEditor):
    """Raw-mode terminal line editor driving the menu (see module docstring)."""

    ps = (b"", b"")

    def __init__(
        self,
        menu_factory: MenuFactory,
        done: Deferred[None] | None = None,
        clock: IReactorTime | None = None,
        ascii_only: bool = False,
    ) -> None:
        super().__init__()
        self.menu_factory = menu_factory
        self.done: Deferred[None] = done if done is not None else Deferred()
        self.menu: Menu | None = None
        self._spinner = Spinner(self._write, clock, ascii_only=ascii_only) if clock is not None else None
        self._waiting_for: str | None = None  # what the spinner says while a request is out

    def initializeScreen(self) -> None:
        # RecvLine resets (clears) the screen here; a console should not wipe
        # the user's scrollback, so only set the editing mode.
        self.setInsertMode()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.menu = self.menu_factory(self)
        self.menu.start()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._quiet()
        if not self.done.called:
            self.done.callback(None)

    def terminalSize(self, width: int, height: int) -> None:
        """The terminal was resized (the console's SIGWINCH handler calls this).

        RecvLine's own clears the screen; here the menu decides what to draw.
        """
        self.width, self.height = width, height
        if self.menu is not None:
            self.menu.resize(width, height)

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

    def _quiet(self) -> None:
        """Stop the spinner, so what is written next starts on a clean line."""
        if self._spinner is not None:
            self._spinner.stop()

    def _redraw_input(self) -> None:
        self.drawInputLine()
        back = self.cells_after_cursor()
        if back:
            self.terminal.cursorBackward(back)

    # Output
    def show(self, text: str) -> None:
        self._quiet()
        self._write(text)

    def prompt(self, text: str, *, secret: bool = False) -> None:
        self._quiet()
        self.secret = secret
        self.ps = (text.encode("utf-8"), text.encode("utf-8"))
        self.pn = 0
        self._redraw_input()

    def busy(self, text: str | None) -> None:
        self._waiting_for = text
        if self._spinner is None:
            return
        if text is None:
            self._spinner.stop()
        else:
            self._spinner.start(text)

    def notify(self, text: str) -> None:
        """Erase the input line, print the banner, then redraw prompt and
        typing (or, while a request is out, the spinner)."""
        self._quiet()
        self.terminal.write(b"\r")
        self.terminal.eraseLine()
        self._write(text)
        if self._waiting_for is not None and self._spinner is not None:
            self._spinner.start(self._waiting_for)
        else:
            self._redraw_input()

    def redraw(self, text: str) -> None:
        """Clear the screen (not the scrollback) and draw ``text`` from the top."""
        self._quiet()
        self.terminal.cursorHome()
        self.terminal.eraseDisplay()
        self._write(text)

    def quit(self) -> None:
        # ServerProtocol.loseConnection() resets the terminal, which clears
        # the screen and the output the user may still want to read; close
        # the byte transport underneath it instead.
        self._quiet()
        inner = getattr(self.terminal, "transport", None)
        if inner is not None:
            inner.loseConnection()
