"""Self-contained HTML view of a ``report.json`` dict.

One page, no network, no scripts: inline CSS and SVG charts built from strings. This module
lays out the page (header, overview, charts, categories, latency, gates) and includes the
sections of ``outputs_html``, ``stress_html``, ``search_html`` and ``repair_html``; what they
all share (escaping, number formats, colours, CSS, the verdict basis) is in ``page``, so no
section imports this module. Every piece of text that comes from the report is passed
through ``escape``; every number goes through ``fmt``, which turns None/NaN into "—" and inf
into "∞".
"""

from __future__ import annotations

import math
import os

import numpy as np

from edgeq.reports.outputs_html import (OUTPUT_CSS, deciding_html, is_per_output, metrics_for, outputs_html,
                                        overview_html, report_kind, warnings_html)
from edgeq.reports.page import (COLORS, CSS, LABELS, METRICS, VERDICTS, as_dict, band_of, basis_of, escape, fmt,
                                number, size_text, thresholds_of, write_text_atomic)
from edgeq.reports.repair_html import fix_html
from edgeq.reports.search_html import EXAMPLE_CSS, search_html, worst_html
from edgeq.reports.stress_html import (MARKS, ROLE_CSS, exclusion, field_line, has_roles, marker_html, row_class,
                                       rules_note, stress_html, when_html, why_html, worst_conditions_html)


def _sorted_categories(report: dict, basis: str) -> list[tuple[str, dict]]:
    cats = [(str(k), as_dict(v)) for k, v in as_dict(report.get("categories")).items()]
    key = lambda kv: (exclusion(kv[1]) is not None, number(kv[1].get(basis)) is None,
                      -(number(kv[1].get(basis)) or 0.0), kv[0])
    return sorted(cats, key=key)


def _cell_value(m: dict, basis: str):
    v = number(m.get(basis))
    return v if v is not None else number(m.get("value"))


def worst_first(cats: list[tuple[str, dict]], basis: str) -> list[tuple[str, dict]]:
    """Categories by their worst counted cell (a severity, or the category when it has none), worst
    first; categories that do not count at all after them."""
    def key(item):
        name, c = item
        out = exclusion(c) is not None
        levels = [as_dict(m) for m in as_dict(c.get("severities")).values()]
        pool = ([m for m in levels if out or not exclusion(m)] or levels) if levels else [c]
        values = [v for v in (_cell_value(m, basis) for m in pool) if v is not None and math.isfinite(v)]
        worst = max(values) if values else None
        return out, worst is None, -(worst or 0.0), name

    return sorted(cats, key=key)


def _join(*parts) -> str:
    return " · ".join(p for p in parts if p)


def _meta_lines(report: dict) -> list[str]:
    model, dev, inp = as_dict(report.get("model")), as_dict(report.get("device")), as_dict(report.get("inputs"))
    has = lambda d, k, text: text if d.get(k) not in (None, "") else ""
    lines = []
    if model:
        f, q = as_dict(model.get("float")), as_dict(model.get("quant"))
        lines.append(_join(f"<b>model</b> {escape(f.get('path'))} ({size_text(f.get('size'))}) → "
                           f"{escape(q.get('path'))} ({size_text(q.get('size'))})",
                           has(model, "policy", f"policy {escape(model.get('policy'))}"),
                           has(model, "weights_quantized", f"{escape(model.get('weights_quantized'))} weight tensors quantized")))
    if dev:
        lines.append(_join(f"<b>device</b> {escape(dev.get('name'))}", escape(dev.get("arch")),
                           escape(dev.get("runtime")),
                           has(dev, "resolver", f"resolver {escape(dev.get('resolver'))}"),
                           has(dev, "threads", f"{escape(dev.get('threads'))} thread(s)")))
    if inp:
        lines.append(_join(f"<b>inputs</b> {escape(inp.get('path'))}", f"{fmt(inp.get('n'), 'int')} samples",
                           has(inp, "sha256", f"sha256 <code>{escape(str(inp.get('sha256'))[:12])}</code>"),
                           "input kind " + ", ".join(f"{escape(k)}: {escape(v)}"
                                                     for k, v in as_dict(inp.get("kinds")).items())
                           if as_dict(inp.get("kinds")) else ""))
    lines.append(_join(escape(report.get("created")), has(report, "edgeq_version", f"edgeq {escape(report.get('edgeq_version'))}")))
    return [ln for ln in lines if ln]


