"""``edgeq soak``: a long run on the device that outlives this process, with CI gates."""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from pathlib import Path

import click

from edgeq import __version__
from edgeq.cli.common import (FiniteFloatRange, RunProgress, always, exit_interrupted, check_folder_free, console, describe_gate,
                               diagnostics, history_options, job_option_names, job_options_for, output_file, path_arg, record_history,
                               wait_option, write_json_file)
from edgeq.reports.units import duration_text
from edgeq.errors import EXIT_DEVICE, EXIT_GATE, ConfigError


SOAK_OPTIONS = job_option_names(job_kind="soak")  # every soak job option with a flag


@click.command()
@click.option("--device", help="Device name(s) from the inventory: NAME or NAME,NAME,…; with --attach: which of "
                               "the folder's soaks to follow (default all).")
@click.option("--tag", help="Every inventory device with this tag.")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--model", type=path_arg, help=".tflite to soak.")
@click.option("--inputs", "inputs_path", type=path_arg, help="Input set (.npz), cycled for the whole run.")
@click.option("--duration", default="1h", show_default=True, help="e.g. 8h, 30m, 90s; at most 720h (30 days).")
@click.option("--window", default="60s", show_default=True, help="One record per window; at most the duration.")
@click.option("-o", "--outdir", type=path_arg, help="Where records land (default edgeq-soak-<time>).")
@job_options_for(SOAK_OPTIONS, "soak")
@click.option("--attach", "attach_dir", type=path_arg, help="Follow a soak started earlier (its output folder).")
@click.option("--stop", is_flag=True, help="With --attach: stop the soak now (the window in progress may be lost), "
                                           "then collect.")
