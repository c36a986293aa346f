"""``faturamento``: start (or follow) a billing run with a progress bar, or take what it issued.

The run itself is the server's (``POST /faturamento``); the console polls its
state (``/getFaturamento``) and draws the bar on stderr when a person watches
it, nothing otherwise. The summary goes to stdout, or the run's JSON with
``--json``. ``--resultado csv|jsonl`` writes every bill the run issued to
stdout as the server streams them.
"""

from __future__ import annotations

import argparse
import codecs
import json
from collections.abc import Mapping
from typing import TextIO

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from clients.api import MeterdClient

from .export import Progress
from .messages import Messages
from .render import Renderer

__all__ = ["RUNNING", "Output", "follow", "write_result"]

RUNNING = "executando"


async def follow(
    args: argparse.Namespace,
    client: MeterdClient,
    m: Messages,
    renderer: Renderer,
    stdout: TextIO,
    *,
    clock: IReactorTime,
    poll: float,
    progress: Progress | None,
) -> bool:
    """Start the run of ``--periodo`` (or follow ``--execucao``) until it is over; whether it completed."""
    state = await (client.billing_run(args.execucao) if args.execucao else client.start_billing(args.periodo))
    try:
        while state["estado"] == RUNNING:
            if progress is not None:
                progress.update(state["processados"], state["clientes"], force=True,
                                referencia=renderer.reference(state["referencia"]), emitidas=renderer.num(state["emitidas"], 0))
            await deferLater(clock, poll, lambda: None)
            state = await client.billing_run(state["execucao"])
    finally:
        if progress is not None:
            progress.clear()
    stdout.write(json.dumps(state, ensure_ascii=False, indent=2) + "\n" if args.json else renderer.billing_run(state))
    return bool(state["estado"] == "concluida")


async def write_result(args: argparse.Namespace, client: MeterdClient, stdout: TextIO) -> None:
    """Every bill of the run, as CSV or JSON Lines, to ``stdout`` as it arrives (never whole in memory)."""
    execucao = args.execucao or (await client.billing_run(None))["execucao"]  # the latest run by default
    out = Output(stdout)
    await client.billing_result(execucao, args.resultado, out)
    out.close()


class Output:
    """A download's UTF-8 body straight to a text stream (:class:`clients.api.Receiver`), decoded as it arrives."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()  # a character may straddle two pieces

    def begin(self, headers: Mapping[str, str]) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.stream.write(self.decoder.decode(data))

    def close(self) -> None:
        self.stream.write(self.decoder.decode(b"", final=True))
