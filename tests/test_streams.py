"""Issue 9 item 16/17: results on stdout, progress and diagnostics on stderr, for every
command; -q and -v everywhere; progress lines in non-TTY logs; the tools' chatter kept
out of the terminal unless -v; numbers in the unit people read them in.

The commands run as real processes with pipes (not CliRunner, which mixes the streams),
the way a CI job sees them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeq.cli.main import COMMANDS, main
from edgeq.reports.units import duration_text

EDGEQ = [sys.executable, "-m", "edgeq"]
PROGRESS = re.compile(r"^\[\s*\d+\.\ds\] ")
TOOL_CHATTER = re.compile(r"^[IWE]0000 |absl::|cpu_feature_guard|TensorFlow binary is optimized", re.M)


def edgeq(args, cwd, code=0):
    """As a user's shell runs it: TF_CPP_MIN_LOG_LEVEL (which the test session sets) unset."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run(EDGEQ + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == code, run.stdout + run.stderr
    return run


def strict(text: str):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The built-in example, JSON to stdout: one run the checks below read."""
    folder = tmp_path_factory.mktemp("streams")
    return folder, edgeq(["evaluate", "-o", "out", "--no-history", "--json", "-"], folder)


def test_json_to_stdout_is_the_whole_of_stdout(evaluated):
    _, run = evaluated
    report = strict(run.stdout)
    assert report["verdict"] in ("robust", "degraded", "catastrophic") and "categories" in report


def test_the_human_summary_and_progress_go_to_stderr_as_plain_lines(evaluated):
    folder, run = evaluated
    progress = [line for line in run.stderr.splitlines() if PROGRESS.match(line)]
    assert any(line.endswith("convert …") for line in progress), run.stderr
    assert any("quant:" in line and "(100 %)" in line for line in progress), run.stderr
    assert "verdict:" in run.stderr and "float vs quantized" in run.stderr
    assert "\x1b[" not in run.stderr  # no terminal control codes in a log


def test_tool_chatter_goes_to_a_log_beside_the_models(evaluated):
    folder, run = evaluated
    assert not TOOL_CHATTER.search(run.stderr), run.stderr
    logs = list((folder / "out" / "models").glob("*.convert.log"))
    assert len(logs) == 1  # what the converter printed (TensorFlow may print nothing once imported)


def test_latencies_are_shown_in_their_unit(evaluated):
    _, run = evaluated
    line = next(line for line in run.stderr.splitlines() if line.startswith("latency p50/p99"))
    assert re.search(r"float \d[\d.]* (µs|ms|s) / \d[\d.]* (µs|ms|s)", line), line
    assert "0.00" not in line


def test_results_go_to_stdout_without_json(tmp_path):
    run = edgeq(["evaluate", "-o", "out", "--no-history"], tmp_path)
    assert "verdict:" in run.stdout and "float vs quantized" in run.stdout
    assert "verdict:" not in run.stderr
    assert any(PROGRESS.match(line) for line in run.stderr.splitlines())


def test_quiet_prints_the_verdict_line_only_and_still_names_a_failed_gate(tmp_path):
    run = edgeq(["evaluate", "-o", "out", "--no-history", "-q", "--fail-on", "drop=0.0001"], tmp_path, code=1)
    assert re.fullmatch(r"(robust|degraded|catastrophic) \(worst: [\w+-]+(/\d)?\)\n", run.stdout), run.stdout
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgeq: gate failed: drop limit 0.0001, observed "), run.stderr
    assert " at " in lines[0]  # where it was crossed


def test_verbose_shows_the_converters_own_output(tmp_path):
    from edgeq.evaluate import EXAMPLE_MODEL

    run = edgeq(["convert", str(EXAMPLE_MODEL), "-o", "m", "-v"], tmp_path)
    assert TOOL_CHATTER.search(run.stderr), run.stderr
    assert not list((tmp_path / "m").glob("*.convert.log"))
    plain = edgeq(["convert", str(EXAMPLE_MODEL), "-o", "m2"], tmp_path)
    assert not TOOL_CHATTER.search(plain.stderr) and list((tmp_path / "m2").glob("*.convert.log"))
    assert plain.stdout.splitlines()[0].endswith("digits_mlp.float.tflite")


def test_devices_check_json_to_stdout_and_a_table_in_80_columns(tmp_path):
    run = edgeq(["devices", "check", "local", "--json", "-"], tmp_path)
    assert strict(run.stdout)["local"]["ok"] is True
    table = edgeq(["devices", "check", "local"], tmp_path).stdout
    assert "local" in table and max(len(line) for line in table.splitlines()) <= 80, table


def _all_commands():
    for name in COMMANDS:
        command = main.get_command(None, name)
        subcommands = getattr(command, "commands", {})
        yield from ([[name, sub] for sub in subcommands] if subcommands else [[name]])


@pytest.mark.parametrize("path", list(_all_commands()), ids=" ".join)
def test_every_command_takes_quiet_and_verbose(path):
    shown = CliRunner().invoke(main, path + ["--help"])
    assert shown.exit_code == 0, shown.output
    assert "-q, --quiet" in shown.output and "-v, --verbose" in shown.output


def test_durations_in_the_unit_people_read():
    assert [duration_text(v) for v in (0.0031, 0.5, 1.25, 250.0, 2400.0)] == \
        ["3.1 µs", "500 µs", "1.25 ms", "250 ms", "2.4 s"]
    assert duration_text(None) == duration_text(float("nan")) == duration_text("fast") == "—"
