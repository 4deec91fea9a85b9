"""Classification: one class per sample (softmax, logits, or a single binary score).

Judged by the top-1 decision: with labels the accuracy drop (paired interval), without
them the flip rate. Top-k agreement says whether a flipped decision was a near miss;
KL divergence is over the class distribution (softmax of logits when the output is not
already a distribution). A single value per sample is a binary score, thresholded.
"""

from __future__ import annotations

import numpy as np

from edgeq.analysis.intervals import paired_difference
from edgeq.analysis.kinds import (Limits, Option, OutputKind, contract_keys, error_evidence, error_summary, flat,
                                  in_unit_interval, is_probability_rows, rate, register, sigmoid,
                                  units_of)
from edgeq.errors import ConfigError


def classes_of(x: np.ndarray, threshold: float | None) -> np.ndarray:
    """The class of each sample; -1 (no class, so a flip and a miss) where a score is NaN or Inf."""
    f = flat(x)
    with np.errstate(over="ignore"):  # a threshold beyond float32 (1e308) becomes inf: no score is above it
        classes = f.argmax(axis=1) if f.shape[1] > 1 else (f[:, 0] > threshold).astype(np.int64)
    return np.where(np.isfinite(f).all(axis=1), classes, -1)


def probabilities(x: np.ndarray, already: bool) -> np.ndarray:
    f = flat(x).astype(np.float64)
    if f.shape[1] == 1:
        p = np.clip(f, 0.0, 1.0) if already else sigmoid(f)
        return np.hstack([1 - p, p])
    if already:
        return f
    shifted = f - f.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


class Classification(OutputKind):
    name = "classification"
    metric = "flip_rate"  # accuracy_drop when the output has labels
    description = "one class per sample: top-1 flips (accuracy drop with labels), top-k agreement, KL"
    defaults = {"top_k": Option(5, Limits(1, whole=True)),  # more than the classes: all of them but one
                "threshold": Option(None, Limits())}  # a single (binary) score only; a logit or a probability

    def check(self, plan, shapes):
        units = int(np.prod(shapes["output"]))
        if units < 1:
            raise ConfigError(f"output {plan.name!r} is empty: it cannot be a classification")
        if units > 1 and plan.options.get("threshold") is not None:
            raise ConfigError(f"{plan.where}: threshold is for a single binary score, but the output has {units} "
                              "classes (its class is the largest score; leave threshold out)")

    def prepare(self, ref, cand, plan, reference_mask):
        r, c = ref["output"], cand["output"]
        units = units_of(r)
        if units == 1 and plan.options.get("threshold") is None:
            plan.options["threshold"] = 0.5 if in_unit_interval(r) else 0.0
        plan.options["probabilities"] = bool((in_unit_interval(r) and in_unit_interval(c)) if units == 1 else (
            is_probability_rows(r) and is_probability_rows(c)))
        plan.options["top_k"] = max(1, min(int(plan.options["top_k"]), units - 1 if units > 2 else 1))

    def evidence(self, ref, cand, plan, labels):
        r, c = ref["output"], cand["output"]
        units, threshold, k = flat(r).shape[1], plan.options.get("threshold"), plan.options["top_k"]
        p = np.clip(probabilities(r, plan.options["probabilities"]), 1e-12, None)
        q = np.clip(probabilities(c, plan.options["probabilities"]), 1e-12, None)
        ref_pred, cand_pred = classes_of(r, threshold), classes_of(c, threshold)
        if units > 2:
            top = np.argpartition(-flat(c), k - 1, axis=1)[:, :k]
            topk_hit = (top == ref_pred[:, None]).any(axis=1)
        else:
            topk_hit = ref_pred == cand_pred
        ev = {"ref_pred": ref_pred, "cand_pred": cand_pred, "topk_hit": topk_hit,
              "kl": np.sum(p * (np.log(p) - np.log(q)), axis=1)}
        ev.update(error_evidence(r, c))
        return ev

    def summarize(self, ev, labels, plan):
        n = len(ev["ref_pred"])
        flips = int(np.count_nonzero(ev["ref_pred"] != ev["cand_pred"]))
        out = contract_keys(n, rate(flips, n), kl_mean=float(ev["kl"].mean()) if n else 0.0,
                            topk_agreement=float(ev["topk_hit"].mean()) if n else 1.0,
                            top_k=plan.options["top_k"], flips=flips)
        out.update(error_summary(ev))
        out.update(value=out["flip_rate"], events=flips, trials=n)
        if labels is not None and n:
            f_ok, q_ok = ev["ref_pred"] == labels, ev["cand_pred"] == labels
            both, only_f = int(np.sum(f_ok & q_ok)), int(np.sum(f_ok & ~q_ok))
            only_q, neither = int(np.sum(~f_ok & q_ok)), int(np.sum(~f_ok & ~q_ok))
            out.update(float_accuracy=(both + only_f) / n, quant_accuracy=(both + only_q) / n,
                       accuracy_drop=(only_f - only_q) / n, chance=float(np.bincount(labels).max()) / n,
                       discordant=[only_f, only_q])
            out.update(value=out["accuracy_drop"], ci95=list(paired_difference(both, only_f, only_q, neither)))
        return out

    def classes(self, sample_shape: tuple) -> int:
        """How many labels values fit: C for C outputs, 2 for a binary score."""
        units = int(np.prod(sample_shape))
        return units if units > 1 else 2


CLASSIFICATION = register(Classification())
