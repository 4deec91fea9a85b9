"""Per-output sections of the HTML report: one per judged output, plus an overview.

A report made since outputs are judged by kind carries ``report["outputs"]``: for each
output its kind, why, the options used, and its figures in every cell (category ×
severity) with the verdict rate's 95 % interval. This module turns that into HTML
(tables + inline SVG, no scripts). Every report string goes through ``escape``; every
number through ``fmt`` (both in ``page``); anything missing or malformed shows as "—" instead of failing.
"""

from __future__ import annotations

import math

from edgeq.reports.page import (COLORS, METRICS, VERDICTS, as_dict, cell_name, ci_pair, escape, fmt, metric_label,
                                number, rate_text)
from edgeq.reports.stress_html import MARKS, exclusion, marker_html, row_class, rules_note, when_html, why_html

OUTPUT_CSS = """.warnings{background:#fef7e0;border:1px solid #f9d67a;border-radius:6px;padding:8px 12px;margin:10px 0 4px;font-size:13px}
.warnings ul{margin:4px 0 0;padding-left:20px}.pill{display:inline-block;font-size:12px;font-weight:700;color:#fff;padding:1px 8px;border-radius:10px;text-transform:uppercase;vertical-align:middle}
.lown{display:inline-block;font-size:10px;font-weight:700;color:#a50e0e;background:#fce8e6;border-radius:4px;padding:0 4px;margin-left:4px}
.deciding{font-size:11px;color:#1a73e8;font-weight:600;margin-left:8px}td.na{color:#9aa0a6}"""

# The kind's own columns in the cell table: (key, label, format).
KIND_COLUMNS = {
    "classification": [("float_accuracy", "float acc.", "pct"), ("quant_accuracy", "quant acc.", "pct"),
                       ("float_kept_clean", "float keeps its clean answer", "pct"),
                       ("topk_agreement", "top-k agreement", "pct"), ("kl_mean", "mean KL", "num")],
    "multilabel": [("sample_flip_rate", "samples with a flip", "pct"), ("label_flip_mean", "label flips (mean)", "pct"), ("label_flip_worst", "worst label flips", "pct"),
                   ("worst_label", "worst label", "int"), ("labels_per_sample", "labels / sample", "num")],
    "regression": [("mean_abs_error", "mean |err|", "num"), ("p99_abs_error", "p99 |err|", "num"),
                   ("p99_abs_error_rel", "p99 / spread", "pct"), ("cosine_min", "min cosine", "cos")],
    "detection": [("float_detections", "detections float → quant", "arrow"),
                  ("sample_flip_rate", "samples with a flip", "pct"), ("matched_iou_mean", "matched IoU", "cos"),
                  ("near_threshold_flips", "flips near the threshold", "int"),
                  ("confident_flips", "confident flips", "int")],
    "segmentation": [("mask_iou_mean", "mask IoU mean", "cos"), ("mask_iou_min", "mask IoU min", "cos"),
                     ("pixel_agreement", "pixel agreement", "pct")],
    "ignore": [("max_abs_error", "max |error|", "num")],
}
KIND_COLUMNS["embedding"] = [("mean_abs_error", "mean |err|", "num"), ("p99_abs_error", "p99 |err|", "num"),
                             ("cosine_mean", "mean cosine", "cos"), ("cosine_min", "min cosine", "cos")]
COUNT_LABELS = {"classification": "flips / samples", "multilabel": "flipped / labels found",
                "detection": "flipped / detections", "ignore": "events / trials",
                "regression": "outside tolerance / samples", "embedding": "below min cosine / samples",
                "segmentation": "masks failed / masks"}
