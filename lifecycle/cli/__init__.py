"""The command line; the only part of lifecycle that imports flows and monitors."""

from lifecycle.cli.main import app

__all__ = ["app"]
