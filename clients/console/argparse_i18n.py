"""argparse's own words (``usage:``, ``options``, its error sentences) in Portuguese.

argparse translates what it writes through gettext, but it binds gettext's
``_`` and ``ngettext`` at import into its module, and Python ships no
Portuguese catalog for it. :func:`argparse_language` points those two names
at a :class:`gettext.NullTranslations` holding the Portuguese texts below for
the duration of a ``with`` block (building the parser, parsing, printing help)
and restores them after, so nothing outside the block is affected.

The keys are argparse's message ids, exactly as written in its source (a test
checks each one is still there); only the texts a user can see are listed,
not those of programming errors.
"""

from __future__ import annotations

import argparse
import gettext
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PORTUGUESE", "argparse_language"]

PORTUGUESE: dict[str, str] = {
    "usage: ": "uso: ",
    "positional arguments": "argumentos posicionais",
    "options": "opções",
    "show this help message and exit": "mostra esta ajuda e sai",
    "show program's version number and exit": "mostra a versão do programa e sai",
    "%(prog)s: error: %(message)s\n": "%(prog)s: erro: %(message)s\n",
    "argument %(argument_name)s: %(message)s": "argumento %(argument_name)s: %(message)s",
    "unrecognized arguments: %s": "argumentos não reconhecidos: %s",
    "the following arguments are required: %s": "faltam os argumentos obrigatórios: %s",
    "one of the arguments %s is required": "um dos argumentos %s é obrigatório",
    "not allowed with argument %s": "não pode ser usado com o argumento %s",
    "ignored explicit argument %r": "argumento explícito ignorado: %r",
    "expected one argument": "espera um valor",
    "expected at most one argument": "espera no máximo um valor",
    "expected at least one argument": "espera pelo menos um valor",
    "ambiguous option: %(option)s could match %(matches)s": "opção ambígua: %(option)s pode ser %(matches)s",
    "unexpected option string: %s": "opção inesperada: %s",
    "invalid %(type)s value: %(value)r": "valor inválido (%(type)s): %(value)r",
    "invalid choice: %(value)r (choose from %(choices)s)": "escolha inválida: %(value)r (escolha entre %(choices)s)",
    "unknown parser %(parser_name)r (choices: %(choices)s)": "subcomando desconhecido %(parser_name)r (opções: %(choices)s)",
    "can't open '%(filename)s': %(error)s": "não foi possível abrir '%(filename)s': %(error)s",
}

#: Plural forms: (singular id, plural id) -> (Portuguese singular, plural).
PORTUGUESE_PLURALS: dict[tuple[str, str], tuple[str, str]] = {
    ("expected %s argument", "expected %s arguments"): ("espera %s valor", "espera %s valores"),
}


class _Catalog(gettext.NullTranslations):
    """A gettext translation from the dictionaries above (no ``.mo`` file)."""

    def gettext(self, message: str) -> str:
        return PORTUGUESE.get(message, message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        forms = PORTUGUESE_PLURALS.get((msgid1, msgid2))
        if forms is None:
            return msgid1 if n == 1 else msgid2
        return forms[0] if n == 1 else forms[1]


_TRANSLATIONS: dict[str, gettext.NullTranslations] = {"pt": _Catalog()}


@contextmanager
def argparse_language(lang: str) -> Iterator[None]:
    """argparse writes in ``lang`` inside the block (its own English elsewhere)."""
    translation = _TRANSLATIONS.get(lang)
    if translation is None:
        yield
        return
    saved = argparse._, argparse.ngettext  # type: ignore[attr-defined]
    argparse._, argparse.ngettext = translation.gettext, translation.ngettext  # type: ignore[attr-defined]
    try:
        yield
    finally:
        argparse._, argparse.ngettext = saved  # type: ignore[attr-defined]