OPTIONAL = {"float_accuracy", "quant_accuracy", "float_kept_clean", "kl_mean"}  # shown only where a cell has the figure
# per kind: the contract's flip_rate (the kind's verdict rate) and agreement (1 − it), in the kind's words
KIND_WORDS = {
    "classification": (("flip rate", "share of inputs whose predicted class changes"),
                       ("agreement", "share of inputs where both models pick the same class")),
    "detection": (("detection flip rate", "share of {unit}s (float ∪ quantized) that appear, vanish, move "
                                          "(IoU below the match threshold) or change class"),
                  ("detections kept", "share of {unit}s both models find in the same place")),
    "multilabel": (("label flip rate", "share of the labels either model found whose yes/no decision changes"),
                   ("label agreement", "share of the labels either model found that both decide the same way")),
    "regression": (("fail rate", "share of samples with a value outside the tolerance atol + rtol·|float|"),
                   ("within tolerance", "share of samples whose every value is within the tolerance")),
    "embedding": (("fail rate", "share of samples whose cosine similarity to the float vector is below min_cosine"),
                  ("within tolerance", "share of samples whose cosine similarity is at least min_cosine")),
    "segmentation": (("fail rate", "share of masks (one per sample) whose IoU with the float mask is below min_iou"),
                     ("masks kept", "share of masks whose IoU with the float mask is at least min_iou")),
}
GENERIC_WORDS = (("rate", "the output's verdict rate (events over trials)"), ("agreement", "1 − the verdict rate"))
KL_MEANING = {"multilabel": "binary KL of every label, summed per sample, averaged over samples"}
BASIS_KIND = {"detection_flip_rate": "detection", "label_flip_rate": "multilabel", "sample_flip_rate": "multilabel"}


def _groups(report: dict) -> list[dict]:
    """The top level's overall figures, every category and every severity."""
    out = [as_dict(report.get("overall"))]
    for c in as_dict(report.get("categories")).values():
        out += [as_dict(c)] + [as_dict(m) for m in as_dict(as_dict(c).get("severities")).values()]
    return out


def report_kind(report: dict) -> tuple[str, str]:
    """(kind, unit) of the output whose figures the top level holds: its section's kind, else what
    its figures show (reports older than per-output kinds were classifications)."""
    groups = _groups(report)
    unit = next((g["unit"] for g in groups if isinstance(g.get("unit"), str)), "detection")
    kind = as_dict(as_dict(report.get("outputs")).get(str(report.get("deciding_output")))).get("kind")
    if isinstance(kind, str) and kind:
        return kind, unit
    basis = report.get("metric_basis")
    if basis in BASIS_KIND:
        return BASIS_KIND[basis], unit
    if basis == "fail_rate":
        return ("segmentation" if any("mask_iou_mean" in g for g in groups) else "regression"), unit
    return "classification", unit


def metrics_for(report: dict) -> list[tuple[str, str, str, str]]:
    """The overview's metrics in the words of the deciding output's kind; accuracy and KL only
    where the report has such figures."""
    kind, unit = report_kind(report)
    rate, agree = KIND_WORDS.get(kind, GENERIC_WORDS)
    groups = _groups(report)
    has = lambda *keys: any(number(g.get(k)) is not None for g in groups for k in keys)
    out = []
    for key, label, form, meaning in METRICS:
        if key in ("float_accuracy", "quant_accuracy", "accuracy_drop") and not has(
                "float_accuracy", "quant_accuracy", "accuracy_drop"):
            continue
        if key == "kl_mean" and not has("kl_mean"):
            continue
        if key == "agreement" and has("float_kept_clean"):  # unlabelled classification: float's own competence
            out.append(("float_kept_clean", "float keeps its clean answer", "pct",
                        "share of samples where the float model gives the answer it gave on the same clean sample"))
        if key in ("flip_rate", "agreement"):
            label, meaning = rate if key == "flip_rate" else agree
            meaning = meaning.format(unit=unit)
        elif key == "kl_mean":
            meaning = KL_MEANING.get(kind, meaning)
        out.append((key, label, form, meaning))
    return out


def _f(group: dict, key: str, kind: str) -> str:
    if kind == "cos":
        v = number(group.get(key))
        return f"{v:.4f}" if v is not None and math.isfinite(v) else fmt(v)
    if kind == "arrow":
        return f"{fmt(group.get('float_detections'), 'int')} → {fmt(group.get('quant_detections'), 'int')}"
    return fmt(group.get(key), kind)


