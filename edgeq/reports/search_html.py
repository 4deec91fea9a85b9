"""HTML sections for finding the failure: the worst cells first, the disagreement search, the
worst input shifts, and example failing inputs drawn as images when the inputs are images.

Everything is read from the report (and, for the examples, the suite and search files it
names plus the two runs' outputs); anything missing or malformed leaves its section out.
Images are inline PNGs (``edgeq.reports.png``): no imaging library, no network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import InputSetError
from edgeq.inputs.inputset import load_inputset
from edgeq.inputs.risky.families import image_layout
from edgeq.reports.page import as_dict, basis_of, escape, fmt, number
from edgeq.reports.png import data_uri, to_uint8
from edgeq.rows import run_rows

EXAMPLES = 6  # images per row of examples
EXAMPLE_CSS = """.examples{display:flex;flex-wrap:wrap;gap:10px;margin:6px 0 10px}.ex{text-align:center;font-size:11px;color:#3c4043}
.ex img{width:72px;height:72px;image-rendering:pixelated;border:1px solid #dadce0;display:block;margin:0 auto 2px}
.ex .pair{display:flex;gap:2px}.ex .pair img{width:56px;height:56px}.ex b.q{color:#d93025}"""


# --- cells, worst first (the examples pick from them) ------------------------------------------------------------

def _value(cell: dict, basis: str):
    v = number(cell.get(basis))
    return v if v is not None else number(cell.get("value"))


def cells(report: dict, basis: str) -> list[tuple[str, dict, float | None]]:
    """Every cell (a category, and each of its severities) with its verdict rate, worst first."""
    found = []
    for name, c in as_dict(report.get("categories")).items():
        c = as_dict(c)
        sev = as_dict(c.get("severities"))
        if sev:
            found += [(f"{name}/{s}", as_dict(m), _value(as_dict(m), basis)) for s, m in sev.items()]
        else:
            found.append((str(name), c, _value(c, basis)))
    return sorted(found, key=lambda t: (t[2] is None, -(t[2] or 0.0), t[0]))


# --- search and worst shifts -----------------------------------------------------------------------------------

def search_html(report: dict) -> str:
    s = as_dict(report.get("search"))
    if not s:
        return ""
    if s.get("status") == "failed":
        return f"<section><h2>Disagreement search</h2><p>Failed: {escape(s.get('error'))}.</p></section>"
    bound = as_dict(s.get("distance"))
    where = as_dict(s.get("evaluator")).get("where")
    found = [f for f in s.get("inputs_found") or [] if isinstance(f, dict)]
    state = "" if s.get("complete", True) else " (incomplete: interrupted)"
    head = (f"<p><b>{fmt(s.get('found'), 'int')}</b> disagreement(s) in {fmt(s.get('queries'), 'int')} queries "
            f"from {fmt(s.get('seeds_tried'), 'int')} data samples{state}, each within {escape(bound.get('norm'))} "
            f"distance {fmt(bound.get('bound'))} of its sample (a fraction of the data range); evaluated on "
            f"{escape(where)}; first at query {fmt(s.get('first_flip_query'), 'int')}.</p>")
    rows = "".join(f"<tr><td>{fmt(f.get('seed_index'), 'int')}</td><td>{fmt(f.get('distance'))}</td>"
                   f"<td>{escape(f.get('float_class'))} → {escape(f.get('quant_class'))}</td>"
                   f"<td>{fmt(f.get('query'), 'int')}</td><td>{escape(', '.join(map(str, f.get('operators') or [])))}</td></tr>"
                   for f in sorted(found, key=lambda f: (number(f.get("distance")) or 0.0))[:12])
    table = (f"<table><tr><th>data sample</th><th>distance</th><th>float → quant class</th><th>query</th>"
             f"<th>operators</th></tr>{rows}</table>" if rows else "")
    more = f'<p class="note">{len(found) - 12} more in {escape(s.get("path"))}.</p>' if len(found) > 12 else ""
    return (f"<section><h2>Disagreement search (beside the verdict)</h2>{head}{_strategy(s)}{table}{more}"
            f'<p class="note">{escape(s.get("effect_on_verdict"))}</p></section>')


def _strategy(s: dict) -> str:
    """How the search split its lineages at the end, and the boundary crossings that moved the split."""
    split = as_dict(s.get("strategy"))
    share = number(split.get("seek_share"))
    if share is None:
        return ""
    return (f'<p class="note">Lineages at the end: {share:.0%} seeking the float model\'s decision boundary, '
            f"{1 - share:.0%} climbing the quantization gap. Boundary crossings where the two models' "
            f"boundaries differed: {fmt(split.get('crossings_with_gap'), 'int')}; where they coincided: "
            f"{fmt(split.get('flat_crossings'), 'int')}.</p>")


def worst_html(report: dict) -> str:
    w = as_dict(report.get("worst"))
    if not w:
        return ""
    if w.get("status") == "failed":
        return f"<section><h2>Worst input shifts</h2><p>Failed: {escape(w.get('error'))}.</p></section>"
    metric = "accuracy drop" if w.get("metric") == "accuracy_drop" else "flip rate"
    rows = []
    for c in [c for c in w.get("worst") or [] if isinstance(c, dict)][:10]:
        ci = c.get("ci95") if isinstance(c.get("ci95"), list) and len(c.get("ci95")) == 2 else [None, None]
        rows.append(f"<tr><td><b>{escape(c.get('condition'))}</b>"
                    f"<div class=\"meta\">{escape(c.get('description'))}</div></td>"
                    f"<td>{fmt(c.get('value'), 'pct')}</td><td>{fmt(ci[0], 'pct')} – {fmt(ci[1], 'pct')}</td>"
                    f"<td>{fmt(c.get('n'), 'int')}</td><td>{escape(c.get('band'))}</td></tr>")
    crossings = []
    for name, x in as_dict(w.get("crossings")).items():
        x = as_dict(x)
        if x.get("crosses") and x.get("below") is not None:
            crossings.append(f"<li>{escape(name)} crosses {fmt(x.get('threshold'), 'pct')} between severity "
                             f"{fmt(x.get('below'))} and {fmt(x.get('above'))}: {escape(x.get('description'))}</li>")
    state = "" if w.get("complete", True) else f" (stopped: {escape(w.get('stopped'))})"
    return (f"<section><h2>Worst input shifts (beside the verdict)</h2><p>{escape(metric)} on "
            f"{fmt(w.get('samples'), 'int')} data samples per shift, {fmt(w.get('queries'), 'int')} queries{state}.</p>"
            f"<table><tr><th>shift</th><th>{escape(metric)}</th><th>95 % interval</th><th>samples</th>"
            "<th>band</th></tr>"
            f"{''.join(rows)}</table>" + (f"<ul>{''.join(crossings)}</ul>" if crossings else "")
            + f'<p class="note">{escape(w.get("effect_on_verdict"))}</p></section>')


# --- example failing inputs as images ---------------------------------------------------------------------------

def examples_html(report: dict, runs: dict | None) -> str:
    """Small images of failing inputs with float vs quantized top classes, when the inputs are images:
    from the worst cell (flipped samples of the suite) and from the search (beside their data sample)."""
    try:
        return _examples(as_dict(report), runs or {})
    except Exception:  # an example that cannot be drawn never costs the report
        return ""


def _image_input(dataset):
    for name, array in dataset.arrays.items():
        layout = image_layout(tuple(array.shape[1:]))
        if layout is not None:
            return name, layout
    return None, None


def _picture(array, layout, lo: float, hi: float) -> str:
    hwc = layout.to_hwc(np.asarray(array, dtype=np.float64)[None])[0]
    if hwc.shape[-1] == 4:
        hwc = hwc[..., :3]
    return data_uri(to_uint8(hwc, lo, hi))


def _output_index(run, name) -> int:
    metas = run.meta.get("outputs") or []
    names = [m.get("name") if isinstance(m, dict) else None for m in metas]
    return names.index(name) if name in names else 0


def _examples(report: dict, runs: dict) -> str:
    suite_path = as_dict(report.get("inputs")).get("path")
    if not suite_path or not Path(suite_path).is_file():
        return ""
    suite = load_inputset(suite_path)
    name, layout = _image_input(suite)
    if layout is None:
        return ""
    x = suite.arrays[name]
    lo, hi = _range(x)
    parts = [_worst_cell_examples(report, runs, suite, x, layout, lo, hi), _search_examples(report, name, layout, lo, hi)]
    parts = [p for p in parts if p]
    if not parts:
        return ""
    return (f"<section><h2>Example failing inputs</h2>{''.join(parts)}"
            f'<p class="note">Input {escape(name)} read as {escape(layout.describe())}; pixels scaled from the '
            f"suite's range [{lo:.3g}, {hi:.3g}]. Under each: float → <b class=\"q\">quantized</b> top class.</p>"
            "</section>")


def _range(x) -> tuple[float, float]:
    sample = np.asarray(x[: min(len(x), 512)], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return 0.0, 1.0
    return float(sample.min()), float(sample.max())


def _worst_cell_examples(report, runs, suite, x, layout, lo, hi) -> str:
    """Flipped samples of the worst cells, the verdict's cell first, until a handful are shown."""
    ref, cand = runs.get("float"), runs.get("quant")
    if ref is None or cand is None or suite.category is None:
        return ""
    index = _output_index(ref, report.get("deciding_output"))
    f, q = np.asarray(ref.outputs[index]), np.asarray(cand.outputs[index])
    rows = run_rows(ref)  # the suite row of each sample (adaptive runs ran some rows only)
    if f.ndim != 2 or f.shape[1] < 2 or len(f) != len(rows):
        return ""  # not class scores: no top class to show
    fc, qc = f.argmax(1), q.argmax(1)
    flipped = fc != qc
    try:
        at = suite.positions(rows)  # a suite built lazily holds the rows run only, each with its suite row
    except InputSetError:
        return ""
    category = np.asarray(suite.category)[at].astype(str)
    severity = np.asarray(suite.severity)[at].astype(str) if suite.severity is not None else None
    worst = report.get("worst_category"), report.get("worst_severity")
    ranked = [worst] + [tuple(name.split("/", 1)) if "/" in name else (name, None)
                        for name, _, _ in cells(report, basis_of(report))]
    figures, seen = [], set()
    for cat, sev in ranked:
        key = (str(cat), None if sev is None else str(sev))
        if cat is None or key in seen or len(figures) >= EXAMPLES:
            continue
        seen.add(key)
        where = category == key[0]
        if key[1] is not None and severity is not None:
            where &= severity == key[1]
        name = key[0] if key[1] is None else f"{key[0]}/{key[1]}"
        for r in np.flatnonzero(where & flipped)[:EXAMPLES - len(figures)]:
            row = int(rows[r])
            figures.append(f'<div class="ex"><img alt="suite row {row}" src="{_picture(x[int(at[r])], layout, lo, hi)}">'
                           f'{escape(name)} · row {row}<br>{fc[r]} → <b class="q">{qc[r]}</b></div>')
    if not figures:
        return ""
    return (f"<h3>suite: {len(figures)} flipped samples from the worst cells, the verdict's cell first</h3>"
            f'<div class="examples">{"".join(figures)}</div>')


def _search_examples(report, name, layout, lo, hi) -> str:
    s = as_dict(report.get("search"))
    path, data_path = s.get("path"), s.get("seeds_from") or as_dict(report.get("inputs")).get("data")
    found = [f for f in s.get("inputs_found") or [] if isinstance(f, dict)]
    if not path or not Path(path).is_file() or not found:
        return ""
    searched = load_inputset(path)
    if name not in searched.arrays:
        return ""
    seeds = load_inputset(data_path).arrays.get(name) if data_path and Path(data_path).is_file() else None
    order = sorted(range(min(len(found), searched.n)), key=lambda k: (number(found[k].get("distance")) or 0.0, k))
    figures = []
    for k in order[:EXAMPLES]:
        f = found[k]
        seed = (f'<img alt="data sample {escape(f.get("seed_index"))}" '
                f'src="{_picture(seeds[int(f["seed_index"])], layout, lo, hi)}">' if seeds is not None else "")
        figures.append(f'<div class="ex"><div class="pair">{seed}<img alt="found input {k}" '
                       f'src="{_picture(searched.arrays[name][k], layout, lo, hi)}"></div>'
                       f"sample {escape(f.get('seed_index'))} → found, distance {fmt(f.get('distance'))}<br>"
                       f'{escape(f.get("float_class"))} → <b class="q">{escape(f.get("quant_class"))}</b></div>')
    return (f"<h3>search: {len(figures)} of {len(found)} found inputs, nearest first (left: the data sample, "
            f"right: the input found)</h3><div class=\"examples\">{''.join(figures)}</div>")
