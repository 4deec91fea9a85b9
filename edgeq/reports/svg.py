"""Small inline-SVG charts for the HTML reports (no JavaScript, no plotting library)."""

from __future__ import annotations

import html
import math

PALETTE = ("#1a73e8", "#e8710a", "#1e8e3e", "#d93025", "#9334e6", "#5f6368")


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / count for i in range(count + 1)]


def line_chart(xs: list[float], series: dict[str, list], *, x_label: str = "", y_label: str = "",
               marks: list[int] | None = None, x_format=lambda v: f"{v:.3g}", width: int = 900,
               height: int = 240, right_series: dict[str, list] | None = None, right_label: str = "") -> str:
    """Lines over a shared x axis; ``marks`` are x indexes drawn as red rings (e.g. regressions).

    ``right_series`` gets its own y axis on the right (e.g. temperature next to latency).
    """
    left, right, top, bottom = 60, 60 if right_series else 20, 30, 34
    xs_ok = [x for x in xs if _finite(x)]
    if not xs_ok:
        return ""
    x_lo, x_hi = min(xs_ok), max(xs_ok)
    x_span = (x_hi - x_lo) or 1.0

    def sx(x):
        return left + (x - x_lo) / x_span * (width - left - right)

    out = [f'<svg viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img">']
    out += _axis_and_lines(series, xs, sx, (top, height - bottom), left, width - right, "left", y_label, marks)
    if right_series:
        out += _axis_and_lines(right_series, xs, sx, (top, height - bottom), width - right, width,
                               "right", right_label, None, offset=len(series))
    ticks = _ticks(x_lo, x_hi)
    for i, x in enumerate(ticks):
        anchor = "start" if i == 0 and len(ticks) > 1 else ("end" if i == len(ticks) - 1 and i else "middle")
        out.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="{anchor}">'
                   f"{html.escape(x_format(x))}</text>")
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" text-anchor="middle">'
               f"{html.escape(x_label)}</text>")
    legend = list(series) + list(right_series or {})
    for i, name in enumerate(legend):
        out.append(f'<rect x="{left + 120 + i * 150}" y="{top - 12}" width="10" height="10" fill="{PALETTE[i % 6]}"/>'
                   f'<text x="{left + 134 + i * 150}" y="{top - 3}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _axis_and_lines(series, xs, sx, y_range, axis_x, x_end, side, label, marks, offset=0) -> list[str]:
    top, base = y_range
    values = [v for ys in series.values() for v in ys if _finite(v)]
    if not values:
        return []
    lo, hi = min(values), max(values)
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    lo = min(lo, 0) if lo >= 0 and lo < (hi - lo) else lo

    def sy(v):
        return base - (v - lo) / (hi - lo) * (base - top - 16)

    out = []
    anchor, dx = ("end", -6) if side == "left" else ("start", 6)
    for v in _ticks(lo, hi):
        out.append(f'<text x="{axis_x + dx}" y="{sy(v) + 4:.1f}" text-anchor="{anchor}">{v:.3g}</text>')
        if side == "left":
            out.append(f'<line x1="{axis_x}" x2="{x_end}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#eceff1"/>')
    label_x, label_anchor = (4, "start") if side == "left" else (x_end - 4, "end")
    out.append(f'<text x="{label_x}" y="{top - 2}" text-anchor="{label_anchor}" font-weight="600">'
               f"{html.escape(label)}</text>")
    for i, (name, ys) in enumerate(series.items()):
        color = PALETTE[(i + offset) % 6]
        points = [f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys) if _finite(x) and _finite(y)]
        if len(points) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{" ".join(points)}"/>')
        for point in points if len(points) <= 60 else []:
            x, y = point.split(",")
            out.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="{color}"/>')
        for index in marks or []:
            if index < len(ys) and _finite(ys[index]) and _finite(xs[index]):
                out.append(f'<circle cx="{sx(xs[index]):.1f}" cy="{sy(ys[index]):.1f}" r="6" fill="none" '
                           'stroke="#d93025" stroke-width="2"/>')
    return out
