"""HTML section for ``edgeq evaluate --fix``: the per-op chart of localize and the fix's before/after table.

Read from ``report["fix"]`` (the fix's own JSON plus evaluate's additions); anything missing
shows as "—" or leaves its part out.
"""

from __future__ import annotations

import math

from edgeq.reports.page import as_dict, escape, fmt, number, size_text
from edgeq.reports.svg import line_chart

STATUS_TEXT = {"fixed": "fixed and verified", "unverified": "found, but the written model failed verification",
               "unreachable": "no fix reaches the target within --max-float",
               "no-quantized-variant": "no quantized variant meets the target (only the float model does)",
               "nothing-to-fix": "nothing to fix", "failed": "the fix failed (the evaluation stands)",
               "not-applicable": "not run"}


def fix_html(report: dict) -> str:
    f = as_dict(as_dict(report).get("fix"))
    if not f:
        return ""
    status = str(f.get("status"))
    head = (f"<p><b>{escape(STATUS_TEXT.get(status, status))}</b>: drop target {fmt(f.get('target_drop'), 'pct')} per "
            f"field condition ({escape(f.get('target_source') or 'given')})."
            + (f" {escape(f.get('reason'))}" if f.get("reason") else "") + "</p>")
    parts = [head, _kernels(f), _recipe(f), _best(f), _before_after(f), _models(f),
             localize_html(as_dict(f.get("localize")), f)]
    files = [p for p in (f.get("fixed"), f.get("fix_json")) if p]
    if files:
        parts.append('<p class="note">' + " · ".join(f"<code>{escape(p)}</code>" for p in files) + "</p>")
    if f.get("note"):
        parts.append(f'<p class="note">{escape(f.get("note"))}</p>')
    return f"<section><h2>Fix: selective quantization</h2>{''.join(parts)}</section>"


def _kernels(f: dict) -> str:
    """Which kernels each number came from: whole-model numbers and the per-op analysis."""
    if not (f.get("measured_on") or f.get("analysis_on")):
        return ""
    return (f'<p class="note">Drops, search, verification and latency: {escape(f.get("measured_on") or "—")}. '
            f'Per-op analysis (localize): {escape(f.get("analysis_on") or "—")}.'
            + (f' {escape(f.get("flip_share_note"))}.' if f.get("flip_share_note") else "") + "</p>")


def _best(f: dict) -> str:
    """No quantized variant met the target: the best partial one (an op still quantized)."""
    best = as_dict(f.get("best"))
    if not best:
        return ""
    kept = ", ".join(f"{o.get('op_index')} {o.get('op_type')} {o.get('layer') or o.get('tensor')}"
                     for o in best.get("ops") or [] if isinstance(o, dict)) or "none"
    ratio = number(best.get("size_vs_float"))
    return (f"<h3>Best partial variant (not written)</h3><p>Ops kept float: {escape(kept)}. Worst field condition "
            f"{escape(best.get('worst'))}: drop {fmt(best.get('worst_drop'), 'pct')}. "
            f"Size {size_text(best.get('bytes'))} "
            f"({f'{1 / ratio:.2f}× smaller than float' if ratio else '—'}), "
            f"{fmt(best.get('int8_weights'), 'int')} int8 weight tensors.</p>")


def _recipe(f: dict) -> str:
    recipe = [r for r in f.get("recipe") or [] if isinstance(r, dict)]
    if not recipe:
        return ""
    rows = "".join(f"<tr><td>{fmt(r.get('op_index'), 'int')}</td><td>{escape(r.get('op_type'))}</td>"
                   f"<td>{escape(r.get('layer') or '—')}</td><td>{fmt(r.get('stretch'))}</td>"
                   f"<td>{fmt(r.get('sqnr_db'), 'db')}</td><td class=\"desc\">{escape(r.get('reason'))}</td></tr>"
                   for r in recipe)
    return ("<h3>Ops kept float</h3><table><tr><th>op</th><th>type</th><th>layer</th><th>input stretch</th>"
            f"<th>output SQNR</th><th>why</th></tr>{rows}</table>")


