"""The ball a search keeps to: how far a candidate is from its seed, and how it is put back inside.

Distances are relative to the data range (per element span), so one bound means the same
on pixels in 0..255 and on features in 0..1: L∞ bounds every element's change, L2 the
root-mean-square change. Every candidate also stays in the data's range (or the seed's
own value, when the seed itself lies outside it).
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.ranges import to_dtype
from edgeq.inputs.search.operators import Space

NORMS = ("linf", "l2")
SAFETY = 1.0 - 1e-4  # projections aim just inside the bound, so a cast back to float32 cannot leave it


def relative_distance(x: np.ndarray, seed: np.ndarray, span: np.ndarray, norm: str) -> float:
    """How far one sample is from its seed, relative to the data range (per element span)."""
    d = (np.asarray(x, np.float64) - np.asarray(seed, np.float64)) / np.broadcast_to(span[0], np.shape(seed))
    if norm == "linf":
        return float(np.max(np.abs(d))) if d.size else 0.0
    return float(np.sqrt(np.mean(d * d))) if d.size else 0.0


def project(x: np.ndarray, seed: np.ndarray, space: Space, dtype: np.dtype) -> np.ndarray:
    """``x`` moved into the distance ball around ``seed`` and the data range, in the data's dtype."""
    span = np.broadcast_to(space.span[0], seed.shape)
    bound = space.epsilon * SAFETY
    delta = x - seed
    if space.norm == "linf":
        delta = np.clip(delta, -bound * span, bound * span)
    else:
        r = np.sqrt(np.mean((delta / span) ** 2)) if delta.size else 0.0
        if r > bound:
            delta = delta * (bound / r)
    lo, hi = np.broadcast_to(space.lo[0], seed.shape), np.broadcast_to(space.hi[0], seed.shape)
    moved = np.clip(seed + delta, np.minimum(lo, seed), np.maximum(hi, seed))
    if np.issubdtype(np.dtype(dtype), np.integer):  # round towards the seed: never out of the ball
        moved = seed + np.trunc(moved - seed)
    return to_dtype(moved[None], dtype)[0]
