"""Numbers formatted for people, shared by the terminal summary and the HTML report."""

from __future__ import annotations

import math


def duration_text(ms) -> str:
    """A duration in the unit people read it in: '3.2 µs', '1.25 ms', '2.4 s'; '—' when unknown.

    Latencies on these models span µs (an MLP on x86) to seconds (a CNN on a Pi Zero);
    one fixed unit prints either '0.003' or '2400.000'."""
    if isinstance(ms, bool) or not isinstance(ms, (int, float)) and not hasattr(ms, "__float__"):
        return "—"
    ms = float(ms)
    if not math.isfinite(ms):
        return "—"
    if abs(ms) < 1.0:
        return f"{ms * 1000:.3g} µs"
    if abs(ms) < 1000.0:
        return f"{ms:.3g} ms"
    return f"{ms / 1000:.3g} s"
