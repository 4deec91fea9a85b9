"""``edgeq fix``: the smallest set of ops to keep float so every condition passes, verified."""

from __future__ import annotations

import sys

import click

from edgeq.cli.common import always, console, path_arg, write_json_file
from edgeq.cli.localize import Workdir, announcer, measured_lines, measurer_for, prepare_bench, repair_options


@click.command()
@click.argument("model", type=path_arg)
@repair_options
@click.option("--max-float", type=click.IntRange(min=1), help="Keep at most this many ops float.")
def fix(model, data, inputs_path, quantized, seed, max_per_category, target_drop, json_path, outdir, device_name,
        inventory, wait_s, max_float):
    """Write OUTDIR/<stem>.fixed.tflite (default: the current folder): MODEL with the fewest ops float
    that keep every condition's drop under the target, verified on the suite."""
    from pathlib import Path

    from edgeq.repair.fix import fix_model

    announce = announcer()
    final = Path(outdir) if outdir is not None else Path.cwd()
    workdir_of = Workdir(outdir)
    with workdir_of as workdir, \
            measurer_for(device_name, inventory, wait_s, workdir / "work", announce) as measurer:
        bench = prepare_bench(model, workdir / "work", data, inputs_path, quantized, seed, max_per_category,
                              announce, measurer)
        result = fix_model(bench, final, target_drop=target_drop, max_float=max_float, announce=announce)
        result.report = workdir_of.forget(result.report)
        if result.report["status"] != "nothing-to-fix":
            write_json_file(result.json_path, result.report)
    print_fix(console(), result)
    write_json_file(json_path, result.report)
    if result.exit_code:
        always(f"edgeq: gate failed: {result.report.get('reason') or 'fixed model failed verification'}")
        sys.exit(result.exit_code)


def print_fix(out, result) -> None:
    def say(text):
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    report = result.report
    if report["status"] == "nothing-to-fix":
        say(f"nothing to fix: {report['reason']}")
        return
    if report["status"] == "unreachable":
        say(f"no fix: {report['reason']}")
        say(f"best found: ops {report['best']['kept_float']} float")
        return
    for r in report["recipe"]:
        say(f"kept float: op {r['op_index']} {r['op_type']} {(r['layer'] or r['tensor'])[:40]}")
    say(f"{'condition':<18} {'shipped':>8} {'rebuilt':>8} {'fixed':>8}")
    for name, c in report["conditions"].items():
        if max(c["shipped"], c["rebuilt"]) > report["target_drop"] or name == "clean":
            say(f"{name[:18]:<18} {c['shipped']:>8.3f} {c['rebuilt']:>8.3f} {c['fixed']:>8.3f}")
    models = report["models"]
    where = "device p50" if "device" in report else "host"
    for name in ("float", "quantized", "fixed"):
        m = models[name]
        latency = "-" if m.get("latency_us") is None else f"{m['latency_us']:.1f}"
        say(f"{name:<10} {m['bytes'] / 1024:>9.1f} KiB {latency:>9} µs ({where})")
    ratio = models["float"]["bytes"] / max(models["fixed"]["bytes"], 1)
    verdict = "every condition" if report["status"] == "fixed" else "NOT every condition"
    say(f"{report['status']}: {verdict} ≤ {report['target_drop']:g} on the suite; {ratio:.2f}× smaller than float")
    if report.get("note"):
        say(f"note: {report['note']}")
    for line in measured_lines(report):
        say(line)
    say(str(result.fixed_path))
    say(str(result.json_path))
