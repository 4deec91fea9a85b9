"""The command line: ``main`` is the group; each command is a module of its own (see ``main``)."""

from edgeq.cli.main import main

__all__ = ["main"]