def header_html(report: dict, cats, basis: str, thr) -> str:
    verdict = report.get("verdict")
    cls = verdict if verdict in VERDICTS else "unknown"
    worst = report.get("worst_category")
    worst = str(worst) if worst is not None else (cats[0][0] if cats else None)
    wval = dict(cats).get(worst, {}).get(basis)
    worst_txt = (f"worst category <b>{escape(worst)}</b>: {escape(LABELS[basis])} <b>{fmt(wval, 'pct')}</b>"
                 if worst is not None else f"verdict metric: {escape(LABELS[basis])}")
    per_output = is_per_output(report)
    if per_output:
        worst_txt = deciding_html(report, LABELS[basis]) or f"verdict metric: {escape(LABELS[basis])}"
    gate = when_html(as_dict(as_dict(report.get("outputs")).get(str(report.get("deciding_output")))).get("when"))
    extra = "".join(f"<br>{x}" for x in (field_line(report), f'<span class="meta">the deciding output is {gate}</span>'
                                         if gate else "") if x)
    return (f'<header><h1>edgeq quantization report</h1>'
            f'<span class="badge verdict-{cls}">{escape(verdict or "unknown")}</span>'
            f'<span class="worst">{worst_txt}<br><span class="meta">degraded ≥ {fmt(thr[0], "pct")}, '
            f'catastrophic ≥ {fmt(thr[1], "pct")}</span>{extra}</span>'
            + (warnings_html(report) if per_output else "")
            + "".join(f'<p class="meta">{ln}</p>' for ln in _meta_lines(report)) + "</header>")


def summary_html(report: dict) -> str:
    ov = as_dict(report.get("overall"))
    rows = "".join(f"<tr><td>{escape(label)}</td><td>{fmt(ov.get(k), kind)}</td>"
                   f"<td class=\"desc\">{escape(meaning)}</td></tr>" for k, label, kind, meaning in metrics_for(report))
    which = report.get("deciding_output")
    note = (f"Figures of output {escape(which)}, which decided the verdict. " if which is not None
            and as_dict(report.get("outputs")) else "") + ("Over every sample, stress cells and cells where float "
                                                           "fails too included; the verdict reads the counted cells "
                                                           "only." if has_roles(report) else "")
    note = f'<p class="note">{note.strip()}</p>' if note else ""
    return (f"<section><h2>Overall</h2><table><tr><th>metric</th><th>value</th><th></th></tr>{rows}</table>"
            f"{note}</section>")


