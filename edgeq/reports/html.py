"""Self-contained HTML view of a ``report.json`` dict.

One page, no network, no scripts: inline CSS and SVG charts built from strings.
Every piece of text that comes from the report is passed through ``html.escape``;
every number goes through a formatter that turns None/NaN into "—" and inf into "∞".
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import tempfile

import numpy as np

from edgeq.analysis.rules import THRESHOLDS
from edgeq.reports.units import duration_text

COLORS = {"ok": "#1e8e3e", "warn": "#e8a100", "bad": "#d93025", "na": "#9aa0a6",
          "float": "#1a73e8", "quant": "#e8710a"}
VERDICTS = ("robust", "degraded", "catastrophic")
CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f5f6f8;color:#202124;margin:0;padding:24px}
main{max-width:1000px;margin:0 auto}h1{font-size:20px;margin:0 0 12px}h2{font-size:16px;margin:0 0 10px}
section,header{background:#fff;border:1px solid #e0e3e7;border-radius:8px;padding:16px 20px;margin-bottom:16px}
.badge{display:inline-block;font-size:28px;font-weight:700;color:#fff;padding:6px 18px;border-radius:8px;text-transform:uppercase;letter-spacing:.04em;vertical-align:middle}
.verdict-robust{background:#1e8e3e}.verdict-degraded{background:#e8a100;color:#202124}.verdict-catastrophic{background:#d93025}.verdict-unknown{background:#9aa0a6}
.worst{display:inline-block;margin-left:16px;vertical-align:middle;font-size:15px}.meta{color:#5f6368;font-size:13px;margin:4px 0}.meta b{color:#202124}
table{border-collapse:collapse;width:100%;font-size:13px}.scroll{overflow-x:auto}
th,td{padding:4px 6px;border-bottom:1px solid #eceff1;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;white-space:normal;overflow-wrap:anywhere}
th{background:#f8f9fa;font-weight:600;white-space:normal;vertical-align:bottom}td.desc{text-align:left;white-space:normal;color:#5f6368}
tr.worst-row td{background:#fff4e5}tr.sev>td{padding:0 8px 6px 24px;border-bottom:none}
details summary{cursor:pointer;color:#5f6368;font-size:12px}details table{margin-top:4px;font-size:12px}
.pass{color:#1e8e3e;font-weight:700}.fail{color:#d93025;font-weight:700}.note{color:#5f6368;font-size:12px;margin:6px 0 0}
svg{display:block;width:100%;height:auto}svg text{font-size:12px;fill:#3c4043}code{font-size:12px}h3{font-size:14px;margin:12px 0 6px}"""
METRICS = [  # key, label, kind, meaning (a classification's words; ``metrics_for`` gives each kind its own)
    ("n", "samples", "int", "inputs compared"),
    ("float_accuracy", "float accuracy", "pct", "top-1 accuracy of the float model"),
    ("quant_accuracy", "quant accuracy", "pct", "top-1 accuracy of the quantized model"),
    ("accuracy_drop", "accuracy drop", "pct", "float − quant accuracy (negative: quant better)"),
    ("agreement", "agreement", "pct", "share of inputs where both models pick the same class"),
    ("flip_rate", "flip rate", "pct", "share of inputs whose predicted class changes"),
    ("sqnr_db", "SQNR", "db", "signal-to-quantization-noise ratio of the outputs"),
    ("kl_mean", "mean KL", "sci", "mean KL divergence, float vs quant output distribution"),
    ("max_abs_error", "max |error|", "sci", "largest absolute output difference"),
]
_LABELS = {k: label for k, label, _, _ in METRICS}
_LABELS.update(sample_flip_rate="sample flip rate", label_flip_rate="label flip rate", fail_rate="fail rate", detection_flip_rate="detection flip rate")
BASES = ("accuracy_drop", "flip_rate", "sample_flip_rate", "label_flip_rate", "fail_rate", "detection_flip_rate")


def _e(x) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _d(x) -> dict:
    return x if isinstance(x, dict) else {}


def _num(x):
    """A float, or None for anything that is not a real number (None, NaN, text, bool)."""
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    x = float(x)
    return None if math.isnan(x) else x