def _sev_key(s):
    s = str(s)
    return (0, int(s), "") if s.lstrip("-").isdigit() else (1, 0, s)


def output_cells(section: dict) -> list[tuple[str, str | None, dict]]:
    """(category, severity or None, figures) for every cell, in report order."""
    cells = []
    for name, entry in as_dict(section.get("categories")).items():
        entry = as_dict(entry)
        sev = as_dict(entry.get("severities"))
        if sev:
            cells.extend((str(name), str(level), as_dict(sev[level])) for level in sorted(sev, key=_sev_key))
        else:  # a category of one level may name it
            level = entry.get("severity")
            cells.append((str(name), None if level in (None, "") else str(level), entry))
    return cells


def _is_worst(section: dict, cat: str, sev) -> bool:
    wc, ws = section.get("worst_category"), section.get("worst_severity")
    return wc is not None and cat == str(wc) and (None if ws is None else str(ws)) == sev


def _lown(group: dict, min_n) -> str:
    if group.get("low_n") is not True:
        return ""
    return f'<span class="lown" title="fewer than {escape(fmt(min_n, "int"))} trials">low n</span>'


def _pill(verdict) -> str:
    cls = verdict if verdict in VERDICTS else "unknown"
    return f'<span class="pill verdict-{cls}">{escape(verdict or "not judged")}</span>'


def _options_text(section: dict) -> str:
    parts = []
    for k, v in as_dict(section.get("options")).items():
        shown = fmt(v) if number(v) is not None else ("yes" if v is True else "no" if v is False else str(v))
        parts.append(f"{escape(k)}={escape(shown)}")
    members = ", ".join(f"{escape(k)}=output {escape(v)}" for k, v in as_dict(section.get("members")).items())
    return " · ".join(p for p in (("options: " + ", ".join(parts)) if parts else "",
                                  f"reads {members}" if members else "") if p)


def _yes(x) -> str:
    return "yes" if x is True else "no" if x is False else "—"


def ordered_outputs(report: dict) -> list[tuple[str, dict]]:
    outs = [(str(k), as_dict(v)) for k, v in as_dict(report.get("outputs")).items()]
    idx = lambda s: number(s.get("index"))
    return sorted(outs, key=lambda kv: (idx(kv[1]) is None, idx(kv[1]) or 0.0, kv[0]))


def overview_html(report: dict) -> str:
    """One row per output: kind, verdict, deciding cell, its rate with interval, confidence."""
    outs = ordered_outputs(report)
    if not outs:
        return ""
    deciding = report.get("deciding_output")
    rows = []
    for name, s in outs:
        mark = '<span class="deciding">decides</span>' if deciding is not None and name == str(deciding) else ""
        conf = as_dict(s.get("confidence"))
        judged = s.get("verdict") is not None
        gate = when_html(s.get("when"))
        gate = f'<div class="meta">{gate}</div>' if gate else ""
        rows.append(f"<tr><td><b>{escape(name)}</b>{mark}{gate}</td><td>{escape(s.get('kind'))}</td><td>{_pill(s.get('verdict'))}</td>"
                    f"<td>{escape(metric_label(s.get('metric')) if judged else '—')}</td>"
                    f"<td>{escape(cell_name(s.get('worst_category'), s.get('worst_severity')) if judged else '—')}</td>"
                    f"<td>{escape(rate_text(s.get('worst_value'), s.get('worst_ci95')))}</td>"
                    f"<td>{fmt(s.get('worst_n'), 'int')}</td><td>{escape(conf.get('level') or '—')}</td>"
                    f"<td>{_yes(s.get('drives_verdict'))}</td></tr>")
    return ('<section class="outputs"><h2>Outputs</h2><div class="scroll"><table><tr><th>output</th><th>kind</th>'
            "<th>verdict</th><th>metric</th><th>worst cell</th><th>rate [95% interval]</th><th>trials</th>"
            f"<th>confidence</th><th>drives verdict</th></tr>{''.join(rows)}</table></div></section>")