@click.option("--detach", is_flag=True, help="Start it and return; collect later with --attach.")
@click.option("--reconnect-timeout", type=FiniteFloatRange(min=0, min_open=True), default=60.0, show_default=True,
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
    Ctrl-C while following leaves the soak running (exit 130); --attach OUTDIR follows it again.
    """
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.devices.fleet import printable, run_fleet, safe_dirname
    from edgeq.devices.run import RunSpec
    from edgeq.devices.soak import HANDLE_FILE, SoakHandle, check_soak, parse_duration, start_soak, stop_soak
    from edgeq.reports.soak import parse_soak_gates

    if stop and not attach_dir:
        raise ConfigError("--stop needs --attach OUTDIR: it stops a soak started earlier (to start one, leave "
                          "--stop out)")
    if attach_dir and tag:
        raise ConfigError("--tag with --attach: the soak folder names its devices; to follow some of them, "
                          "name them with --device")
    gates = parse_soak_gates(fail_on)
    found = load_inventory(inventory)
    out = console()
    cancel = threading.Event()  # Ctrl-C: every follower stops within a poll; the soaks keep running
    started, stop_failed = None, {}
    try:
        if attach_dir:
            handles = _chosen(attach_dir, {folder: SoakHandle.load(folder) for folder in _soak_folders(attach_dir)},
                              device)
            targets = {folder: _device_of(handle, found, folder) for folder, handle in handles.items()}
            if stop:
                stopped = run_fleet(list(targets.values()), lambda d: stop_soak(d, handles[_folder_of(targets, d)]))
                for name, how in stopped.succeeded.items():
                    out.print(_stop_words(handles[_folder_of(targets, found[name])], how), highlight=False,
                              markup=False)
                stop_failed = stopped.failed
                for name, error in stop_failed.items():
                    always(f"edgeq: {name}: could not stop: {printable(error)}")
                handles = {f: h for f, h in handles.items() if targets[f].name not in stop_failed}
        else:
            if not ((device or tag) and model and inputs_path):
                raise ConfigError("a new soak needs --device (or --tag), --model and --inputs (or --attach OUTDIR)")
            options["power"] = options["power"] or "device"  # default: the inventory's power key
            spec = RunSpec(model=model, inputs=inputs_path, **options)
            duration_s, window_s = parse_duration(duration, "--duration"), parse_duration(window, "--window")
            check_soak(spec, duration_s, window_s)  # before any device is touched or any folder made
            chosen = select_devices(device, found, tag=tag)
            outdir = outdir or Path(f"edgeq-soak-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}")
            per_device = tag is not None or len(chosen) > 1 or "," in device  # what the README promises
            targets = {(outdir / safe_dirname(d.name) if per_device else outdir): d for d in chosen}
            for folder in targets:  # a running soak's handle is never replaced by a new one
                check_folder_free(folder, "--outdir", HANDLE_FILE, f"follow it with --attach {folder}")
            started = run_fleet(list(targets.values()), lambda d: start_soak(
                d, spec, _folder_of(targets, d), duration_s, window_s, wait_s))
            handles = {_folder_of(targets, found[name]): handle for name, handle in started.succeeded.items()}
            for name, error in started.failed.items():
                always(f"edgeq: {name}: could not start: {printable(error)}")
            for folder, handle in handles.items():
                out.print(f"soak {handle.soak_id} running on {handle.device} (pid {handle.pid}) for {duration}; "
                          f"records in {folder}", highlight=False, markup=False)
            if detach:
                out.print(f"collect it later with: edgeq soak --attach {outdir}", highlight=False, markup=False)
                sys.exit(started.exit_code)
            if not handles:
                sys.exit(started.exit_code)
        with RunProgress() as progress:  # one live display shared by every device's follower
            results = run_fleet([targets[f] for f in handles], lambda d: _follow_and_judge(
                d, handles[_folder_of(targets, d)], _folder_of(targets, d), gates, out, progress, reconnect_timeout,
                cancel), cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        where = attach_dir or outdir
        left = f": the soak keeps running on the device; follow it again with `edgeq soak --attach {where}`" \
            if where and (attach_dir or (started and started.succeeded)) else ""
        exit_interrupted(f"edgeq: interrupted{left}")
    summaries = results.succeeded
    for name, error in results.failed.items():
        always(f"edgeq: {name}: {printable(error)}")
    _write_outputs(summaries, json_path, junit_path, model, targets)
    if not no_history:
        from edgeq.store.db import record_from_run

        record_history(db, [record_from_run(_history_summary(summary, folder), "soak", str(folder))
                            for folder, summary in ((_folder_of(targets, found[n]), s) for n, s in summaries.items())])
    if any(g["failed"] for s in summaries.values() for g in s["gates"]):
        sys.exit(EXIT_GATE)
    if results.failed or stop_failed or any(s["state"] == "failed" for s in summaries.values()) or (
            started is not None and started.failed):
        sys.exit(max([EXIT_DEVICE] + [e.exit_code for e in (*results.failed.values(), *stop_failed.values())]))



def _folder_of(targets: dict, device) -> Path:
    return next(folder for folder, d in targets.items() if d.name == device.name)


def _chosen(attach_dir: Path, handles: dict, device: str | None) -> dict:
    """--device with --attach picks which of the folder's soaks to follow (and stop); all by default.
    A name the folder has no soak for is refused, not ignored."""
    if not device:
        return handles
    names = [n.strip() for n in device.split(",") if n.strip()]
    ran_on = [h.device for h in handles.values()]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--device {device}: names {', '.join(twice)} more than once; name each device once")
    other = [n for n in names if n not in ran_on]
    if other or not names:
        raise ConfigError(f"--device {device}: {attach_dir} holds no soak on {', '.join(other) or 'no device'} "
                          f"(its soaks ran on {', '.join(ran_on)}); name some of those, or leave --device out")
    return {folder: h for folder, h in handles.items() if h.device in names}


def _device_of(handle, found: dict, folder: Path):
    if handle.device not in found:
        raise ConfigError(f"{folder / 'soak.json'}: device {handle.device!r} is not in the inventory "
                          f"(it has: {', '.join(sorted(found))}); pass the inventory the soak started with")
    return found[handle.device]


def _stop_words(handle, how: dict) -> str:
    """What --stop did, in one line."""
    from edgeq.devices.fleet import printable

    kind = how.get("how")
    text = {"agent": "the agent ended it",
            "signal": f"ended it with {how.get('signal', 'a signal')}; the window in progress was not recorded",
            "gone": "its process was already gone: marked failed",
            "final": f"it had already ended ({printable(how.get('state'), 20)})",
            "missing": "its folder is gone from the device",
            "flag": "asked it to stop: the device cannot show its processes, so it stops at its window's end"}
    return f"{handle.device}: soak {handle.soak_id}: {text.get(kind, printable(kind, 40))}"


def _soak_folders(root: Path) -> list[Path]:
    """A soak's folder, or a fleet soak's folder holding one per device."""
    from edgeq.devices.soak import HANDLE_FILE

    if (root / HANDLE_FILE).exists():
        return [root]
    folders = sorted(p.parent for p in root.glob(f"*/{HANDLE_FILE}"))
    if not folders:
        raise ConfigError(f"{root}: no soak here (no {HANDLE_FILE} in it or its subfolders)")
    return folders


def _follow_and_judge(target, handle, outdir: Path, gates, out, progress, reconnect_s: float,
                      cancel: threading.Event | None = None) -> dict:
    from rich.markup import escape

    from edgeq.devices.fleet import printable
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

    status = follow(target, handle, outdir, on_records, reconnect_for_s=reconnect_s, cancel=cancel)
    records, bad = read_records(outdir)
    summary = summarize(records, status, bad)
    if bad:
        diagnostics().print(f"[yellow]{target.name}: skipped {bad} malformed record(s) in "
                            f"{outdir / 'records.jsonl'}[/]")
    summary["gates"] = evaluate_soak_gates(summary, gates)
    summary["device"], summary["soak_id"] = target.name, handle.soak_id
    p99, rss = summary["p99_ms"], summary["rss_kb"]
    if summary.get("error"):
        out.print(f"{target.name}: {printable(summary['error'])}", highlight=False, markup=False)
    out.print(f"{target.name}: soak {escape(printable(summary['state'], 20))}: {summary['windows']} windows, p99 "
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
    from edgeq.reports.soak import write_junit

    folders = {d.name: folder for folder, d in targets.items()}
    for name, summary in summaries.items():
        write_json_atomic(folders[name] / "summary.json", summary)
    if len(summaries) == 1:
        write_json_file(json_path, next(iter(summaries.values())))
    else:
        write_json_file(json_path, {"devices": summaries})
    if junit_path:
        label = Path(str(model)).name if model else "model"
        write_junit(junit_path, [(s, name, label) for name, s in summaries.items()])


def _history_summary(summary: dict, outdir: Path) -> dict:
    meta_path = outdir / "device" / "status.json"
    status = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return {"device": {"name": summary["device"], "arch": status.get("arch"), "runtime": status.get("runtime"),
                       "resolver": status.get("resolver"), "threads": status.get("threads")},
            "latency_ms": {"p50": (summary.get("p50_ms") or {}).get("end"), "p99": summary["p99_ms"]["end"]},
            "model_name": status.get("model_name"), "model_sha256": status.get("model_sha256"),
            "edgeq_version": __version__, "soak": {k: summary[k] for k in ("windows", "p99_ms", "rss_kb",
                                                                            "output_drift", "state")}}