_FORMATS = {"pct": lambda v: f"{v * 100:.2f}%" if 0 < abs(v) < 0.01 else f"{v * 100:.1f}%",
            "db": "{:.1f} dB".format, "int": "{:,.0f}".format, "ms": lambda v: duration_text(v), "num": "{:.3g}".format}


def fmt(x, kind: str = "num") -> str:
    """Format a metric; None/NaN/non-numbers give "—", infinities "∞"/"−∞"."""
    v = _num(x)
    if v is None:
        return "—"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return _FORMATS.get(kind, _FORMATS["num"])(v)


def _size(b) -> str:
    v = _num(b)
    if v is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024


def _basis(report: dict) -> str:
    b = report.get("metric_basis")
    if b in BASES:
        return b
    cats = _d(report.get("categories")).values()
    has_labels = any(_num(_d(c).get("accuracy_drop")) is not None for c in cats)
    return "accuracy_drop" if has_labels else "flip_rate"


def _thresholds(report: dict) -> tuple[float, float]:
    t = _d(report.get("thresholds"))
    vals = [_num(t.get(k)) for k in ("degraded", "catastrophic")]
    return tuple(v if v is not None and math.isfinite(v) else THRESHOLDS[k]
                 for k, v in zip(("degraded", "catastrophic"), vals))


def _band(v, thr) -> str:
    if v is None:
        return "na"
    return "bad" if v >= thr[1] else "warn" if v >= thr[0] else "ok"


def _sorted_categories(report: dict, basis: str) -> list[tuple[str, dict]]:
    from edgeq.reports.stress_html import exclusion

    cats = [(str(k), _d(v)) for k, v in _d(report.get("categories")).items()]
    key = lambda kv: (exclusion(kv[1]) is not None, _num(kv[1].get(basis)) is None, -(_num(kv[1].get(basis)) or 0.0),
                      kv[0])
    return sorted(cats, key=key)


def _cell_value(m: dict, basis: str):
    v = _num(m.get(basis))
    return v if v is not None else _num(m.get("value"))


def worst_first(cats: list[tuple[str, dict]], basis: str) -> list[tuple[str, dict]]:
    """Categories by their worst counted cell (a severity, or the category when it has none), worst
    first; categories that do not count at all after them."""
    from edgeq.reports.stress_html import exclusion

    def key(item):
        name, c = item
        out = exclusion(c) is not None
        levels = [_d(m) for m in _d(c.get("severities")).values()]
        pool = ([m for m in levels if out or not exclusion(m)] or levels) if levels else [c]
        values = [v for v in (_cell_value(m, basis) for m in pool) if v is not None and math.isfinite(v)]
        worst = max(values) if values else None
        return out, worst is None, -(worst or 0.0), name

    return sorted(cats, key=key)


def _join(*parts) -> str:
    return " · ".join(p for p in parts if p)


def _meta_lines(report: dict) -> list[str]:
    model, dev, inp = _d(report.get("model")), _d(report.get("device")), _d(report.get("inputs"))
    has = lambda d, k, text: text if d.get(k) not in (None, "") else ""
    lines = []
    if model:
        f, q = _d(model.get("float")), _d(model.get("quant"))
        lines.append(_join(f"<b>model</b> {_e(f.get('path'))} ({_size(f.get('size'))}) → "
                           f"{_e(q.get('path'))} ({_size(q.get('size'))})",
                           has(model, "policy", f"policy {_e(model.get('policy'))}"),
                           has(model, "weights_quantized", f"{_e(model.get('weights_quantized'))} weight tensors quantized")))
    if dev:
        lines.append(_join(f"<b>device</b> {_e(dev.get('name'))}", _e(dev.get("arch")), _e(dev.get("runtime")),
                           has(dev, "resolver", f"resolver {_e(dev.get('resolver'))}"),
                           has(dev, "threads", f"{_e(dev.get('threads'))} thread(s)")))
    if inp:
        lines.append(_join(f"<b>inputs</b> {_e(inp.get('path'))}", f"{fmt(inp.get('n'), 'int')} samples",
                           has(inp, "sha256", f"sha256 <code>{_e(str(inp.get('sha256'))[:12])}</code>"),
                           "input kind " + ", ".join(f"{_e(k)}: {_e(v)}" for k, v in _d(inp.get("kinds")).items())
                           if _d(inp.get("kinds")) else ""))
    lines.append(_join(_e(report.get("created")), has(report, "edgeq_version", f"edgeq {_e(report.get('edgeq_version'))}")))
    return [ln for ln in lines if ln]


