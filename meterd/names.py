"""How customers are found by what an operator types: names without accents or case, tax ids by prefix.

The rule, for people (README, docs/design.md):

* a query made only of digits and the separators ``. - /`` and spaces is a
  CPF/CNPJ prefix ("529.982", "52998") and finds the customers whose id
  starts with those digits;
* anything else is a name query: it is cut into words, and a customer is
  found when *each* word of the query is the start of some word of the
  customer's name. Case and accents do not count ("joao" finds "João",
  "CONCEICAO" finds "Conceição"), words are runs of letters and digits
  ("d'avila" is "d" and "avila", "Maria-José" is "maria" and "jose").

Names are compared through their *words*: Unicode NFKD (compatibility
decomposition, so "ﬁ" is "fi" and "²" is "2"), combining marks removed,
casefolded (so "ß" is "ss"), then NFKD again for what casefolding composed.
The store keeps each customer's distinct words in an indexed table, and a
word's prefix is an index range: from the prefix itself up to (excluding)
the prefix with its last character's code point raised by one, which in a
binary (``C``) collation holds exactly the strings that start with it.

Pure: no Twisted, no store.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "MAX_QUERY_WORDS", "NameQuery", "TaxIdQuery", "parse_query", "prefix_range", "search_key", "words",
]

#: A query of more words than this is refused: each word is one more index probe per candidate.
MAX_QUERY_WORDS = 6
_WORD = re.compile(r"[^\W_]+")  # letters and digits, in any script
_TAXID_QUERY = re.compile(r"[0-9.\-/ ]+")
_LAST = chr(0x10FFFF)
_FIRST_SURROGATE, _AFTER_SURROGATES = 0xD800, 0xE000


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _normal(text: str) -> str:
    return _fold(_fold(text).casefold())


def words(name: str) -> list[str]:
    """The words a name is found by, in order, repeats included."""
    return _WORD.findall(_normal(name))


def search_key(name: str) -> str:
    """The name as its words, one space apart: how names sort among search results."""
    return " ".join(words(name))


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """``(low, high)``: the strings that start with ``prefix`` are ``low <= s < high`` (``high`` None: no bound)."""
    stem = prefix.rstrip(_LAST)
    if not stem:
        return prefix, None
    following = ord(stem[-1]) + 1
    if following == _FIRST_SURROGATE:  # surrogates are no text: UTF-8 cannot hold them
        following = _AFTER_SURROGATES
    return prefix, stem[:-1] + chr(following)


@dataclass(frozen=True)
class TaxIdQuery:
    """A CPF/CNPJ prefix: the digits typed."""

    digits: str

    @property
    def fingerprint(self) -> str:
        return f"id:{self.digits}"


@dataclass(frozen=True)
class NameQuery:
    """Words that must each start a word of the name (each once, in the order typed)."""

    words: tuple[str, ...]

    @property
    def fingerprint(self) -> str:
        return "name:" + " ".join(self.words)


def parse_query(text: str) -> TaxIdQuery | NameQuery:
    """What an operator typed, as a query; ValueError (a sentence for the API's 400) if it finds nothing by rule."""
    stripped = text.strip()
    if _TAXID_QUERY.fullmatch(stripped):
        digits = "".join(c for c in stripped if c.isdigit())
        if not digits:
            raise ValueError("the query has no digits and no letters")
        if len(digits) > 14:
            raise ValueError("a CPF has 11 digits and a CNPJ 14")
        return TaxIdQuery(digits)
    found = words(stripped)
    if not found:
        raise ValueError("the query has no letters or digits to look for")
    query = NameQuery(tuple(dict.fromkeys(found)))
    if len(query.words) > MAX_QUERY_WORDS:
        raise ValueError(f"at most {MAX_QUERY_WORDS} words")
    return query
