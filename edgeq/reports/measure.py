"""The report's measurement section: energy per inference, temperature and throttling,
and latency over time next to temperature, for runs that sampled sensors."""

from __future__ import annotations

import numpy as np

from edgeq.reports.page import escape, fmt
from edgeq.reports.svg import line_chart

MAX_POINTS = 1500


def _unit(value, unit: str) -> str:
    shown = fmt(value)
    return shown if shown == "—" else f"{shown} {unit}"


def _energy_rows(energy: dict) -> str:
    rows = ""
    for label, e in energy.items():
        if e:
            ci = e.get("ci95_mj")
            interval = f" ({ci[0]:.4g} … {ci[1]:.4g})" if ci else ""
            rows += (f"<tr><td>{escape(label)}</td><td>{e['energy_mj']:.4g} mJ{interval}</td>"
                     f"<td>{_unit(e.get('mean_power_w'), 'W')}</td><td>{_unit(e.get('idle_power_w'), 'W')}</td>"
                     f"<td>{_unit(e.get('sample_hz'), 'Hz')}</td><td>{escape(e.get('baseline'))}</td></tr>")
    return rows


def _thermal_sentence(label: str, t: dict) -> str:
    text = f"{label}: max {fmt(t.get('max_c'))} °C, mean {fmt(t.get('mean_c'))} °C"
    if t.get("throttled_ever"):
        text += (f"; the SoC throttled ({', '.join(t.get('throttled_flags') or [])}) at "
                 f"{fmt(t.get('throttle_temp_c'))} °C: p99 {fmt(t.get('p99_not_throttled'), 'ms')} when not "
                 f"throttled, {fmt(t.get('p99_when_throttled'), 'ms')} when throttled")
    return text


def _downsample(t: np.ndarray, lat: np.ndarray, temp: np.ndarray):
    """Per-bucket max latency (what a reader looks for) and mean temperature."""
    if len(t) <= MAX_POINTS:
        return t, lat, temp
    buckets = np.array_split(np.arange(len(t)), MAX_POINTS)
    pick = lambda a, f: np.array([f(a[b]) if np.isfinite(a[b]).any() else np.nan for b in buckets])  # noqa: E731
    return pick(t, np.nanmean), pick(lat, np.nanmax), pick(temp, np.nanmean)


def measurement_html(report: dict, runs: dict) -> str:
    from edgeq.analysis.power import latency_temperature_series

    parts = []
    rows = _energy_rows(report.get("energy") or {})
    if rows:
        parts.append("<h2>Energy per inference</h2><table><tr><th>model</th><th>energy (95% CI)</th>"
                     f"<th>mean power</th><th>idle power</th><th>sampled at</th><th>baseline</th></tr>{rows}</table>")
    thermal = report.get("thermal") or {}
    sentences = [_thermal_sentence(label, t) for label, t in thermal.items() if t]
    if sentences:
        parts.append("<h2 style='margin-top:14px'>Temperature</h2>" + "".join(f"<p class=meta>{escape(s)}</p>" for s in sentences))
    for label, run in runs.items():
        series = latency_temperature_series(run)
        if series is None or not len(series.t_s):
            continue
        t, lat, temp = _downsample(*(np.asarray(a, dtype=float) for a in series))
        chart = line_chart(t.tolist(), {f"{label} latency (ms)": lat.tolist()}, y_label="latency ms",
                           x_label="seconds into the timed run", right_label="°C",
                           right_series={"temperature": temp.tolist()} if np.isfinite(temp).any() else None)
        parts.append(f"<h3>{escape(label)}: latency and temperature over time</h3>{chart}")
    return f"<section>{''.join(parts)}</section>" if parts else ""
