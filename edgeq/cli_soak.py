"""``edgeq soak``: a long run on the device that outlives this process, with CI gates."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import click

from edgeq import __version__
from edgeq.cli import RunProgress, console, history_options, main, path_arg, record_history, write_json_file
from edgeq.errors import EXIT_GATE, ConfigError


@main.command()
@click.option("--device", help="Device name from the inventory (a soak runs on one device).")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--model", type=path_arg, help=".tflite to soak.")
@click.option("--inputs", "inputs_path", type=path_arg, help="Input set (.npz), cycled for the whole run.")
@click.option("--duration", default="1h", show_default=True, help="e.g. 8h, 30m, 90s.")
@click.option("--window", default="60s", show_default=True, help="One record per window.")
@click.option("-o", "--outdir", type=path_arg, help="Where records land (default edgeq-soak-<time>).")
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--resolver", default="AUTO", show_default=True)
@click.option("--power", type=click.Choice(["none", "hwmon", "power_supply", "pi5-pmic"]),
              help="Power sampler (default: the inventory's power key).")
@click.option("--sysfs-root", help="Where the agent reads sensors (default /sys).")
@click.option("--vcgencmd", help="Path of vcgencmd on the device (default: found on PATH).")
@click.option("--attach", "attach_dir", type=path_arg, help="Follow a soak started earlier (its output folder).")
@click.option("--stop", is_flag=True, help="With --attach: ask the device to stop, then collect.")
@click.option("--detach", is_flag=True, help="Start it and return; collect later with --attach.")
@click.option("--fail-on", help="Gates: p99-drift=0.2,rss-growth=0.1,output-drift=0,throttled=0 (exit 1).")
@click.option("--json", "json_path", type=path_arg, help="Write the soak summary here too.")
@click.option("--junit", "junit_path", type=path_arg, help="Write JUnit XML here (Jenkins, GitLab).")
@history_options
def soak(device, inventory, model, inputs_path, duration, window, outdir, threads, resolver, power, sysfs_root,
         vcgencmd, attach_dir, stop, detach, fail_on, json_path, junit_path, db, no_history):
    """Run MODEL on DEVICE for --duration, detached from this session; gate on drift and leaks."""
    from edgeq.devices import load_inventory, select_devices
    from edgeq.run import RunSpec
    from edgeq.soak import SoakHandle, parse_duration, start_soak, stop_soak
    from edgeq.soak_report import parse_soak_gates

    gates = parse_soak_gates(fail_on)
    found = load_inventory(inventory)
    out = console()
    if attach_dir:
        outdir = attach_dir
        handle = SoakHandle.load(outdir)
        (target,) = select_devices(handle.device, found)
        if stop:
            stop_soak(target, handle)
            out.print(f"asked {target.name} to stop soak {handle.soak_id}")
    else:
        if not (device and model and inputs_path):
            raise ConfigError("a new soak needs --device, --model and --inputs (or --attach OUTDIR)")
        (target,) = select_devices(device, found)
        outdir = outdir or Path(f"edgeq-soak-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}")
        spec = RunSpec(model=model, inputs=inputs_path, threads=threads, resolver=resolver)
        handle = start_soak(target, spec, outdir, parse_duration(duration), parse_duration(window),
                            power or target.power, {"sysfs_root": sysfs_root, "vcgencmd": vcgencmd})
        out.print(f"soak {handle.soak_id} running on {target.name} (pid {handle.pid}) for {duration}; "
                  f"records in {outdir}")
        if detach:
            out.print(f"collect it later with: edgeq soak --attach {outdir}")
            return
    summary = _follow_and_judge(target, handle, outdir, gates, out)
    _write_outputs(summary, outdir, json_path, junit_path, target.name, model or handle.soak_id)
    if not no_history:
        from edgeq.store import record_from_run

        record_history(db, [record_from_run(_history_summary(summary, target, outdir), "soak", str(outdir))])
    if any(g["failed"] for g in summary["gates"]):
        sys.exit(EXIT_GATE)
    if summary["state"] == "failed":
        sys.exit(3)


def _follow_and_judge(target, handle, outdir: Path, gates, out) -> dict:
    from edgeq.soak import follow, load_records
    from edgeq.soak_report import evaluate_soak_gates, summarize

    with RunProgress() as progress:
        def on_records(new, status):
            windows = status.get("windows", 0)
            total = max(1, int(handle.duration_s // handle.window_s))
            progress(f"{target.name} soak ({status.get('state', '…')})", min(windows, total), total)
            for record in new:
                if record.get("type") == "window":
                    lat = record["latency_ms"]
                    out.log(f"window {record['index']}: p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  "
                            f"temp {record.get('temp_c')}  rss {record.get('rss_kb')} kB  "
                            f"drift {record.get('drift', {}).get('mismatched', 0)}")

        status = follow(target, handle, outdir, on_records)
    summary = summarize(load_records(outdir), status)
    summary["gates"] = evaluate_soak_gates(summary, gates)
    summary["device"], summary["soak_id"] = target.name, handle.soak_id
    out.print(f"soak {summary['state']}: {summary['windows']} windows, p99 {summary['p99_ms']['start']} → "
              f"{summary['p99_ms']['end']} ms, RSS {summary['rss_kb']['start']} → {summary['rss_kb']['end']} kB, "
              f"{summary['output_drift']['mismatched']} drifted outputs")
    for gate in summary["gates"]:
        out.print(f"gate {gate['gate']}={gate['limit']}: observed {gate['observed']} "
                  + ("[red]FAILED[/]" if gate["failed"] else "[green]ok[/]"))
    return summary


def _write_outputs(summary: dict, outdir: Path, json_path, junit_path, device: str, model) -> None:
    from edgeq.results import write_json_atomic
    from edgeq.soak_report import junit_xml

    write_json_atomic(outdir / "summary.json", summary)
    write_json_file(json_path, summary)
    if junit_path:
        Path(junit_path).write_text(junit_xml(summary, summary["gates"], device, Path(str(model)).name))


def _history_summary(summary: dict, target, outdir: Path) -> dict:
    meta_path = outdir / "device" / "status.json"
    status = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return {"device": {"name": target.name, "arch": status.get("arch"), "runtime": status.get("runtime"),
                       "resolver": status.get("resolver"), "threads": status.get("threads")},
            "latency_ms": {"p50": summary["p50_ms"]["end"], "p99": summary["p99_ms"]["end"]},
            "model_name": status.get("model_name"), "model_sha256": status.get("model_sha256"),
            "edgeq_version": __version__, "soak": {k: summary[k] for k in ("windows", "p99_ms", "rss_kb",
                                                                            "output_drift", "state")}}
