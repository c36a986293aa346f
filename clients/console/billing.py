"""``faturamento``: start (or follow) a billing run with a progress bar, or take what it issued.

The run itself is the server's (``POST /faturamento``); the console polls its
state (``/getFaturamento``) and draws the bar on stderr when a person watches
it, nothing otherwise. The summary goes to stdout, or the run's JSON with
``--json``. ``--resultado csv|jsonl`` writes every bill the run issued to
stdout, page by page as the server hands them out.
"""

from __future__ import annotations

import argparse
import json
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from clients.api import MeterdClient

from .messages import Messages
from .render import Renderer
from .waiting import Progress

__all__ = ["RUNNING", "follow", "write_result"]

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
                progress.show(state["processados"], state["clientes"],
                              m("billing.progress", referencia=renderer.reference(state["referencia"]), emitidas=renderer.num(state["emitidas"], 0)))
            await deferLater(clock, poll, lambda: None)
            state = await client.billing_run(state["execucao"])
    finally:
        if progress is not None:
            progress.clear()
    stdout.write(json.dumps(state, ensure_ascii=False, indent=2) + "\n" if args.json else renderer.billing_run(state))
    return bool(state["estado"] == "concluida")


async def write_result(args: argparse.Namespace, client: MeterdClient, stdout: TextIO) -> None:
    """Every bill of the run, as CSV (one header) or JSON Lines, following the server's ``Link`` to each next page."""
    depois, first = 0, True
    while True:
        page, headers = await client.billing_result(args.execucao, args.resultado, depois)
        text = page.decode("utf-8")
        if args.resultado == "csv" and not first:
            text = text.split("\r\n", 1)[1] if "\r\n" in text else ""  # the header once
        stdout.write(text)
        first = False
        after = _next_page(headers)
        if after is None:
            return
        depois = after


def _next_page(headers: dict[str, list[str]]) -> int | None:
    """The ``depois`` of the page a ``Link: <...>; rel="next"`` header names."""
    for link in headers.get("link", []):
        target, _, rel = link.partition(";")
        if 'rel="next"' in rel:
            query = parse_qs(urlsplit(target.strip().strip("<>")).query)
            return int(query["depois"][0])
    return None

