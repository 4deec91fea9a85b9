"""Noise, impulse and outlier: element-wise corruptions.

These attack the per-row scale directly: a single extreme element sets
max|row| and pushes every other element of the row toward zero after int8
rounding. Impulse stays inside the data range (extremes the model may have
seen); outlier deliberately leaves it. Functions take float64 stacks
(n, *sample_shape) and draw only from the generator they are given.
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.families import Family, register
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.severities import pct, plain


def gaussian_noise(x: np.ndarray, sigma: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise with std sigma·R, clipped to the data range."""
    vr = data.range
    noisy = rng.standard_normal(x.shape)  # the same draws and sums as x + noise·σR, in one array
    noisy *= sigma * vr.span
    noisy += x
    return np.clip(noisy, vr.lo, vr.hi, out=noisy)


def salt_and_pepper(x: np.ndarray, fraction: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Set a fraction of each sample's elements (at least one) to lo or hi, 50/50."""
    vr = data.range
    n, sample_shape = x.shape[0], x.shape[1:]
    out = x.reshape(n, -1).copy()
    size = out.shape[1]
    count = min(size, max(1, int(round(fraction * size))))
    lo, hi, _ = vr.flat(sample_shape)
    for row in out:
        pos = rng.choice(size, count, replace=False)
        salt = rng.random(count) < 0.5
        row[pos] = np.where(salt, hi[pos], lo[pos])
    return out.reshape(x.shape)


def outlier(x: np.ndarray, multiple: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """One element per sample at hi + multiple·R: the single value that owns the scale.

    Not clipped to the range on purpose; the cast back to the dtype clips only to
    what the dtype can hold (so integer data that already reaches the dtype's
    max, e.g. uint8 at 255, cannot exceed its range).
    """
    vr = data.range
    n, sample_shape = x.shape[0], x.shape[1:]
    out = x.reshape(n, -1).copy()
    _, hi, span = vr.flat(sample_shape)
    pos = rng.integers(0, out.shape[1], size=n)
    out[np.arange(n), pos] = hi[pos] + multiple * span[pos]
    return out.reshape(x.shape)


register(Family("noise", gaussian_noise,
                lambda s: f"Gaussian noise with sigma {pct(s)} of the data range, clipped"))
register(Family("impulse", salt_and_pepper,
                lambda s: f"salt and pepper: {pct(s)} of each sample's elements set to the range min or max"))
# A reading far outside anything seen is a real fault of a feature or a sensor channel (a
# glitch, a wrong register read); a pixel, an audio sample or a spectrogram cell cannot leave
# the range its converter or its preprocessing clips to, so there it is stress only.
OUT_OF_RANGE = "{what} cannot leave the range its sensor or preprocessing clips to: no field input looks like this"
register(Family("outlier", outlier,
                lambda s: f"one element per sample set to max + {plain(s)}× the data range (deliberately out of range)",
                stress_for={"image": OUT_OF_RANGE.format(what="a pixel"),
                            "audio": OUT_OF_RANGE.format(what="an audio sample"),
                            "grid": OUT_OF_RANGE.format(what="a cell of a spectrogram or image"),
                            "tensor": OUT_OF_RANGE.format(what="one element of this tensor")}))
