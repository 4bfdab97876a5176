"""``testenv``: the command line for environments by hand (a thin layer over the library's
:class:`testenv.Environments`). ``testenv --help`` lists the commands and exit codes."""

from __future__ import annotations

from ._exit import ExitCode
from .app import app, main

__all__ = ["ExitCode", "app", "main"]
