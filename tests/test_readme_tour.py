"""The README's API tour, run as printed with curl against a live ``twistd -n meterd``.

The tour is the README's ``sh`` block that reads ``meterd-data/operator.token``.
It runs where the README runs it, beside the server's ``./meterd-data``; the
one thing changed is the address, ``localhost:8888``, which becomes the test
server's free port. Every curl must get a 2xx, except where its own comment
names the status it gets (``# 404 bill_not_issued for Ana``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, Twistd

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed: the README's tour uses it"),
]

STATUS = "@@status="


def tour() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "cat meterd-data/operator.token" in b]
    return block


def expected_statuses(script: str) -> list[int | None]:
    """Per curl, in order: the status its comment names, or None for any 2xx."""
    commands = re.sub(r"\\\n\s*", " ", script).splitlines()
    expected: list[int | None] = []
    for command in commands:
        if command.startswith("curl "):
            named = re.search(r"#\s*(\d{3})\b", command)
            expected.append(int(named[1]) if named else None)
    return expected


def test_the_api_tour_runs_as_printed(tmp_path: Path) -> None:
    script = tour()
    expected = expected_statuses(script)
    assert len(expected) > 20 and expected.count(None) > 20  # the tour, not some other block
    server = Twistd(tmp_path / "meterd-data").start()
    try:
        address = server.url.removeprefix("http://")
        runnable = script.replace("localhost:8888", address).replace("curl -s ", f"curl -s -w '\\n{STATUS}%{{http_code}}\\n' ")
        done = subprocess.run(["bash", "-c", runnable], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        statuses = [int(s) for s in re.findall(rf"^{STATUS}(\d{{3}})$", done.stdout, re.M)]
        answers = re.split(rf"^{STATUS}\d{{3}}$", done.stdout, flags=re.M)
        assert len(statuses) == len(expected), done.stdout[-3000:]
        for n, (got, want) in enumerate(zip(statuses, expected)):
            assert (200 <= got < 300) if want is None else got == want, f"curl #{n + 1} answered {got}: {answers[n].strip()[:500]}"
        # what the files the tour downloads hold: the CSVs named by the server
        assert sorted(p.name for p in tmp_path.glob("*.csv")) == sorted(
            p.name for p in tmp_path.glob("*.csv") if p.name.startswith(("leituras-Ana-12345678909-", "historico-Ana-12345678909-"))
        ) and len(list(tmp_path.glob("*.csv"))) == 2
    finally:
        server.stop()
