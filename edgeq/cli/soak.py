"""``edgeq soak``: a long run on the device that outlives this process, with CI gates."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import click

from edgeq import __version__
from edgeq.cli.common import (RunProgress, always, console, describe_gate, diagnostics, history_options,
                               job_options_for, output_file, path_arg, record_history, wait_option, write_json_file)
from edgeq.reports.units import duration_text
from edgeq.errors import EXIT_DEVICE, EXIT_GATE, ConfigError


SOAK_OPTIONS = ("threads", "resolver", "warmup", "power", "power_sensor", "sample_hz", "sysfs_root", "vcgencmd")


@click.command()
@click.option("--device", help="Device name(s) from the inventory: NAME or NAME,NAME,…")
@click.option("--tag", help="Every inventory device with this tag.")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--model", type=path_arg, help=".tflite to soak.")
@click.option("--inputs", "inputs_path", type=path_arg, help="Input set (.npz), cycled for the whole run.")
@click.option("--duration", default="1h", show_default=True, help="e.g. 8h, 30m, 90s.")
@click.option("--window", default="60s", show_default=True, help="One record per window.")
@click.option("-o", "--outdir", type=path_arg, help="Where records land (default edgeq-soak-<time>).")
@job_options_for(SOAK_OPTIONS, "soak")
@click.option("--attach", "attach_dir", type=path_arg, help="Follow a soak started earlier (its output folder).")
@click.option("--stop", is_flag=True, help="With --attach: ask the device to stop, then collect.")
@click.option("--detach", is_flag=True, help="Start it and return; collect later with --attach.")
@click.option("--reconnect-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds to keep retrying a lost device while following before giving up.")
@click.option("--fail-on", help="Gates: p99-drift=0.2,rss-growth=0.1,output-drift=0,throttled=0 (exit 1).")
@click.option("--json", "json_path", type=output_file, help="Write the soak summary here too.")
@click.option("--junit", "junit_path", type=output_file, help="Write JUnit XML here (Jenkins, GitLab).")
@wait_option
@history_options
def soak(device, tag, inventory, model, inputs_path, duration, window, outdir, attach_dir, stop, detach,
         reconnect_timeout, fail_on, json_path, junit_path, wait_s, db, no_history, **options):
    """Run MODEL on DEVICE(s) for --duration, detached from this session; gate on drift and leaks.

    With several devices (--device a,b or --tag) each soaks in parallel into OUTDIR/<device>/.
    """
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.devices.fleet import run_fleet, safe_dirname
    from edgeq.devices.run import RunSpec
    from edgeq.devices.soak import SoakHandle, check_soak, parse_duration, start_soak, stop_soak
    from edgeq.reports.soak import parse_soak_gates

    gates = parse_soak_gates(fail_on)
    found = load_inventory(inventory)
    out = console()
    if attach_dir:
        folders = _soak_folders(attach_dir)
        handles = {folder: SoakHandle.load(folder) for folder in folders}
        targets = {folder: select_devices(h.device, found)[0] for folder, h in handles.items()}
        if stop:
            for folder, handle in handles.items():
                stop_soak(targets[folder], handle)
                out.print(f"asked {handle.device} to stop soak {handle.soak_id}")
    else:
        if not ((device or tag) and model and inputs_path):
            raise ConfigError("a new soak needs --device (or --tag), --model and --inputs (or --attach OUTDIR)")
        options["power"] = options["power"] or "device"  # default: the inventory's power key
        spec = RunSpec(model=model, inputs=inputs_path, **options)
        duration_s, window_s = parse_duration(duration), parse_duration(window)
        check_soak(spec, duration_s, window_s)  # before any device is touched or any folder made
        chosen = select_devices(device, found, tag=tag)
        outdir = outdir or Path(f"edgeq-soak-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}")
        per_device = tag is not None or len(chosen) > 1 or "," in device  # what the README promises
        targets = {(outdir / safe_dirname(d.name) if per_device else outdir): d for d in chosen}
        started = run_fleet(list(targets.values()), lambda d: start_soak(
            d, spec, _folder_of(targets, d), duration_s, window_s, wait_s))
        handles = {_folder_of(targets, found[name]): handle for name, handle in started.succeeded.items()}
        for name, error in started.failed.items():
            always(f"edgeq: {name}: could not start: {error}")
        for folder, handle in handles.items():
            out.print(f"soak {handle.soak_id} running on {handle.device} (pid {handle.pid}) for {duration}; "
                      f"records in {folder}")
        if detach:
            out.print(f"collect it later with: edgeq soak --attach {outdir}")
            sys.exit(started.exit_code)
        if not handles:
            sys.exit(started.exit_code)
    with RunProgress() as progress:  # one live display shared by every device's follower
        results = run_fleet([targets[f] for f in handles], lambda d: _follow_and_judge(
            d, handles[_folder_of(targets, d)], _folder_of(targets, d), gates, out, progress, reconnect_timeout))
    summaries = results.succeeded
    for name, error in results.failed.items():
        always(f"edgeq: {name}: {error}")
    _write_outputs(summaries, json_path, junit_path, model, targets)
    if not no_history:
        from edgeq.store.db import record_from_run

        record_history(db, [record_from_run(_history_summary(summary, folder), "soak", str(folder))
                            for folder, summary in ((_folder_of(targets, found[n]), s) for n, s in summaries.items())])
    if any(g["failed"] for s in summaries.values() for g in s["gates"]):
        sys.exit(EXIT_GATE)
    if results.failed or any(s["state"] == "failed" for s in summaries.values()) or (
            not attach_dir and started.failed):
        sys.exit(EXIT_DEVICE)


def _folder_of(targets: dict, device) -> Path:
    return next(folder for folder, d in targets.items() if d.name == device.name)


def _soak_folders(root: Path) -> list[Path]:
    """A soak's folder, or a fleet soak's folder holding one per device."""
    from edgeq.devices.soak import HANDLE_FILE

    if (root / HANDLE_FILE).exists():
        return [root]
    folders = sorted(p.parent for p in root.glob(f"*/{HANDLE_FILE}"))
    if not folders:
        raise ConfigError(f"{root}: no soak here (no {HANDLE_FILE} in it or its subfolders)")
    return folders


def _follow_and_judge(target, handle, outdir: Path, gates, out, progress, reconnect_s: float) -> dict:
    from edgeq.devices.soak import follow, read_records
    from edgeq.reports.soak import evaluate_soak_gates, summarize

    def on_records(new, status):
        windows = status.get("windows", 0)
        total = max(1, int(handle.duration_s // handle.window_s))
        progress(f"{target.name} soak", min(windows, total), total)
        for record in new:
            if record.get("type") == "window":
                lat = record["latency_ms"]
                out.log(f"{target.name} window {record['index']}: p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms"
                        f"  temp {record.get('temp_c')}  rss {record.get('rss_kb')} kB  "
                        f"drift {record.get('drift', {}).get('mismatched', 0)}")
        if status.get("state") == "reconnecting":
            out.log(f"{target.name}: connection lost, reconnecting (the soak keeps running)")

    status = follow(target, handle, outdir, on_records, reconnect_for_s=reconnect_s)
    records, bad = read_records(outdir)
    summary = summarize(records, status, bad)
    if bad:
        diagnostics().print(f"[yellow]{target.name}: skipped {bad} malformed record(s) in "
                            f"{outdir / 'records.jsonl'}[/]")
    summary["gates"] = evaluate_soak_gates(summary, gates)
    summary["device"], summary["soak_id"] = target.name, handle.soak_id
    p99, rss = summary["p99_ms"], summary["rss_kb"]
    out.print(f"{target.name}: soak {summary['state']}: {summary['windows']} windows, p99 "
              f"{duration_text(p99['start'])} → {duration_text(p99['end'])}, RSS {_kb(rss['start'])} → "
              f"{_kb(rss['end'])}, {summary['output_drift']['mismatched']} drifted outputs", highlight=False)
    for gate in summary["gates"]:
        out.print(f"{target.name}: gate {describe_gate(gate)} "
                  + ("[red]FAILED[/]" if gate["failed"] else "[green]ok[/]"))
        if gate["failed"]:
            always(f"edgeq: {target.name}: gate failed: {describe_gate(gate)}")
    return summary


def _kb(value) -> str:
    return "—" if value is None else f"{value / 1024:.1f} MB"


def _write_outputs(summaries: dict, json_path, junit_path, model, targets: dict) -> None:
    from edgeq.results import write_json_atomic
    from edgeq.reports.soak import junit_xml

    folders = {d.name: folder for folder, d in targets.items()}
    for name, summary in summaries.items():
        write_json_atomic(folders[name] / "summary.json", summary)
    if len(summaries) == 1:
        write_json_file(json_path, next(iter(summaries.values())))
    else:
        write_json_file(json_path, {"devices": summaries})
    if junit_path:
        label = Path(str(model)).name if model else "model"
        Path(junit_path).write_text(junit_xml([(s, name, label) for name, s in summaries.items()]))


def _history_summary(summary: dict, outdir: Path) -> dict:
    meta_path = outdir / "device" / "status.json"
    status = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return {"device": {"name": summary["device"], "arch": status.get("arch"), "runtime": status.get("runtime"),
                       "resolver": status.get("resolver"), "threads": status.get("threads")},
            "latency_ms": {"p50": summary["p50_ms"]["end"], "p99": summary["p99_ms"]["end"]},
            "model_name": status.get("model_name"), "model_sha256": status.get("model_sha256"),
            "edgeq_version": __version__, "soak": {k: summary[k] for k in ("windows", "p99_ms", "rss_kb",
                                                                            "output_drift", "state")}}
