"""Trends over nights and regressions against a baseline, from the results database.

A series is one device + model + runtime setup. Each run is compared with a baseline
taken from the runs before it: the median of the previous few (default: robust to one
noisy night), the first run, or the previous one.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from edgeq.analysis.rules import HISTORY_DROP_TOLERANCE
from edgeq.store.db import Record

BASELINES = ("median", "first", "previous")
TOLERANCE = {"p99_ms": 0.10, "p50_ms": 0.10, "energy_mj": 0.10}  # relative
MIN_CHANGE = {"p99_ms": 0.01, "p50_ms": 0.01, "energy_mj": 0.001}  # absolute: below this it is timer noise
DROP_TOLERANCE = HISTORY_DROP_TOLERANCE  # absolute, the verdict's degraded threshold
MEDIAN_WINDOW = 7


@dataclass
class Point:
    record: Record
    flags: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.flags)


def series(records: list[Record]) -> dict[tuple, list[Record]]:
    grouped: dict[tuple, list[Record]] = {}
    for record in records:
        grouped.setdefault(record.series_key, []).append(record)
    return grouped


def baseline_value(previous: list[float], how: str) -> float | None:
    if not previous:
        return None
    if how == "first":
        return previous[0]
    if how == "previous":
        return previous[-1]
    return statistics.median(previous[-MEDIAN_WINDOW:])


def flag_regressions(runs: list[Record], how: str = "median", tolerance: dict | None = None,
                     drop_tolerance: float = DROP_TOLERANCE) -> list[Point]:
    """Each run with the metrics that got worse than its baseline by more than the tolerance."""
    tolerance = dict(TOLERANCE, **(tolerance or {}))
    points = []
    for i, run in enumerate(runs):
        point = Point(run)
        for metric, rel in tolerance.items():
            value = getattr(run, metric)
            base = baseline_value([getattr(r, metric) for r in runs[:i] if getattr(r, metric) is not None], how)
            if value is not None and base and value > base * (1 + rel) and value - base > MIN_CHANGE[metric]:
                point.flags.append(f"{metric} +{(value / base - 1) * 100:.0f}% (baseline {base:.4g})")
        base = baseline_value([r.accuracy_drop for r in runs[:i] if r.accuracy_drop is not None], how)
        if run.accuracy_drop is not None and base is not None and run.accuracy_drop > base + drop_tolerance:
            point.flags.append(f"accuracy drop {run.accuracy_drop:.3f} (baseline {base:.3f})")
        points.append(point)
    return points


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else SPARKS[min(7, int((v - lo) / span * 7.999))] for v in values)