def cells_table(section: dict, min_n) -> str:
    kind = str(section.get("kind"))
    cols = KIND_COLUMNS.get(kind, [])
    if kind == "classification":
        k = next((g.get("top_k") for _, _, g in output_cells(section) if number(g.get("top_k")) is not None), None)
        cols = [(key, f"top-{fmt(k, 'int')} agreement" if key == "topk_agreement" and k is not None else label, f)
                for key, label, f in cols]
    cells = output_cells(section)
    cols = [c for c in cols if c[0] not in OPTIONAL or any(number(g.get(c[0])) is not None for _, _, g in cells)]
    judged = section.get("verdict") is not None or kind != "ignore"
    count = COUNT_LABELS.get(kind, "failed / samples")
    unit = next((g.get("unit") for _, _, g in cells if isinstance(g.get("unit"), str)), None)
    count = count.replace("detections", f"{unit}s") if kind == "detection" and unit else count
    head = ("<tr><th>category</th><th>severity</th>"
            + (f"<th>{escape(metric_label(section.get('metric')))} [95%]</th><th>{escape(count)}</th>"
               if judged else "")
            + "<th>samples</th>" + "".join(f"<th>{escape(label)}</th>" for _, label, _ in cols) + "<th>SQNR</th></tr>")
    rows = []
    for cat, sev, g in cells:
        rate = (f"<td>{escape(rate_text(g.get('value'), g.get('ci95')))}{_lown(g, min_n)}</td>"
                f"<td>{fmt(g.get('events'), 'int')} / {fmt(g.get('trials'), 'int')}</td>") if judged else ""
        rows.append(f"<tr{row_class(g, _is_worst(section, cat, sev))}><td>{escape(cat)}{marker_html(g)}"
                    f"{why_html(g)}</td>"
                    f"<td>{escape(sev if sev is not None else '—')}</td>{rate}"
                    f"<td>{fmt(g.get('n'), 'int')}</td>" + "".join(f"<td>{_f(g, key, f)}</td>" for key, _, f in cols)
                    + f"<td>{fmt(g.get('sqnr_db'), 'db')}</td></tr>")
    rules = rules_note([g for _, _, g in cells])
    return (f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'
            + (f'<p class="note">{rules}</p>' if rules else ""))


