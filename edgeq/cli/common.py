"""What every command shares: the error-to-exit-code group, consoles, option sets, progress.

Exit codes (the same for every command): 0 ran, 1 a --fail-on gate was crossed,
2 bad input or usage, 3 a device or connection failed.

Streams (the same for every command): results — tables, summaries, ``--json -`` — go
to stdout; progress, notes and diagnostics to stderr. When ``--json -`` owns stdout the
human summary moves to stderr, so stdout stays one strict JSON document. ``-q`` keeps
only the result line, errors and failed gates; ``-v`` adds diagnostics and the tools'
own chatter (TensorFlow, the quantizer). Every command gets ``-q``/``-v`` from the group.

``-`` means stdout for ``--json`` only. Every other file option (``--html``, ``--junit``,
``-o``) names a file and refuses ``-`` (exit 2): an HTML page, JUnit XML or an input set
on stdout would mix with the human lines, and a file literally named ``-`` is never
what was meant. An output that names one of the command's inputs (the same file after
resolving links), or another output of the same command, is refused before any work
(``refuse_outputs_over_inputs``); so is an existing file inside a folder given as an input.
Ctrl-C ends every command with exit 130 and one line (``edgeq.cli.main``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import click

from edgeq.analysis.rules import MIN_N
from edgeq.errors import EXIT_BAD_INPUT, EXIT_GATE, ConfigError, EdgeqError

path_arg = click.Path(path_type=Path)


class OutputFile(click.ParamType):
    """A file edgeq will write: made absolute once, refused up front when it cannot be a file.

    Resolving once means the file, its folder and the temporary name written beside it
    all come from the same path (a bare ``DIR`` once became ``/inputs/...`` and
    ``/.tmp.part-PID``); refusing before any work means no hour-long evaluate ends in
    "Is a directory" and no half-written ``.part`` file is left next to the folder.
    """

    name = "file"

    def convert(self, value, param, ctx):
        text = os.fspath(value)
        flag = param.opts[-1] if param is not None and param.opts else "output"
        if text == "-":
            if flag not in STDOUT_FLAGS:
                raise ConfigError(f"{flag} -: '-' (stdout) is only for --json; {flag} needs a file path")
            if ctx is not None:  # stdout: human output moves to stderr so stdout stays one JSON document
                ctx.meta[JSON_ON_STDOUT] = True
            return Path(text)
        path = Path(os.path.abspath(os.path.expanduser(text)))
        check_output_file(path, flag, text)
        return path


def check_output_file(path: Path, flag: str, given: str | None = None) -> None:
    """ConfigError (exit 2) when PATH is a folder, ends in a slash, or lies under a file."""
    shown = given or str(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {shown}: is a folder, expected a file path")
    if shown.endswith(("/", os.sep)):
        raise ConfigError(f"{flag} {shown}: ends with '/', so it names a folder; expected a file path")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise ConfigError(f"{flag} {shown}: {blocker} is a file, not a folder")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{flag} {shown}: is not a regular file")


output_file = OutputFile()
STDOUT_FLAGS = ("--json",)  # the only file options where "-" means stdout


def refuse_outputs_over_inputs(ctx: click.Context) -> None:
    """ConfigError (exit 2) when an output file of the command is one of its inputs.

    Outputs are the ``output_file`` options. Inputs are the other path options and
    arguments that name an existing file (compared with ``os.path.samefile``: links and
    hard links are the same file), and for arguments naming a folder (a run directory,
    a SavedModel) every existing file inside it. Two outputs naming one file are refused
    too: the second would replace the first. Called before the command's own code runs
    (``edgeq.cli.main`` wraps every command with it), so nothing is read or written first.
    """
    outputs, files, folders = [], [], []
    for param in ctx.command.params:
        values = ctx.params.get(param.name)
        values = values if isinstance(values, (tuple, list)) else (values,)
        for value in values:
            if value is None or not isinstance(value, (str, os.PathLike)) or os.fspath(value) == "-":
                continue
            if isinstance(param.type, OutputFile):
                outputs.append((_shown_param(param), Path(value)))
            elif isinstance(param.type, click.Path):
                path = Path(os.path.expanduser(os.fspath(value)))
                if path.is_file():
                    files.append((_shown_param(param), path))
                elif path.is_dir() and isinstance(param, click.Argument):
                    folders.append((_shown_param(param), path))
    for k, (flag, path) in enumerate(outputs):
        for other_flag, other in outputs[:k]:
            if os.path.realpath(path) == os.path.realpath(other):
                raise ConfigError(f"{flag} {path}: the same file as {other_flag} {other}; the second would "
                                  "replace the first: give each its own file")
        check_not_an_input(path, flag, files, folders)


def check_not_an_input(path: Path, flag: str, files=(), folders=()) -> None:
    """ConfigError (exit 2) when PATH is one of ``files`` ((name, path) pairs: the same file after
    resolving links) or an existing file inside one of ``folders``."""
    if not path.exists():
        return
    for name, other in files:
        if _same_file(path, other):
            raise ConfigError(f"{flag} {path}: is the input {name} {other} (the same file); refusing to write "
                              "over an input: choose another output path")
    real = Path(os.path.realpath(path))
    for name, folder in folders:
        if real.is_relative_to(os.path.realpath(folder)):
            raise ConfigError(f"{flag} {path}: is a file inside the input {name} {folder}; refusing to write "
                              "over an input: choose another output path")


def check_folder_free(folder: Path, flag: str, marker: str, hint: str = "") -> None:
    """ConfigError (exit 2) when FOLDER already holds MARKER, the file by which an earlier job of the
    same kind is found again (a soak's soak.json): a new job writing there would replace it and
    orphan the first. For commands whose output is a folder (``soak -o``); ``hint`` says what to do."""
    held = Path(folder) / marker
    if held.exists():
        raise ConfigError(f"{flag} {folder}: already holds {held.name} of an earlier job, which a new one would "
                          f"replace{'; ' + hint if hint else ''}; choose another {flag}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _shown_param(param) -> str:
    if isinstance(param, click.Argument):
        return param.human_readable_name
    return max(param.opts, key=len) if param.opts else param.name


def result_line(text: str) -> None:
    """A result for people, as plain text: stdout, or stderr when ``--json -`` owns stdout.
    Printed with -q too: it is the line -q keeps."""
    click.echo(text, err=bool(_meta().get(JSON_ON_STDOUT)))


class EdgeqGroup(click.Group):
    """Turns EdgeqError into one line on stderr and the contract's exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeqError as exc:
            from edgeq.devices.fleet import printable  # a device's text reaches errors too: no escapes, one line

            click.echo(f"edgeq: error: {printable(str(exc), 2000)}", err=True)
            ctx.exit(exc.exit_code)
        except click.BadParameter as exc:  # a bad option value is a bad input like any other: one line
            click.echo(f"edgeq: error: {exc.format_message()}", err=True)
            ctx.exit(EXIT_BAD_INPUT)


JSON_ON_STDOUT, QUIET, VERBOSE = "edgeq.json_on_stdout", "edgeq.quiet", "edgeq.verbose"


def _meta() -> dict:
    ctx = click.get_current_context(silent=True)
    return ctx.meta if ctx is not None else {}


def is_quiet() -> bool:
    return bool(_meta().get(QUIET))


def verbosity() -> int:
    """-1 with -q, 0 by default, the number of -v otherwise."""
    return -1 if is_quiet() else int(_meta().get(VERBOSE, 0))


def _remember(key: str):
    def callback(ctx, param, value):  # a group and its command both have the option: either may set it
        ctx.meta[key] = max(ctx.meta.get(key, 0), int(value or 0))
    return callback


def add_verbosity_options(command: click.Command) -> click.Command:
    """Give a command (and a group's subcommands) -q and -v, once; the values live in ctx.meta."""
    names = {opt for param in command.params for opt in getattr(param, "opts", [])}
    if "-q" not in names:
        command.params.append(click.Option(
            ["-q", "--quiet"], is_flag=True, expose_value=False, is_eager=True, callback=_remember(QUIET),
            help="Only the result line; errors and failed gates still print."))
    if "-v" not in names:
        command.params.append(click.Option(
            ["-v", "--verbose"], count=True, expose_value=False, is_eager=True, callback=_remember(VERBOSE),
            help="More detail: diagnostics and the tools' own output (TensorFlow, quantizer)."))
    for sub in getattr(command, "commands", {}).values():
        add_verbosity_options(sub)
    return command


def console(quiet: bool | None = None):
    """Results for people: stdout (stderr when ``--json -`` owns stdout); silent with -q."""
    from rich.console import Console

    out = Console(stderr=bool(_meta().get(JSON_ON_STDOUT)), quiet=is_quiet() if quiet is None else quiet)
    if not out.is_terminal:  # logs and CI pages are wider than rich's 80-column default (tables stay ≤ 80)
        out.width = max(out.width, 110)
    return out


def diagnostics():
    """Progress, notes and warnings: stderr, silent with -q."""
    from rich.console import Console

    out = Console(stderr=True, quiet=is_quiet())
    if not out.is_terminal:
        out.width = max(out.width, 110)
    return out


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a job stopped by Ctrl-C


def ignore_further_interrupts() -> None:
    """Called once the first Ctrl-C is handled: everything worth keeping is written by then.

    A second SIGINT (an impatient user, a runner that signals twice) while the process exits
    would otherwise kill it by the signal once Python has restored SIGINT's default action,
    instead of the exit code 130 a job gates on (seen in CI as returncode -2).
    """
    import signal
    import threading

    if _running_as_edgeq() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _running_as_edgeq() -> bool:
    """This process is the ``edgeq`` program (its script or ``python -m edgeq``), not a host that
    calls the command group in-process (a test's CliRunner), whose own Ctrl-C must keep working."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return (spec is not None and spec.name == "edgeq.__main__") or Path(sys.argv[0]).name == "edgeq"


def exit_interrupted(line: str):
    """End a command cut short by Ctrl-C: one line on stderr, exit 130."""
    ignore_further_interrupts()
    click.echo(line, err=True)
    sys.exit(EXIT_INTERRUPTED)


def always(line: str) -> None:
    """What -q must not hide: a failed gate, a failed device. stderr, plain text."""
    click.echo(line, err=True)


def write_json_file(path: Path | None, payload: dict) -> None:
    """Checked again here for commands whose --json is not an ``output_file`` option yet:
    ``write_json_atomic`` puts its temporary beside PATH, so a folder must never get there."""
    if path is None:
        return
    if str(path) == "-":
        from edgeq.results import strict_json_dumps

        click.echo(strict_json_dumps(payload))
        return
    from edgeq.results import write_json_atomic
    from edgeq.files import ensure_writable_dir

    given = str(path)
    path = Path(os.path.abspath(os.path.expanduser(given)))
    check_output_file(path, "--json", given)
    ensure_writable_dir(path.parent)
    write_json_atomic(path, payload)


def exit_for_gates(report: dict) -> None:
    failed = [g for g in report.get("gates", []) if g["failed"]]
    for gate in failed:
        always(f"edgeq: gate failed: {describe_gate(gate)}")
    if failed:
        sys.exit(EXIT_GATE)


def describe_gate(gate: dict) -> str:
    """'drop limit 0.05, observed 0.12 at brightness+/3': which gate, what was seen, and where."""
    text = f"{gate.get('gate', '?')} limit {gate.get('limit')}"
    observed = gate.get("observed")
    if observed is not None:
        text += f", observed {observed:.4g}" if isinstance(observed, float) else f", observed {observed}"
    return text + (f" at {gate['where']}" if gate.get("where") else "")


def device_options(f):
    f = click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY", help="Device inventory (edgeq.toml).")(f)
    f = click.option("--tag", help="Every inventory device with this tag (instead of --device).")(f)
    return click.option("--device", default="local", show_default=True,
                        help="Device name(s) from the inventory: NAME or NAME,NAME,…")(f)


def wait_option(f):
    """--wait: queue for a device another edgeq job holds instead of failing at once."""
    return click.option("--wait", "wait_s", type=FiniteFloatRange(min=0), default=0.0, show_default=True,
                        metavar="SECONDS", help="Queue up to this long for a device another edgeq job holds "
                                                "(0: fail at once with exit 3, naming the holder).")(f)


def job_option_names(group: str | None = None, job_kind: str = "run") -> tuple:
    """The job options a command offers, from the agent's table: those of ``job_kind`` with a flag
    (and in ``group``: ``timing`` or ``measure``), in the table's order. A new option offered by
    every command of its group is one line in the table."""
    from device_agents.edgeq_agent.jobs import job_options

    return tuple(o.name for o in job_options(job_kind) if o.flag and group in (None, o.group))


TIMING = job_option_names("timing")
MEASURE = job_option_names("measure")
POWER_HELP = " `device` takes the inventory's power key."


def job_option(option, job_kind: str):
    """A click option made from the agent's JOB_OPTIONS entry: flag, type, default, limits, help."""
    default = option.default_for(job_kind)
    kwargs = {"default": default, "show_default": default is not None, "help": option.help}
    if option.choices is not None:
        choices = list(option.choices) + (["device"] if option.name == "power" else [])
        kwargs["type"] = click.Choice(choices)
        kwargs["help"] += POWER_HELP if option.name == "power" else ""
    elif option.kind is int:
        kwargs["type"] = click.IntRange(min=option.low, max=option.high)
    elif option.kind is float:
        low = option.above if option.above is not None else option.low
        kwargs["type"] = FiniteFloatRange(min=low, max=option.high, min_open=option.above is not None)
    return click.option(option.flag, option.name, **kwargs)


def settings_options(config_class, *names: str, flags: dict | None = None):
    """Click options made from a settings table (``inputs/search/settings``): each named field's
    flag, default and help, read as the field's type; ``check_settings`` then checks the value
    against the field's limits (one line naming the flag). ``flags`` renames a flag for this
    command (evaluate's ``--search-distance``); the command receives the field name, or the
    flag's own name when renamed."""
    from edgeq.inputs.search.settings import settings_of, value_type

    table = settings_of(config_class)

    def decorate(f):
        for name in reversed(names):
            spec, default = table[name]
            flag = (flags or {}).get(name, spec.flag)
            dest = name if flag == spec.flag else flag.lstrip("-").replace("-", "_")
            kind = click.Choice(list(spec.choices)) if spec.choices else value_type(spec, default)
            f = click.option(flag, dest, type=kind, default=default, show_default=default is not None,
                             metavar=spec.metavar, help=spec.help or None)(f)
        return f
    return decorate


class FiniteFloatRange(click.FloatRange):
    """A FloatRange that refuses nan and ±inf: ``--min-duration inf`` would never end,
    and nan passes every ``<`` and ``>`` check."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def job_options_for(names: tuple, job_kind: str = "run"):
    """Click options for these job options; the command receives them under their job names."""
    from device_agents.edgeq_agent.jobs import JOB_OPTIONS

    table = {o.name: o for o in JOB_OPTIONS}

    def decorate(f):
        for name in reversed(names):
            f = job_option(table[name], job_kind)(f)
        return f

    return decorate


timing_options = job_options_for(TIMING)
measure_options = job_options_for(MEASURE)


def history_options(f):
    f = click.option("--no-history", is_flag=True, help="Do not record this run in the results database.")(f)
    return db_option(f)


DB_HELP = ("Results database: a SQLite path or an SQLAlchemy URL (default: $EDGEQ_DB, else .edgeq/history.sqlite "
           "beside the project's edgeq.toml, else ~/.local/share/edgeq/history.sqlite).")
db_option = click.option("--db", envvar="EDGEQ_DB", help=DB_HELP)


def record_history(db: str | None, records: list) -> None:
    """Store runs for `edgeq history`; a broken database warns instead of losing the run."""
    from edgeq.store.db import Store

    try:
        with Store.open(db) as store:
            for record in records:
                store.add(record)
    except EdgeqError as exc:
        kept = sorted({str(r.location) for r in records if getattr(r, "location", None)})
        where = f" (the results are on disk: {', '.join(kept)})" if kept else ""
        click.echo(f"edgeq: warning: not recorded in history{where}: {exc}", err=True)


class RunProgress:
    """Progress on stderr fed by phases and the agent's progress events.

    On a terminal: rich bars that disappear when done. Elsewhere (CI logs, pipes): plain
    lines — each phase as it starts, and each bar at 0 %, every quarter and at the end, or
    every LOG_EVERY_S seconds, so a CI page shows a job is alive. Silent with -q.
    """

    LOG_EVERY_S = 30.0

    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.out = diagnostics()
        self.plain = not self.out.is_terminal
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=self.out, transient=True, disable=self.plain)
        self.tasks, self.logged = {}, {}
        self.started = time.monotonic()

    def phase(self, name: str) -> None:
        """Show the current phase (a spinner line on a terminal, a log line elsewhere)."""
        if self.plain:
            self._line(f"{name} …")
            return
        if "phase" not in self.tasks:
            self.tasks["phase"] = self.bars.add_task(name, total=None)
        self.bars.update(self.tasks["phase"], description=name)

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.plain:
            self._log_progress(label, done, total)
            return
        if label not in self.tasks:
            self.tasks[label] = self.bars.add_task(label, total=total)
        self.bars.update(self.tasks[label], completed=done, total=total)

    def _log_progress(self, label: str, done: int, total: int) -> None:
        quarter = 4 * done // total if total else 4
        last_quarter, last_time = self.logged.get(label, (-1, 0.0))
        now = time.monotonic()
        if quarter != last_quarter or now - last_time >= self.LOG_EVERY_S:
            self.logged[label] = (quarter, now)
            self._line(f"{label}: {done}/{total}" + (f" ({100 * done // total} %)" if total else ""))

    def _line(self, text: str) -> None:
        self.out.print(f"[{time.monotonic() - self.started:6.1f}s] {text}", highlight=False, markup=False,
                       soft_wrap=True)

    def __enter__(self):
        self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        self.bars.__exit__(*exc)


def output_options(f):
    """How outputs are judged: kinds, labels, which outputs decide, the smallest cell trusted."""
    for decorator in (
        click.option("--output", "output_flags", multiple=True, metavar="NAME=KIND[:k=v,...]",
                     help="Judge output NAME (its name as reports show it, its signature or tensor name, else "
                     "output_K / K for the K-th; an exact name wins) as KIND: classification, multilabel, "
                     "regression, embedding, detection, segmentation or ignore; options such as "
                     "detection:scores=NAME,iou=0.5 or regression:atol=0.01. Repeatable."),
        click.option("--outputs-spec", type=path_arg, help="TOML/JSON file with [outputs.NAME] kind = ..., "
                     "labels = NAME, verdict = [NAMES] (see README: output kinds)."),
        click.option("--labels-for", help="The output the labels y belong to (default: the first classification; "
                     "named as for --output)."),
        click.option("--verdict-outputs", help="Only these outputs (comma-separated, named as for --output) decide "
                     "the verdict."),
        click.option("--min-n", type=click.IntRange(min=1), default=MIN_N, show_default=True,
                     help="Cells with fewer trials are flagged; a verdict resting on one says so."),
    ):
        f = decorator(f)
    return f


def input_kind_option(f):
    """``--input-kind [NAME=]KIND``: what the input arrays are, when their shape is not enough."""
    return click.option("--input-kind", "input_kinds", multiple=True, metavar="[NAME=]KIND",
                        help="What the samples of input array NAME (or of every array) are: features, audio, grid, "
                             "sensor-window, image or tensor (default: from the shape, printed). It decides which "
                             "risky families apply and which only count as stress. Repeatable.")(f)


def parse_input_kinds(values: tuple) -> dict | str | None:
    """() → None (detect); ("audio",) → "audio" (every array); ("x=audio", ...) → {"x": "audio", ...}."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0].strip()
    kinds = {}
    for value in values:
        name, sep, kind = value.partition("=")
        if not sep or not name.strip() or not kind.strip():
            raise click.BadParameter(f"{value!r}: expected KIND or NAME=KIND", param_hint="--input-kind")
        kinds[name.strip()] = kind.strip()
    return kinds


def output_spec(output_flags, outputs_spec, labels_for, verdict_outputs):
    from edgeq.analysis.plan import OutputSpec

    return OutputSpec.from_sources(outputs_spec, output_flags, labels_for, verdict_outputs)


def load_run(path: Path):
    """``RunResult.load``, which refuses a malformed run directory in one line naming the file."""
    from edgeq.results import RunResult

    return RunResult.load(path)
