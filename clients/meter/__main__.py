"""Entry point: ``python -m clients.meter`` (see :mod:`clients.meter.cli`)."""

import sys

from clients.meter.cli import main

if __name__ == "__main__":
    sys.exit(main())
