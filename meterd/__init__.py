"""meterd: smart-meter head-end and billing server."""

__version__ = "0.2.0"
