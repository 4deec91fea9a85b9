"""``edgeq run``: one model over an input set on one or more devices."""

from __future__ import annotations

import sys

import click

from edgeq import __version__
from edgeq.cli.common import (path_arg, output_file, write_json_file, device_options, timing_options, measure_options,
                                history_options, record_history, wait_option, always, result_line, RunProgress)


@click.command()
@device_options
@click.option("--model", type=path_arg, required=True, help=".tflite to run.")
@click.option("--inputs", "inputs_path", type=path_arg, required=True, help="Input set (.npz).")
@click.option("-o", "--outdir", type=path_arg, required=True, help="Run directory to write.")
@timing_options
@click.option("--json", "json_path", type=output_file, help="Write a run summary here (- for stdout).")
@measure_options
@wait_option
@history_options
def run(device, tag, inventory, model, inputs_path, outdir, json_path, wait_s, db, no_history, **job):
    """Run MODEL over an input set on device(s); outputs and latencies land in OUTDIR.

    With several devices each gets OUTDIR/<device>/.
    """
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.devices.fleet import run_fleet, safe_dirname
    from edgeq.analysis.power import energy_per_inference, thermal_summary
    from edgeq.reports.report import device_section
    from edgeq.results import latency_stats
    from edgeq.devices.run import RunSpec, run_on_device
    from edgeq.reports.units import duration_text

    targets = select_devices(device, load_inventory(inventory), tag=tag)
    spec = RunSpec(model=model, inputs=inputs_path, label=model.name, **job)
    single = len(targets) == 1

    def one(target):
        rundir = outdir if single else outdir / safe_dirname(target.name)
        (result,) = run_on_device(target, [spec], [rundir], lambda _, d, t: progress(target.name, d, t),
                                  wait_s=wait_s)
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
        result_line(f"{summary['rundir']}: {summary['samples']} samples on {name}; latency p50 "
                    f"{duration_text(lat['p50'])}, p99 {duration_text(lat['p99'])}{energy}")
    for name, error in fleet.failed.items():
        always(f"{name}: FAILED: {error}")
    if not no_history:
        from edgeq.store.db import record_from_run

        record_history(db, [record_from_run(summary, "run", summary["rundir"]) for summary in fleet.succeeded.values()])
    payload = (next(iter(fleet.succeeded.values())) if single
               else {"devices": fleet.succeeded, "failed": {n: str(e) for n, e in fleet.failed.items()}})
    write_json_file(json_path, payload)
    sys.exit(fleet.exit_code)
