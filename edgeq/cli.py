"""The ``edgeq`` command. Each command is thin: parse, call one library function, print.

Exit codes (the same for every command): 0 ran, 1 a --fail-on gate was crossed,
2 bad input or usage, 3 a device or connection failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeq import __version__
from edgeq.errors import EXIT_GATE, EdgeqError

path_arg = click.Path(path_type=Path)


class EdgeqGroup(click.Group):
    """Turns EdgeqError into one line on stderr and the contract's exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeqError as exc:
            click.echo(f"edgeq: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def console(quiet: bool = False):
    from rich.console import Console

    out = Console(stderr=True, quiet=quiet)
    if not out.is_terminal:  # logs and CI pages are wider than rich's 80-column default
        out.width = max(out.width, 110)
    return out


def write_json_file(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    from edgeq.results import write_json_atomic
    from edgeq.run import ensure_writable_dir

    ensure_writable_dir(path.parent if str(path.parent) else Path("."))
    write_json_atomic(path, payload)


def exit_for_gates(report: dict) -> None:
    if any(g["failed"] for g in report.get("gates", [])):
        sys.exit(EXIT_GATE)


@click.group(cls=EdgeqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def main():
    """Find out whether dynamic-range quantization breaks your model on the real device."""


@main.command()
@click.argument("model", type=path_arg)
@click.option("-o", "--outdir", type=path_arg, required=True, help="Folder for the .tflite files and the model card.")
@click.option("--policy", type=click.Choice(["dynamic-range", "float16", "int8", "float"]), default="dynamic-range",
              show_default=True)
@click.option("--calibration", type=path_arg, help="NPZ of typical inputs (needed by --policy int8).")
@click.option("--target-runtime", type=click.Choice(["latest", "tflite-runtime-2.14"]), default="latest",
              show_default=True, help="Make a model this runtime can load.")
@click.option("--json", "json_path", type=path_arg, help="Write the model card here too.")
def convert(model, outdir, policy, calibration, target_runtime, json_path):
    """Convert MODEL (.keras/.h5, SavedModel folder or float .tflite) to float + quantized TFLite."""
    from edgeq.convert import convert_model

    with console().status(f"converting {model} ({policy})"):
        result = convert_model(model, outdir, policy=policy, calibration=calibration, target_runtime=target_runtime)
    click.echo(f"{result.float_path}\n{result.quant_path}\n{result.card_path}")
    click.echo(result.summary)
    write_json_file(json_path, result.card)


@main.group()
def inputs():
    """Build and check input sets."""


@inputs.command("risky")
@click.option("--model", type=path_arg, help="Float .tflite the set is for (checks shapes and dtypes).")
@click.option("--data", type=path_arg, required=True, help="NPZ with x (and optional y) to start from.")
@click.option("-o", "--output", type=path_arg, required=True, help="NPZ to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-per-category", type=int, default=500, show_default=True,
              help="Samples drawn from the data for each category and severity.")
@click.option("--range-mode", type=click.Choice(["auto", "global", "channel"]), default="auto", show_default=True,
              help="auto = per-feature ranges for tabular data, else one range for the whole array.")
def inputs_risky(model, data, output, seed, max_per_category, range_mode):
    """Build the risky suite: clean + graded photometric, noise, outlier and sensor-fault sets."""
    from edgeq.evaluate import EvaluateOptions, build_suite
    from edgeq.inputset import load_inputset

    dataset = load_inputset(data, what="data")
    if model is not None:
        _check_against_model(dataset, model)
    opts = EvaluateOptions(outdir=output.parent, seed=seed, max_per_category=max_per_category, range_mode=range_mode)
    built = build_suite(opts, dataset)
    for name, (mode, reason) in (dataset.extra.get("range_modes") or {}).items():
        click.echo(f"value ranges of {name!r}: {'per feature' if mode == 'channel' else mode} ({reason})", err=True)
    built.replace(output)
    suite = load_inputset(output)
    counts = {}
    for name in suite.category.tolist():
        counts[name] = counts.get(name, 0) + 1
    click.echo(f"{output}: {suite.n} samples in {len(counts)} categories "
               f"({', '.join(f'{k} {v}' for k, v in counts.items())})")


def _check_against_model(dataset, model: Path) -> list[str]:
    from edgeq.inputset import input_specs, match_model_inputs
    from edgeq.modelinfo import read_model

    return match_model_inputs(dataset, input_specs(read_model(model)))


@inputs.command("check")
@click.argument("npz", type=path_arg)
@click.option("--model", type=path_arg, help="Also check shapes and dtypes against this .tflite.")
def inputs_check(npz, model):
    """Validate an input set (and optionally its fit to a model)."""
    from edgeq.inputset import load_inputset

    dataset = load_inputset(npz)
    if model is not None:
        _check_against_model(dataset, model)
    arrays = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in dataset.arrays.items())
    click.echo(f"{npz}: ok, {dataset.n} samples ({arrays}; labels: {'yes' if dataset.y is not None else 'no'})")


def device_options(f):
    f = click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY", help="Device inventory (edgeq.toml).")(f)
    f = click.option("--tag", help="Every inventory device with this tag (instead of --device).")(f)
    return click.option("--device", default="local", show_default=True,
                        help="Device name(s) from the inventory: NAME or NAME,NAME,…")(f)


def timing_options(f):
    for decorator in (
        click.option("--threads", type=int, default=1, show_default=True),
        click.option("--resolver", type=click.Choice(["AUTO", "BUILTIN", "BUILTIN_REF",
                                                      "BUILTIN_WITHOUT_DEFAULT_DELEGATES"]),
                     default="AUTO", show_default=True, help="Op resolver (AUTO uses XNNPACK)."),
        click.option("--warmup", type=int, default=10, show_default=True),
        click.option("--repeats", type=int, default=1, show_default=True, help="Timed passes over the set."),
        click.option("--batch-size", type=int, default=1, show_default=True),
    ):
        f = decorator(f)
    return f


MEASURE_OPTIONS = ("min_duration", "power", "power_sensor", "sample_hz", "idle_s", "cooldown_c",
                   "cooldown_timeout", "sysfs_root", "vcgencmd")


def measure_options(f):
    """Sensor and latency-method options; the command receives them in ``**measure``."""
    for decorator in (
        click.option("--min-duration", type=float, default=0.0, help="Keep timing passes for at least this "
                     "many seconds (whichever of --repeats and this is longer)."),
        click.option("--power", type=click.Choice(["device", "none", "hwmon", "power_supply", "pi5-pmic"]),
                     help="Sample power and temperature during the run: a backend, `device` (the inventory's "
                     "power key) or `none` (temperature and throttling only)."),
        click.option("--power-sensor", help="hwmon chip or power_supply name, when the device has several."),
        click.option("--sample-hz", type=float, default=20.0, show_default=True),
        click.option("--idle-s", type=float, help="Idle baseline before timing (default 1 s with power)."),
        click.option("--cooldown-c", type=float, help="Wait until the device is at or below this °C first."),
        click.option("--cooldown-timeout", type=float, default=300.0, show_default=True),
        click.option("--sysfs-root", help="Where the agent reads sensors on the device (default /sys)."),
        click.option("--vcgencmd", help="vcgencmd path on the device ('' for none; default: on PATH)."),
    ):
        f = decorator(f)
    return f


def spec_measure(measure: dict) -> dict:
    """RunSpec fields from the measure options."""
    return {"min_duration_s": measure["min_duration"], "power": measure["power"],
            "power_sensor": measure["power_sensor"], "sample_hz": measure["sample_hz"], "idle_s": measure["idle_s"],
            "cooldown_c": measure["cooldown_c"], "cooldown_timeout_s": measure["cooldown_timeout"],
            "sysfs_root": measure["sysfs_root"], "vcgencmd": measure["vcgencmd"]}


def history_options(f):
    f = click.option("--no-history", is_flag=True, help="Do not record this run in the results database.")(f)
    return click.option("--db", envvar="EDGEQ_DB", help="Results database: a SQLite path or an SQLAlchemy URL "
                        "(default ~/.local/share/edgeq/history.sqlite).")(f)


def record_history(db: str | None, records: list) -> None:
    """Store runs for `edgeq history`; a broken database warns instead of losing the run."""
    from edgeq.store import Store

    try:
        with Store.open(db) as store:
            for record in records:
                store.add(record)
    except EdgeqError as exc:
        click.echo(f"edgeq: warning: not recorded in history: {exc}", err=True)


class RunProgress:
    """Rich progress bars fed by the agent's progress events."""

    def __init__(self, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeRemainingColumn(), console=console(quiet), transient=True)
        self.tasks = {}

    def phase(self, name: str) -> None:
        """Show the current phase as a spinner line that disappears when done."""
        if "phase" not in self.tasks:
            self.tasks["phase"] = self.bars.add_task(name, total=None)
        self.bars.update(self.tasks["phase"], description=name)

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.bars.add_task(label, total=total)
        self.bars.update(self.tasks[label], completed=done, total=total)

    def __enter__(self):
        self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        self.bars.__exit__(*exc)


@main.command()
@device_options
@click.option("--model", type=path_arg, required=True, help=".tflite to run.")
@click.option("--inputs", "inputs_path", type=path_arg, required=True, help="Input set (.npz).")
@click.option("-o", "--outdir", type=path_arg, required=True, help="Run directory to write.")
@timing_options
@click.option("--json", "json_path", type=path_arg, help="Write a run summary here.")
@measure_options
@history_options
def run(device, tag, inventory, model, inputs_path, outdir, threads, resolver, warmup, repeats, batch_size,
        json_path, db, no_history, **measure):
    """Run MODEL over an input set on device(s); outputs and latencies land in OUTDIR.

    With several devices each gets OUTDIR/<device>/.
    """
    from edgeq.devices import load_inventory, select_devices
    from edgeq.fleet import run_fleet, safe_dirname
    from edgeq.power import energy_per_inference, thermal_summary
    from edgeq.report import device_section, latency_stats
    from edgeq.run import RunSpec, run_on_device

    targets = select_devices(device, load_inventory(inventory), tag=tag)
    spec = RunSpec(model=model, inputs=inputs_path, label=model.name, threads=threads, resolver=resolver,
                   warmup=warmup, repeats=repeats, batch_size=batch_size, **spec_measure(measure))
    single = len(targets) == 1

    def one(target):
        rundir = outdir if single else outdir / safe_dirname(target.name)
        (result,) = run_on_device(target, [spec], [rundir], lambda _, d, t: progress(target.name, d, t))
        energy = energy_per_inference(result)
        return {"rundir": str(rundir), "device": device_section(result), "samples": result.n,
                "latency_ms": latency_stats(result.latency_ms_per_sample()), "model_name": model.name,
                "model_sha256": result.meta["model_sha256"], "edgeq_version": __version__,
                "energy": energy, "energy_mj": energy and energy["energy_mj"], "thermal": thermal_summary(result)}

    with RunProgress() as progress:
        fleet = run_fleet(targets, one)
    if single and fleet.failed:
        raise next(iter(fleet.failed.values()))
    for name, summary in fleet.succeeded.items():
        lat = summary["latency_ms"]
        energy = f"; {summary['energy_mj']:.4g} mJ/inference" if summary["energy_mj"] is not None else ""
        click.echo(f"{summary['rundir']}: {summary['samples']} samples on {name}; latency p50 {lat['p50']:.3f} ms, "
                   f"p99 {lat['p99']:.3f} ms{energy}")
    for name, error in fleet.failed.items():
        click.echo(f"{name}: FAILED: {error}", err=True)
    if not no_history:
        from edgeq.store import record_from_run

        record_history(db, [record_from_run(summary, "run", summary["rundir"]) for summary in fleet.succeeded.values()])
    payload = (next(iter(fleet.succeeded.values())) if single
               else {"devices": fleet.succeeded, "failed": {n: str(e) for n, e in fleet.failed.items()}})
    write_json_file(json_path, payload)
    sys.exit(fleet.exit_code)


def output_options(f):
    """How outputs are judged: kinds, labels, which outputs decide, the smallest cell trusted."""
    for decorator in (
        click.option("--output", "output_flags", multiple=True, metavar="NAME=KIND[:k=v,...]",
                     help="Judge output NAME (name, short name or index) as KIND: classification, multilabel, "
                     "regression, embedding, detection, segmentation or ignore; options such as "
                     "detection:scores=NAME,iou=0.5 or regression:atol=0.01. Repeatable."),
        click.option("--outputs-spec", type=path_arg, help="TOML/JSON file with [outputs.NAME] kind = ..., "
                     "labels = NAME, verdict = [NAMES] (see README: output kinds)."),
        click.option("--labels-for", help="The output the labels y belong to (default: the first classification)."),
        click.option("--verdict-outputs", help="Only these outputs (comma-separated) decide the verdict."),
        click.option("--min-n", type=click.IntRange(min=1), default=30, show_default=True,
                     help="Cells with fewer trials are flagged; a verdict resting on one says so."),
    ):
        f = decorator(f)
    return f


def output_spec(output_flags, outputs_spec, labels_for, verdict_outputs):
    from edgeq.analysis.plan import OutputSpec

    return OutputSpec.from_sources(outputs_spec, output_flags, labels_for, verdict_outputs)


@main.command()
@click.argument("ref", type=path_arg)
@click.argument("cand", type=path_arg)
@click.option("--json", "json_path", type=path_arg, help="Write the comparison here.")
@click.option("--html", "html_path", type=path_arg, help="Write an HTML report here.")
@click.option("--fail-on", help="Gates, e.g. drop=0.05,flip=0.1,sqnr=20,verdict=degraded,min-n=100 "
              "(exit 1 when crossed).")
@click.option("--model", "model_path", type=path_arg, help="The float .tflite, so output kinds can use the op "
              "that makes each output.")
@click.option("--output-index", type=int, hidden=True, help="Old spelling of --verdict-outputs INDEX.")
@output_options
def compare(ref, cand, json_path, html_path, fail_on, model_path, output_index, output_flags, outputs_spec,
            labels_for, verdict_outputs, min_n):
    """Compare two run directories (REF = float, CAND = quantized), offline, output by output."""
    from edgeq.analysis.compare import compare_runs
    from edgeq.analysis.gates import evaluate_gates, parse_gates
    from edgeq.report import build_report, print_summary
    from edgeq.results import RunResult

    gates = parse_gates(fail_on)
    if output_index is not None and not verdict_outputs:
        verdict_outputs = str(output_index)
    spec = output_spec(output_flags, outputs_spec, labels_for, verdict_outputs)
    model_info = None
    if model_path is not None:
        from edgeq.modelinfo import read_model

        model_info = read_model(model_path)
    ref_run, cand_run = RunResult.load(ref), RunResult.load(cand)
    report = build_report(compare_runs(ref_run, cand_run, spec=spec, model_info=model_info, min_n=min_n),
                          ref_run, cand_run)
    report["gates"] = evaluate_gates(report, gates)
    print_summary(console(), report)
    write_json_file(json_path, report)
    if html_path:
        from edgeq.report import write_report_html

        write_report_html(html_path, report, {"float": ref_run, "quant": cand_run})
    exit_for_gates(report)


@main.command()
@click.argument("model", type=path_arg, required=False)
@click.option("--data", type=path_arg, help="NPZ with x and (optionally) y labels.")
@click.option("--quant-model", type=path_arg, help="Quantized .tflite to use instead of converting MODEL.")
@device_options
@click.option("-o", "--outdir", type=path_arg, default=Path("edgeq-out"), show_default=True)
@click.option("--policy", type=click.Choice(["dynamic-range", "float16", "int8"]), default="dynamic-range",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-per-category", type=int, default=500, show_default=True)
@click.option("--range-mode", type=click.Choice(["auto", "global", "channel"]), default="auto", show_default=True,
              help="Value ranges the risky families scale to: auto = per feature for tabular data, else global.")
@timing_options
@click.option("--fail-on", help="Gates, e.g. drop=0.05,verdict=catastrophic,min-n=100 (exit 1 when crossed).")
@click.option("--json", "json_path", type=path_arg, help="Write report.json here too.")
@click.option("-q", "--quiet", is_flag=True, help="No table or progress, just the verdict line.")
@output_options
@measure_options
@history_options
def evaluate(model, data, quant_model, device, tag, inventory, outdir, policy, seed, max_per_category, range_mode,
             threads, resolver, warmup, repeats, batch_size, fail_on, json_path, quiet, output_flags, outputs_spec,
             labels_for, verdict_outputs, min_n, db, no_history, **measure):
    """The main job: does quantization hurt MODEL on any kind of input, on DEVICE?

    With no MODEL, runs the built-in example (an MLP on scikit-learn's digits).
    """
    from edgeq.evaluate import EvaluateOptions, evaluate as run_evaluation
    from edgeq.report import print_summary

    opts = EvaluateOptions(model=model, data=data, quant_model=quant_model, device=device, tag=tag,
                           inventory=inventory, outdir=outdir, policy=policy, seed=seed,
                           max_per_category=max_per_category, range_mode=range_mode, threads=threads,
                           resolver=resolver, warmup=warmup, repeats=repeats, batch_size=batch_size, fail_on=fail_on,
                           measure=spec_measure(measure), min_n=min_n,
                           output_spec=output_spec(output_flags, outputs_spec, labels_for, verdict_outputs))
    out = console(quiet)
    with RunProgress(quiet) as progress:
        result = run_evaluation(opts, announce=progress.phase, progress=progress)
    report = result.report
    for note in (report or {}).get("notes", []):
        out.print(f"[dim]note:[/] {note}", highlight=False)
    if report and report.get("categories"):
        print_summary(out, report)
    if len(result.fleet.outcomes) > 1:
        print_fleet(out, result)
    out.print(f"report: {outdir / 'report.json'}" + ("" if "fleet" in (report or {}) else f", {outdir / 'report.html'}"))
    if quiet and report and report.get("verdict"):
        cell = report["worst_category"] + (f"/{report['worst_severity']}" if report.get("worst_severity") else "")
        click.echo(f"{report['verdict']} (worst: {cell})")
    if report is not None:
        write_json_file(json_path, report)
    if not no_history:
        from edgeq.store import record_from_report

        record_history(db, [record_from_report(r, "evaluate", str(outdir)) for r in result.reports.values()])
    sys.exit(result.exit_code)


def print_fleet(out, result) -> None:
    from rich.table import Table

    table = Table(title="per device", title_justify="left")
    for column in ("device", "verdict", "worst category", "quant p50 ms", "quant p99 ms", "problem"):
        table.add_column(column)
    reports = (result.report or {}).get("fleet", {}).get("devices", {})
    for outcome in result.fleet.outcomes:
        if outcome.ok:
            r = reports.get(outcome.device, {})
            lat = r.get("latency_ms", {}).get("quant", {})
            table.add_row(outcome.device, r.get("verdict", "?"), str(r.get("worst_category")),
                          f"{lat.get('p50', float('nan')):.3f}", f"{lat.get('p99', float('nan')):.3f}", "")
        else:
            table.add_row(outcome.device, "[red]failed[/]", "", "", "", str(outcome.error))
    out.print(table)
    if result.fleet.failed:
        out.print(f"[red]{len(result.fleet.failed)} of {len(result.fleet.outcomes)} device(s) failed[/]: "
                  + ", ".join(result.fleet.failed))


def _register_subcommands() -> None:
    """Command groups live in their own modules; importing them attaches them to ``main``."""
    import edgeq.cli_devices  # noqa: F401
    import edgeq.cli_history  # noqa: F401
    import edgeq.cli_soak  # noqa: F401


_register_subcommands()
