"""The domain modules import nothing from Twisted, not even through the meterd modules they import.

They hold the rules (numbers, readings, periods, registers, the bill, the
payment codes, the alarm rules, the portal's formats...) as plain functions,
testable and reusable without a reactor; Twisted code is the adapter around them.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PURE = [
    "meterd.numbers", "meterd.readings", "meterd.datagram", "meterd.screen", "meterd.registers", "meterd.periods",
    "meterd.taxid", "meterd.tariff", "meterd.billing", "meterd.pix", "meterd.arrecadacao", "meterd.paycodes",
    "meterd.credentials", "meterd.alarm_rules", "meterd.alarm_book", "meterd.alarm_text", "meterd.store.plan",
    "meterd.bill_cache", "meterd.web.routes", "meterd.portal.sessions", "meterd.portal.csrf", "meterd.portal.sse",
    "meterd.portal.throttle", "meterd.portal.routes", "meterd.portal.estimates", "meterd.portal.fmt",
    "meterd.portal.catalog", "meterd.portal.charts", "meterd.names", "meterd.web.cursors", "meterd.web.operations_openapi",
    "meterd.exports", "meterd.web.formats",
]  # fmt: skip


def _path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


@cache
def imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports, directly or through meterd's own modules."""
    path = _path(module)
    assert path is not None, module
    tree = ast.parse(path.read_text(encoding="utf-8"))
    direct = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    direct |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    direct |= {  # from meterd.portal import fmt: a module, not a name
        f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0
        for a in n.names if _path(f"{n.module}.{a.name}") is not None
    }
    found = set(direct)
    for name in direct:
        if name.split(".")[0] == "meterd" and _path(name) is not None and name != module:
            found |= imports(name)
    return frozenset(found)


@pytest.mark.parametrize("module", PURE)
def test_domain_module_imports_nothing_from_twisted(module: str) -> None:
    twisted = sorted(m for m in imports(module) if m.split(".")[0] == "twisted")
    assert not twisted, f"{module} imports {twisted}"


def test_the_check_sees_an_import_through_another_module() -> None:
    assert any(m.split(".")[0] == "twisted" for m in imports("meterd.web.api"))
    assert {"meterd.datagram", "meterd.numbers"} <= imports("meterd.screen")  # numbers only through readings