def _before_after(f: dict) -> str:
    """Per condition, worst first: shipped, rebuilt and fixed (or best partial) drops; stress conditions
    are shown but do not count for the target."""
    column, conditions = ("fixed", as_dict(f.get("conditions"))) if f.get("conditions") else \
        ("best", as_dict(as_dict(f.get("best")).get("conditions")))
    if not conditions:
        return ""
    target = number(f.get("target_drop"))
    order = sorted(conditions, key=lambda c: (-(number(as_dict(conditions[c]).get("shipped")) or 0.0), c))
    rows = []
    for name in order:
        c = as_dict(conditions[name])
        after = number(c.get(column))
        ok = after is not None and target is not None and after <= target + 1e-9
        mark = '<span class="pass">✓</span>' if ok else '<span class="fail">✗</span>'
        role = c.get("role") or "field"
        mark = mark if role == "field" else "(stress: not a target)"
        rows.append(f"<tr><td>{escape(name)}</td><td>{escape(role)}</td><td>{fmt(c.get('n'), 'int')}</td>"
                    f"<td>{fmt(c.get('shipped'), 'pct')}</td><td>{fmt(c.get('rebuilt'), 'pct')}</td>"
                    f"<td>{fmt(after, 'pct')} {mark}</td></tr>")
    after_head = "drop, fixed" if column == "fixed" else "drop, best partial variant"
    return ("<h3>Before / after, per condition (worst first)</h3><div class=\"scroll\"><table><tr><th>condition</th>"
            "<th>role</th><th>samples</th><th>drop, quantized (shipped)</th><th>drop, quantized (rebuilt)</th>"
            f"<th>{after_head}</th></tr>{''.join(rows)}</table></div><p class=\"note\">The drop: accuracy drop "
            "with labels, else the top-1 flip rate, against the float model. Rebuilt: the same ops quantized by "
            "the tool the fix uses. Only field conditions set the target; stress ones are reported beside it.</p>")


def _models(f: dict) -> str:
    models = as_dict(f.get("models"))
    if not models:
        return ""
    float_bytes = number(as_dict(models.get("float")).get("bytes"))
    rows = []
    for name in ("float", "quantized", "fixed"):
        m = as_dict(models.get(name))
        b = number(m.get("bytes"))
        ratio = f"{float_bytes / b:.2f}×" if b and float_bytes else "—"
        us = number(m.get("latency_us"))
        rows.append(f"<tr><td>{name}</td><td>{size_text(b)}</td><td>{ratio}</td>"
                    f"<td>{fmt(m.get('int8_weights'), 'int')}</td>"
                    f"<td>{fmt(us / 1000 if us is not None else None, 'ms')}</td></tr>")
    return ("<h3>Size and latency</h3><table><tr><th>model</th><th>size</th><th>smaller than float</th>"
            "<th>int8 weights</th>"
            f"<th>latency ({escape(f.get('latency_basis') or f.get('measured_on') or 'host')})</th>"
            f"</tr>{''.join(rows)}</table>")


def localize_html(located: dict, f: dict | None = None) -> str:
    """Output SQNR and input stretch along the graph (kept-float ops ringed), and the ranking."""
    graph = [g for g in located.get("graph") or [] if isinstance(g, dict)]
    ranking = [r for r in located.get("ranking") or [] if isinstance(r, dict)]
    if not graph and not ranking:
        return ""
    stretch = {r.get("op_index"): number(r.get("stretch")) for r in ranking}
    kept = {r.get("op_index") for r in as_dict(f).get("recipe") or [] if isinstance(r, dict)}
    chart = ""
    if graph:
        xs = list(range(len(graph)))
        sqnr = [number(g.get("sqnr_db")) for g in graph]
        lg = [math.log10(stretch[g.get("op_index")]) if (stretch.get(g.get("op_index")) or 0) > 0 else None
              for g in graph]
        marks = [i for i, g in enumerate(graph) if g.get("op_index") in kept]
        chart = line_chart(xs, {"output SQNR (dB)": sqnr}, right_series={"log10 input stretch (hybrid ops)": lg},
                           y_label="SQNR dB", right_label="log10 stretch", marks=marks,
                           x_label="op along the graph (position; ringed: kept float)", x_format=lambda v: f"{v:.0f}")
        chart = chart.replace("<svg ", '<svg class="localize" ', 1)
    rows = "".join(f"<tr><td>{fmt(r.get('rank'), 'int')}</td><td>{fmt(r.get('op_index'), 'int')}</td>"
                   f"<td>{escape(r.get('op_type'))}</td><td>{escape(r.get('layer') or '—')}</td><td>{fmt(r.get('stretch'))}</td>"
                   f"<td>{fmt(r.get('sqnr_db'), 'db')}</td><td>{fmt(r.get('added_error_db'), 'db')}</td>"
                   f"<td>{fmt(r.get('flip_share'), 'pct')}</td><td>{fmt(r.get('recovered_share'), 'pct')}</td></tr>"
                   for r in ranking[:12])
    conditions = ", ".join(str(c) for c in located.get("conditions") or [])
    return ("<h3>Localize: which op breaks</h3>" + chart
            + (f'<p class="note">On the worst conditions: {escape(conditions)} ({fmt(located.get("samples"), "int")} '
               "samples). Stretch: row max ÷ row median |x| at a hybrid op's input (one large activation "
               "flattening the row's int8 scale).</p>" if conditions else "")
            + ("<table><tr><th>rank</th><th>op</th><th>type</th><th>layer</th><th>stretch</th><th>SQNR</th>"
               "<th>added error</th><th>flip share</th><th>recovered when float</th></tr>" + rows + "</table>"
               if rows else ""))
