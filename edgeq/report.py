"""Assemble report.json from a comparison and two runs; print the one-screen summary."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from edgeq import __version__
from edgeq.compare import verdict_metric
from edgeq.results import RunResult, write_json_atomic

VERDICT_STYLE = {"robust": "bold green", "degraded": "bold yellow", "catastrophic": "bold red"}


def latency_stats(latency_ms: np.ndarray) -> dict:
    if latency_ms.size == 0:
        return {}
    p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
    mean = float(latency_ms.mean())
    std = float(latency_ms.std())
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "std": std,
            "cv": std / mean if mean else None, "n": int(latency_ms.size)}


def device_section(run: RunResult) -> dict:
    device, meta = run.meta["device"], run.meta
    runtime = device.get("runtime") or {}
    return {"name": run.run.get("device"), "arch": device.get("arch"),
            "runtime": f"{runtime.get('name')} {runtime.get('version')}", "resolver": meta.get("resolver"),
            "threads": meta.get("threads"), "os": device.get("os"), "python": device.get("python"),
            "cpu": device.get("cpu_model"), "batch_size": meta.get("batch_size"),
            "cpu_governors": (meta.get("cpufreq") or {}).get("governors"),
            "per_op_profile": (meta.get("op_profile") or {}).get("available"),
            "sample_hz": (meta.get("sampling") or {}).get("achieved_hz")}


def build_report(comparison: dict, ref: RunResult, cand: RunResult, extra: dict | None = None) -> dict:
    """The contract's report.json: comparison + device + latency, plus provenance."""
    report = dict(comparison)
    report["device"] = device_section(cand)
    report["latency_ms"] = {"float": latency_stats(ref.latency_ms_per_sample()),
                            "quant": latency_stats(cand.latency_ms_per_sample())}
    report["model_load_ms"] = {"float": ref.meta["load_ns"] / 1e6, "quant": cand.meta["load_ns"] / 1e6}
    report["first_inference_ms"] = {"float": ref.meta["first_inference_ns"] / 1e6,
                                    "quant": cand.meta["first_inference_ns"] / 1e6}
    report.update(measurements(ref, cand))
    report["runs"] = {"float": str(ref.path), "quant": str(cand.path)}
    report["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report["edgeq_version"] = __version__
    report.update(extra or {})
    return report


def measurements(ref: RunResult, cand: RunResult) -> dict:
    """Energy and thermal sections, present only when the runs sampled sensors."""
    from edgeq.power import energy_per_inference, thermal_summary

    found = {}
    energy = {"float": energy_per_inference(ref), "quant": energy_per_inference(cand)}
    if any(energy.values()):
        found["energy"] = energy
    thermal = {"float": thermal_summary(ref), "quant": thermal_summary(cand)}
    if any(thermal.values()):
        found["thermal"] = thermal
    return found


def write_report(outdir: Path, report: dict, runs: dict[str, RunResult]) -> tuple[Path, Path]:
    """report.json and report.html (with latency histograms and, when sampled, latency vs temperature)."""
    json_path, html_path = outdir / "report.json", outdir / "report.html"
    write_json_atomic(json_path, report)
    write_report_html(html_path, report, runs)
    return json_path, html_path


def write_report_html(path: Path, report: dict, runs: dict[str, RunResult]) -> None:
    from edgeq.report_html import write_html
    from edgeq.report_measure import measurement_html

    write_html(report, path, {label: run.latency_ms_per_sample() for label, run in runs.items()} or None,
               extra_html=measurement_html(report, runs))


def _fmt(value, percent=False, digits=1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not np.isfinite(value):
        return "∞" if value > 0 else "-∞"
    return f"{value * 100:.{digits}f}%" if percent else f"{value:.{digits}f}"


def print_summary(console, report: dict) -> None:
    from rich.table import Table

    basis = report.get("metric_basis", "accuracy_drop")
    from rich import box

    table = Table(title="float vs quantized, per input category", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("category", no_wrap=True, min_width=11)
    for column in ("n", "float", "quant", "drop" if basis == "accuracy_drop" else "flip",
                   "agree", "SQNR dB", "KL", "max err"):
        table.add_column(column, justify="right", no_wrap=True)
    rows = list(report["categories"].items()) + [("overall", report["overall"])]
    for name, m in rows:
        value = verdict_metric(m)
        style = "red" if value >= report["thresholds"]["catastrophic"] else (
            "yellow" if value >= report["thresholds"]["degraded"] else "")
        table.add_row(name, str(m["n"]), _fmt(m["float_accuracy"], True), _fmt(m["quant_accuracy"], True),
                      _fmt(value, True), _fmt(m["agreement"], True), _fmt(m["sqnr_db"]),
                      _fmt(m["kl_mean"], digits=4), _fmt(m["max_abs_error"], digits=3),
                      style=style, end_section=name == rows[-2][0])
    console.print(table)
    lat = report.get("latency_ms", {})
    if lat.get("float") and lat.get("quant"):
        console.print(f"latency p50/p99 ms on {report['device']['name']} ({report['device']['arch']}, "
                      f"{report['device']['runtime']}, {report['device']['resolver']}, "
                      f"{report['device']['threads']} thread(s)): float {_fmt(lat['float']['p50'], digits=3)}/"
                      f"{_fmt(lat['float']['p99'], digits=3)}  quant {_fmt(lat['quant']['p50'], digits=3)}/"
                      f"{_fmt(lat['quant']['p99'], digits=3)}")
    verdict = report["verdict"]
    worst = report.get("worst_category")
    console.print(f"verdict: [{VERDICT_STYLE[verdict]}]{verdict}[/] (worst category: {worst}, "
                  f"{basis.replace('_', ' ')} {_fmt(verdict_metric(report['categories'][worst]), True)})")
    for gate in report.get("gates", []):
        mark = "[red]FAILED[/]" if gate["failed"] else "[green]ok[/]"
        observed = gate["observed"]
        shown = f"{observed:.4g}" if isinstance(observed, float) else observed
        where = f" ({gate['where']})" if gate.get("where") else ""
        console.print(f"gate {gate['gate']}={gate['limit']}: observed {shown}{where} {mark}")
