"""The ``edgeq`` command group. Commands live one module each and load when used.

Loading lazily (click's "complex" example) keeps ``edgeq --help`` fast, keeps
TensorFlow and paramiko out of commands that don't need them, and means no module
imports this one: command modules share ``edgeq.cli.common`` only, so there are no
import circles.
"""

from __future__ import annotations

import functools
import importlib

import click

from edgeq import __version__
from edgeq.cli.common import EdgeqGroup, add_verbosity_options, refuse_outputs_over_inputs

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a job stopped by Ctrl-C

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
    """Finds each command in its module only when asked for it.

    Ctrl-C (KeyboardInterrupt) anywhere in a command ends it with exit 130 and one line on
    stderr, never click's "Aborted!" with exit 1, which a nightly job would read as a failed
    gate. What a command keeps on an interrupt (a search's findings, evaluate's finished
    devices) it writes before the interrupt reaches here.
    """

    def list_commands(self, ctx) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx, name: str):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return guard_outputs(add_verbosity_options(getattr(importlib.import_module(module), attribute)))

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt:
            _interrupted()

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _interrupted(ctx)


def _interrupted(ctx=None):
    click.echo("edgeq: interrupted (Ctrl-C)", err=True)
    if ctx is not None:
        ctx.exit(EXIT_INTERRUPTED)
    raise click.exceptions.Exit(EXIT_INTERRUPTED)


def guard_outputs(command: click.Command) -> click.Command:
    """Run ``refuse_outputs_over_inputs`` before the command (and each subcommand), once."""
    for sub in getattr(command, "commands", {}).values():
        guard_outputs(sub)
    inner = command.callback
    if inner is None or getattr(inner, "edgeq_guarded", False):
        return command

    @functools.wraps(inner)
    def guarded(*args, **kwargs):
        refuse_outputs_over_inputs(click.get_current_context())
        return inner(*args, **kwargs)

    guarded.edgeq_guarded = True
    command.callback = guarded
    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def main():
    """Find out whether dynamic-range quantization breaks your model on the real device."""


add_verbosity_options(main)  # `edgeq -v evaluate` as well as `edgeq evaluate -v`
