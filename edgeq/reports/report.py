"""Assemble report.json from a comparison and two runs; print the one-screen summary."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from edgeq import __version__
from edgeq.analysis.compare import verdict_metric, worst_value
from edgeq.reports.units import duration_text
from edgeq.results import RunResult, latency_stats, strict_json, write_json_atomic

VERDICT_STYLE = {"robust": "bold green", "degraded": "bold yellow", "catastrophic": "bold red"}


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
    return strict_json(report)


def measurements(ref: RunResult, cand: RunResult) -> dict:
    """Energy and thermal sections, present only when the runs sampled sensors."""
    from edgeq.analysis.power import energy_per_inference, thermal_summary

    found = {}
    energy = {"float": energy_per_inference(ref), "quant": energy_per_inference(cand)}
    if any(energy.values()):
        found["energy"] = energy
    thermal = {"float": thermal_summary(ref), "quant": thermal_summary(cand)}
    if any(thermal.values()):
        found["thermal"] = thermal
    return found


def write_report(outdir: Path, report: dict, runs: dict[str, RunResult],
                 measured: dict[str, RunResult] | None = None) -> tuple[Path, Path]:
    """report.json and report.html (with latency histograms and, when sampled, latency vs temperature
    from ``measured``: the runs whose sensors were sampled, default ``runs``)."""
    json_path, html_path = outdir / "report.json", outdir / "report.html"
    write_json_atomic(json_path, report)
    _readable_not_writable(json_path)
    write_report_html(html_path, report, runs, measured)
    return json_path, html_path


def _readable_not_writable(path: Path) -> None:
    """0644 whatever the umask or an older file's mode: reports are shared (CI artifacts), never world-writable."""
    os.chmod(path, 0o644)


def write_report_html(path: Path, report: dict, runs: dict[str, RunResult],
                      measured: dict[str, RunResult] | None = None) -> None:
    from edgeq.reports.html import write_html
    from edgeq.reports.measure import measurement_html
    from edgeq.reports.search_html import examples_html

    # float32 is plenty for a plot, and halves what a million-inference histogram holds
    write_html(report, path, {label: run.latency_ms_per_sample().astype(np.float32) for label, run in runs.items()}
               or None,
               extra_html=measurement_html(report, measured or runs), examples_html=examples_html(report, runs))
    _readable_not_writable(path)


def _fmt(value, percent=False, digits=1) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not np.isfinite(value):
        return "∞" if value > 0 else "-∞"
    return f"{value * 100:.{digits}f}%" if percent else f"{value:.{digits}f}"


def _interval(ci) -> str:
    return f"[{ci[0] * 100:.1f}–{ci[1] * 100:.1f}%]" if ci else ""


def _cell_name(category, severity) -> str:
    return f"{category}/{severity}" if severity else str(category)


RATE_LABEL = {"accuracy_drop": "drop", "flip_rate": "flip", "sample_flip_rate": "flip", "label_flip_rate": "label flip", "fail_rate": "fail",
              "detection_flip_rate": "det flip"}


def print_summary(console, report: dict) -> None:
    """The deciding output's categories as a table, one line per output, then the verdict."""
    from rich import box
    from rich.table import Table

    basis = report.get("metric_basis", "accuracy_drop")
    deciding = report.get("deciding_output")
    title = "float vs quantized, per input category" + (f" (output {deciding})" if deciding else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    # a longer name (a plug-in family's) folds onto a second line: never cut, table within 80 columns
    table.add_column("category", overflow="fold", min_width=11, max_width=14)
    accuracy = report["overall"].get("float_accuracy") is not None
    columns = (("n", "float", "quant") if accuracy else ("n",)) + (
        RATE_LABEL.get(basis, "rate"), "worst sev", "SQNR dB", "max err")
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True)
    rows = list(report["categories"].items()) + [("overall", report["overall"])]
    thresholds = report["thresholds"]
    marks = set()
    for name, m in rows:
        worst_sev = _worst_severity(m)
        value = verdict_metric(worst_sev[1] if worst_sev else m)
        mark = "" if name == "overall" else _mark(m)
        marks.add(mark)
        style = "dim" if mark == STRESS_MARK else (
            "red" if value >= thresholds["catastrophic"] else ("yellow" if value >= thresholds["degraded"] else ""))
        cells = [str(m["n"])] + ([_fmt(m["float_accuracy"], True), _fmt(m["quant_accuracy"], True)] if accuracy
                                 else [])
        cells += [_fmt(verdict_metric(m), True), f"{worst_sev[0]}: {_fmt(value, True)}" if worst_sev else "",
                  _fmt(m["sqnr_db"]), _fmt(m["max_abs_error"], digits=3)]
        table.add_row(name + mark, *cells, style=style, end_section=name == rows[-2][0])
    console.print(table)
    legend = [LEGEND[m] for m in (STRESS_MARK, FLOAT_MARK) if m in marks]
    if legend:
        console.print("[dim]" + "; ".join(legend) + "[/]", highlight=False)
    _print_stress(console, report)
    _print_outputs(console, report)
    _print_latency(console, report)
    _print_verdict(console, report, basis)


