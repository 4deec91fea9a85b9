"""Energy per inference and thermal behaviour, from a run's sensor samples.

Pure functions over a loaded ``RunResult`` (no TensorFlow, no device). A run that
sampled sensors (``RunSpec.power`` set) carries:

* ``sensors.npz`` — ``t_ns`` (perf_counter_ns on the device, CLOCK_MONOTONIC), ``power_w``
  (NaN without a power backend), ``temp_c`` (hottest thermal zone, else vcgencmd),
  ``throttled`` (``vcgencmd get_throttled`` bits, -1 when unknown), ``zone_temp_c``;
* ``invoke_start_ns.npy`` — the perf_counter_ns at which each timed invoke started,
  shaped like ``latency_ns.npy`` (passes × invocations per pass);
* ``meta["windows"]`` — ``[start, end]`` perf_counter_ns of the ``cooldown``, ``idle``
  (baseline: sensors on, nothing running) and ``timed`` phases; ``meta["sampling"]``;
  ``meta["clock"]`` — one (``wall_ns``, ``perf_ns``) pair taken together, to put the
  device's monotonic times on the UTC axis.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from device_agents.edgeq_agent import THROTTLED_NOW_MASK, decode_throttled  # the one decoder: the agent's
from edgeq.analysis.intervals import Z95
from edgeq.results import RunResult

DEFAULT_HOT_C = 80.0  # Raspberry Pi firmware starts soft throttling at 80 °C


def _window(run: RunResult, name: str) -> tuple[int, int] | None:
    found = (run.meta.get("windows") or {}).get(name)
    return (int(found[0]), int(found[1])) if found else None


def _in(t_ns: np.ndarray, window: tuple[int, int] | None, pad_ns: float = 0) -> np.ndarray:
    if window is None:
        return np.zeros(t_ns.shape, dtype=bool)
    return (t_ns >= window[0] - pad_ns) & (t_ns < window[1] + pad_ns)  # half-open: no sample in two windows


def _tolerance_ns(t_ns: np.ndarray) -> float:
    """How far a sample may be from an instant and still describe it: two sample periods, at least 0.1 s."""
    period_ns = float(np.median(np.diff(t_ns))) if t_ns.size > 1 else 1e9
    return max(2 * period_ns, 1e8)


def _effective_n(values: np.ndarray) -> float:
    """Sample count corrected for lag-1 autocorrelation: n (1 - r) / (1 + r), r clipped to [0, 0.99].

    Power samples taken 50 ms apart are not independent; treating them as such would
    make the interval too narrow.
    """
    n = values.size
    if n < 3 or not np.any(values != values[0]):
        return float(n)
    centred = values - values.mean()
    r = float(np.dot(centred[:-1], centred[1:]) / np.dot(centred, centred))
    r = min(max(r, 0.0), 0.99)
    return n * (1 - r) / (1 + r)


def _mean_and_se(values: np.ndarray) -> tuple[float, float | None]:
    if values.size == 0:
        return float("nan"), None
    if values.size == 1:
        return float(values[0]), None
    return float(values.mean()), float(np.sqrt(values.var(ddof=1) / _effective_n(values)))


def inferences(run: RunResult) -> int:
    """Inferences in the timed window: passes × samples (a batched invoke counts its batch)."""
    return int(run.latency_ns.shape[0] * int(np.sum(run.batch_sizes)))


def energy_per_inference(run: RunResult) -> dict | None:
    """(mean power in the timed window − mean idle power) × window time ÷ inferences, in mJ.

    The 95 % interval is ±1.96 × SE of that difference of means, scaled by window/inferences.
    SE² = s²_busy/n_busy + s²_idle/n_idle, each n corrected for autocorrelation (see
    ``_effective_n``); the window time and inference count are exact. The interval covers
    sensor noise and fluctuation around the means, not a sensor's calibration error.
    Without an idle window (``idle_s=0``) the energy is gross (not baseline-subtracted)
    and ``baseline`` says so. None when the run has no power samples in its timed window.
    """
    sensors = run.sensors
    if sensors is None or "power_w" not in sensors:
        return None
    t_ns, power = sensors["t_ns"], sensors["power_w"]
    finite = np.isfinite(power)
    timed, idle = _window(run, "timed"), _window(run, "idle")
    busy_w = power[finite & _in(t_ns, timed)]
    idle_w = power[finite & _in(t_ns, idle)]
    if busy_w.size == 0 or timed is None:
        return None
    n = inferences(run)
    window_s = (timed[1] - timed[0]) / 1e9
    busy_mean, busy_se = _mean_and_se(busy_w)
    idle_mean, idle_se = _mean_and_se(idle_w)
    baseline = idle_w.size > 0
    delta_w = busy_mean - idle_mean if baseline else busy_mean
    scale_mj = window_s / n * 1e3
    energy_mj = delta_w * scale_mj
    ses = [busy_se] + ([idle_se] if baseline else [])
    if all(se is not None for se in ses):
        half = Z95 * float(np.sqrt(sum(se * se for se in ses))) * scale_mj
        ci = [energy_mj - half, energy_mj + half]
    else:
        ci = None
    sampling = run.meta.get("sampling") or {}
    invoke_s = float(run.latency_ns.sum()) / 1e9
    return {"energy_mj": energy_mj, "ci95_mj": ci, "mean_power_w": busy_mean,
            "idle_power_w": idle_mean if baseline else None, "delta_power_w": delta_w,
            "baseline": "idle" if baseline else "none", "window_s": window_s, "inferences": n,
            "samples_busy": int(busy_w.size), "samples_idle": int(idle_w.size),
            "sample_hz": sampling.get("achieved_hz"), "sample_hz_requested": sampling.get("sample_hz"),
            "backend": sampling.get("power"), "invoke_fraction": invoke_s / window_s if window_s else None,
            "method": "(mean busy W - mean idle W) x window s / inferences; 95% CI from SE of the "
                      "difference of means (autocorrelation-corrected n)"}


class LatencyTemperatureSeries(NamedTuple):
    t_s: np.ndarray  # invoke start, seconds since the timed window began
    latency_ms: np.ndarray  # per inference (a batched invoke's time ÷ its batch size)
    temp_c: np.ndarray  # nearest sensor sample's temperature; NaN when none is near


def _nearest(run: RunResult) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per invocation (flattened): start ns, per-inference latency ms, index of the nearest sample (-1: none)."""
    sensors, starts = run.sensors, run.invoke_start_ns
    if sensors is None or starts is None or sensors["t_ns"].size == 0:
        return None
    start = starts.ravel().astype(np.int64)
    latency_ms = (run.latency_ns / run.batch_sizes[None, :]).ravel() / 1e6
    t_ns = sensors["t_ns"].astype(np.int64)
    right = np.clip(np.searchsorted(t_ns, start), 0, t_ns.size - 1)
    left = np.clip(right - 1, 0, t_ns.size - 1)
    index = np.where(np.abs(t_ns[left] - start) <= np.abs(t_ns[right] - start), left, right)
    index = np.where(np.abs(t_ns[index] - start) <= _tolerance_ns(t_ns), index, -1)
    return start, latency_ms, index


