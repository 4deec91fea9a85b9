"""``edgeq evaluate``: the main job, from a model and data to a verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeq.cli.common import (path_arg, output_file, console, diagnostics, always, describe_gate, is_quiet, verbosity,
                              FiniteFloatRange, write_json_file, device_options, timing_options, measure_options, history_options,
                              record_history, RunProgress, output_options, output_spec, wait_option,
                              input_kind_option, parse_input_kinds)
from edgeq.inputs.search.settings import DISTANCE


@click.command()
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
@input_kind_option
@timing_options
@click.option("--fail-on", help="Gates, e.g. drop=0.05,verdict=catastrophic,min-n=100 (exit 1 when crossed); "
                                "stress=degraded|catastrophic gates on the stress findings beside the verdict.")
@click.option("--json", "json_path", type=output_file, help="Write report.json here too (- for stdout).")
@click.option("--search", "search_budget", type=click.IntRange(min=1), metavar="BUDGET",
              help="After the suite, search this many queries for inputs near the data on which float and "
                   "quantized disagree (OUTDIR/inputs/search.npz); reported beside the verdict, not in it.")
@click.option("--search-distance", type=FiniteFloatRange(0, 1, min_open=True), default=DISTANCE, show_default=True,
              help="How far (L∞, a fraction of the data range) a searched input may be from its data sample.")
@click.option("--worst", "worst_budget", type=click.IntRange(min=1), metavar="BUDGET",
              help="After the suite, search this many queries for the input shifts (family × strength, pairs) "
                   "that hurt most; reported beside the verdict.")
@click.option("--sampling", type=click.Choice(["adaptive", "fixed"]), default="adaptive", show_default=True,
              help="adaptive: run the suite in rounds, each only on cells not yet decided, with anytime-valid "
                   "intervals; fixed: every sample of every cell (up to --max-per-category), Wilson intervals.")
@click.option("--until", type=click.Choice(["cells", "verdict"]), default="cells", show_default=True,
              help="adaptive: stop when every cell is decided, at its cap, or moot — it cannot change the verdict "
                   "and its cap could not decide it (cells); or as soon as the verdict is firm, e.g. a deciding cell "
                   "firmly catastrophic (verdict).")
@click.option("--budget", "budget", metavar="DURATION", help="adaptive: device inference time at most (e.g. 10m, "
              "90s); the rows go to the least decided cells, and the report names the cells it left undecided.")
@click.option("--no-float-cache", "no_float_cache", is_flag=True,
              help="Run the float model on every row it needs even when the host's cache holds its outputs "
                   "(same float model, suite, device, runtime, resolver, threads, batch size), and bisect the "
                   "boundary cells' pairs again; EDGEQ_FLOAT_CACHE=off does the same.")
@click.option("--fix", "fix", is_flag=True, help="When the verdict is degraded or catastrophic, keep the fewest ops "
              "float that bring every condition under the target: OUTDIR/models/<stem>.fixed.tflite, verified.")
@click.option("--fix-target", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="The fix's drop target per condition (default: the degraded threshold).")
@output_options
@measure_options
@wait_option
@history_options
def evaluate(model, data, quant_model, device, tag, inventory, outdir, policy, seed, max_per_category, range_mode,
             input_kinds, fail_on, json_path, search_budget, search_distance, worst_budget, fix, fix_target,
             output_flags, outputs_spec, labels_for, verdict_outputs, min_n, wait_s, db, no_history, sampling, until,
             budget, no_float_cache, **job):
    """The main job: does quantization hurt MODEL on any kind of input, on DEVICE?

    With no MODEL, runs the built-in example (an MLP on scikit-learn's digits).
    """
    from edgeq.evaluate import EvaluateOptions, evaluate as run_evaluation
    from edgeq.reports.after_verdict import print_after_verdict
    from edgeq.reports.report import print_summary

    opts = EvaluateOptions(model=model, data=data, quant_model=quant_model, device=device, tag=tag,
                           inventory=inventory, outdir=outdir, policy=policy, seed=seed,
                           max_per_category=max_per_category, range_mode=range_mode,
                           input_kinds=parse_input_kinds(input_kinds), job=job, fail_on=fail_on,
                           sampling=sampling, until=until, budget_s=_budget_seconds(sampling, budget),
                           float_cache=not no_float_cache,
                           min_n=min_n, wait_s=wait_s, verbose=verbosity() > 0,
                           search_budget=search_budget, search_distance=search_distance, worst_budget=worst_budget,
                           fix=fix, fix_target=fix_target,
                           output_spec=output_spec(output_flags, outputs_spec, labels_for, verdict_outputs))
    out = console()
    with RunProgress() as progress:
        result = run_evaluation(opts, announce=progress.phase, progress=progress)
    report = result.report
    notes = diagnostics()
    for note in (report or {}).get("notes", []):
        notes.print(f"[dim]note:[/] {note}", highlight=False)
    if report and report.get("categories"):
        print_summary(out, report)
        print_after_verdict(out, report)
    if len(result.fleet.outcomes) > 1:
        print_fleet(out, result)
    out.print(f"report: {outdir / 'report.json'}" + ("" if "fleet" in (report or {}) else f", {outdir / 'report.html'}"))
    if is_quiet():
        _print_verdict_line(report, json_path)
    for gate in (report or {}).get("gates", []):
        if gate["failed"]:
            always(f"edgeq: gate failed: {describe_gate(gate)}")
    for name, error in result.fleet.failed.items():
        always(f"edgeq: {name}: failed: {error}")
    if report is not None:
        write_json_file(json_path, report)
    if not no_history:
        from edgeq.store.db import record_from_report

        record_history(db, [record_from_report(r, "evaluate", str(outdir)) for r in result.reports.values()])
    sys.exit(result.exit_code)


def _budget_seconds(sampling: str, budget: str | None) -> float | None:
    """``--budget`` in seconds; it only means something for adaptive sampling."""
    from edgeq.devices.soak import parse_duration
    from edgeq.errors import ConfigError

    if budget is None:
        return None
    if sampling != "adaptive":
        raise ConfigError("--budget needs --sampling adaptive (a fixed suite runs every sample)")
    seconds = parse_duration(budget, "--budget")
    if seconds <= 0:
        raise ConfigError(f"--budget {budget}: must be a positive duration")
    return seconds


def _print_verdict_line(report: dict | None, json_path) -> None:
    """With -q the verdict is the one result line (stdout, unless JSON owns stdout)."""
    if not report or not report.get("verdict"):
        return
    cell = report["worst_category"] + (f"/{report['worst_severity']}" if report.get("worst_severity") else "")
    click.echo(f"{report['verdict']} (worst: {cell})", err=str(json_path) == "-")


def print_fleet(out, result) -> None:
    from rich.table import Table

    from edgeq.reports.units import duration_text

    table = Table(title="per device", title_justify="left", width=min(out.width, 80))
    for column in ("device", "verdict", "worst category", "quant p50", "quant p99", "problem"):
        table.add_column(column, overflow="fold")
    reports = (result.report or {}).get("fleet", {}).get("devices", {})
    for outcome in result.fleet.outcomes:
        if outcome.ok:
            r = reports.get(outcome.device, {})
            lat = r.get("latency_ms", {}).get("quant", {})
            table.add_row(outcome.device, r.get("verdict", "?"), str(r.get("worst_category")),
                          duration_text(lat.get("p50")), duration_text(lat.get("p99")), "")
        else:
            table.add_row(outcome.device, "[red]failed[/]", "", "", "", str(outcome.error))
    out.print(table)
    if result.fleet.failed:
        out.print(f"[red]{len(result.fleet.failed)} of {len(result.fleet.outcomes)} device(s) failed[/]: "
                  + ", ".join(result.fleet.failed))
