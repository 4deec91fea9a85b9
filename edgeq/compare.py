"""Float vs quantized: pure functions over saved outputs, so a comparison reruns offline.

The verdict rule (DESIGN.md): per category, the accuracy drop (or, without labels,
the flip rate) decides: every category < 0.02 → robust, any ≥ 0.10 → catastrophic,
otherwise degraded.
"""

from __future__ import annotations

import numpy as np

from edgeq.errors import ConfigError

THRESHOLDS = {"degraded": 0.02, "catastrophic": 0.10}
METRIC_KEYS = ("n", "float_accuracy", "quant_accuracy", "accuracy_drop", "agreement",
               "flip_rate", "sqnr_db", "kl_mean", "max_abs_error")


def predictions(outputs: np.ndarray) -> np.ndarray:
    """Class per sample: argmax, or a threshold for single-unit outputs."""
    flat = outputs.reshape(len(outputs), -1).astype(np.float64)
    if flat.shape[1] > 1:
        return flat.argmax(axis=1)
    threshold = 0.5 if (flat.min() >= 0 and flat.max() <= 1) else 0.0
    return (flat[:, 0] > threshold).astype(np.int64)


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Rows that already are distributions stay; anything else goes through softmax."""
    flat = outputs.reshape(len(outputs), -1).astype(np.float64)
    if flat.shape[1] == 1:
        p = np.clip(flat, 1e-12, 1 - 1e-12) if (flat.min() >= 0 and flat.max() <= 1) else 1 / (1 + np.exp(-flat))
        return np.hstack([1 - p, p])
    if flat.min() >= 0 and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3):
        return flat
    shifted = flat - flat.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    noise = float(np.sum((ref - cand.astype(np.float64)) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def kl_mean(ref: np.ndarray, cand: np.ndarray) -> float:
    p = np.clip(as_probabilities(ref), 1e-12, None)
    q = np.clip(as_probabilities(cand), 1e-12, None)
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def group_metrics(ref: np.ndarray, cand: np.ndarray, labels: np.ndarray | None) -> dict:
    """Every metric of the contract for one group of samples."""
    ref_pred, cand_pred = predictions(ref), predictions(cand)
    agreement = float(np.mean(ref_pred == cand_pred))
    metrics = {"n": int(len(ref)), "float_accuracy": None, "quant_accuracy": None,
               "accuracy_drop": None, "agreement": agreement, "flip_rate": 1.0 - agreement,
               "sqnr_db": sqnr_db(ref, cand), "kl_mean": kl_mean(ref, cand),
               "max_abs_error": float(np.max(np.abs(ref.astype(np.float64) - cand.astype(np.float64))))}
    if labels is not None:
        float_acc = float(np.mean(ref_pred == labels))
        quant_acc = float(np.mean(cand_pred == labels))
        metrics.update(float_accuracy=float_acc, quant_accuracy=quant_acc,
                       accuracy_drop=float_acc - quant_acc)
    return metrics


def verdict_metric(metrics: dict) -> float:
    """The number the verdict uses: accuracy drop when labelled, else flip rate."""
    drop = metrics.get("accuracy_drop")
    return metrics["flip_rate"] if drop is None else drop


def verdict(categories: dict[str, dict], thresholds: dict = THRESHOLDS) -> tuple[str, str | None]:
    """Return (verdict, worst category)."""
    if not categories:
        raise ConfigError("nothing to compare: no samples")
    worst = max(categories, key=lambda name: verdict_metric(categories[name]))
    value = verdict_metric(categories[worst])
    if value >= thresholds["catastrophic"]:
        return "catastrophic", worst
    if value >= thresholds["degraded"]:
        return "degraded", worst
    return "robust", worst


def compare_outputs(ref: np.ndarray, cand: np.ndarray, samples: dict[str, np.ndarray],
                    thresholds: dict = THRESHOLDS) -> dict:
    """Overall and per-category (and per-severity) metrics plus the verdict."""
    if ref.shape != cand.shape:
        raise ConfigError(f"outputs differ in shape: {ref.shape} vs {cand.shape}")
    labels = samples.get("y")
    category = samples.get("category", np.full(len(ref), "all"))
    severity = samples.get("severity", np.zeros(len(ref), dtype=np.int64))
    categories = {}
    for name in _ordered_unique(category):
        mask = category == name
        entry = group_metrics(ref[mask], cand[mask], None if labels is None else labels[mask])
        levels = sorted(set(severity[mask].tolist()))
        if len(levels) > 1:
            entry["severities"] = {
                str(level): group_metrics(ref[mask & (severity == level)], cand[mask & (severity == level)],
                                          None if labels is None else labels[mask & (severity == level)])
                for level in levels}
        categories[str(name)] = entry
    result, worst = verdict(categories, thresholds)
    return {"verdict": result, "worst_category": worst,
            "metric_basis": "flip_rate" if labels is None else "accuracy_drop",
            "thresholds": dict(thresholds),
            "overall": group_metrics(ref, cand, labels), "categories": categories}


def _ordered_unique(values: np.ndarray) -> list:
    seen = {}
    for value in values.tolist():
        seen.setdefault(value, None)
    return list(seen)


def compare_runs(ref, cand, output_index: int = 0, thresholds: dict = THRESHOLDS) -> dict:
    """Compare two RunResults made from the same input set."""
    if ref.meta["inputs_sha256"] != cand.meta["inputs_sha256"]:
        raise ConfigError(f"{ref.path} and {cand.path} were run on different input sets; "
                          "a comparison needs the same inputs")
    if output_index >= len(ref.outputs):
        raise ConfigError(f"{ref.path}: the model has {len(ref.outputs)} outputs, not {output_index + 1}")
    return compare_outputs(ref.outputs[output_index], cand.outputs[output_index], ref.samples, thresholds)