STRESS_MARK, FLOAT_MARK = " *", " †"
LEGEND = {STRESS_MARK: "* stress: out-of-domain or synthetic, reported beside the verdict, never deciding it",
          FLOAT_MARK: "† a severity where float fails too, not counted: with labels its accuracy is under chance "
                      "+ half its clean skill, without them it keeps its clean answer on under half the samples "
                      "(worst sev shows the counted ones)"}


def _cells_counted(m: dict) -> dict:
    levels = m.get("severities") or {}
    return {k: v for k, v in levels.items() if v.get("counts_for_verdict", True)}


def _worst_severity(m: dict):
    """The worst severity among those that count (all of them when none does)."""
    levels = _cells_counted(m) or (m.get("severities") or {})
    return max(levels.items(), key=lambda kv: verdict_metric(kv[1]), default=None)


def _mark(m: dict) -> str:
    if m.get("role") == "stress":
        return STRESS_MARK
    if not m.get("counts_for_verdict", True) or len(_cells_counted(m)) < len(m.get("severities") or {}):
        return FLOAT_MARK
    return ""


def _print_stress(console, report: dict) -> None:
    """Stress findings, beside the verdict: the worst cell and what the worst ones imply."""
    stress = report.get("stress") or {}
    worst = stress.get("worst")
    if not worst:
        return
    cell = _cell_name(worst["category"], worst["severity"])
    console.print(f"stress (beside the verdict): worst {cell} ({worst['output']}) "
                  f"{RATE_LABEL.get(worst.get('metric') or '', 'rate')} {_fmt(worst['value'], True)} "
                  f"{_interval(worst.get('ci95'))}, {worst['band']} level", highlight=False)
    for text in (stress.get("findings") or [])[:3]:
        console.print(f"  [dim]{text}[/]", highlight=False)


def _options_text(options: dict) -> str:
    shown = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted((options or {}).items())
             if v is not None]
    return ", ".join(shown)


def _print_outputs(console, report: dict) -> None:
    sections = report.get("outputs") or {}
    if len(sections) < 2 and not any(s.get("source") != "auto" for s in sections.values()):
        for name, s in sections.items():
            console.print(f"output {name}: {s['kind']} ({s['reason']}; {_options_text(s.get('options'))})",
                          highlight=False)
        return
    for name, s in sections.items():
        if s.get("verdict") is None:
            console.print(f"output {name}: {s['kind']}, not judged", highlight=False)
            continue
        mark = "" if s["drives_verdict"] else ", not in verdict"
        console.print(f"output {name}: {s['kind']}{mark}; worst {_cell_name(s['worst_category'], s['worst_severity'])} "
                      f"{RATE_LABEL.get(s['metric'], s['metric'])} {_fmt(s['worst_value'], True)} "
                      f"{_interval(s.get('worst_ci95'))} → {s['verdict']}", highlight=False)
        console.print(f"  [dim]{s['reason']}; {_options_text(s.get('options'))}[/]", highlight=False)
        if s.get("when"):
            gate = s["when"]
            console.print(f"  [dim]judged only where {gate['rule']}: open on {gate['open']} of {gate['of']} samples "
                          f"({gate['reason']})[/]", highlight=False)


def _print_latency(console, report: dict) -> None:
    lat = report.get("latency_ms", {})
    if lat.get("float") and lat.get("quant"):
        device = report["device"]
        console.print(f"latency p50/p99: float {duration_text(lat['float']['p50'])} / "
                      f"{duration_text(lat['float']['p99'])}, quant {duration_text(lat['quant']['p50'])} / "
                      f"{duration_text(lat['quant']['p99'])} on {device['name']}", highlight=False)
        console.print(f"  [dim]{device['arch']}, {device['runtime']}, resolver {device['resolver']}, "
                      f"{device['threads']} thread(s)[/]", highlight=False)


def _print_verdict(console, report: dict, basis: str) -> None:
    verdict = report["verdict"]
    cell = _cell_name(report.get("worst_category"), report.get("worst_severity"))
    section = (report.get("outputs") or {}).get(report.get("deciding_output"), {})
    where = f"output {report['deciding_output']}, " if len(report.get("outputs") or {}) > 1 else ""
    console.print(f"verdict: [{VERDICT_STYLE[verdict]}]{verdict}[/] (worst cell: {where}{cell}, "
                  f"{basis.replace('_', ' ')} {_fmt(worst_value(report), True)} {_interval(section.get('worst_ci95'))})")
    confidence = report.get("verdict_confidence")
    if confidence and confidence.get("level") != "firm":
        console.print(f"[yellow]confidence: {confidence['level']}[/]: {confidence['note']}")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for gate in report.get("gates", []):
        mark = "[red]FAILED[/]" if gate["failed"] else "[green]ok[/]"
        observed = gate["observed"]
        shown = f"{observed:.4g}" if isinstance(observed, float) else observed
        where = f" ({gate['where']})" if gate.get("where") else ""
        console.print(f"gate {gate['gate']}={gate['limit']}: observed {shown}{where} {mark}")
