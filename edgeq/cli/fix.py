"""``edgeq fix``: the smallest set of ops to keep float so every field condition passes, verified."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from edgeq.cli.common import always, check_not_an_input, check_output_file, console, path_arg, write_json_file
from edgeq.cli.localize import Workdir, announcer, measured_lines, measurer_for, prepare_bench, repair_options


@click.command()
@click.argument("model", type=path_arg)
@repair_options
@click.option("--max-float", type=click.IntRange(min=1), help="Keep at most this many ops float.")
def fix(model, data, inputs_path, quantized, seed, max_per_category, target_drop, json_path, outdir, device_name,
        inventory, wait_s, resolver, max_float):
    """Write OUTDIR/<stem>.fixed.tflite (default: the current folder): MODEL with the fewest ops float
    that keep every field condition's drop under the target, verified on the suite. Only a model that
    still has quantized weights and is smaller than float is a fix; otherwise nothing is written and
    the best partial variant is reported (exit 1)."""
    from edgeq.repair.fix import fix_model

    announce = announcer()
    final = Path(outdir) if outdir is not None else Path.cwd()
    flag = "--outdir" if outdir is not None else "fix (no -o: the current folder)"
    inputs = [(name, Path(value)) for name, value in (("MODEL", model), ("--data", data), ("--inputs", inputs_path),
                                                      ("--quantized", quantized)) if value is not None]
    check_fix_targets(final, _stem_of(Path(model)), flag, inputs)  # before any work: the names convert gives
    workdir_of = Workdir(outdir)
    with workdir_of as workdir, \
            measurer_for(device_name, inventory, wait_s, workdir / "work", announce, resolver) as measurer:
        bench = prepare_bench(model, workdir / "work", data, inputs_path, quantized, seed, max_per_category,
                              announce, measurer)
        check_fix_targets(final, bench.stem, flag, inputs)  # the stem conversion really gave, before the search
        result = fix_model(bench, final, target_drop=target_drop, max_float=max_float, announce=announce)
        result.report = workdir_of.forget(result.report)
        if result.report["status"] != "nothing-to-fix":
            write_json_file(result.json_path, result.report)
    print_fix(console(), result)
    write_json_file(json_path, result.report)
    if result.exit_code:
        always(f"edgeq: gate failed: {result.report.get('reason') or 'fixed model failed verification'}")
        sys.exit(result.exit_code)


def _stem_of(model: Path) -> str:
    """The stem ``edgeq.models.convert`` gives MODEL's files (m.keras, m.float.tflite → m)."""
    stem = model.resolve().name if model.is_dir() else model.stem
    return stem.removesuffix(".float")


def check_fix_targets(outdir: Path, stem: str, flag: str = "--outdir", inputs=()) -> None:
    """ConfigError (exit 2) when OUTDIR/<stem>.fixed.tflite or <stem>.fix.json cannot be written as a
    file (a folder of that name, a path under a file) or is one of the command's ``inputs`` ((name,
    path) pairs): said in one line before the search, not as a traceback after it."""
    for name in (f"{stem}.fixed.tflite", f"{stem}.fix.json"):
        target = Path(os.path.abspath(outdir / name))
        check_output_file(target, flag, str(outdir / name))
        check_not_an_input(target, flag, [(n, p) for n, p in inputs if p.is_file()],
                           [(n, p) for n, p in inputs if p.is_dir()])


def print_fix(out, result) -> None:
    def say(text):
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    report = result.report
    if report["status"] == "nothing-to-fix":
        say(f"nothing to fix: {report['reason']}")
        return
    lines = _best_lines(report) if "best" in report else _fixed_lines(report)
    for line in lines + measured_lines(report):
        say(line)
    for path in (result.fixed_path, result.json_path):
        if path is not None:
            say(str(path))


def _table(conditions: dict, target: float, column: str) -> list[str]:
    """The conditions over the target before or after (and clean), with their role."""
    lines = [f"{'condition':<18} {'role':<6} {'shipped':>8} {'rebuilt':>8} {column:>8}"]
    for name, c in conditions.items():
        if max(c["shipped"], c["rebuilt"], c[column]) > target or name == "clean":
            lines.append(f"{name[:18]:<18} {c.get('role', 'field'):<6} {c['shipped']:>8.3f} {c['rebuilt']:>8.3f} "
                         f"{c[column]:>8.3f}")
    return lines


def _fixed_lines(report: dict) -> list[str]:
    lines = [f"kept float: op {r['op_index']} {r['op_type']} {(r['layer'] or r['tensor'])[:40]}"
             for r in report["recipe"]]
    lines += _table(report["conditions"], report["target_drop"], "fixed")
    models = report["models"]
    where = "device p50" if "device" in report else "host"
    for name in ("float", "quantized", "fixed"):
        m = models[name]
        latency = "-" if m.get("latency_us") is None else f"{m['latency_us']:.1f}"
        lines.append(f"{name:<10} {m['bytes'] / 1024:>9.1f} KiB {latency:>9} µs ({where}) "
                     f"{m['int8_weights']:>3} int8 weights")
    ratio = models["float"]["bytes"] / max(models["fixed"]["bytes"], 1)
    verdict = "every field condition" if report["status"] == "fixed" else "NOT every field condition"
    lines.append(f"{report['status']}: {verdict} ≤ {report['target_drop']:g} on the suite; {ratio:.2f}× smaller "
                 "than float")
    return lines


def _best_lines(report: dict) -> list[str]:
    """No quantized variant met the target: the reason (which names the best partial variant, an op
    still quantized: what it keeps float, its worst condition, its size) and its table."""
    import textwrap

    lines = textwrap.wrap(f"{report['status']}: {report['reason']}", 80)
    return lines + _table(report["best"]["conditions"], report["target_drop"], "best")
