"""``edgeq inputs search`` and ``edgeq inputs worst``: look for the inputs and the shifts that break the model."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgeq.cli.common import (RunProgress, exit_interrupted, console, diagnostics, job_options_for, output_file, path_arg,
                               settings_options, wait_option, write_json_file)
from edgeq.inputs.search.disagreement import SearchConfig
from edgeq.inputs.search.worst import WorstConfig


def model_options(f):
    for decorator in (
        click.argument("model", type=path_arg, required=False),
        click.option("--float", "float_model", type=path_arg, help="Float .tflite (with --quantized, instead of MODEL)."),
        click.option("--quantized", "quant_model", type=path_arg, help="Quantized .tflite of the same model."),
        click.option("--data", type=path_arg, required=True, help="NPZ with x (and optional y): the seeds."),
        click.option("--device", default=None, help="Evaluate on this inventory device through its agent "
                     "(default: in-process on this host)."),
        click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY", help="Device inventory (edgeq.toml)."),
        click.option("--output", "output_name", default=None, metavar="NAME",
                     help="The output to compare (its name as reports show it, its signature or tensor name, "
                          "else output_K / K for the K-th; default: the first classification output)."),
        job_options_for(("threads", "resolver"), "infer"),
        wait_option,
        click.option("--json", "json_path", type=output_file, help="Write the result as JSON (- for stdout)."),
    ):
        f = decorator(f)
    return f


def _models(model, float_model, quant_model, choices: dict, notes) -> tuple[Path, Path]:
    """The float/quantized pair: --float/--quantized, or MODEL converted (a .keras, SavedModel or float .tflite)."""
    from edgeq.errors import ConfigError

    if float_model or quant_model:
        if not (float_model and quant_model) or model is not None:
            raise ConfigError("give either MODEL or both --float and --quantized")
        choices["models"] = {"float": str(float_model), "quantized": str(quant_model), "how": "given"}
        return float_model, quant_model
    if model is None:
        raise ConfigError("give MODEL (converted here) or --float FLOAT.tflite --quantized QUANT.tflite")
    import tempfile

    from edgeq.models.convert import convert_model

    # the converted pair lives as long as the command: click's context removes the folder at the end
    # (also after Ctrl-C or an error), so no model copy is left in the temp folder
    outdir = Path(click.get_current_context().with_resource(tempfile.TemporaryDirectory(prefix="edgeq-search-models-")))
    result = convert_model(model, outdir)
    notes(f"converted {model} to {result.float_path.name} and {result.quant_path.name} in {outdir} "
          "(dynamic-range policy; removed when the command ends)")
    choices["models"] = {"float": str(result.float_path), "quantized": str(result.quant_path),
                         "how": f"converted from {model} (dynamic-range)", "removed_at_exit": True}
    return result.float_path, result.quant_path


class _Notes:
    """Every automatic choice: printed to stderr and kept for the JSON."""

    def __init__(self):
        self.lines: list[str] = []
        self.out = diagnostics()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.out.print(line, highlight=False, markup=False, soft_wrap=True)


def _interrupted(result) -> None:
    """A search cut short keeps what it found (written above); the exit code still says why."""
    from edgeq.errors import EdgeqError

    if isinstance(result.error, KeyboardInterrupt):
        exit_interrupted("edgeq: interrupted: results so far are kept, marked incomplete")
    if isinstance(result.error, EdgeqError):
        raise result.error


@click.command("search")
@model_options
@settings_options(SearchConfig, "budget", "time_budget_s", "seed", "epsilon", "norm", "max_seeds", "per_seed", "lanes")
@click.option("-o", "--out", "out_path", type=output_file, help="Write the found inputs as an input set (.npz).")
def search(model, float_model, quant_model, data, device, inventory, output_name, threads, resolver, wait_s,
           json_path, out_path, **settings):
    """Search for inputs near the data on which the float and quantized models disagree."""
    from edgeq.inputs.search import prepare, write_found
    from edgeq.inputs.search.disagreement import search as run_search
    from edgeq.inputs.search.evaluators import open_evaluator
    from edgeq.inputs.search.operators import operators_for

    notes, choices = _Notes(), {}
    config = SearchConfig(**settings, output=output_name)
    config.check()
    epsilon, norm = config.epsilon, config.norm
    float_path, quant_path = _models(model, float_model, quant_model, choices, notes)
    prepared = prepare(float_path, quant_path, data, epsilon, norm)
    _check_output(output_name, prepared)
    operators, skipped = [], {}
    for x in prepared.data:
        found_ops, left_out = operators_for(x.shape[1:])
        operators += [op for op in found_ops if op.name not in {o.name for o in operators}]
        skipped.update(left_out)
    _note_data(notes, prepared, choices)
    notes(f"operators: {', '.join(op.name for op in operators)}"
          + (f"; left out (not for these inputs): {', '.join(sorted(skipped))}" if skipped else ""))
    choices.update(operators=[op.name for op in operators], skipped_families=skipped,
                   distance={"bound": epsilon, "norm": norm, "relative_to": "the data range (the families' ranges)"})
    with open_evaluator(float_path, quant_path, device, inventory, threads, resolver, wait_s) as evaluator:
        where = evaluator.describe()
        notes(f"evaluating on {where['where']}: {where['runtime']}, resolver {where['resolver']}, "
              f"{where['threads']} thread(s)")
        with RunProgress() as progress:
            result = run_search(evaluator, prepared.data, prepared.spaces, operators, config,
                                prepared.output_names, prepared.float_info,
                                progress=lambda done, total: progress("queries", done, total))
    notes(f"objective: {result.objective.get('reason', 'none (nothing was evaluated)')}")
    written = write_found(out_path, prepared, result.found) if out_path is not None else None
    first = result.first_flip_query
    state = "" if result.complete else " (incomplete: interrupted)"
    out = console()
    if result.found:
        out.print(f"{len(result.found)} disagreement(s) in {result.queries} queries from {result.seeds_tried} seeds"
                  f"{state}; first at query {first}; largest distance {max(f.distance for f in result.found):.4g} "
                  f"({norm}, bound {epsilon:g})" + (f"; written to {written}" if written else ""),
                  highlight=False, markup=False, soft_wrap=True)
    else:
        out.print(f"no disagreement found within {result.queries} queries from {result.seeds_tried} seeds "
                  f"({norm} distance {epsilon:g}){state}" + ("; nothing written" if out_path else ""),
                  highlight=False, markup=False, soft_wrap=True)
    for line in result.notes:
        notes(line)
    payload = {**result.summary(), "command": "search", "evaluator": where, "choices": choices,
               "config": vars(config), "output": str(written) if written else None, "notes": notes.lines,
               "inputs_found": [{"seed_index": f.seed_index, "distance": f.distance, "query": f.query,
                                 "score": f.score, "float_class": f.float_class, "quant_class": f.quant_class,
                                 "operators": f.operators} for f in result.found]}
    write_json_file(json_path, payload)
    _interrupted(result)


@click.command("worst")
@model_options
@settings_options(WorstConfig, "budget", "time_budget_s", "seed", "samples", "top", "tolerance")
@click.option("--family", "families", multiple=True, help="Only these risky families (repeatable).")
@click.option("--no-pairs", is_flag=True, help="Skip pairs of families.")
def worst(model, float_model, quant_model, data, device, inventory, output_name, threads, resolver, wait_s,
          json_path, families, no_pairs, **settings):
    """Find the input shifts (family × strength, and pairs) with the largest accuracy drop / flip rate."""
    from edgeq.inputs.search import prepare
    from edgeq.inputs.search.evaluators import open_evaluator
    from edgeq.inputs.search.worst import worst_distributions

    notes, choices = _Notes(), {}
    config = WorstConfig(**settings, pairs=not no_pairs, families=list(families) or None, output=output_name)
    config.check()
    float_path, quant_path = _models(model, float_model, quant_model, choices, notes)
    prepared = prepare(float_path, quant_path, data)
    _check_output(output_name, prepared)
    _note_data(notes, prepared, choices)
    with open_evaluator(float_path, quant_path, device, inventory, threads, resolver, wait_s) as evaluator:
        where = evaluator.describe()
        notes(f"evaluating on {where['where']}: {where['runtime']}, resolver {where['resolver']}, "
              f"{where['threads']} thread(s)")
        with RunProgress() as progress:
            result = worst_distributions(evaluator, prepared.data, prepared.spaces, config, prepared.output_names,
                                         prepared.labels, prepared.float_info,
                                         progress=lambda done, total: progress("queries", done, total),
                                         where=str(data))
    notes(f"objective: {result.objective.get('reason', 'none (nothing was evaluated)')}")
    notes(f"metric: {result.metric} ({'labels y given' if prepared.labels is not None else 'no labels'}), on "
          f"{min(config.samples, prepared.n)} data samples per condition")
    if result.skipped:
        notes(f"families left out (not for these inputs): {', '.join(sorted(result.skipped))}")
    for line in result.notes:
        notes(line)
    _print_worst(result)
    payload = {**result.summary(), "command": "worst", "evaluator": where, "choices": choices,
               "config": vars(config), "notes": notes.lines}
    write_json_file(json_path, payload)
    _interrupted(result)


def _check_output(output_name, prepared) -> None:
    """``--output`` resolved before any query (exit 2 naming the candidates), as the comparison resolves it."""
    from edgeq.inputs.search.objective import resolve_output

    resolve_output(prepared.float_info, output_name)


def _note_data(notes, prepared, choices) -> None:
    for name, (mode, reason) in prepared.range_modes.items():
        notes(f"value range of {name!r}: {'per feature' if mode == 'channel' else mode} ({reason})")
    choices["range_modes"] = {name: mode for name, (mode, _) in prepared.range_modes.items()}
    choices["seeds"] = {"data": prepared.n, "labels": prepared.labels is not None}


def _print_worst(result) -> None:
    out = console()
    metric = "accuracy drop" if result.metric == "accuracy_drop" else "flip rate"
    if result.clean is not None:
        out.print(f"clean: {metric} {result.clean.rate:.3f} (n={result.clean.n})", highlight=False)
    for c in result.ranked()[:10]:
        lo, hi = c.ci95
        out.print(f"{c.name:<40} {metric} {c.rate:6.3f} [{lo:.3f}, {hi:.3f}]  {_band(c.rate)}", highlight=False,
                  markup=False)
    for name, crossing in result.crossings.items():
        if crossing.get("crosses") and crossing.get("below") is not None:
            out.print(f"{name}: crosses {crossing['threshold']:g} between severity {crossing['below']:g} and "
                      f"{crossing['above']:g}: {crossing.get('description', '')}", highlight=False, markup=False)
        elif crossing.get("crosses"):
            out.print(f"{name}: at or over {crossing['threshold']:g} already at severity {crossing['above']:g}",
                      highlight=False, markup=False)
        else:
            out.print(f"{name}: stays under {crossing['threshold']:g} up to severity 3", highlight=False, markup=False)
    if not result.complete:
        out.print(f"(incomplete: {result.stopped})", highlight=False)


def _band(value: float) -> str:
    from edgeq.analysis.compare import band

    return band(value)
