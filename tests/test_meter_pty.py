"""The meter simulator in a real terminal (a pty at 80×24) against a real ``twistd -n meterd``.

Its live status line is redrawn in place twice a second; if it were wider
than the terminal, every redraw would wrap and scroll the screen by a line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import pytest
from rich.cells import cell_len

from tests.pty_terminal import PtyProcess, client_env, lines_of, strip_escapes
from tests.support import ROOT, Twistd

pytestmark = pytest.mark.slow

#: A redraw of the status line: carriage return, the text, erase to end of line.
STATUS = re.compile(r"\r([^\r\n\x1b][^\r\n]*?)\x1b\[K")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twistd]:
    live = Twistd(tmp_path_factory.mktemp("meterd") / "meterd-data").start()
    yield live
    live.stop()


def test_live_output_never_wraps_at_80_columns(server: Twistd) -> None:
    argv = [
        sys.executable, "-m", "clients.meter", "--provision", "--server", server.url,
        "--udp", f"127.0.0.1:{server.udp_port}", "--data-dir", str(server.data_dir),
        "--interval", "1", "--backfill", "0.1", "--seed", "7",
    ]  # fmt: skip
    term = PtyProcess(argv, cols=80, rows=24, env=client_env(), cwd=ROOT)
    try:
        term.expect(r"backfill \[", timeout=30)
        term.expect(r"backfill done", timeout=60)
        at = term.mark()
        term.expect(r"acked [1-9]", start=at, timeout=30)  # live, and the server answers
        term.send("status\n")
        term.expect(r"\n\s*sent \d+", start=at)
        term.send("quit\n")
        assert term.wait(30) == 0
        output = term.output
    finally:
        term.close()
    redraws = [strip_escapes(m.group(1)) for m in STATUS.finditer(output)]
    assert any(r.startswith("backfill [") for r in redraws) and any(r.startswith("sent ") for r in redraws)
    assert max(cell_len(r) for r in redraws) <= 79
    # the messages too (the provisioned key, the status asked for): broken
    # between words, never by the terminal
    assert max(cell_len(line) for line in lines_of(output)) <= 79
    key = re.search(r"key\s+([0-9a-f]{64})", strip_escapes(output))
    assert key is not None  # kept whole, on a line of its own if need be
