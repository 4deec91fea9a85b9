"""Multi-label scores: independent sigmoid outputs, each a yes/no decision.

A softmax over 6,522 independent bird scores makes every KL look like zero; here each
label is thresholded on its own. The verdict rate is like a detector's: flipped label
decisions over the labels found by either model (float ∪ quantized positives), so a
species list of 119 with one borderline species changed is 0.8 % changed, not "the
sample flipped". The share of samples with any flip, and the mean and the worst
per-label flip rates, show whether one label or all of them move. Divergence (``kl_mean``) is the
binary KL of every label summed per sample, then averaged over samples — zero when
float and quantized agree — not a softmax KL, which treats the labels as rivals.
"""

from __future__ import annotations

import numpy as np

from edgeq.analysis.kinds import (Limits, Option, OutputKind, contract_keys, error_evidence, error_summary, flat,
                                  in_unit_interval, rate, register, sigmoid)


class MultiLabel(OutputKind):
    name = "multilabel"
    metric = "label_flip_rate"
    description = "independent yes/no scores: flipped label decisions over the labels either model found"
    # threshold: on each label's probability (the sigmoid of a logit), so strictly between 0 and 1
    defaults = {"threshold": Option(None, Limits(0, 1, low_open=True, high_open=True)),
                "logits": Option(None, type=False)}  # None: decided from the float scores

    def prepare(self, ref, cand, plan, reference_mask):
        if plan.options.get("logits") is None:
            plan.options["logits"] = not in_unit_interval(ref["output"])
        if plan.options.get("threshold") is None:
            plan.options["threshold"] = 0.5

    def evidence(self, ref, cand, plan, labels):
        r, c = flat(ref["output"]).astype(np.float64), flat(cand["output"]).astype(np.float64)
        logits, threshold = plan.options["logits"], plan.options["threshold"]
        p, q = (sigmoid(r), sigmoid(c)) if logits else (np.clip(r, 0, 1), np.clip(c, 0, 1))
        broken = ~np.isfinite(c)  # a NaN or Inf score decides nothing: a flip of a label that was there
        flips = ((p > threshold) != (q > threshold)) | broken
        p, q = np.clip(p, 1e-7, 1 - 1e-7), np.clip(q, 1e-7, 1 - 1e-7)
        binary_kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
        ev = {"label_flips": flips, "positives": (p > threshold).sum(axis=1), "kl": binary_kl.sum(axis=1),
              "found": ((p > threshold) | (q > threshold) | broken).sum(axis=1)}
        ev.update(error_evidence(r, c))
        return ev

    def summarize(self, ev, labels, plan):
        flips = ev["label_flips"]
        n, units = flips.shape
        any_flip = int(np.count_nonzero(flips.any(axis=1)))
        flipped, found = int(flips.sum()), int(ev["found"].sum())
        per_label = flips.mean(axis=0) if n else np.zeros(units)
        worst = int(per_label.argmax()) if units else 0
        out = contract_keys(n, rate(flipped, found), kl_mean=float(ev["kl"].mean()) if n else 0.0,
                            label_flip_rate=rate(flipped, found), flipped_labels=flipped, labels_found=found,
                            sample_flip_rate=rate(any_flip, n), label_flip_mean=float(per_label.mean()),
                            label_flip_worst=float(per_label[worst]) if units else 0.0,
                            worst_label=worst, labels_per_sample=float(ev["positives"].mean()) if n else 0.0)
        out.update(error_summary(ev))
        out.update(value=out["label_flip_rate"], events=flipped, trials=found)
        return out


MULTILABEL = register(MultiLabel())
