"""Segmentation: a class (or a yes/no mask) per pixel, judged mask by mask.

Argmax over a flattened mask calls a one-pixel change a "flip". Here each pixel gets
its class (argmax over channels, or the threshold for a one-channel mask), and each
sample gets its pixel agreement and its mask IoU with the float mask (foreground IoU
for one channel; mean IoU over the classes present for several). A sample fails when
its IoU falls below ``min_iou``: the mask a user would see has visibly changed.
"""

from __future__ import annotations

import numpy as np

from edgeq.analysis.kinds import (Limits, Option, OutputKind, contract_keys, error_evidence, error_summary,
                                  in_unit_interval, rate, register)
from edgeq.errors import ConfigError


def pixel_classes(x: np.ndarray, channels: int, threshold: float) -> np.ndarray:
    if channels > 1:
        return x.reshape(len(x), -1, channels).argmax(axis=2)
    with np.errstate(over="ignore"):  # a threshold beyond float32 (1e308) becomes inf: no pixel is above it
        return (x.reshape(len(x), -1) > threshold).astype(np.int64)


def mask_iou(a: np.ndarray, b: np.ndarray, classes: int) -> np.ndarray:
    """Per sample: foreground IoU (2 classes) or mean IoU over classes present in either."""
    wanted = [1] if classes == 2 else range(classes)
    ious, present = np.zeros(len(a)), np.zeros(len(a))
    for k in wanted:
        in_a, in_b = a == k, b == k
        union = np.count_nonzero(in_a | in_b, axis=1)
        inter = np.count_nonzero(in_a & in_b, axis=1)
        ious += np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        present += union > 0
    return np.where(present > 0, ious / np.maximum(present, 1), 1.0)  # both empty: identical masks


class Segmentation(OutputKind):
    name = "segmentation"
    metric = "fail_rate"
    description = "a class per pixel: share of samples whose mask IoU with the float mask is below min_iou"
    defaults = {"min_iou": Option(0.9, Limits(0, 1)),
                "threshold": Option(None, Limits()),  # one-channel masks only; a logit or a probability
                "channels_last": True}

    def check(self, plan, shapes):
        shape = shapes["output"]
        if len(shape) not in (2, 3) or min(shape[:2] if plan.options["channels_last"] else shape[-2:]) < 2:
            raise ConfigError(f"output {plan.name!r} has sample shape {list(shape)}: a segmentation output is "
                              "(H, W) or (H, W, C)")
        channels = (shape[-1] if plan.options["channels_last"] else shape[0]) if len(shape) == 3 else 1
        if channels > 1 and plan.options.get("threshold") is not None:
            raise ConfigError(f"{plan.where}: threshold is for a one-channel mask, but the output has {channels} "
                              "channels (each pixel's class is its largest score; leave threshold out)")

    def prepare(self, ref, cand, plan, reference_mask):
        if plan.options.get("threshold") is None:
            plan.options["threshold"] = 0.5 if in_unit_interval(ref["output"]) else 0.0

    def evidence(self, ref, cand, plan, labels):
        r, c = ref["output"], cand["output"]
        if r.ndim == 4 and not plan.options["channels_last"]:
            r, c = np.moveaxis(r, 1, -1), np.moveaxis(c, 1, -1)
        channels = r.shape[-1] if r.ndim == 4 else 1
        threshold = plan.options["threshold"]
        a, b = pixel_classes(r, channels, threshold), pixel_classes(c, channels, threshold)
        ious = mask_iou(a, b, max(channels, 2))
        ev = {"iou": ious, "pixel_agreement": np.mean(a == b, axis=1), "fail": ious < plan.options["min_iou"]}
        ev.update(error_evidence(r, c))
        return ev

    def summarize(self, ev, labels, plan):
        n = len(ev["fail"])
        fails = int(np.count_nonzero(ev["fail"]))
        out = contract_keys(n, rate(fails, n), fail_rate=rate(fails, n),
                            mask_iou_mean=float(ev["iou"].mean()) if n else 1.0,
                            mask_iou_min=float(ev["iou"].min()) if n else 1.0,
                            pixel_agreement=float(ev["pixel_agreement"].mean()) if n else 1.0)
        out.update(error_summary(ev))
        out.update(value=out["fail_rate"], events=fails, trials=n)
        return out


SEGMENTATION = register(Segmentation())
