"""Value ranges found in the data, the choice of range mode, and the cast back to the dtype.

Every family is expressed relative to the data's own range, because a fixed
[0, 1] or [0, 255] assumption would make the same severity mean different things
for differently scaled models (and silently do nothing on some of them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

RANGE_MODES: tuple[str, ...] = ("auto", "global", "channel")

# "auto" judges a (samples, features) array tabular when the whole array spans more
# than AUTO_SPAN_RATIO times the span of its 25th-percentile varying feature (so a
# quarter or more of the features live in less than a quarter of the global range).
# Under one global range those features would get brightness shifts of >40 % of their
# own span at severity 1, noise of >20 %, impulses 4× outside what they ever read:
# the severities would mean something else for every feature. The rule covers both
# ways tables differ: one feature with a huge span (a -999 missing code, a value in
# the thousands) and features on different offsets (medians far apart), since both
# stretch the whole array's span. The 25th percentile (not the median) catches a
# table that is half small and half large features. Images flattened to (N, pixels)
# share one scale: the digits example (64 pixels in [0, 16]) gives ratio 1.07.
AUTO_SPAN_RATIO = 4.0
AUTO_MIN_SAMPLES = 10  # fewer rows say little about each feature's own range


@dataclass(frozen=True)
class ValueRange:
    """lo, hi and span R as float64 arrays broadcastable against a sample stack."""

    lo: np.ndarray
    hi: np.ndarray
    span: np.ndarray

    def flat(self, sample_shape: tuple[int, ...]):
        """(lo, hi, span) per element of one sample, for element-wise corruptions."""
        shape = (1, *sample_shape)
        return tuple(np.broadcast_to(a, shape).reshape(-1) for a in (self.lo, self.hi, self.span))


def value_range(x: np.ndarray, mode: str) -> ValueRange:
    """Range over the whole array ("global") or per last-axis channel ("channel").

    A constant range gives R = max(|hi|, 1) so shifts and outliers still move the
    data. Arrays without a channel axis (one value per sample) fall back to global,
    since a per-"channel" range would then be a per-sample range. "auto" is resolved
    with ``choose_range_mode`` first.
    """
    if mode == "auto":
        mode = _choose_one(np.asarray(x))[0]
    axes = tuple(range(x.ndim - 1)) if mode == "channel" and x.ndim >= 2 else None
    lo = np.min(x, axis=axes, keepdims=True).astype(np.float64)
    hi = np.max(x, axis=axes, keepdims=True).astype(np.float64)
    span = hi - lo
    span = np.where(span == 0, np.maximum(np.abs(hi), 1.0), span)
    return ValueRange(lo=lo, hi=hi, span=span)


def choose_range_mode(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    """Array name → (mode, reason): per-feature ranges for tabular arrays, else global.

    The mode is one ``value_range`` takes ("channel" computes per-last-axis ranges,
    which for a (samples, features) table are per-feature ranges); the reason is a
    sentence for reports that says which numbers decided it.
    """
    return {name: _choose_one(np.asarray(x)) for name, x in arrays.items()}


def resolve_range_modes(arrays: Mapping[str, np.ndarray], mode: str) -> dict[str, tuple[str, str]]:
    """(mode, reason) per array for any RANGE_MODES value, "auto" decided per array."""
    if mode == "auto":
        return choose_range_mode(arrays)
    found = {}
    for name, x in arrays.items():
        if mode == "channel" and np.ndim(x) < 2:
            found[name] = ("global", "channel ranges requested, but samples have no channel axis: one global range")
        elif mode == "channel":
            found[name] = ("channel", "per-channel (last axis) ranges, as requested")
        else:
            found[name] = ("global", "one range for the whole array, as requested")
    return found


def _choose_one(x: np.ndarray) -> tuple[str, str]:
    if x.ndim != 2:
        return "global", (f"samples of shape {list(x.shape[1:])} are not a row of features "
                          "(array is not (samples, features)): one range for the whole array")
    n, features = x.shape
    if features < 2:
        return "global", "one feature per sample: its range is the global range"
    if n < AUTO_MIN_SAMPLES:
        return "global", f"only {n} samples, too few to trust per-feature ranges: one global range"
    lo = x.min(axis=0).astype(np.float64)
    hi = x.max(axis=0).astype(np.float64)
    spans = hi - lo
    varying = spans[spans > 0]
    if varying.size == 0:
        return "global", "every feature is constant: one global range"
    whole = float(hi.max() - lo.min())
    typical = float(np.percentile(varying, 25))
    ratio = whole / typical
    if ratio > AUTO_SPAN_RATIO:
        return "channel", (f"tabular: per-feature ranges, because the whole array spans {whole:.4g} while a "
                           f"quarter of its {varying.size} varying features span {typical:.4g} or less "
                           f"({ratio:.3g}× > {AUTO_SPAN_RATIO:g}); one range would swamp them")
    return "global", (f"features share one scale: the whole array spans {whole:.4g}, {ratio:.3g}× the "
                      f"25th-percentile feature span {typical:.4g} (≤ {AUTO_SPAN_RATIO:g}): one global range")


def to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float64 results back, clipping to what the dtype can hold.

    Integers are rounded (not truncated, which would bias every family downward);
    floats are clipped to the dtype's finite maximum so a large outlier in a
    float16 input stays a large finite value instead of becoming inf.
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    else:
        limit = np.finfo(dtype).max
        values = np.clip(values, -limit, limit)
    return values.astype(dtype)
