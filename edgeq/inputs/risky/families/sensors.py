"""What real sensors and data pipelines produce: codes, stuck readings, unit and
calibration errors, dropped values.

Each family changes a few features (element positions of a row; the channels of a
sensor window, for the whole window) to values the pipeline really emits, scaled to
what was OBSERVED for that feature or channel in the full data
(``DataStats.per_sensor``), never to an assumed range. Several of them
put one large value into a row, which under dynamic-range quantization sets the
row's int8 scale and rounds every other feature toward zero. Functions take float64
stacks (n, *sample_shape), draw only from the generator they are given, and return
new arrays; the caller casts back to the input dtype.
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.families import Family, register
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.severities import mult, pct, plain

# Sensor faults act on sensors: a column of a table, or a channel of a sensor window (for the whole
# window) reads a code, sticks, changes unit. A pixel, an audio sample or one cell of a spectrogram
# is no sensor of its own, so on those inputs these faults describe nothing the field sends: they
# are not applied there.
FEATURES = frozenset({"features", "sensor-window"})


def sentinel(x: np.ndarray, count: int, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """The ``count`` features with the most extreme observed values set to those values, in every sample.

    Pipelines mark "missing" or "sensor error" with codes such as -999 or 65535 that
    appear in a few validation rows and so are easy to miss; the float model may
    cope (it saw them in training) while the code owns the int8 scale of the whole
    row once quantized. Extremity is distance from the feature's median in units of
    its robust spread, so the family finds such a code without knowing it.
    """
    obs = data.per_sensor
    out = _sensors(x)
    picked = obs.most_extreme(int(count))
    out[:, :, picked] = obs.extreme[picked]
    return out.reshape(x.shape)


def stuck(x: np.ndarray, count: int, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """``count`` random features per sample stuck at their observed min or max (50/50).

    A saturated or railed sensor reads its limit whatever happens; the value is one
    the data already holds, so this tests in-range extremes in unusual combinations.
    """
    obs = data.per_sensor
    out = _sensors(x)
    pos = distinct_positions(rng, out.shape[0], out.shape[2], int(count))
    high = rng.random(pos.shape) < 0.5
    out[np.arange(len(out))[:, None], :, pos] = np.where(high, obs.hi[pos], obs.lo[pos])[..., None]
    return out.reshape(x.shape)


def scaled(x: np.ndarray, factor: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """One random feature per sample multiplied by a unit-change factor (×10 cm→mm, ×100 m→cm, ×1000 m→mm).

    A firmware or pipeline change that reports one quantity in another unit
    multiplies it around the unit's zero, which is the data's zero; not clipped.
    """
    out = _sensors(x)
    pos = rng.integers(0, out.shape[2], size=out.shape[0])
    out[np.arange(len(out)), :, pos] *= factor
    return out.reshape(x.shape)


def offset(x: np.ndarray, level: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """One random feature per sample shifted by ±level × its observed span (calibration drift); not clipped."""
    span = data.per_sensor.span
    out = _sensors(x)
    n = out.shape[0]
    pos = rng.integers(0, out.shape[2], size=n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    out[np.arange(n), :, pos] += (sign * level * span[pos])[:, None]
    return out.reshape(x.shape)


def dropout_zero(x: np.ndarray, fraction: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """A fraction of each sample's features (at least one) read 0: dead channels, zero-filled gaps."""
    return _drop(x, fraction, rng, lambda pos: 0.0)


def dropout_mean(x: np.ndarray, fraction: float, data: DataStats, rng: np.random.Generator) -> np.ndarray:
    """A fraction of each sample's features (at least one) set to their observed mean: mean imputation."""
    mean = data.per_sensor.mean
    return _drop(x, fraction, rng, lambda pos: mean[pos])


def dropout_count(fraction: float, size: int) -> int:
    """How many of ``size`` features a dropout fraction sets: rounded, at least one."""
    return min(size, max(1, int(round(fraction * size))))


def distinct_positions(rng: np.random.Generator, n: int, size: int, count: int) -> np.ndarray:
    """(n, count) distinct positions in [0, size) per sample, drawn row by row."""
    count = min(size, count)
    return np.stack([rng.choice(size, count, replace=False) for _ in range(n)]).reshape(n, count)


def _drop(x: np.ndarray, fraction: float, rng: np.random.Generator, value) -> np.ndarray:
    out = _sensors(x)
    pos = distinct_positions(rng, out.shape[0], out.shape[2], dropout_count(fraction, out.shape[2]))
    out[np.arange(len(out))[:, None], :, pos] = np.broadcast_to(value(pos), pos.shape)[..., None]
    return out.reshape(x.shape)


def _sensors(x: np.ndarray) -> np.ndarray:
    """A copy as (samples, time steps, sensors): a row of features is one step of all its
    features; a sensor window (time × channels) is its steps of each channel, so a fault
    hits one channel for the whole window, as a real sensor's fault does."""
    sensors = x.shape[-1] if x.ndim == 3 else int(np.prod(x.shape[1:]))
    return x.reshape(x.shape[0], -1, sensors).copy()


register(Family("sentinel", sentinel,
                lambda s: f"the {plain(s)} features with the most extreme observed value (e.g. a -999 missing code) "
                          "set to it in every sample",
                applies_to=FEATURES))
register(Family("stuck", stuck,
                lambda s: f"{plain(s)} random features per sample stuck at their observed min or max",
                applies_to=FEATURES))
register(Family("scaled", scaled,
                lambda s: f"one random feature per sample in another unit: multiplied {mult(s)} "
                          "(not clipped to the data range)",
                applies_to=FEATURES))
register(Family("offset", offset,
                lambda s: f"one random feature per sample drifted by ±{plain(s)}× its observed span "
                          "(not clipped to the data range)",
                applies_to=FEATURES))
register(Family("dropout-zero", dropout_zero,
                lambda s: f"{pct(s)} of each sample's features (at least one) read 0",
                applies_to=FEATURES))
register(Family("dropout-mean", dropout_mean,
                lambda s: f"{pct(s)} of each sample's features (at least one) set to their observed mean",
                applies_to=FEATURES))