def latency_temperature_series(run: RunResult) -> LatencyTemperatureSeries | None:
    """Per-invocation (t_s, latency_ms, temp_c) for plotting latency and temperature over time."""
    aligned = _nearest(run)
    if aligned is None:
        return None
    start, latency_ms, index = aligned
    timed = _window(run, "timed")
    origin = timed[0] if timed else int(start.min())
    temps = run.sensors["temp_c"]
    temp_c = np.where(index >= 0, temps[np.maximum(index, 0)], np.nan)
    return LatencyTemperatureSeries((start - origin) / 1e9, latency_ms, temp_c)


def _p99(values: np.ndarray) -> float | None:
    return float(np.percentile(values, 99)) if values.size else None


def thermal_summary(run: RunResult, hot_c: float | None = None) -> dict | None:
    """Temperatures and throttling in (and right around) the timed window, and latency p99 with and without them.

    Each invocation is matched to the nearest sensor sample; ``p99_when_throttled`` uses
    the invocations whose sample had a "now" throttle bit (0-3) set, ``p99_when_hot``
    those whose temperature was ≥ hot_c (default 80 °C, where a Pi starts to throttle).
    ``throttle_temp_c`` is the temperature at the first throttled sample, so a report can
    say "p99 rose from 4.1 to 7.9 ms when the SoC throttled at 82 °C". None without sensors.
    """
    sensors = run.sensors
    if sensors is None:
        return None
    hot_c = DEFAULT_HOT_C if hot_c is None else hot_c
    t_ns, temp, throttled = sensors["t_ns"], sensors["temp_c"], sensors["throttled"].astype(np.int64)
    # samples in the timed window, and the ones just around it (a short run may fall between two ticks)
    in_timed = _in(t_ns, _window(run, "timed"), _tolerance_ns(t_ns))
    timed_temp = temp[in_timed & np.isfinite(temp)]
    all_temp = temp[np.isfinite(temp)]
    known = throttled[throttled >= 0]
    ever = int(np.bitwise_or.reduce(known)) if known.size else None
    timed_known = throttled[in_timed & (throttled >= 0)]
    timed_any = int(np.bitwise_or.reduce(timed_known)) if timed_known.size else None
    now_mask = (throttled >= 0) & ((throttled & THROTTLED_NOW_MASK) != 0)
    first_throttled = np.flatnonzero(now_mask & in_timed)
    summary = {
        "max_c": float(timed_temp.max()) if timed_temp.size else None,
        "mean_c": float(timed_temp.mean()) if timed_temp.size else None,
        "min_c": float(timed_temp.min()) if timed_temp.size else None,
        "max_c_all": float(all_temp.max()) if all_temp.size else None,
        "source": (run.meta.get("sampling") or {}).get("temperature_source"),
        "throttled_known": ever is not None,
        # a "now" bit (0-3) in some sample of this run; the *_occurred flags also cover time before it
        "throttled_ever": bool(ever & THROTTLED_NOW_MASK) if ever is not None else None,
        "throttled_bits": ever,
        "throttled_flags": decode_throttled(ever),
        "throttled_flags_timed": decode_throttled(timed_any),
        "throttle_temp_c": (float(temp[first_throttled[0]]) if first_throttled.size
                            and np.isfinite(temp[first_throttled[0]]) else None),
        "hot_c": hot_c,
        "cooldown": run.meta.get("cooldown"),
    }
    aligned = _nearest(run)
    if aligned is None:
        return summary
    _, latency_ms, index = aligned
    matched = index >= 0
    safe = np.maximum(index, 0)
    inv_throttled = matched & now_mask[safe]
    inv_temp = np.where(matched, temp[safe], np.nan)
    with np.errstate(invalid="ignore"):
        inv_hot = matched & (inv_temp >= hot_c)
    summary.update({
        "p99_ms": _p99(latency_ms),
        "p99_when_throttled": _p99(latency_ms[inv_throttled]),
        "p99_not_throttled": _p99(latency_ms[matched & ~inv_throttled]),
        "n_throttled": int(inv_throttled.sum()), "n_not_throttled": int((matched & ~inv_throttled).sum()),
        "p99_when_hot": _p99(latency_ms[inv_hot]),
        "p99_when_cool": _p99(latency_ms[matched & ~inv_hot & np.isfinite(inv_temp)]),
        "n_hot": int(inv_hot.sum()), "n_unmatched": int((~matched).sum()),
    })
    return summary


def perf_to_utc_s(run: RunResult, t_ns) -> np.ndarray:
    """Device perf_counter_ns → seconds since the epoch, via the run's one (wall, perf) pair."""
    clock = run.meta["clock"]
    return (np.asarray(t_ns, dtype=np.int64) - int(clock["perf_ns"]) + int(clock["wall_ns"])) / 1e9