def header_html(report: dict, cats, basis: str, thr) -> str:
    from edgeq.reports.outputs_html import deciding_html, is_per_output, warnings_html
    from edgeq.reports.stress_html import field_line, when_html

    verdict = report.get("verdict")
    cls = verdict if verdict in VERDICTS else "unknown"
    worst = report.get("worst_category")
    worst = str(worst) if worst is not None else (cats[0][0] if cats else None)
    wval = dict(cats).get(worst, {}).get(basis)
    worst_txt = (f"worst category <b>{_e(worst)}</b>: {_e(_LABELS[basis])} <b>{fmt(wval, 'pct')}</b>"
                 if worst is not None else f"verdict metric: {_e(_LABELS[basis])}")
    per_output = is_per_output(report)
    if per_output:
        worst_txt = deciding_html(report, _LABELS[basis]) or f"verdict metric: {_e(_LABELS[basis])}"
    gate = when_html(_d(_d(report.get("outputs")).get(str(report.get("deciding_output")))).get("when"))
    extra = "".join(f"<br>{x}" for x in (field_line(report), f'<span class="meta">the deciding output is {gate}</span>'
                                         if gate else "") if x)
    return (f'<header><h1>edgeq quantization report</h1>'
            f'<span class="badge verdict-{cls}">{_e(verdict or "unknown")}</span>'
            f'<span class="worst">{worst_txt}<br><span class="meta">degraded ≥ {fmt(thr[0], "pct")}, '
            f'catastrophic ≥ {fmt(thr[1], "pct")}</span>{extra}</span>'
            + (warnings_html(report) if per_output else "")
            + "".join(f'<p class="meta">{ln}</p>' for ln in _meta_lines(report)) + "</header>")


def summary_html(report: dict) -> str:
    from edgeq.reports.outputs_html import metrics_for

    ov = _d(report.get("overall"))
    rows = "".join(f"<tr><td>{_e(label)}</td><td>{fmt(ov.get(k), kind)}</td><td class=\"desc\">{_e(meaning)}</td></tr>"
                   for k, label, kind, meaning in metrics_for(report))
    from edgeq.reports.stress_html import has_roles

    which = report.get("deciding_output")
    note = (f"Figures of output {_e(which)}, which decided the verdict. " if which is not None
            and _d(report.get("outputs")) else "") + ("Over every sample, stress cells and cells where float fails "
                                                      "too included; the verdict reads the counted cells only."
                                                      if has_roles(report) else "")
    note = f'<p class="note">{note.strip()}</p>' if note else ""
    return (f"<section><h2>Overall</h2><table><tr><th>metric</th><th>value</th><th></th></tr>{rows}</table>"
            f"{note}</section>")


def bars_svg(cats: list[tuple[str, dict]], basis: str, thr) -> str:
    """Horizontal bars, one per category, with dashed threshold lines."""
    W, lab_w, right, top, row = 960, 190, 70, 22, 24
    vals = [_num(c.get(basis)) for _, c in cats]
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
    from edgeq.reports.stress_html import MARKS, exclusion

    for i, ((name, c), v) in enumerate(zip(cats, vals)):
        y = top + i * row
        band = _band(v, thr)
        x0, x1 = (x(min(v, 0)), x(max(v, 0))) if v is not None else (x(0), x(0))
        fit = f' textLength="{lab_w - 12}" lengthAdjust="spacingAndGlyphs"' if len(name) > 26 else ""  # never cut
        why = exclusion(c)  # not counted: faded, dashed outline, said in the tooltip and beside the value
        muted = (f' fill-opacity="0.3" stroke="{COLORS[band]}" stroke-dasharray="3,2"' if why else "")
        out.append(f'<text x="{lab_w - 8}" y="{y + 16}" text-anchor="end"{fit}>{_e(name)}<title>{_e(name)}</title></text>'
                   f'<rect class="bar band-{band}" x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" height="16" '
                   f'fill="{COLORS[band]}"{muted}><title>{_e(name)}: {fmt(v, "pct")}'
                   f'{f" (not counted: {MARKS[why]})" if why else ""}</title></rect>'
                   f'<text x="{max(x1, x(0)) + 5:.1f}" y="{y + 16}">{fmt(v, "pct")}'
                   f'{f" · {MARKS[why]}" if why else ""}</text>')
    return "".join(out) + "</svg>"


