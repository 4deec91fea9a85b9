"""``edgeq --help`` lists every command from ``main.COMMANDS`` alone: no command module is imported for
it, and each entry's short help is, word for word, what click makes of the command's own help, so the
table and the commands can never drift apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edgeq.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
COMMAND_MODULES = sorted({entry.target.split(":")[0] for entry in COMMANDS.values()})
HEAVY = ("tensorflow", "keras", "paramiko", "ai_edge_litert", "tflite_runtime", "ai_edge_quantizer")

# a fresh interpreter: what `edgeq --help` leaves in sys.modules
CHILD = """
import json, sys
from edgeq.cli.main import main
try:
    main(["--help"], prog_name="edgeq")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def test_top_level_help_imports_no_command_module():
    shown = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert shown.returncode == 0, shown.stderr
    *page, last = shown.stdout.strip().splitlines()
    result = json.loads(last)
    assert result["code"] == 0
    loaded = set(result["modules"])
    assert not loaded & set(COMMAND_MODULES), sorted(loaded & set(COMMAND_MODULES))
    cli = sorted(m for m in loaded if m.startswith("edgeq.cli."))
    assert cli == ["edgeq.cli.common", "edgeq.cli.main"], cli  # the group and what it is built from, nothing else
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    text = "\n".join(page)
    assert all(f"  {name} " in text for name in COMMANDS), text


def _real(name: str) -> click.Command:
    return main.get_command(click.Context(main, info_name="edgeq"), name)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_table_says_what_the_command_says(name):
    command = _real(name)
    assert command is not None and not command.hidden
    assert COMMANDS[name].short_help == command.get_short_help_str(limit=10**6), (
        f"main.COMMANDS[{name!r}].short_help is out of date: copy the command's first help sentence")


@pytest.mark.parametrize("width", [50, 80, 120, 200])
def test_the_command_list_is_the_one_click_makes_from_the_commands(width):
    ctx = click.Context(main, info_name="edgeq", terminal_width=width, max_content_width=width)
    lazy, eager = ctx.make_formatter(), ctx.make_formatter()
    main.format_commands(ctx, lazy)  # from the table
    click.Group.format_commands(main, ctx, eager)  # click's own: imports every command for its help
    assert lazy.getvalue() == eager.getvalue()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_still_has_its_own_help(name):
    shown = CliRunner().invoke(main, [name, "--help"], prog_name="edgeq")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"Usage: edgeq {name} ")


def test_an_unknown_command_still_fails_as_a_usage_error():
    for args in (["nope"], ["nope", "--help"]):
        shown = CliRunner().invoke(main, args, prog_name="edgeq")
        assert shown.exit_code == 2
        assert "No such command 'nope'" in shown.output
