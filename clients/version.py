"""The version the clients print for ``--version``: meterd's package version.

The clients ship in the ``meterd`` distribution, so an installed copy answers
through its metadata. Run from a checkout that was never installed (tests, a
developer's ``python -m clients.console``), there is no metadata, and the
version is read from ``setup.cfg`` beside the package, where it is declared.
"""

from __future__ import annotations

import configparser
from importlib.metadata import PackageNotFoundError, version as _installed_version
from pathlib import Path

__all__ = ["version"]

DISTRIBUTION = "meterd"
SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def version() -> str:
    """meterd's version, or ``"unknown"`` when neither source has one."""
    try:
        return _installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    config = configparser.ConfigParser()
    config.read(SETUP_CFG, encoding="utf-8")
    return config.get("metadata", "version", fallback="unknown")
