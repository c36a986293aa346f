"""Failures as one line in the screen's language.

The server explains an error twice: a stable ``code`` and an English
``message`` for developers. People read the console's own sentence for the
code, from the catalog (``api.<code>``); a code the catalog does not know yet
(the server gains codes faster than consoles are upgraded) still gets a
sentence in the screen's language, naming the code and the HTTP status. The
server's message is shown only when asked for (``--verbose``) and in
``--json`` output.
"""

from __future__ import annotations

from clients.api import ApiError, ServerUnreachable

from .messages import Messages

__all__ = ["Invalid", "describe_error", "api_text"]


class Invalid(Exception):
    """A field value refused before anything is sent; the text is localized."""


def api_text(err: ApiError, m: Messages) -> str:
    """The catalog's sentence for an error code (a generic one for unknown codes)."""
    if err.code == f"http_{err.status}":  # no error body from meterd: a proxy's page, say
        return m("api.no_details")
    if m.has(f"api.{err.code}"):
        return m(f"api.{err.code}")
    return m("api.unknown_code", code=err.code, status=err.status)


def describe_error(err: BaseException, m: Messages, *, verbose: bool = False) -> str:
    """One readable line for any failure: people get no tracebacks."""
    if isinstance(err, Invalid):
        return str(err)
    if isinstance(err, ServerUnreachable):
        seconds = m.number(err.timeout) if err.timeout else "?"
        line = m(f"error.unreachable.{err.reason}", server=err.server or "?", seconds=seconds)
    elif isinstance(err, ApiError):
        key = "error.server" if err.status >= 500 else "error.refused"
        line = m(key, status=err.status, text=api_text(err, m))
    else:
        return m("error.unexpected", message=f"{type(err).__name__}: {err}")
    if verbose and err.message:
        line += " " + m("error.server_said", message=err.message)
    return line
