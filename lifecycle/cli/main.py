"""The ``lifecycle`` command line.

Start-up stays fast: each command imports the heavy libraries it needs inside
its own body. Errors a user can fix print one line and exit with status 1. The commands
live in one module per group and register on the shared app when imported here.
"""

from __future__ import annotations

from lifecycle.cli.common import app

# Importing a group registers its commands on the app, in this order in --help.
# isort: off
from lifecycle.cli import models  # noqa: F401
from lifecycle.cli import serving  # noqa: F401
from lifecycle.cli import monitoring  # noqa: F401
from lifecycle.cli import labels  # noqa: F401
from lifecycle.cli import loop  # noqa: F401
# isort: on

__all__ = ["app"]
