"""``edgeq evaluate``: the main job, from a model and data to a verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeq.cli.common import (path_arg, output_file, console, write_json_file, device_options, timing_options,
                                measure_options, history_options, record_history, RunProgress,
                                output_options, output_spec, wait_option)


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
@timing_options
@click.option("--fail-on", help="Gates, e.g. drop=0.05,verdict=catastrophic,min-n=100 (exit 1 when crossed).")
@click.option("--json", "json_path", type=output_file, help="Write report.json here too.")
@click.option("-q", "--quiet", is_flag=True, help="No table or progress, just the verdict line.")
@output_options
@measure_options
@wait_option
@history_options
def evaluate(model, data, quant_model, device, tag, inventory, outdir, policy, seed, max_per_category, range_mode,
             threads, resolver, warmup, repeats, batch_size, fail_on, json_path, quiet, output_flags, outputs_spec,
             labels_for, verdict_outputs, min_n, wait_s, db, no_history, **measure):
    """The main job: does quantization hurt MODEL on any kind of input, on DEVICE?

    With no MODEL, runs the built-in example (an MLP on scikit-learn's digits).
    """
    from edgeq.evaluate import EvaluateOptions, evaluate as run_evaluation
    from edgeq.reports.report import print_summary

    opts = EvaluateOptions(model=model, data=data, quant_model=quant_model, device=device, tag=tag,
                           inventory=inventory, outdir=outdir, policy=policy, seed=seed,
                           max_per_category=max_per_category, range_mode=range_mode, threads=threads,
                           resolver=resolver, warmup=warmup, repeats=repeats, batch_size=batch_size, fail_on=fail_on,
                           measure=measure, min_n=min_n, wait_s=wait_s,
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
        from edgeq.store.db import record_from_report

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
