"""Value ranges found in the data, and the cast back to the input's dtype.

Every family is expressed relative to the data's own range, because a fixed
[0, 1] or [0, 255] assumption would make the same severity mean different things
for differently scaled models (and silently do nothing on some of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANGE_MODES: tuple[str, ...] = ("global", "channel")


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
    since a per-"channel" range would then be a per-sample range.
    """
    axes = tuple(range(x.ndim - 1)) if mode == "channel" and x.ndim >= 2 else None
    lo = np.min(x, axis=axes, keepdims=True).astype(np.float64)
    hi = np.max(x, axis=axes, keepdims=True).astype(np.float64)
    span = hi - lo
    span = np.where(span == 0, np.maximum(np.abs(hi), 1.0), span)
    return ValueRange(lo=lo, hi=hi, span=span)


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
