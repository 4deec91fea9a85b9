"""Preprocessing mistakes that really ship: the wrong value scale, swapped colour channels,
normalization left out or applied twice.

They are not shifts of the field's inputs but bugs in the application in front of the
model, and the float model fails on most of them too. So they are *stress* findings on
every input kind: reported beside the verdict (does the quantized model fail worse than
the float one when someone gets the pipeline wrong?), never deciding it. Each is one
mistake with no strength, so each is one cell (severity 1).

What the data's range says decides which way a mistake goes, and the report says it:
data in [0, 1] gets 0–255 values, data in [0, 255] gets 0–1, data in [-1, 1] the raw
0–255 camera values it was made from; zero-centred (normalised) data gets its raw form
(its range mapped to [0, 1]), other data is normalised where it should not be (to [-1, 1]).
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.families import Family, image_layout, register
from edgeq.inputs.risky.observed import DataStats

STRESS = "a preprocessing mistake in the application, not an input the field sends"


def _bounds(data: DataStats) -> tuple[float, float]:
    vr = data.range
    return float(np.min(vr.lo)), float(np.max(vr.hi))


def value_scale(x: np.ndarray, level, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """0–255 fed to a model that takes 0–1 (or -1–1), or 0–1 fed to one that takes 0–255."""
    lo, hi = _bounds(data)
    if hi > 1.5:
        return x / 255.0
    if lo < -0.01:
        return (x + 1.0) * 127.5
    return x * 255.0


def channel_order(x: np.ndarray, level, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """RGB read as BGR: the first three channels in reverse order (alpha stays)."""
    layout = image_layout(x.shape[1:])
    hwc = layout.to_hwc(x).copy()
    hwc[..., :3] = hwc[..., 2::-1]
    return layout.from_hwc(hwc)


def normalization(x: np.ndarray, level, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """Normalization left out (zero-centred data given raw, its range mapped to [0, 1]) or
    applied where the model wants raw values (other data mapped from its range to [-1, 1])."""
    lo, hi = _bounds(data)
    span = (hi - lo) or 1.0
    if lo < 0 < hi:
        return (x - lo) / span
    return (x - (lo + hi) / 2) / (span / 2)


def _colour(sample_shape: tuple) -> bool:
    layout = image_layout(sample_shape)
    return layout is not None and layout.colour


register(Family("value-scale", value_scale,
                lambda s: "values in the wrong scale: 0–255 where 0–1 (or -1–1) is expected, or 0–1 where 0–255 is",
                applies_to=frozenset(), stress_for={"image": STRESS}))
register(Family("channel-order", channel_order, lambda s: "colour channels swapped (RGB read as BGR)",
                applies_to=frozenset(), stress_for={"image": STRESS},
                fits=_colour, needs="needs colour images (3 or 4 channels)"))
register(Family("normalization", normalization,
                lambda s: "normalization left out (zero-centred data given raw in [0, 1]) or applied twice",
                applies_to=frozenset(), stress_for={"image": STRESS}))
