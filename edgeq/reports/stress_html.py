"""Field vs stress on the report page: which cells decide the verdict, and what is shown beside it.

The verdict is decided only by *field* cells where the float model still works
(``analysis/field.py``). Every cell of a report made since then says so: ``role``
(field|stress), ``counts_for_verdict`` and, when it does not count, ``not_counted`` (and
``float_competence`` when float fails there too); the report's ``stress`` section lists
the stress cells worst first. This module gives the page one way to show that: the marker
and reason of a cell that does not count (as text, not a tooltip), the worst *counted*
cells, the stress section beside the verdict, and the line of an output judged only where
another output is open. Reports older than the rule lack these keys: every cell then
counts and nothing here adds anything.
"""

from __future__ import annotations

from edgeq.reports.page import (COLORS, as_dict, band_of, cell_name, ci_pair, escape, fmt, metric_label, number,
                                rate_text)

ROLE_CSS = """tr.nc>td{color:#80868b}tr.nc>td b{color:#5f6368}.ncm{display:inline-block;font-size:10px;font-weight:700;color:#5f6368;background:#eceff1;border:1px solid #dadce0;border-radius:4px;padding:0 4px;margin-left:6px;text-transform:uppercase;letter-spacing:.03em}
.why{font-size:11px;color:#5f6368;font-weight:400;margin-top:1px}.field{color:#1e8e3e;font-weight:600}
.stress .pill{display:inline-block;font-size:12px;font-weight:700;color:#fff;padding:1px 8px;border-radius:10px;text-transform:uppercase;vertical-align:middle}
.stress ul{margin:6px 0 0;padding-left:20px;font-size:13px}"""
MARKS = {"stress": "stress", "float": "float fails too", "other": "not counted"}
STRESS_GATE = "--fail-on stress=degraded"


def exclusion(g) -> str | None:
    """Why a cell does not decide the verdict: "stress", "float" (float fails here too), "other",
    or None when it counts (every cell of a report older than the field rule counts)."""
    g = as_dict(g)
    if g.get("role") == "stress":
        return "stress"
    if g.get("counts_for_verdict") is False:
        fails = as_dict(g.get("float_competence")).get("fails") is True
        return "float" if fails or str(g.get("not_counted") or "").startswith("float fails") else "other"
    return None


def reason_text(g, fallback: str = "") -> str:
    """Plain text (escape before use): why the cell does not count, with both figures when float fails too;
    ``fallback``: the suite's reason for the category (``inputs.cell_roles``), used when the cell has none."""
    g, why = as_dict(g), exclusion(g)
    fc = as_dict(g.get("float_competence"))
    if why == "float" and number(fc.get("float")) is not None and number(fc.get("floor")) is not None:
        what = "float accuracy" if fc.get("basis") == "labels" else "float keeps its clean answer on"
        chance = number(g.get("chance")) if fc.get("basis") == "labels" else None
        chance = f" (chance {fmt(chance, 'pct')})" if chance is not None else ""
        return f"float fails here too: {what} {fmt(fc['float'], 'pct')} vs its floor {fmt(fc['floor'], 'pct')}{chance}"
    text = str(g.get("not_counted") or "")
    if not text and as_dict(g.get("severities")):  # a category entry: its severities' reasons, or the suite's word
        reasons = list(dict.fromkeys(reason_text(c) for c in as_dict(g.get("severities")).values() if exclusion(c)))
        text = reasons[0] if len(reasons) == 1 else fallback or (f"{MARKS[why]}: each severity for its own reason"
                                                                 if why in MARKS else "")
    elif not text:
        text = fallback
    if why == "stress" and not text.startswith("stress"):
        return "stress" + (f": {text}" if text else "")
    return text or ("float fails here too" if why == "float" else "not counted")


def marker_html(g) -> str:
    why = exclusion(g)
    return f'<span class="ncm">{MARKS[why]}</span>' if why else ""


def why_html(g, fallback: str = "") -> str:
    """The reason under a cell's name; for a category whose severities only partly count, one line per
    severity that does not."""
    g = as_dict(g)
    if exclusion(g):
        return f'<div class="why">not counted: {escape(reason_text(g, fallback))}</div>'
    levels = as_dict(g.get("severities"))
    lines = [f'<div class="why">severity {escape(s)} not counted: {escape(reason_text(c))}</div>'
             for s, c in levels.items() if exclusion(c)]
    return "".join(lines)


def row_class(g, worst: bool = False) -> str:
    return ' class="worst-row"' if worst else ' class="nc"' if exclusion(g) else ""


def _cells(sources) -> list[dict]:
    """Every cell of these sections (a severity, or a category without severities)."""
    return [c for src in sources for e in as_dict(as_dict(src).get("categories")).values()
            for c in ([as_dict(x) for x in as_dict(as_dict(e).get("severities")).values()] or [as_dict(e)])]


