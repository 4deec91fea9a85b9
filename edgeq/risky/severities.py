"""The severity table: the one place to read or tune how hard each family pushes.

Kept apart from the transforms so that a reviewer can judge the suite's strength
(and a report can describe it) without reading any array code. Every family has
exactly three graded levels; severity ``s`` (1..3) uses ``SEVERITIES[cat][s - 1]``.
Levels are relative to the data's own range R = hi - lo, never to an assumed
[0, 1] or [0, 255], so the suite means the same thing for any input scaling.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "clean",
    "brightness+",
    "brightness-",
    "contrast+",
    "contrast-",
    "noise",
    "impulse",
    "outlier",
)

SEVERITY_LEVELS: tuple[int, ...] = (1, 2, 3)

SEVERITIES: dict[str, tuple[float, float, float]] = {
    "brightness+": (0.1, 0.25, 0.5),   # shift up, fraction of R
    "brightness-": (0.1, 0.25, 0.5),   # shift down, fraction of R
    "contrast+": (1.5, 2.5, 4.0),      # gain k around the sample mean
    "contrast-": (0.6, 0.35, 0.15),    # gain k around the sample mean
    "noise": (0.05, 0.1, 0.2),         # Gaussian sigma, fraction of R
    "impulse": (0.01, 0.05, 0.15),     # fraction of elements set to lo or hi
    "outlier": (1.0, 4.0, 16.0),       # one element set to hi + m * R
}


def _pct(levels) -> str:
    return "/".join(f"{v * 100:g}%" for v in levels)


def _mult(levels) -> str:
    return "/".join(f"×{v:g}" for v in levels)


def describe_categories() -> dict[str, str]:
    """One line per category for reports, generated from the table so it never lies."""
    s = SEVERITIES
    return {
        "clean": "the data unchanged (reference for every other category)",
        "brightness+": f"whole input shifted up by {_pct(s['brightness+'])} of the data range, clipped",
        "brightness-": f"whole input shifted down by {_pct(s['brightness-'])} of the data range, clipped",
        "contrast+": f"contrast around each sample's mean stretched {_mult(s['contrast+'])}, clipped",
        "contrast-": f"contrast around each sample's mean compressed {_mult(s['contrast-'])}",
        "noise": f"Gaussian noise with sigma {_pct(s['noise'])} of the data range, clipped",
        "impulse": f"salt and pepper: {_pct(s['impulse'])} of each sample's elements set to the range min or max",
        "outlier": (
            "one element per sample set to max + "
            + "/".join(f"{v:g}" for v in s["outlier"])
            + "× the data range (deliberately out of range)"
        ),
    }
