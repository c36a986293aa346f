"""The documentation holds to the code: options, design references, routes, tests named, no work history.

Fast (text and a few imports, no server): part of the fast loop. When the
options change, ``python -m tests.test_docs`` prints the README's option
table as it must now read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meterd.options import Options
from meterd.tariff import default_tariff, loads_tariff
from meterd.web.app import all_routes

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DESIGN = ROOT / "docs" / "design.md"
TEXT_SUFFIXES = {".py", ".md", ".toml", ".cfg", ".txt", ".js", ".css", ".html"}


def text_files(*names: str) -> Iterator[Path]:
    """The text files at these paths (files, or directories searched whole), caches left out."""
    for name in names:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if found.is_file() and found.suffix in TEXT_SUFFIXES and "__pycache__" not in found.parts:
                yield found


# -- the README's option table -------------------------------------------------------------


def _kilo(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda config: f"`{config[key] / 1000:g}`"


#: Defaults that are not shown as the value Options holds: derived at parse time, or kept in another unit.
SHOWN: dict[str, Callable[[dict[str, Any]], str]] = {
    "db": lambda config: "`sqlite:<data-dir>/meterd.sqlite3`" if config["db"] == f"sqlite:{config['data-dir'] / 'meterd.sqlite3'}"
    else f"`{config['db']}`",
    "udp-interface": lambda config: "all interfaces" if config["udp-interface"] == "" else f"`{config['udp-interface']}`",
    "tariff": lambda config: "the built-in tariff (`meterd/default_tariff.toml`)" if config["tariff"] is default_tariff() else "?",
    "limit-kw": _kilo("limit-w"),
    "limit-kwh": _kilo("limit-wh"),
    "meter-mode": lambda config: f"`{config['meter-mode']}` (`interval` with `--no-auth`)",
}
for _name, _field, _unit in (
    ("max-connections", "max_connections", 1),
    ("max-connections-per-address", "max_per_address", 1),
    ("header-timeout", "header_timeout", 1),
    ("body-timeout", "body_timeout", 1),
    ("body-min-rate", "body_min_rate", 1),
    ("max-buffered-bodies", "max_buffered_bodies", 1024 * 1024),
    ("idle-timeout", "idle_timeout", 1),
):  # the HTTP limits, held together in one Limits
    SHOWN[_name] = lambda config, field=_field, unit=_unit: f"`{getattr(config['limits'], field) / unit:g}`"
ACTIONS = {"help", "version"}


def options_table() -> str:
    """The README's table: every option of ``twistd meterd``, its default, and its ``--help`` text."""
    options = Options()
    flags = {name for name in options.longOpt if not name.endswith("=")}
    config = Options()
    config.parseOptions([])  # defaults, with those postOptions derives
    rows = ["| option | default | what it is (`--help`) |", "|---|---|---|"]
    for name in sorted(options.docs):
        if name in ACTIONS:
            default = "—"
        elif name in flags:
            default = "off"
        elif name in SHOWN:
            default = SHOWN[name](config)
        else:
            value = options[name]  # as declared: postOptions makes a Path of --data-dir
            assert isinstance(value, str | int | float) and not isinstance(value, bool), (
                f"--{name}: say in tests/test_docs.py SHOWN how its default {value!r} reads"
            )
            default = f"`{value}`"
        text = " ".join(options.docs[name].split()).replace("|", "\\|")
        rows.append(f"| `--{name}` | {default} | {text} |")
    return "\n".join(rows) + "\n"


def test_the_readme_option_table_is_the_options_of_twistd_meterd() -> None:
    table = options_table()
    assert table in README.read_text(encoding="utf-8"), (
        "README.md's option table differs from meterd/options.py; it must read:\n\n" + table
    )


# -- DESIGN §N references --------------------------------------------------------------------

#: "DESIGN §4", "DESIGN §4, §5", "DESIGN §3, §5, §6": how code and docs cite docs/design.md.
CITATION = re.compile(r"DESIGN §(\d+)((?:, §\d+)*)")
WORD = re.compile(r"\bDESIGN\b(?!_)")


def design_sections() -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", DESIGN.read_text(encoding="utf-8"), re.M)}


def test_design_sections_are_numbered_one_to_n() -> None:
    assert design_sections() == set(range(1, len(design_sections()) + 1))


