"""The ``edgeq`` command group. Commands live one module each and load when used.

Loading lazily (click's "complex" example) keeps ``edgeq --help`` fast, keeps
TensorFlow and paramiko out of commands that don't need them, and means no module
imports this one: command modules share ``edgeq.cli.common`` only, so there are no
import circles. ``edgeq --help`` lists the commands from ``COMMANDS`` alone (each entry
carries the command's short help), so it imports no command module;
``tests/test_cli_help.py`` checks that each entry's words are the command's own.
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple

import click

from edgeq import __version__
from edgeq.cli.common import (EXIT_INTERRUPTED, EdgeqGroup, add_verbosity_options, ignore_further_interrupts,
                              refuse_outputs_over_inputs)


class Entry(NamedTuple):
    """One command: where it lives ("module:attribute") and its short help, word for word what click makes
    of the command's own help (the first sentence of its docstring), so ``edgeq --help`` needs no import."""

    target: str
    short_help: str


COMMANDS = {
    "compare": Entry("edgeq.cli.compare:compare",
                     "Compare two run directories (REF = float, CAND = quantized), offline, output by output."),
    "convert": Entry("edgeq.cli.convert:convert",
                     "Convert MODEL (.keras/.h5, SavedModel folder or float .tflite) to float + quantized TFLite."),
    "deploy": Entry("edgeq.cli.deploy:deploy",
                    "Install an evaluated model where the application loads it, with canary, waves and rollback."),
    "devices": Entry("edgeq.cli.devices:devices", "The device inventory."),
    "evaluate": Entry("edgeq.cli.evaluate:evaluate",
                      "The main job: does quantization hurt MODEL on any kind of input, on DEVICE?"),
    "fix": Entry("edgeq.cli.fix:fix",
                 "Write OUTDIR/<stem>.fixed.tflite (default: the current folder): MODEL with the fewest ops float "
                 "that keep every field condition's drop under the target, verified on the suite."),
    "history": Entry("edgeq.cli.history:history",
                     "Trends per device and model (latency, energy, accuracy drop) and regressions vs a baseline."),
    "inputs": Entry("edgeq.cli.inputs:inputs", "Build and check input sets."),
    "localize": Entry("edgeq.cli.localize:localize",
                      "Rank the ops of MODEL (.keras/.h5, SavedModel or float .tflite) that break under dynamic "
                      "range."),
    "report": Entry("edgeq.cli.history:report",
                    "Write an HTML page for SOURCE: an evaluate output folder, a run pair, or a results database."),
    "run": Entry("edgeq.cli.run:run",
                 "Run MODEL over an input set on device(s); outputs and latencies land in OUTDIR."),
    "soak": Entry("edgeq.cli.soak:soak",
                  "Run MODEL on DEVICE(s) for --duration, detached from this session; gate on drift and leaks."),
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
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module, attribute = entry.target.split(":")
        return guard_outputs(add_verbosity_options(getattr(importlib.import_module(module), attribute)))

    def format_commands(self, ctx, formatter) -> None:
        """The "Commands" list of ``edgeq --help`` from ``COMMANDS``, laid out as click lays it out
        (a help text too long for the terminal is shortened the same way), importing no command."""
        rows = [(name, COMMANDS[name].short_help) for name in self.list_commands(ctx)]
        if not rows:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in rows)
        with formatter.section("Commands"):
            formatter.write_dl([(name, click.Command(name, help=text).get_short_help_str(limit))
                                for name, text in rows])

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
    ignore_further_interrupts()
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
