"""The terminal lines for what ``edgeq evaluate`` does after the verdict: --search, --worst, --fix.

A few lines each, wrapped within 80 columns; the details are in report.json and report.html.
"""

from __future__ import annotations

import textwrap

WIDTH = 80


def _say(out, text: str, indent: str = "") -> None:
    for line in textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [""]:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def print_after_verdict(out, report: dict) -> None:
    if report.get("search"):
        print_search(out, report["search"])
    if report.get("worst"):
        print_worst(out, report["worst"])
    if report.get("fix"):
        print_fix(out, report["fix"])


def search_lines(s: dict) -> list[str]:
    if s.get("status") == "failed":
        return [f"search: failed ({s.get('error')}); the evaluation above stands"]
    bound = s.get("distance") or {}
    state = "" if s.get("complete", True) else " (incomplete)"
    where = f"{bound.get('norm', 'linf')} ≤ {bound.get('bound', 0):g} of the data range"
    if not s.get("found"):
        return [f"search: no disagreement in {s.get('queries', 0)} queries from {s.get('seeds_tried', 0)} seeds "
                f"({where}){state}"]
    distances = s.get("distances") or [0.0]
    lines = [f"search: {s['found']} disagreement(s) in {s.get('queries', 0)} queries from "
             f"{s.get('seeds_tried', 0)} seeds ({where}){state}; first at query {s.get('first_flip_query')}, "
             f"largest distance {max(distances):.3g}"]
    if s.get("path"):
        lines.append(f"found inputs: {s['path']}")
    lines.append("evidence of a failure near the data, beside the verdict (not a rate)")
    return lines


def print_search(out, s: dict) -> None:
    for k, line in enumerate(search_lines(s)):
        _say(out, line, "" if k == 0 else "  ")


def print_worst(out, w: dict) -> None:
    if w.get("status") == "failed":
        _say(out, f"worst shifts: failed ({w.get('error')}); the evaluation above stands")
        return
    metric = "accuracy drop" if w.get("metric") == "accuracy_drop" else "flip rate"
    state = "" if w.get("complete", True) else f", stopped: {w.get('stopped')}"
    _say(out, f"worst shifts ({metric} on {w.get('samples', '?')} samples each, {w.get('queries', 0)} queries"
              f"{state}; beside the verdict):")
    for c in (w.get("worst") or [])[:3]:
        lo, hi = (c.get("ci95") or [None, None])[:2]
        interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        out.print(f"  {c['condition'][:40]:<40} {c['value']:>6.3f}{interval} {c.get('band', '')}"[:WIDTH],
                  highlight=False, markup=False)
    for name, crossing in (w.get("crossings") or {}).items():
        if crossing.get("crosses") and crossing.get("below") is not None:
            _say(out, f"{name} crosses {crossing['threshold']:g} between severity {crossing['below']:.3g} and "
                      f"{crossing['above']:.3g}", "  ")


def fix_lines(f: dict) -> list[str]:
    status = f.get("status")
    if status == "nothing-to-fix":
        return [f"fix: nothing to fix ({f.get('reason')})"]
    if status == "failed":
        return [f"fix: failed ({f.get('reason')}); the evaluation above stands"]
    if status == "not-applicable":
        return [f"fix: not run ({f.get('reason')})"]
    if status in ("unreachable", "no-quantized-variant"):
        best = (f.get("best") or {}).get("kept_float")
        return [f"fix: no quantized fix under {f.get('target_drop'):g}: {f.get('reason')}",
                f"best partial variant: ops {best} float"]
    kept = [f"op {r['op_index']} {r['op_type']} {r.get('layer') or r.get('tensor')}" for r in f.get("recipe") or []]
    lines = [f"fix: {status}: {len(kept)} op(s) kept float ({'; '.join(kept)}); every field condition's drop "
             f"{'≤' if status == 'fixed' else 'NOT all ≤'} {f.get('target_drop'):g}"]
    conditions = f.get("conditions") or {}
    if conditions:
        name = max(conditions, key=lambda c: (conditions[c]["shipped"], c))
        c = conditions[name]
        lines.append(f"worst condition {name}: drop {c['shipped']:.3f} → {c['fixed']:.3f}")
    models = f.get("models") or {}
    if {"float", "quantized", "fixed"} <= set(models):
        kib = {k: models[k]["bytes"] / 1024 for k in ("float", "quantized", "fixed")}
        ratio = models["float"]["bytes"] / max(models["fixed"]["bytes"], 1)
        lines.append(f"size: float {kib['float']:.1f} KiB, quantized {kib['quantized']:.1f} KiB, fixed "
                     f"{kib['fixed']:.1f} KiB ({ratio:.2f}× smaller than float)")
    if f.get("fixed"):
        lines.append(f"fixed model: {f['fixed']}")
    return lines


def print_fix(out, f: dict) -> None:
    for k, line in enumerate(fix_lines(f)):
        _say(out, line, "" if k == 0 else "  ")