def bars_svg(cats: list[tuple[str, dict]], basis: str, thr) -> str:
    """Horizontal bars, one per category, with dashed threshold lines."""
    W, lab_w, right, top, row = 960, 190, 70, 22, 24
    vals = [number(c.get(basis)) for _, c in cats]
    finite = [v for v in vals if v is not None and math.isfinite(v)]
    lo = min([0.0] + finite) * 1.1
    hi = max([thr[1] * 1.2] + finite) * 1.05
    hi = hi if hi > lo else lo + 1.0
    H = top + row * len(cats) + 8
    x = lambda v: lab_w + (min(max(v, lo), hi) - lo) / (hi - lo) * (W - lab_w - right)
    out = [f'<svg class="bars" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" role="img">']
    close = x(thr[1]) - x(thr[0]) < 150  # labels would overlap: push them apart
    for name, t, band, anchor in (("degraded", thr[0], "warn", "end"), ("catastrophic", thr[1], "bad", "start")):
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 6}" y2="{H - 4}" stroke="{COLORS[band]}" '
                   f'stroke-dasharray="5,4" class="threshold"/><text x="{x(t):.1f}" y="{top - 9}" '
                   f'text-anchor="{anchor if close else "middle"}">{name} {fmt(t, "pct")}</text>')
    out.append(f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 4}" y2="{H - 4}" stroke="#5f6368"/>')
    for i, ((name, c), v) in enumerate(zip(cats, vals)):
        y = top + i * row
        band = band_of(v, thr)
        x0, x1 = (x(min(v, 0)), x(max(v, 0))) if v is not None else (x(0), x(0))
        fit = f' textLength="{lab_w - 12}" lengthAdjust="spacingAndGlyphs"' if len(name) > 26 else ""  # never cut
        why = exclusion(c)  # not counted: faded, dashed outline, said in the tooltip and beside the value
        muted = (f' fill-opacity="0.3" stroke="{COLORS[band]}" stroke-dasharray="3,2"' if why else "")
        out.append(f'<text x="{lab_w - 8}" y="{y + 16}" text-anchor="end"{fit}>{escape(name)}<title>{escape(name)}</title></text>'
                   f'<rect class="bar band-{band}" x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" height="16" '
                   f'fill="{COLORS[band]}"{muted}><title>{escape(name)}: {fmt(v, "pct")}'
                   f'{f" (not counted: {MARKS[why]})" if why else ""}</title></rect>'
                   f'<text x="{max(x1, x(0)) + 5:.1f}" y="{y + 16}">{fmt(v, "pct")}'
                   f'{f" · {MARKS[why]}" if why else ""}</text>')
    return "".join(out) + "</svg>"


def chart_html(report: dict, cats, basis: str, thr) -> str:
    if not cats:
        return ""
    which = report.get("deciding_output")
    which = f" — output {escape(which)}" if which is not None and as_dict(report.get("outputs")) else ""
    faded = (" Faded bars (last) are categories that do not decide the verdict: stress, or float fails there too."
             if any(exclusion(c) for _, c in cats) else "")
    return (f"<section><h2>{escape(LABELS[basis])} by category (worst first){which}</h2>{bars_svg(cats, basis, thr)}"
            f'<p class="note">{"Bars left of zero: the quantized model did better. " if basis == "accuracy_drop" else ""}Green below '
            f"{fmt(thr[0], 'pct')}, amber below {fmt(thr[1], 'pct')}, red at or above.{faded}</p></section>")


def _metric_cells(m: dict, metrics) -> str:
    return "".join(f"<td>{fmt(m.get(k), kind)}</td>" for k, _, kind, _ in metrics)


def categories_html(report: dict, cats, basis: str, metrics=METRICS) -> str:
    if not cats:
        return ""
    descs, worst = as_dict(report.get("category_descriptions")), report.get("worst_category")
    roles = as_dict(as_dict(report.get("inputs")).get("cell_roles"))
    head = lambda first: (f"<tr><th>{first}</th>" + "".join(f"<th>{escape(lab)}</th>" for _, lab, _, _ in metrics)
                          + "</tr>")
    rows, every = [], []
    for name, c in cats:
        desc = f'<div class="meta">{escape(descs[name])}</div>' if descs.get(name) else ""
        one = (f' <span class="meta">severity {escape(c["severity"])}</span>'
               if c.get("severity") not in (None, "") else "")
        suite = str(as_dict(roles.get(name)).get("reason") or "")
        rows.append(f"<tr{row_class(c, name == str(worst))}><td><b>{escape(name)}</b>{one}{marker_html(c)}{desc}"
                    f"{why_html(c, suite)}</td>{_metric_cells(c, metrics)}</tr>")
        sev = as_dict(c.get("severities"))
        every += [as_dict(m) for m in sev.values()] or [c]
        if sev:
            keys = sorted(sev, key=lambda s: (0, int(s), "") if str(s).lstrip("-").isdigit() else (1, 0, str(s)))
            srows = "".join(f"<tr{row_class(sev[s])}><td>severity {escape(s)}{marker_html(sev[s])}"
                            f"{why_html(sev[s])}</td>{_metric_cells(as_dict(sev[s]), metrics)}</tr>" for s in keys)
            rows.append(f'<tr class="sev"><td colspan="{len(metrics) + 1}"><details><summary>{len(sev)} '
                        f'severity level(s) of {escape(name)}</summary><table>{head("severity")}{srows}</table></details></td></tr>')
    muted = (" Muted rows do not decide the verdict (the reason is under the name); categories that do not count at "
             "all come last. " + rules_note(every)) if has_roles(report) else ""
    return (f"<section><h2>Categories</h2><div class=\"scroll\"><table>{head('category')}{''.join(rows)}</table></div>"
            f'<p class="note">Sorted by {escape(LABELS[basis])} of each category\'s worst counted cell (the category or one of '
            f'its severities), worst first; the worst category is highlighted.{muted}</p></section>')


