"""Synthetic Brazilian people for the search benchmark: names with accents, as common as they are in Brazil.

Frequencies are rough (the IBGE's 2010 census orders of magnitude: Silva
and Santos far ahead among surnames, Maria and José among first names), so
a word like "joao" matches a few percent of the customers and "silva" a
good tenth, as in a real utility's base. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from meterd.taxid import make_cnpj, make_cpf

__all__ = ["people"]

# (name, weight)
FIRST = [
    ("Maria", 60), ("José", 30), ("Ana", 25), ("João", 22), ("Antônio", 18), ("Francisco", 15), ("Carlos", 14),
    ("Paulo", 13), ("Pedro", 12), ("Lucas", 11), ("Luiz", 10), ("Marcos", 10), ("Luís", 8), ("Gabriel", 8),
    ("Rafael", 8), ("Francisca", 8), ("Daniel", 7), ("Marcelo", 7), ("Bruno", 7), ("Eduardo", 6), ("Felipe", 6),
    ("Raimundo", 6), ("Rodrigo", 6), ("Antônia", 6), ("Adriana", 6), ("Juliana", 6), ("Márcia", 5), ("Fernanda", 5),
    ("Patrícia", 5), ("Aline", 5), ("Sebastião", 4), ("Fábio", 4), ("Márcio", 4), ("Vinícius", 4), ("Sandra", 4),
    ("Camila", 4), ("Amanda", 4), ("Bruna", 4), ("Jéssica", 4), ("Letícia", 4), ("Júlia", 4), ("Luciana", 4),
    ("Vanessa", 4), ("Mariana", 4), ("Gabriela", 4), ("Beatriz", 3), ("Lúcia", 3), ("Cecília", 2), ("Luíza", 3),
    ("Débora", 2), ("Tânia", 2), ("Mônica", 2), ("Rosângela", 2), ("Sônia", 2), ("Joana", 2), ("Raquel", 2),
    ("Helena", 2), ("Caio", 2), ("Otávio", 1), ("Ícaro", 1), ("Joaquim", 2), ("Jorge", 3), ("Jonas", 1),
    ("Conceição", 2), ("Irene", 1), ("Zélia", 1), ("Iracema", 1), ("Thaís", 2), ("Cláudia", 3), ("André", 4),
]
MIDDLE = [
    ("", 50), ("de Jesus", 6), ("Aparecida", 6), ("Cristina", 4), ("Eduardo", 3), ("Henrique", 3), ("Luiz", 3),
    ("Carlos", 3), ("Fernanda", 2), ("Vitória", 2), ("Conceição", 2), ("Maria", 3), ("José", 3), ("Antônio", 2),
    ("das Graças", 2), ("do Carmo", 2), ("de Fátima", 3), ("Júnior", 1), ("Inês", 1), ("Luísa", 1),
]
SURNAMES = [
    ("Silva", 100), ("Santos", 60), ("Oliveira", 40), ("Souza", 35), ("Rodrigues", 25), ("Ferreira", 25),
    ("Alves", 25), ("Pereira", 25), ("Lima", 22), ("Gomes", 20), ("Costa", 18), ("Ribeiro", 18), ("Martins", 17),
    ("Carvalho", 15), ("Almeida", 14), ("Lopes", 13), ("Soares", 12), ("Fernandes", 12), ("Vieira", 12),
    ("Barbosa", 11), ("Rocha", 11), ("Dias", 11), ("Nascimento", 11), ("Andrade", 10), ("Moreira", 10),
    ("Nunes", 10), ("Marques", 9), ("Machado", 9), ("Mendes", 9), ("Freitas", 9), ("Cardoso", 8), ("Ramos", 8),
    ("Gonçalves", 8), ("Santana", 8), ("Teixeira", 8), ("Araújo", 8), ("Conceição", 5), ("Brandão", 3),
    ("Falcão", 2), ("Magalhães", 3), ("Guimarães", 3), ("Simões", 2), ("Romão", 1), ("Assunção", 2),
    ("D'Ávila", 1), ("Estêvão", 1), ("Conrado", 1), ("Leão", 2), ("Sampaio", 2), ("Tavares", 3), ("Bezerra", 4),
    ("Cavalcanti", 3), ("Queiroz", 2), ("Moraes", 3), ("Pinto", 4), ("Xavier", 1), ("Zanetti", 1), ("Müller", 1),
]
COMPANIES = ["Comércio", "Padaria", "Mercado", "Oficina", "Farmácia", "Restaurante", "Açougue", "Posto", "Distribuidora"]


def _pick(rng: random.Random, table: list[tuple[str, int]]) -> str:
    names, weights = zip(*table)
    return rng.choices(names, weights)[0]


def people(count: int, seed: int = 29) -> Iterator[tuple[str, str]]:
    """``count`` distinct (CPF or CNPJ digits, name): nine in ten people, one in ten businesses."""
    rng = random.Random(seed)
    seen: set[str] = set()
    while len(seen) < count:
        if rng.random() < 0.9:
            cid = make_cpf(f"{rng.randrange(1, 10**9):09d}")
            parts = [_pick(rng, FIRST), _pick(rng, MIDDLE), _pick(rng, SURNAMES)]
            if rng.random() < 0.6:
                parts.insert(2, rng.choice(["da", "dos", "de", ""]) + " " + _pick(rng, SURNAMES))
            name = " ".join(" ".join(parts).split())
        else:
            cid = make_cnpj(f"{rng.randrange(1, 10**8):08d}0001")
            name = f"{rng.choice(COMPANIES)} {_pick(rng, SURNAMES)} {_pick(rng, FIRST)} Ltda"
        if cid in seen:
            continue
        seen.add(cid)
        yield cid, name
