"""meterd terminal console: ``python -m clients.console`` (DESIGN §8)."""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point; imported lazily so ``import clients.console`` stays cheap."""
    from .cli import main as _main

    return _main(argv)