def _clean(a) -> np.ndarray:
    try:
        a = np.asarray(a)
        a = (a if a.dtype.kind == "f" else a.astype(float)).ravel()
    except (TypeError, ValueError):
        return np.zeros(0)
    return a[np.isfinite(a)]


def hist_svg(series: dict[str, np.ndarray], bins: int = 40) -> tuple[str, str]:
    """Overlayed histograms (share of runs per bin), shared linear bins clipped at p99.5."""
    allv = np.concatenate(list(series.values()))
    lo, hi = float(allv.min()), float(np.percentile(allv, 99.5))
    hi = hi if hi > lo else lo + max(abs(lo) * 0.01, 1e-3)
    edges = np.linspace(lo, hi, bins + 1)
    W, H, L, R, T, B = 960, 250, 56, 16, 26, 40
    shares = {k: np.histogram(v[v <= hi], bins=edges)[0] / len(v) for k, v in series.items()}
    ymax = max(float(s.max()) for s in shares.values()) or 1.0
    sx = lambda v: L + (v - lo) / (hi - lo) * (W - L - R)
    sy = lambda s: T + (1 - s / ymax) * (H - T - B)
    out = [f'<svg class="hist" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" role="img">',
           f'<line x1="{L}" x2="{W - R}" y1="{H - B}" y2="{H - B}" stroke="#5f6368"/>']
    for t in np.linspace(lo, hi, 6):
        out.append(f'<text x="{sx(t):.1f}" y="{H - B + 16}" text-anchor="middle">{t:.3g}</text>')
    for s in (0, ymax / 2, ymax):
        out.append(f'<text x="{L - 6}" y="{sy(s) + 4:.1f}" text-anchor="end">{s * 100:.0f}%</text>'
                   f'<line x1="{L}" x2="{W - R}" y1="{sy(s):.1f}" y2="{sy(s):.1f}" stroke="#eceff1"/>')
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 6}" text-anchor="middle">latency (ms)</text>')
    for j, (k, s) in enumerate(shares.items()):
        col = COLORS.get(k, "#5f6368")
        for i in np.nonzero(s)[0]:
            out.append(f'<rect class="hist-{escape(k)}" x="{sx(edges[i]):.1f}" y="{sy(s[i]):.1f}" '
                       f'width="{max(sx(edges[i + 1]) - sx(edges[i]) - 0.5, 0.5):.1f}" '
                       f'height="{H - B - sy(s[i]):.1f}" fill="{col}" fill-opacity="0.5"/>')
        med = float(np.median(series[k]))
        if med <= hi:
            out.append(f'<line x1="{sx(med):.1f}" x2="{sx(med):.1f}" y1="{T}" y2="{H - B}" stroke="{col}" stroke-dasharray="4,3"/>')
        out.append(f'<rect x="{W - R - 210}" y="{6 + j * 16}" width="10" height="10" fill="{col}" fill-opacity="0.6"/>'
                   f'<text x="{W - R - 195}" y="{15 + j * 16}">{escape(k)} (median {med:.3g} ms)</text>')
    over = {k: int((v > hi).sum()) for k, v in series.items()}
    note = ""
    if any(over.values()):
        note = (f"Clipped at the 99.5th percentile ({hi:.3g} ms); not shown: "
                + ", ".join(f"{n} {escape(k)} run(s)" for k, n in over.items()) + " above it.")
    return "".join(out) + "</svg>", note


