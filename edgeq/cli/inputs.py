"""``edgeq inputs risky|check``: build and check input sets."""

from __future__ import annotations

from pathlib import Path

import click

from edgeq.cli.common import input_kind_option, output_file, parse_input_kinds, path_arg, result_line


@click.group()
def inputs():
    """Build and check input sets."""


@inputs.command("risky")
@click.option("--model", type=path_arg,
              help="Float .tflite the set is for: checks shapes and dtypes, and adds the boundary category "
                   "(inputs near its decisions; left out without a model).")
@click.option("--data", type=path_arg, required=True, help="NPZ with x (and optional y) to start from.")
@click.option("-o", "--output", type=output_file, required=True, help="NPZ to write.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-per-category", type=int, default=500, show_default=True,
              help="Samples drawn from the data for each category and severity.")
@click.option("--range-mode", type=click.Choice(["auto", "global", "channel"]), default="auto", show_default=True,
              help="auto = per-feature ranges for tabular data, else one range for the whole array.")
@input_kind_option
def inputs_risky(model, data, output, seed, max_per_category, range_mode, input_kinds):
    """Build the risky suite: clean + graded photometric, noise, outlier, sensor-fault and image
    (blur, JPEG, ...) sets, and with --model the inputs near the float model's decision boundary."""
    from edgeq.evaluate import EvaluateOptions
    from edgeq.suites import build_suite
    from edgeq.inputs.inputset import category_counts, load_inputset

    dataset = load_inputset(data, what="data")
    if model is not None:
        _check_against_model(dataset, model)
    opts = EvaluateOptions(outdir=output.parent, seed=seed, max_per_category=max_per_category, range_mode=range_mode,
                           input_kinds=parse_input_kinds(input_kinds))
    build_suite(opts, dataset, output, model=model)
    for name, (mode, reason) in (dataset.extra.get("range_modes") or {}).items():
        click.echo(f"value ranges of {name!r}: {'per feature' if mode == 'channel' else mode} ({reason})", err=True)
    for note in opts.notes:
        click.echo(note, err=True)
    suite = load_inputset(output)
    counts = category_counts(suite.category)
    result_line(f"{output}: {suite.n} samples in {len(counts)} categories "
                f"({', '.join(f'{k} {v}' for k, v in counts.items())})")


def _check_against_model(dataset, model: Path) -> list[str]:
    """Inputs must fit the model's inputs, and labels y its classification output."""
    from edgeq.analysis.plan import check_model_labels
    from edgeq.inputs.inputset import input_specs, match_model_inputs
    from edgeq.models.modelinfo import read_model

    info = read_model(model)
    names = match_model_inputs(dataset, input_specs(info))
    check_model_labels(info, dataset.y, str(dataset.path))
    return names


@inputs.command("check")
@click.argument("npz", type=path_arg)
@click.option("--model", type=path_arg, help="Also check shapes and dtypes against this .tflite.")
def inputs_check(npz, model):
    """Validate an input set (and optionally its fit to a model)."""
    from edgeq.inputs.inputset import load_inputset

    dataset = load_inputset(npz)
    if model is not None:
        _check_against_model(dataset, model)
    arrays = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in dataset.arrays.items())
    result_line(f"{npz}: ok, {dataset.n} samples ({arrays}; labels: {'yes' if dataset.y is not None else 'no'})")


def _search_commands():
    """``inputs search`` and ``inputs worst`` live in their own module (cli/search.py)."""
    from edgeq.cli.search import search, worst

    inputs.add_command(search, "search")
    inputs.add_command(worst, "worst")


_search_commands()