def test_every_design_reference_names_a_section_of_docs_design_md() -> None:
    sections = design_sections()
    wrong = []
    for path in text_files("README.md", "CHANGELOG.md", "docs", "meterd", "clients", "bench", "tests"):
        if path == Path(__file__).resolve():
            continue
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for word in WORD.finditer(line):
                cited = CITATION.match(line, word.start())
                numbers = [] if cited is None else [int(cited.group(1)), *map(int, re.findall(r"\d+", cited.group(2)))]
                if not numbers or any(n not in sections for n in numbers):
                    wrong.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not wrong, "cite docs/design.md as 'DESIGN §N' with an existing N:\n" + "\n".join(wrong)


def test_the_design_names_every_route_of_the_api() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    api = re.search(r"^## 3\. .*?(?=^## 4\. )", text, re.M | re.S)
    assert api is not None
    documented = set(re.findall(r"^\| `(?:GET|POST) (/[\w.]+)`", api.group(0), re.M))
    assert documented == {r.path for r in all_routes()}


def test_the_tariff_files_the_design_shows_load() -> None:
    blocks = re.findall(r"```toml\n(.*?)```", DESIGN.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 2
    assert loads_tariff(blocks[0], "docs/design.md").empresa is None
    assert loads_tariff(blocks[0] + blocks[1], "docs/design.md").empresa is not None


# -- what the docs name exists ---------------------------------------------------------------


def test_the_tests_the_docs_name_exist() -> None:
    """``tests/test_x.py::test_y`` and ``::test_y`` (the file named last) in the docs are real tests."""
    missing = []
    for path in text_files("README.md", "docs", "bench/README.md"):
        for line in path.read_text(encoding="utf-8").splitlines():
            current = None
            for file, name in re.findall(r"(?:tests/)?(test_\w+\.py)?::(test_\w+)", line):
                current = file or current
                where = [ROOT / "tests" / current] if current else sorted((ROOT / "tests").glob("test_*.py"))
                if not any(re.search(rf"^(async )?def {name}\(", w.read_text(encoding="utf-8"), re.M) for w in where):
                    missing.append(f"{path.relative_to(ROOT)}: {current or ''}::{name}")
            for file in re.findall(r"\btests/(\w+\.py)\b", line):
                if not (ROOT / "tests" / file).exists():
                    missing.append(f"{path.relative_to(ROOT)}: tests/{file}")
    assert not missing, "\n".join(missing)


def test_the_options_the_readme_gives_twistd_meterd_exist() -> None:
    known = {name.rstrip("=") for name in Options().longOpt}
    unknown = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if "twistd" in line and " meterd" in line:
            after = line.split(" meterd", 1)[1]
            unknown += [f"--{o}: {line.strip()}" for o in re.findall(r"(?<![\w-])--([a-z][a-z-]*)", after) if o not in known]
    assert not unknown, "\n".join(unknown)


# -- no work history --------------------------------------------------------------------------

#: The project's before-stop check: docs and comments describe the software as it is, not how it
#: got there (working sessions, issue numbers). The portal's login sessions are the software: in
#: meterd/portal/ "session" is always one, elsewhere the words around it must say so.
HISTORY = re.compile(r"\b(session|sessions)\b|\bissue ?#?[0-9]+", re.I)
ISSUE = re.compile(r"\bissue ?#?[0-9]+", re.I)
SOFTWARE = re.compile(r"session mode|http session|sessions? (cookie|store|id|expir)|login session|session_|_session|Session[A-Z(]", re.I)
PORTAL = ROOT / "meterd" / "portal"


def history_in(path: Path, line: str) -> bool:
    if PORTAL in path.parents:
        return bool(ISSUE.search(line))
    return bool(HISTORY.search(line)) and not SOFTWARE.search(line)


def test_no_work_history_in_the_docs_or_the_code() -> None:
    found = []
    for path in text_files("README.md", "CHANGELOG.md", "docs", "meterd", "clients", "bench"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if history_in(path, line):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not found, "work history in docs or code:\n" + "\n".join(found)


@pytest.mark.parametrize("line", ["the twelfth session's runs", "after the ingest work of issue #8", "issue 8"])
def test_the_history_check_finds_history(line: str) -> None:
    assert history_in(ROOT / "docs" / "performance.md", line)
    assert history_in(PORTAL / "sessions.py", line) == ("issue" in line)


@pytest.mark.parametrize("line", ["the session cookie", "SessionStore(", "a login session", "sessions expire"])
def test_the_history_check_leaves_the_portals_sessions_alone(line: str) -> None:
    assert not history_in(ROOT / "README.md", line)
    assert not history_in(PORTAL / "csrf.py", "login page before any session exists")


if __name__ == "__main__":
    print(options_table(), end="")
