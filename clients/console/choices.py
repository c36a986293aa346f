"""Fields with a fixed set of values, shown and typed in the screen's language.

The API's values (``register``, ``interval``, ``Y`` …) are identifiers of the
wire contract; a person reads and types a label from the catalog
(``choice.<name>.<value>``: ``registrador``, ``intervalo``, ``A`` for *ano*).
Parsing accepts either, whatever the case, so a script written with the API's
values keeps working in any language.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import Messages

__all__ = ["Choice", "LIGACAO", "METER_MODE", "KIND", "EXPORT"]


@dataclass(frozen=True)
class Choice:
    """One field's values (the API's spelling) and its default."""

    name: str
    values: tuple[str, ...]
    default: str

    def label(self, m: Messages, value: str) -> str:
        """How ``value`` is shown in ``m``'s language (the value itself if unknown)."""
        key = f"choice.{self.name}.{value}"
        return m(key) if m.has(key) else value

    def labels(self, m: Messages) -> list[str]:
        return [self.label(m, v) for v in self.values]

    def parse(self, m: Messages, text: str) -> str | None:
        """The API value for a typed label or value; ``None`` if it is neither."""
        typed = text.strip().casefold()
        for value in self.values:
            if typed in (value.casefold(), self.label(m, value).casefold()):
                return value
        return None


LIGACAO = Choice("ligacao", ("mono", "bi", "tri"), "mono")
METER_MODE = Choice("mode", ("register", "interval"), "register")
KIND = Choice("kind", ("D", "M", "Y"), "D")
EXPORT = Choice("export", ("leituras", "historico"), "leituras")  # what the menu's export writes
