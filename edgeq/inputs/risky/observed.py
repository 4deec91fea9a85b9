"""What a family may know about the full data: its range and per-feature observations.

Families see the subsample they transform, but everything they scale to comes from
the full data (a subsample that misses a rare -999 row must not hide it). A
"feature" here is one element position of a sample (flattened), which for a
(samples, features) table is a column and for an image one pixel/channel position.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from edgeq.inputs.risky.ranges import ValueRange, value_range

# A feature's robust spread is its IQR, floored at this fraction of the typical
# (median) IQR of the data's features. Without a floor a feature that is nearly
# always one value (a one-hot column, an edge pixel, a constant) would get an
# infinite extremity for any other value it ever takes; with it, rare values are
# ranked on the scale of the data as a whole, and constant features score 0.
SPREAD_FLOOR = 0.1
_BLOCK_ELEMENTS = 1 << 22  # statistics are computed a column block at a time (~32 MB float64)


@dataclass(frozen=True)
class Observed:
    """Per-feature statistics over all samples, float64 arrays of shape (features,)."""

    lo: np.ndarray
    hi: np.ndarray
    median: np.ndarray
    mean: np.ndarray
    spread: np.ndarray
    extreme: np.ndarray  # the observed value farthest from the median (ties: the max)

    @property
    def extremity(self) -> np.ndarray:
        """|extreme - median| in units of the feature's robust spread."""
        return np.abs(self.extreme - self.median) / self.spread

    @property
    def span(self) -> np.ndarray:
        """hi - lo, with the same floor as ValueRange for constant features."""
        span = self.hi - self.lo
        return np.where(span == 0, np.maximum(np.abs(self.hi), 1.0), span)

    def most_extreme(self, count: int) -> np.ndarray:
        """Positions of the ``count`` most extreme features, most extreme first (ties: lower position)."""
        return np.argsort(-self.extremity, kind="stable")[: min(count, self.extremity.size)]


def observe(x: np.ndarray) -> Observed:
    """Statistics of every element position over the sample axis."""
    flat = x.reshape(x.shape[0], -1)
    width = max(1, _BLOCK_ELEMENTS // max(1, flat.shape[0]))
    parts = []
    for start in range(0, flat.shape[1], width):
        block = flat[:, start:start + width].astype(np.float64)
        q25, median, q75 = np.percentile(block, [25, 50, 75], axis=0)
        parts.append((block.min(axis=0), block.max(axis=0), median, block.mean(axis=0), q75 - q25))
    lo, hi, median, mean, iqr = (np.concatenate(p) for p in zip(*parts))
    spread = np.maximum(iqr, SPREAD_FLOOR * _typical(iqr, hi - lo))
    extreme = np.where(np.abs(lo - median) > np.abs(hi - median), lo, hi)
    return Observed(lo=lo, hi=hi, median=median, mean=mean, spread=spread, extreme=extreme)


def _typical(iqr: np.ndarray, span: np.ndarray) -> float:
    """Median positive IQR; else median positive span; else 1 (all features constant)."""
    for values in (iqr, span):
        positive = values[values > 0]
        if positive.size:
            return float(np.median(positive))
    return 1.0


class DataStats:
    """The range in the chosen mode (old families) and, computed on first use, per-feature stats."""

    def __init__(self, x: np.ndarray, mode: str):
        self._x = x
        self.range: ValueRange = value_range(x, mode)

    @cached_property
    def observed(self) -> Observed:
        return observe(self._x)

    @cached_property
    def per_sensor(self) -> Observed:
        """Per feature of a row, or per channel (over every time step) of a sensor window (time × channels)."""
        return observe(self._x.reshape(-1, self._x.shape[-1])) if self._x.ndim == 3 else self.observed