def cells_svg(section: dict, thr) -> str:
    """Vertical bars, one per cell, grouped by category; whiskers = 95 % interval; dashed thresholds."""
    cells = [(c, s, g, number(g.get("value")), ci_pair(g.get("ci95"))) for c, s, g in output_cells(section)]
    if not any(v is not None for *_, v, _ in cells):
        return ""
    groups: list[tuple[str, list]] = []
    for cell in cells:
        if not groups or groups[-1][0] != cell[0]:
            groups.append((cell[0], []))
        groups[-1][1].append(cell)
    W, R, T = 960, 122, 16
    gap = 0.8  # between categories, in bar widths
    slots = len(cells) + gap * (len(groups) - 1)
    longest = max(len(g[0]) for g in groups)
    rotate = longest * 6.5 > (W - 56 - R) / max(slots, 1) * (max(len(g[1]) for g in groups) + gap * 0.8)
    L = max(56.0, min(len(groups[0][0]), 22) * 5.4 - 10) if rotate else 56.0
    bw = (W - L - R) / max(slots, 1)
    B = 34 + (min(longest, 22) * 5 if rotate else 14)
    H = T + 220 + B
    finite = [x for *_, v, ci in cells for x in ([v] + list(ci or ())) if x is not None and math.isfinite(x)]
    lo = min([0.0] + finite)
    hi = max([thr[1] * 1.2] + finite) * 1.05
    hi = hi if hi > lo else lo + 1.0
    y = lambda v: T + (1 - (min(max(v, lo), hi) - lo) / (hi - lo)) * (H - T - B)
    out = [f'<svg class="cells" viewBox="0 0 {W} {H}" xmlns="http://www.w3.org/2000/svg" role="img">']
    step = next(s for s in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0) if (hi - lo) / s <= 6)
    for t in [k * step for k in range(math.ceil(lo / step), math.floor(hi / step) + 1)]:
        out.append(f'<line x1="{L:.1f}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{"#5f6368" if t == 0 else "#eceff1"}"/>'
                   f'<text x="{L - 6:.1f}" y="{y(t) + 4:.1f}" text-anchor="end">{fmt(t, "pct")}</text>')
    for name, t, band in (("degraded", thr[0], "warn"), ("catastrophic", thr[1], "bad")):
        out.append(f'<line x1="{L:.1f}" x2="{W - R}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="{COLORS[band]}" '
                   f'stroke-dasharray="5,4" class="threshold"/><text x="{W - R + 4}" y="{y(t) + 4:.1f}">'
                   f"{name} {fmt(t, 'pct')}</text>")
    x = L
    base = y(0)
    for name, members in groups:
        gx = x
        for cat, sev, g, v, ci in members:
            band = "na" if v is None else "bad" if v >= thr[1] else "warn" if v >= thr[0] else "ok"
            top, bottom = (y(max(v, 0)), y(min(v, 0))) if v is not None else (base, base)
            worst = _is_worst(section, cat, sev)
            why = exclusion(g)  # not counted: fainter still, with a dashed outline
            extra = (' stroke="#202124" stroke-width="2"' if worst else
                     f' stroke="{COLORS[band]}" stroke-dasharray="3,2"' if why else "")
            opacity = ' fill-opacity="0.25"' if why else ' fill-opacity="0.45"' if g.get("low_n") is True else ""
            label = (f"{cell_name(cat, sev)}: {rate_text(g.get('value'), g.get('ci95'))}"
                     + (" (low n)" if g.get("low_n") is True else "") + (f" (not counted: {MARKS[why]})" if why else ""))
            out.append(f'<rect class="cell band-{band}{" worst" if worst else ""}" x="{x + bw * 0.12:.1f}" y="{top:.1f}" '
                       f'width="{bw * 0.76:.1f}" height="{max(bottom - top, 0.5 if v is not None else 0):.1f}" '
                       f'fill="{COLORS[band]}"{opacity}{extra}><title>{escape(label)}</title></rect>')
            if ci is not None:
                cx, cap = x + bw / 2, min(bw * 0.2, 6)
                out.append(f'<path class="whisker" d="M{cx:.1f} {y(ci[0]):.1f}V{y(ci[1]):.1f}M{cx - cap:.1f} {y(ci[0]):.1f}'
                           f'H{cx + cap:.1f}M{cx - cap:.1f} {y(ci[1]):.1f}H{cx + cap:.1f}" stroke="#202124" fill="none"/>')
            if sev is not None and bw >= 9:
                out.append(f'<text x="{x + bw / 2:.1f}" y="{H - B + 14}" text-anchor="middle" font-size="10">{escape(sev)}</text>')
            x += bw
        cx, ly = (gx + x) / 2, H - B + (28 if any(m[1] is not None for m in members) and bw >= 9 else 16)
        spin = f' transform="rotate(-35 {cx:.1f} {ly})" text-anchor="end"' if rotate else ' text-anchor="middle"'
        fit = f' textLength="{21 * 6.2:.0f}" lengthAdjust="spacingAndGlyphs"' if len(name) > 22 else ""  # never cut
        out.append(f'<text x="{cx:.1f}" y="{ly}"{spin}{fit}>{escape(name)}<title>{escape(name)}</title></text>')
        x += bw * gap
    return "".join(out) + "</svg>"