def has_roles(report: dict) -> bool:
    """A report made under the field rule (its cells say whether they count)."""
    sources = [report] + list(as_dict(report.get("outputs")).values())
    return bool(as_dict(report.get("stress"))) or any("counts_for_verdict" in c or "role" in c for c in _cells(sources))


def rules_note(cells) -> str:
    """The float-competence rules behind the "float fails too" marks of these cells, once each."""
    rules = list(dict.fromkeys(str(as_dict(c.get("float_competence")).get("rule")) for c in cells
                               if exclusion(c) == "float" and as_dict(c.get("float_competence")).get("rule")))
    return " ".join(f"Float fails too: {escape(r)}." for r in rules)


def field_line(report: dict) -> str:
    """The header's line on what decided: field cells only, and how many were left beside it."""
    if not has_roles(report):
        return ""
    cells = _cells(list(as_dict(report.get("outputs")).values()) or [report])
    n_stress = sum(exclusion(c) == "stress" for c in cells)
    n_float = sum(exclusion(c) in ("float", "other") for c in cells)
    beside = " and ".join(b for b in (f"{n_stress} stress cell(s)" if n_stress else "",
                                      f"{n_float} cell(s) where float fails too" if n_float else "") if b)
    return ('<span class="meta">decided by <span class="field">field cells only</span>: real samples and plausible '
            "shifts of them where the float model still works"
            + (f"; {beside} shown beside it, not counted" if beside else "") + "</span>")


def when_text(when) -> str:
    """Plain text "judged only where presence>0.5 (open on 120 of 400 samples)" for a gated output."""
    w = as_dict(when)
    if not w:
        return ""
    rule = w.get("rule")
    if not rule and w.get("output") is not None:
        rule = f"{w.get('output')}{w.get('op') or '>'}{fmt(w.get('threshold'))}"
    text = f"judged only where {rule or 'its gate is open'}"
    if number(w.get("open")) is not None and number(w.get("of")) is not None:
        text += f" (open on {fmt(w['open'], 'int')} of {fmt(w['of'], 'int')} samples)"
    return text


def when_html(when, details: bool = False) -> str:
    text = when_text(when)
    if not text:
        return ""
    w = as_dict(when)
    reason = str(w.get("reason") or "")
    if reason.startswith("judged only where") and ": " in reason:  # the rule is said already
        reason = reason.split(": ", 1)[1]
    extra = (f" — {escape(reason)}" if details and reason else "") + (
        f" (source: {escape(w.get('source'))})" if details and w.get("source") else "")
    return f"{escape(text)}{extra}"


# --- the worst counted cells ---------------------------------------------------------------------------------

SECOND = {  # the kind's second figure beside its verdict rate: (key, label)
    "classification": ("flip_rate", "flip rate"), "detection": ("sample_flip_rate", "samples with a flip"),
    "multilabel": ("sample_flip_rate", "samples with a flip"),
}


def counted_cells(report: dict, basis: str) -> list[tuple[str, dict, float | None]]:
    """The deciding output's cells that decide the verdict, "category/severity", worst first."""
    found = []
    for name, c in as_dict(report.get("categories")).items():
        c = as_dict(c)
        levels = as_dict(c.get("severities"))
        single = f"{name}/{c['severity']}" if c.get("severity") not in (None, "") else str(name)
        found += [(f"{name}/{s}", as_dict(m)) for s, m in levels.items()] if levels else [(single, c)]
    value = lambda m: number(m.get(basis)) if number(m.get(basis)) is not None else number(m.get("value"))
    ranked = [(n, m, value(m)) for n, m in found if not exclusion(m)]
    cat, level = report.get("worst_category"), report.get("worst_severity")
    deciding = f"{cat}/{level}" if level not in (None, "") else str(cat)  # leads among equals
    return sorted(ranked, key=lambda t: (t[2] is None, -(t[2] or 0.0), t[0] != deciding, t[0]))


def worst_conditions_html(report: dict, basis: str, kind: str, thr, top: int = 8) -> str:
    ranked = [t for t in counted_cells(report, basis) if t[2] is not None][:top]
    if not ranked:
        return ""
    second = SECOND.get(kind)
    if second and (second[0] == basis or not any(number(m.get(second[0])) is not None for _, m, _ in ranked)):
        second = None
    rows = []
    for name, m, v in ranked:
        ci = ci_pair(m.get("ci95"))
        interval = f"{fmt(ci[0], 'pct')} – {fmt(ci[1], 'pct')}" if ci else "—"
        rows.append(f'<tr><td><b>{escape(name)}</b></td>'
                    f'<td style="color:{COLORS[band_of(v, thr)]}">{fmt(v, "pct")}</td>'
                    f"<td>{interval}</td>" + (f"<td>{fmt(m.get(second[0]), 'pct')}</td>" if second else "")
                    + f"<td>{fmt(m.get('trials', m.get('n')), 'int')}</td></tr>")
    which = report.get("deciding_output")
    of = f" of output {escape(which)}" if which is not None and as_dict(report.get("outputs")) else ""
    left = " Stress cells and cells where float fails too are left out (see below)." if has_roles(report) else ""
    return (f"<section><h2>Worst conditions</h2><table><tr><th>cell</th><th>{escape(metric_label(basis))}</th>"
            f"<th>95 % interval</th>" + (f"<th>{escape(second[1])}</th>" if second else "") + "<th>trials</th></tr>"
            f"{''.join(rows)}</table><p class=\"note\">The cells (category/severity){of} that decide the verdict, "
            f"worst first.{left}</p></section>")


