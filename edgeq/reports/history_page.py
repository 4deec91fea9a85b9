"""The history page: one section per device/model/runtime series, trends and regressions."""

from __future__ import annotations

import datetime as _dt

from edgeq.reports.page import CSS, escape, fmt, write_text_atomic
from edgeq.reports.svg import line_chart
from edgeq.store.db import Record
from edgeq.store.history import flag_regressions, series


def _when(ts: float | None) -> str:
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OverflowError, OSError):  # NULL or a time no calendar has
        return "—"


def _text(value) -> str:
    return "—" if value is None or value == "" else str(value)


def series_html(key: tuple, runs: list[Record], baseline: str) -> str:
    device, sha, runtime, resolver, threads = (_text(part) for part in key)
    points = flag_regressions(runs, baseline)

    def marks(word: str) -> list[int]:
        return [i for i, p in enumerate(points) if any(f.startswith(word) for f in p.flags)]

    xs = [r.created / 86400.0 for r in runs]
    day = lambda v: _dt.datetime.fromtimestamp(v * 86400.0, _dt.timezone.utc).strftime("%m-%d %H:%M")  # noqa: E731
    charts = [line_chart(xs, {"quant p50": [r.p50_ms for r in runs], "quant p99": [r.p99_ms for r in runs],
                              "float p50": [r.float_p50_ms for r in runs]},
                         y_label="latency ms", x_label="run time (UTC)", marks=marks("p"), x_format=day)]
    if any(r.accuracy_drop is not None for r in runs):
        charts.append(line_chart(xs, {"worst-category drop": [r.accuracy_drop for r in runs]},
                                 y_label="accuracy drop", x_label="run time (UTC)", marks=marks("accuracy"),
                                 x_format=day))
    if any(r.energy_mj is not None for r in runs):
        charts.append(line_chart(xs, {"energy / inference": [r.energy_mj for r in runs]},
                                 y_label="mJ per inference", x_label="run time (UTC)", marks=marks("energy"),
                                 x_format=day))
    rows = "".join(
        f"<tr><td>{escape(_when(p.record.created))}</td><td>{escape(_text(p.record.kind))}</td>"
        f"<td>{escape(p.record.verdict or '—')}</td>"
        f"<td>{fmt(p.record.accuracy_drop, 'pct')}</td><td>{fmt(p.record.p50_ms, 'ms')}</td>"
        f"<td>{fmt(p.record.p99_ms, 'ms')}</td><td>{fmt(p.record.energy_mj)}</td>"
        f"<td class=\"desc\">{'<span class=fail>' + escape('; '.join(p.flags)) + '</span>' if p.flags else ''}"
        "</td></tr>"
        for p in points)
    title = f"{device} · {runs[-1].model_name or 'model'} ({sha[:12]}) · {runtime} · {resolver} · {threads} thread(s)"
    return (f"<section><h2>{escape(title)}</h2>{''.join(charts)}<div class=scroll><table><tr><th>time</th><th>kind</th>"
            "<th>verdict</th><th>drop</th><th>p50</th><th>p99</th><th>mJ/inf</th>"
            f"<th>regressions vs {escape(baseline)} "
            f"baseline</th></tr>{rows}</table></div></section>")


def render_history(records: list[Record], baseline: str = "median", title: str = "edgeq history",
                   skipped: int = 0) -> str:
    """The page; values the database holds as NULL/NaN show as —, and ``skipped`` rows (no usable
    time, see ``Store.query``) are counted in the header."""
    sections = "".join(series_html(key, runs, baseline) for key, runs in series(records).items())
    if not sections:
        sections = "<section><p>No runs recorded yet.</p></section>"
    left_out = f" · {skipped} row(s) skipped (no valid time)" if skipped else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body><main><header><h1>{escape(title)}</h1>"
            f"<p class=meta>{len(records)} runs · red rings mark regressions{escape(left_out)}</p></header>{sections}"
            "</main></body></html>\n")


def write_history(records: list[Record], path, baseline: str = "median", skipped: int = 0) -> None:
    write_text_atomic(path, render_history(records, baseline, skipped=skipped))
