"""``python -m clients.console``."""

import sys

from clients.console.cli import main

if __name__ == "__main__":
    sys.exit(main())