# --- stress findings ------------------------------------------------------------------------------------------

def _verdict_of(band) -> str:
    return band if band in ("robust", "degraded", "catastrophic") else "unknown"


def _boundary_tie(cell: dict, boundary: dict) -> str:
    """For a near-boundary cell: how close its points are and the share of real samples that close."""
    if cell.get("category") != "boundary" or not boundary:
        return ""
    level = str(cell.get("severity"))
    margin = number(as_dict(boundary.get("margin_levels")).get(level))
    share = number(as_dict(boundary.get("share_of_data")).get(level))
    parts = [f"points at {fmt(margin, 'pct')} of the median float margin" if margin is not None else ""]
    if share is not None and margin is None and level == "1":
        parts.append(f"the lowest-margin {fmt(share, 'pct')} of the real samples")
    elif share is not None:
        parts.append(f"{fmt(share, 'pct')} of the real samples lie that close to the boundary")
    return "; ".join(p for p in parts if p)


def stress_html(report: dict) -> str:
    """The stress section (beside the verdict, never deciding it); empty without stress cells."""
    stress = as_dict(report.get("stress"))
    cells = [as_dict(c) for c in stress.get("cells") or [] if isinstance(c, dict)] if isinstance(stress.get("cells"),
                                                                                              list) else []
    if not cells:
        return ""
    boundary = as_dict(stress.get("boundary"))
    worst = as_dict(stress.get("worst")) or cells[0]
    multi = len({str(c.get("output")) for c in cells}) > 1 or len(as_dict(report.get("outputs"))) > 1
    band = worst.get("band")
    head = (f'<p>worst stress cell <b>{escape(cell_name(worst.get("category"), worst.get("severity")))}</b>'
            + (f" (output {escape(worst.get('output'))})" if multi and worst.get("output") is not None else "")
            + f": {escape(metric_label(worst.get('metric')))} "
              f"<b>{escape(rate_text(worst.get('value'), worst.get('ci95')))}</b>"
            + (f" over {fmt(worst.get('n'), 'int')} trials" if number(worst.get("n")) is not None else "")
            + f' <span class="pill verdict-{_verdict_of(band)}">{escape(band or "—")} level</span></p>')
    rows = []
    for c in cells:
        reason = str(c.get("reason") or "").removeprefix("stress: ")
        tie = _boundary_tie(c, boundary)
        v = number(c.get("value"))
        colour = {"robust": "ok", "degraded": "warn", "catastrophic": "bad"}.get(c.get("band"), "na")
        rows.append(f"<tr><td>{escape(c.get('output'))}</td>"
                    f"<td>{escape(cell_name(c.get('category'), c.get('severity')))}</td>"
                    f"<td>{escape(metric_label(c.get('metric')))}</td>"
                    f'<td style="color:{COLORS[colour]}">{escape(rate_text(v, c.get("ci95")))}</td>'
                    f"<td>{fmt(c.get('n'), 'int')}</td><td class=\"desc\">{escape(reason)}"
                    + (f'<div class="why">{escape(tie)}</div>' if tie else "") + "</td></tr>")
    findings = [f for f in stress.get("findings") or [] if isinstance(f, str) and f] if isinstance(
        stress.get("findings"), list) else []
    found = ("<h3>Findings</h3><ul>" + "".join(f"<li>{escape(f)}</li>" for f in findings) + "</ul>") if findings else ""
    median = number(boundary.get("median_margin"))
    margin = (f" The data's median float margin is {fmt(median)}." if median is not None and any(
        c.get("category") == "boundary" for c in cells) else "")
    rule = ("Only <b>field</b> cells decide the verdict: real samples and plausible shifts of them, for the input kind "
            "the family models, where the float model still works (an output gated by another only where its gate is "
            "open). <b>Stress</b> cells — synthetic or out-of-domain inputs such as near-boundary interpolations, "
            "values no sensor produces, preprocessing mistakes — are listed here; they and the cells where "
            "<b>float fails too</b> are muted in the tables above and below, never deciding it. Stress gates a build "
            "only when asked: "
            f"<code>{STRESS_GATE}</code> (or <code>=catastrophic</code>).")
    return ('<section class="stress"><h2>Stress findings (beside the verdict, never deciding it)</h2>' + head
            + '<div class="scroll"><table><tr><th>output</th><th>cell</th><th>metric</th><th>value [95%]</th>'
              f"<th>trials</th><th>why it is stress</th></tr>{''.join(rows)}</table></div>{found}"
            + f'<p class="note">{rule}{margin}</p></section>')
