"""README examples name only flags the commands really have: every `edgeq COMMAND … --flag`
in the README (inline code or a code block) is checked against the command's own options,
so a renamed or removed flag cannot linger in the docs."""

from __future__ import annotations

import re
from pathlib import Path

import click

from edgeq.cli.main import main

README = Path(__file__).resolve().parent.parent / "README.md"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OTHER_PROGRAM = re.compile(r"\b(pip|bash|python|scripts/|start)\b")


def command_flags(command: click.Command) -> set[str]:
    ctx = click.Context(command)
    return {opt for param in command.get_params(ctx) for opt in (*param.opts, *param.secondary_opts)
            if opt.startswith("--")}


def resolve(words: list[str]) -> tuple[list[str], click.Command] | None:
    """The command a README invocation names (``inputs risky``…) and the command object."""
    command, path = main, []
    for word in words:
        if not isinstance(command, click.Group):
            break
        sub = command.get_command(click.Context(command), word)
        if sub is None:
            break
        command, path = sub, path + [word]
    return (path, command) if path else None


def invocations(text: str):
    """(line number, the words after `edgeq`) of each invocation, in code spans and code blocks."""
    in_block = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            in_block = not in_block
            continue
        spans = [line] if in_block else re.findall(r"`([^`]*)`", line)
        for span in spans:
            for part in re.split(r"\bedgeq\s+", " " + span)[1:]:
                part = re.split(r"&&|\|\||;|\s#\s|\|(?!\s*-)", part)[0]
                yield number, part


def test_every_flag_the_readme_shows_exists_on_its_command():
    problems, checked = [], 0
    for number, part in invocations(README.read_text()):
        found = resolve(part.split())
        if found is None:
            continue
        path, command = found
        known = command_flags(command)
        for flag in FLAG.findall(part):
            checked += 1
            if flag not in known:
                problems.append(f"README.md:{number}: `edgeq {' '.join(path)}` has no {flag}")
    assert checked > 50, checked  # the scan really read the README's examples
    assert not problems, "\n".join(problems)


def every_command(group: click.Group = main):
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        yield command
        if isinstance(command, click.Group):
            yield from every_command(command)


def test_every_flag_the_readme_names_belongs_to_some_command():
    """Flags named in prose (`--fix-target`) too: each is an option of at least one command.
    Spans that run another program (pip, a script, the board's `start`) are that program's."""
    known = set().union(*(command_flags(c) for c in every_command()))
    named = {(flag, number) for number, line in enumerate(README.read_text().splitlines(), 1)
             for span in re.findall(r"`([^`]*)`", line) if not OTHER_PROGRAM.search(span)
             for flag in FLAG.findall(span)}
    unknown = sorted(f"README.md:{number}: {flag}" for flag, number in named if flag not in known)
    assert not unknown, "\n".join(unknown)
