"""The ``edgeq`` command group. Commands live one module each and load when used.

Loading lazily (click's "complex" example) keeps ``edgeq --help`` fast, keeps
TensorFlow and paramiko out of commands that don't need them, and means no module
imports this one: command modules share ``edgeq.cli.common`` only, so there are no
import circles.
"""

from __future__ import annotations

import importlib

import click

from edgeq import __version__
from edgeq.cli.common import EdgeqGroup, add_verbosity_options

COMMANDS = {  # name -> "module:attribute"
    "compare": "edgeq.cli.compare:compare",
    "convert": "edgeq.cli.convert:convert",
    "devices": "edgeq.cli.devices:devices",
    "evaluate": "edgeq.cli.evaluate:evaluate",
    "fix": "edgeq.cli.fix:fix",
    "history": "edgeq.cli.history:history",
    "inputs": "edgeq.cli.inputs:inputs",
    "localize": "edgeq.cli.localize:localize",
    "report": "edgeq.cli.history:report",
    "run": "edgeq.cli.run:run",
    "soak": "edgeq.cli.soak:soak",
}


class LazyGroup(EdgeqGroup):
    """Finds each command in its module only when asked for it."""

    def list_commands(self, ctx) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx, name: str):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return add_verbosity_options(getattr(importlib.import_module(module), attribute))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def main():
    """Find out whether dynamic-range quantization breaks your model on the real device."""


add_verbosity_options(main)  # `edgeq -v evaluate` as well as `edgeq evaluate -v`