def output_section(name: str, section: dict, report: dict, thr) -> str:
    kind = section.get("kind")
    deciding = report.get("deciding_output")
    decides = '<span class="deciding">decides the verdict</span>' if deciding is not None and name == str(deciding) else ""
    conf = as_dict(section.get("confidence"))
    metric = metric_label(section.get("metric"))
    reason, source = str(section.get("reason") or "—"), str(section.get("source") or "—")
    lines = [f"<b>why {escape(kind)}</b>: {escape(reason)}"
             + (f" (source: {escape(source)})" if source not in reason else ""),
             _options_text(section),
             f"drives the verdict: <b>{_yes(section.get('drives_verdict'))}</b> · labels: <b>{_yes(section.get('labels'))}</b>"
             f" · verdict rate: {escape(metric)}"]
    if section.get("verdict") is not None:
        lines.append(f"{_pill(section.get('verdict'))} worst cell <b>"
                     f"{escape(cell_name(section.get('worst_category'), section.get('worst_severity')))}</b>: "
                     f"{escape(metric)} "
                     f"<b>{escape(rate_text(section.get('worst_value'), section.get('worst_ci95')))}</b>"
                     f" ({fmt(section.get('worst_n'), 'int')} trials)"
                     + (f" · confidence <b>{escape(conf.get('level'))}</b>: {escape(conf.get('note'))}"
                        if conf else ""))
    else:
        lines.append(f"{_pill(None)} this output is not judged; SQNR and the largest error are still shown.")
    gate = when_html(section.get("when"), details=True)
    if gate:
        lines.insert(1, f"<b>gated</b>: {gate}")
    chart = cells_svg(section, thr)
    note = ("Bars: the verdict rate of each cell (category × severity), grouped by category; whiskers: 95% interval; "
            "faded bars have too few trials; the outlined bar is the worst cell"
            + ("; the faintest, dashed bars do not count for the verdict." if any(exclusion(g) for *_, g in
                                                                                 output_cells(section)) else ".")
            ) if chart else ""
    return (f'<section class="output"><h2>output {escape(name)} — {escape(kind)}{decides}</h2>'
            + "".join(f'<p class="meta">{ln}</p>' for ln in lines if ln)
            + cells_table(section, report.get("min_n", 30)) + chart
            + (f'<p class="note">{note}</p>' if note else "") + "</section>")


def outputs_html(report: dict, thr) -> str:
    return "".join(output_section(name, s, report, thr) for name, s in ordered_outputs(report))


def deciding_html(report: dict, basis_label: str) -> str:
    """Header lines of a report judged output by output: deciding output, cell, rate, confidence."""
    name = report.get("deciding_output")
    s = as_dict(as_dict(report.get("outputs")).get(str(name))) if name is not None else {}
    cats = as_dict(report.get("categories"))
    cat, sev = report.get("worst_category"), report.get("worst_severity")
    value, ci, trials = s.get("worst_value"), s.get("worst_ci95"), s.get("worst_n")
    if not s and cat is not None:  # no section: read the cell from the top-level categories
        entry = as_dict(cats.get(str(cat)))
        g = as_dict(as_dict(entry.get("severities")).get(str(sev))) if sev is not None else entry
        value, ci, trials = g.get("value"), g.get("ci95"), g.get("trials")
    label = metric_label(s.get("metric") or report.get("metric_basis")) if (s or report.get("metric_basis")) else basis_label
    conf = as_dict(report.get("verdict_confidence")) or as_dict(s.get("confidence"))
    parts = []
    if name is not None:
        parts.append(f"deciding output <b>{escape(name)}</b>"
                     + (f" ({escape(s.get('kind'))})" if s.get("kind") else ""))
    if cat is not None:
        parts.append(f"cell <b>{escape(cell_name(cat, sev))}</b>: {escape(label)} <b>{escape(rate_text(value, ci))}</b>"
                     + (f" over {fmt(trials, 'int')} trials" if number(trials) is not None else ""))
    text = "<br>".join(parts)
    if conf:
        lown = ' <span class="lown">low n</span>' if conf.get("level") == "low-n" else ""
        text += (f'<br><span class="meta">confidence <b>{escape(conf.get("level"))}</b>{lown}: '
                 f'{escape(conf.get("note"))}</span>')
    return text


def warnings_html(report: dict) -> str:
    raw = report.get("warnings")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    items = [w for w in items if w not in (None, "")]
    if not items:
        return ""
    return ('<div class="warnings"><b>warnings</b><ul>' + "".join(f"<li>{escape(w)}</li>" for w in items)
            + "</ul></div>")


def is_per_output(report: dict) -> bool:
    """A report with the per-output structure (deciding output, sections, warnings)."""
    return (bool(as_dict(report.get("outputs"))) or report.get("deciding_output") is not None
            or bool(report.get("warnings")))