def chart_html(report: dict, cats, basis: str, thr) -> str:
    if not cats:
        return ""
    which = report.get("deciding_output")
    which = f" — output {_e(which)}" if which is not None and _d(report.get("outputs")) else ""
    from edgeq.reports.stress_html import exclusion

    faded = (" Faded bars (last) are categories that do not decide the verdict: stress, or float fails there too."
             if any(exclusion(c) for _, c in cats) else "")
    return (f"<section><h2>{_e(_LABELS[basis])} by category (worst first){which}</h2>{bars_svg(cats, basis, thr)}"
            f'<p class="note">{"Bars left of zero: the quantized model did better. " if basis == "accuracy_drop" else ""}Green below '
            f"{fmt(thr[0], 'pct')}, amber below {fmt(thr[1], 'pct')}, red at or above.{faded}</p></section>")


def _metric_cells(m: dict, metrics) -> str:
    return "".join(f"<td>{fmt(m.get(k), kind)}</td>" for k, _, kind, _ in metrics)


def categories_html(report: dict, cats, basis: str, metrics=METRICS) -> str:
    from edgeq.reports.stress_html import has_roles, marker_html, row_class, rules_note, why_html

    if not cats:
        return ""
    descs, worst = _d(report.get("category_descriptions")), report.get("worst_category")
    roles = _d(_d(report.get("inputs")).get("cell_roles"))
    head = lambda first: f"<tr><th>{first}</th>" + "".join(f"<th>{_e(lab)}</th>" for _, lab, _, _ in metrics) + "</tr>"
    rows, every = [], []
    for name, c in cats:
        desc = f'<div class="meta">{_e(descs[name])}</div>' if descs.get(name) else ""
        one = f' <span class="meta">severity {_e(c["severity"])}</span>' if c.get("severity") not in (None, "") else ""
        suite = str(_d(roles.get(name)).get("reason") or "")
        rows.append(f"<tr{row_class(c, name == str(worst))}><td><b>{_e(name)}</b>{one}{marker_html(c)}{desc}"
                    f"{why_html(c, suite)}</td>{_metric_cells(c, metrics)}</tr>")
        sev = _d(c.get("severities"))
        every += [_d(m) for m in sev.values()] or [c]
        if sev:
            keys = sorted(sev, key=lambda s: (0, int(s), "") if str(s).lstrip("-").isdigit() else (1, 0, str(s)))
            srows = "".join(f"<tr{row_class(sev[s])}><td>severity {_e(s)}{marker_html(sev[s])}{why_html(sev[s])}</td>"
                            f"{_metric_cells(_d(sev[s]), metrics)}</tr>" for s in keys)
            rows.append(f'<tr class="sev"><td colspan="{len(metrics) + 1}"><details><summary>{len(sev)} '
                        f'severity level(s) of {_e(name)}</summary><table>{head("severity")}{srows}</table></details></td></tr>')
    muted = (" Muted rows do not decide the verdict (the reason is under the name); categories that do not count at "
             "all come last. " + rules_note(every)) if has_roles(report) else ""
    return (f"<section><h2>Categories</h2><div class=\"scroll\"><table>{head('category')}{''.join(rows)}</table></div>"
            f'<p class="note">Sorted by {_e(_LABELS[basis])} of each category\'s worst counted cell (the category or one of '
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
            out.append(f'<rect class="hist-{_e(k)}" x="{sx(edges[i]):.1f}" y="{sy(s[i]):.1f}" '
                       f'width="{max(sx(edges[i + 1]) - sx(edges[i]) - 0.5, 0.5):.1f}" '
                       f'height="{H - B - sy(s[i]):.1f}" fill="{col}" fill-opacity="0.5"/>')
        med = float(np.median(series[k]))
        if med <= hi:
            out.append(f'<line x1="{sx(med):.1f}" x2="{sx(med):.1f}" y1="{T}" y2="{H - B}" stroke="{col}" stroke-dasharray="4,3"/>')
        out.append(f'<rect x="{W - R - 210}" y="{6 + j * 16}" width="10" height="10" fill="{col}" fill-opacity="0.6"/>'
                   f'<text x="{W - R - 195}" y="{15 + j * 16}">{_e(k)} (median {med:.3g} ms)</text>')
    over = {k: int((v > hi).sum()) for k, v in series.items()}
    note = ""
    if any(over.values()):
        note = (f"Clipped at the 99.5th percentile ({hi:.3g} ms); not shown: "
                + ", ".join(f"{n} {_e(k)} run(s)" for k, n in over.items()) + " above it.")
    return "".join(out) + "</svg>", note


def latency_html(report: dict, latencies_ms=None) -> str:
    lat = _d(report.get("latency_ms"))
    series = {k: _clean(v) for k, v in latencies_ms.items()} if isinstance(latencies_ms, dict) else {}
    series = {k: v for k, v in series.items() if v.size}
    if not lat and not series:
        return ""
    cols = [("p50", "ms"), ("p90", "ms"), ("p99", "ms"), ("mean", "ms"), ("std", "ms"), ("n", "int")]
    head = "<tr><th></th>" + "".join(f"<th>{c}</th>" for c, _ in cols) + "</tr>"
    rows = [f"<tr><td>{k}</td>" + "".join(f"<td>{fmt(_d(lat.get(k)).get(c), kind)}</td>" for c, kind in cols)
            + "</tr>" for k in ("float", "quant")]
    cells = []
    for c in ("p50", "p90", "p99", "mean"):
        fv, qv = _num(_d(lat.get("float")).get(c)), _num(_d(lat.get("quant")).get(c))
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
        rows.append(f"<tr><td>{_e(g.get('gate'))}</td><td>{fmt(g.get('limit'))}</td>"
                    f"<td>{fmt(g.get('observed'))}</td><td>{res}</td></tr>")
    n_fail = sum(1 for g in gates if g.get("failed"))
    return (f"<section><h2>Gates: {n_fail} of {len(gates)} failed</h2><table><tr><th>gate</th><th>limit</th>"
            f"<th>observed</th><th>result</th></tr>{''.join(rows)}</table></section>")


def render_html(report: dict, latencies_ms: dict | None = None, extra_html: str = "", examples_html: str = "") -> str:
    from edgeq.reports.outputs_html import (OUTPUT_CSS, is_per_output, metrics_for, outputs_html, overview_html,
                                            report_kind)
    from edgeq.reports.repair_html import fix_html
    from edgeq.reports.search_html import EXAMPLE_CSS, search_html, worst_html
    from edgeq.reports.stress_html import ROLE_CSS, has_roles, stress_html, worst_conditions_html

    report = _d(report)
    basis, thr = _basis(report), _thresholds(report)
    cats = _sorted_categories(report, basis)
    body = (header_html(report, cats, basis, thr) + gates_html(report) + overview_html(report) + summary_html(report)
            + worst_conditions_html(report, basis, report_kind(report)[0], thr) + chart_html(report, cats, basis, thr)
            + categories_html(report, worst_first(cats, basis), basis, metrics_for(report)) + stress_html(report)
            + examples_html + search_html(report) + worst_html(report) + fix_html(report) + outputs_html(report, thr)
            + latency_html(report, latencies_ms) + extra_html)
    css = (CSS + ("\n" + OUTPUT_CSS if is_per_output(report) else "") + ("\n" + ROLE_CSS if has_roles(report) else "")
           + ("\n" + EXAMPLE_CSS if examples_html else ""))
    title = f"edgeq report: {report.get('verdict') or 'unknown'}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>'
            f"<body><main>{body}</main></body></html>\n")


def write_html(report: dict, path, latencies_ms=None, extra_html: str = "", examples_html: str = "") -> None:
    """Write the page as UTF-8, atomically: a temporary file next to ``path``, then os.replace."""
    write_text_atomic(path, render_html(report, latencies_ms, extra_html, examples_html))


def write_text_atomic(path, text: str) -> None:
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
