"""How customers are found (meterd.names) and how pages are found again (meterd.web.cursors): pure rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterd import names
from meterd.web import cursors
from tests.support import examples


@pytest.mark.parametrize(
    "name, expected",
    [
        ("João da Silva", ["joao", "da", "silva"]),
        ("MARIA CONCEIÇÃO", ["maria", "conceicao"]),
        ("Joana D'Ávila", ["joana", "d", "avila"]),
        ("Maria-José Estêvão", ["maria", "jose", "estevao"]),
        ("Müller Straße", ["muller", "strasse"]),  # casefold: ß is ss
        ("Açougue Nº 2 Ltda.", ["acougue", "no", "2", "ltda"]),  # NFKD: º is o
        ("ﬁlho", ["filho"]),  # a ligature is its letters
        ("Joa\u0303o", ["joao"]),  # a combining tilde, typed apart
        ("  ", []),
    ],
)
def test_a_name_is_found_by_its_words_without_accents_or_case(name: str, expected: list[str]) -> None:
    assert names.words(name) == expected
    assert names.search_key(name) == " ".join(expected)


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("529.982.247-25", names.TaxIdQuery("52998224725")),
        (" 529 98 ", names.TaxIdQuery("52998")),
        ("12.345.678/0001-95", names.TaxIdQuery("12345678000195")),
        ("joao", names.NameQuery(("joao",))),
        ("João  SILVA joao", names.NameQuery(("joao", "silva"))),  # each word once, in the order typed
        ("24 horas", names.NameQuery(("24", "horas"))),  # a letter makes it a name
    ],
)
def test_what_is_typed_is_a_tax_id_prefix_or_name_words(typed: str, expected: object) -> None:
    assert names.parse_query(typed) == expected


@pytest.mark.parametrize("typed", ["...", "-/-", "!!!", "1" * 15, "a b c d e f g"])
def test_a_query_that_cannot_find_anything_by_the_rule_is_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        names.parse_query(typed)


def test_a_prefix_range_holds_exactly_the_strings_that_start_with_it() -> None:
    assert names.prefix_range("joao") == ("joao", "joap")
    assert names.prefix_range("52") == ("52", "53")
    assert names.prefix_range("a\U0010ffff") == ("a\U0010ffff", "b")
    assert names.prefix_range("\U0010ffff") == ("\U0010ffff", None)
    assert names.prefix_range("\ud7ff") == ("\ud7ff", "\ue000")  # surrogates are not text


@settings(max_examples=examples(300))
@given(st.text(min_size=1, max_size=6), st.text(max_size=6))
def test_prefix_ranges_compare_like_a_binary_collation(prefix: str, rest: str) -> None:
    """What SQLite (and PostgreSQL's "C") compare: UTF-8 bytes, which order as code points."""
    low, high = names.prefix_range(prefix)
    for s in (prefix + rest, rest):
        inside = low.encode("utf-8", "surrogatepass") <= s.encode("utf-8", "surrogatepass") and (
            high is None or s.encode("utf-8", "surrogatepass") < high.encode("utf-8", "surrogatepass")
        )
        assert inside == s.startswith(prefix)


@settings(max_examples=examples(300))
@given(st.lists(st.text(alphabet=st.characters(categories=("L", "M", "N", "Zs", "Po")), min_size=1, max_size=8), min_size=1, max_size=4))
def test_every_word_of_a_name_finds_it_by_any_of_its_prefixes(parts: list[str]) -> None:
    name = " ".join(parts)
    found = names.words(name)
    for word in found:
        for end in range(1, len(word) + 1):
            query = names.parse_query(word[:end]) if not word[:end].isdigit() else None
            if isinstance(query, names.NameQuery):
                assert all(any(w.startswith(q) for w in found) for q in query.words)


def test_a_cursor_gives_back_its_position_and_only_to_its_own_list_and_query() -> None:
    cursor = cursors.encode("search", "name:joao", [0, "joao", "joao da silva", "52998224725"])
    assert cursors.decode(cursor, "search", "name:joao", (int, str, str, str)) == [0, "joao", "joao da silva", "52998224725"]
    with pytest.raises(cursors.InvalidCursor, match="another"):
        cursors.decode(cursor, "search", "name:maria", (int, str, str, str))
    with pytest.raises(cursors.InvalidCursor, match="another"):
        cursors.decode(cursor, "audit", "name:joao", (int, str, str, str))
    with pytest.raises(cursors.InvalidCursor):
        cursors.decode(cursor, "search", "name:joao", (int,))  # another shape


@pytest.mark.parametrize(
    "text",
    ["", "x", "!!!!", "não", "W10", "WyJhIl0", "e30", "W1tbW1tbW1tbXV1dXV1dXV1d", "Wy" + "W" * 3000,
     cursors.encode("search", "name:joao", ["0", "joao", "joao", "1"])],
)
def test_anything_else_is_not_a_cursor(text: str) -> None:
    with pytest.raises(cursors.InvalidCursor):
        cursors.decode(text, "search", "name:joao", (int, str, str, str))


@settings(max_examples=examples(300))
@given(st.text(max_size=200))
def test_no_text_makes_decoding_fail_other_than_as_an_invalid_cursor(text: str) -> None:
    try:
        cursors.decode(text, "audit", "", (int,))
    except cursors.InvalidCursor:
        pass
