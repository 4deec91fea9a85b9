"""Brightness and contrast: shifts of the whole input.

A global shift moves every row's max|x| and so the int8 scale of every activation
row downstream; a contrast change stretches the spread the scale must cover. Both
are common in the field (exposure, sensor gain) and invisible on a validation set.
All functions take float64 stacks (n, *sample_shape) and return new arrays.
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.families import Family, register
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.severities import mult, pct


def brighten(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Shift up by level·R, clipped: saturation is part of what real overexposure does."""
    vr = data.range
    return np.clip(x + level * vr.span, vr.lo, vr.hi)


def darken(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Shift down by level·R, clipped."""
    vr = data.range
    return np.clip(x - level * vr.span, vr.lo, vr.hi)


def contrast(x: np.ndarray, gain: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """m + gain·(x − m) around each sample's own mean, so the sample's level stays put."""
    vr = data.range
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    return np.clip(mean + gain * (x - mean), vr.lo, vr.hi)


# on a waveform a level shift is a DC offset of 10-50 % of full scale, which audio front ends
# filter out before any model sees it (gain, the field's real change, is contrast±)
DC_OFFSET = {"audio": "a DC offset of a waveform: audio front ends remove it before the model sees it"}
register(Family("brightness+", brighten,
                lambda s: f"whole input shifted up by {pct(s)} of the data range, clipped", stress_for=DC_OFFSET))
register(Family("brightness-", darken,
                lambda s: f"whole input shifted down by {pct(s)} of the data range, clipped", stress_for=DC_OFFSET))
register(Family("contrast+", contrast,
                lambda s: f"contrast around each sample's mean stretched {mult(s)}, clipped"))
register(Family("contrast-", contrast,
                lambda s: f"contrast around each sample's mean compressed {mult(s)}"))