def latency_html(report: dict, latencies_ms=None) -> str:
    lat = as_dict(report.get("latency_ms"))
    series = {k: _clean(v) for k, v in latencies_ms.items()} if isinstance(latencies_ms, dict) else {}
    series = {k: v for k, v in series.items() if v.size}
    if not lat and not series:
        return ""
    cols = [("p50", "ms"), ("p90", "ms"), ("p99", "ms"), ("mean", "ms"), ("std", "ms"), ("n", "int")]
    head = "<tr><th></th>" + "".join(f"<th>{c}</th>" for c, _ in cols) + "</tr>"
    rows = [f"<tr><td>{k}</td>" + "".join(f"<td>{fmt(as_dict(lat.get(k)).get(c), kind)}</td>" for c, kind in cols)
            + "</tr>" for k in ("float", "quant")]
    cells = []
    for c in ("p50", "p90", "p99", "mean"):
        fv, qv = number(as_dict(lat.get("float")).get(c)), number(as_dict(lat.get("quant")).get(c))
        ok = fv is not None and qv is not None and fv > 0 and math.isfinite(fv) and math.isfinite(qv)
        cells.append(f"<td>{qv / fv:.2f}×</td>" if ok else "<td>—</td>")
    rows.append("<tr><td>quant ÷ float</td>" + "".join(cells) + "<td></td><td></td></tr>")
    chart = ""
    if series:
        svg, note = hist_svg(series)
        chart = svg + (f'<p class="note">{note}</p>' if note else "")
    return f"<section><h2>Latency</h2><table>{head}{''.join(rows)}</table>{chart}</section>"


def gates_html(report: dict) -> str:
    raw = report.get("gates")
    gates = [g for g in raw if isinstance(g, dict)] if isinstance(raw, list) else []
    if not gates:
        return ""
    rows = []
    for g in gates:
        failed = g.get("failed")
        res = ('<span class="fail">FAIL</span>' if failed else '<span class="pass">PASS</span>'
               if failed is not None else "—")
        rows.append(f"<tr><td>{escape(g.get('gate'))}</td><td>{fmt(g.get('limit'))}</td>"
                    f"<td>{fmt(g.get('observed'))}</td><td>{res}</td></tr>")
    n_fail = sum(1 for g in gates if g.get("failed"))
    return (f"<section><h2>Gates: {n_fail} of {len(gates)} failed</h2><table><tr><th>gate</th><th>limit</th>"
            f"<th>observed</th><th>result</th></tr>{''.join(rows)}</table></section>")


def render_html(report: dict, latencies_ms: dict | None = None, extra_html: str = "", examples_html: str = "") -> str:
    report = as_dict(report)
    basis, thr = basis_of(report), thresholds_of(report)
    cats = _sorted_categories(report, basis)
    body = (header_html(report, cats, basis, thr) + gates_html(report) + overview_html(report) + summary_html(report)
            + worst_conditions_html(report, basis, report_kind(report)[0], thr) + chart_html(report, cats, basis, thr)
            + categories_html(report, worst_first(cats, basis), basis, metrics_for(report)) + stress_html(report)
            + examples_html + search_html(report) + worst_html(report) + fix_html(report) + outputs_html(report, thr)
            + latency_html(report, latencies_ms) + extra_html)
    css = (CSS + ("\n" + OUTPUT_CSS if is_per_output(report) else "") + ("\n" + ROLE_CSS if has_roles(report) else "")
           + ("\n" + EXAMPLE_CSS if examples_html else ""))
    title = f"edgeq report: {report.get('verdict') or 'unknown'}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>'
            f"<body><main>{body}</main></body></html>\n")


def write_html(report: dict, path, latencies_ms=None, extra_html: str = "", examples_html: str = "") -> None:
    """Write the page as UTF-8, atomically: a temporary file next to ``path``, then os.replace."""
    write_text_atomic(os.fspath(path), render_html(report, latencies_ms, extra_html, examples_html))

