"""Detection: boxes with scores, judged detection by detection.

Argmax over a 896×16 box regressor is meaningless; what matters is whether the same
objects are found in the same places. A detection is a box whose score passes the
threshold. A detection *flips* when it exists in one model's output but not the
other's, or when the two boxes overlap less than ``iou`` (or change class). The
verdict rate is flipped detections over all detections (float ∪ quantized).

Two layouts:

* ``anchors`` (SSD / MediaPipe raw heads: regressors (A, D≥4) + scores (A,) / (A, 1) /
  (A, C)): anchor i of the float model is matched with anchor i of the quantized one.
  Boxes are read as (cx, cy, w, h) at ``box_offset``. IoU is unchanged by a per-anchor
  shift and axis-wise scale, so the anchor-relative values give the same IoU as the
  decoded boxes for linear (MediaPipe-style) encodings; no anchor table is needed.
  Without NMS, a face seen by several anchors counts several times.
* ``post-nms`` (TFLite_Detection_PostProcess: boxes (N, 4) as ymin, xmin, ymax, xmax,
  scores (N,), classes (N,), count): detections are matched greedily by IoU
  (same class), highest IoU first.
"""

from __future__ import annotations

import numpy as np

from edgeq.analysis.kinds import (OutputKind, contract_keys, error_evidence, error_summary, in_unit_interval,
                                  rate, register, sigmoid)
from edgeq.errors import ConfigError

LAYOUTS = ("anchors", "post-nms")
BOX_FORMATS = ("center", "corners")


def corners(boxes: np.ndarray, fmt: str) -> np.ndarray:
    """(..., 4) boxes as (lo0, lo1, hi0, hi1) with non-negative extent."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if fmt == "corners":
        a, b = boxes[..., :2], boxes[..., 2:4]
        return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=-1)
    half = np.abs(boxes[..., 2:4]) * 0.5
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes, broadcasting over leading axes; two empty boxes at one spot count as 1."""
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    same = np.all(a == b, axis=-1)
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.where(same, 1.0, 0.0))


class Detection(OutputKind):
    name = "detection"
    metric = "detection_flip_rate"
    description = "boxes + scores: a detection flips when its score crosses the threshold or its IoU falls under iou"
    defaults = {"layout": "anchors", "threshold": 0.5, "iou": 0.5, "box_format": None, "box_offset": 0,
                "logits": None}
    roles = ("scores", "classes", "count")

    def options(self, given, where):
        merged = super().options(given, where)
        if merged["layout"] not in LAYOUTS:
            raise ConfigError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, not {merged['layout']!r}")
        if merged["box_format"] is None:
            merged["box_format"] = "center" if merged["layout"] == "anchors" else "corners"
        if merged["box_format"] not in BOX_FORMATS:
            raise ConfigError(f"{where}: box_format must be center or corners, not {merged['box_format']!r}")
        if not 0.0 <= merged["iou"] <= 1.0:
            raise ConfigError(f"{where}: iou must be in [0, 1], not {merged['iou']}")
        return merged

    def check(self, plan, shapes):
        boxes, scores = shapes["output"], shapes.get("scores")
        if scores is None:
            raise ConfigError(f"output {plan.name!r}: a detection needs its scores output (option scores=NAME)")
        offset = int(plan.options["box_offset"])
        if len(boxes) != 2 or boxes[1] < offset + 4:
            raise ConfigError(f"output {plan.name!r} has sample shape {list(boxes)}: detection boxes must be "
                              f"(detections, ≥{offset + 4}) with the box at box_offset {offset}")
        if len(scores) not in (1, 2) or scores[0] != boxes[0]:
            raise ConfigError(f"scores output of {plan.name!r} has sample shape {list(scores)}: it must list one "
                              f"score (or one per class) for each of the {boxes[0]} boxes")

    def prepare(self, ref, cand, plan, reference_mask):
        if plan.options.get("logits") is None:
            plan.options["logits"] = not in_unit_interval(ref["scores"])

    def evidence(self, ref, cand, plan, labels):
        opts = plan.options
        f, q = self._detections(ref, opts), self._detections(cand, opts)
        counts = (self._anchor_flips if opts["layout"] == "anchors" else self._matched_flips)(f, q, opts)
        ev = dict(zip(("det_flips", "det_union", "det_float", "det_quant", "iou_sum", "matched"), counts))
        ev.update(error_evidence(ref["output"], cand["output"]))
        return ev

    @staticmethod
    def _detections(outputs, opts):
        scores = outputs["scores"].astype(np.float64)
        classes = outputs["classes"].astype(np.int64) if "classes" in outputs else None
        if scores.ndim == 3 and scores.shape[2] > 1:
            classes, scores = scores.argmax(axis=2), scores.max(axis=2)
        scores = scores.reshape(scores.shape[0], -1)
        if opts["logits"]:
            scores = sigmoid(scores)
        present = scores > opts["threshold"]
        if "count" in outputs:
            count = outputs["count"].reshape(len(scores), -1)[:, 0].astype(np.int64)
            present &= np.arange(scores.shape[1])[None, :] < count[:, None]
        offset = int(opts["box_offset"])
        return present, outputs["output"][..., offset:offset + 4], classes

    @staticmethod
    def _anchor_flips(f, q, opts):
        (pf, bf, cf), (pq, bq, cq) = f, q
        both = pf & pq
        overlap = np.zeros(pf.shape)
        overlap[both] = iou(corners(bf[both], opts["box_format"]), corners(bq[both], opts["box_format"]))
        moved = both & (overlap < opts["iou"])
        if cf is not None and cq is not None:
            moved |= both & (cf != cq)
        flipped = (pf != pq) | moved
        matched = both & ~moved
        return (flipped.sum(axis=1), (pf | pq).sum(axis=1), pf.sum(axis=1), pq.sum(axis=1),
                np.where(matched, overlap, 0.0).sum(axis=1), matched.sum(axis=1))

    @staticmethod
    def _matched_flips(f, q, opts):
        (pf, bf, cf), (pq, bq, cq) = f, q
        bf, bq = corners(bf, opts["box_format"]), corners(bq, opts["box_format"])
        n = len(pf)
        matched, iou_sum = np.zeros(n, np.int64), np.zeros(n)
        for i in range(n):
            a, b = np.flatnonzero(pf[i]), np.flatnonzero(pq[i])
            if not len(a) or not len(b):
                continue
            table = iou(bf[i][a][:, None, :], bq[i][b][None, :, :])
            if cf is not None and cq is not None:
                table = np.where(cf[i][a][:, None] == cq[i][b][None, :], table, -1.0)
            while True:
                j, k = np.unravel_index(np.argmax(table), table.shape)
                if table[j, k] < opts["iou"]:
                    break
                matched[i] += 1
                iou_sum[i] += table[j, k]
                table[j, :], table[:, k] = -1.0, -1.0
        nf, nq = pf.sum(axis=1), pq.sum(axis=1)
        return nf + nq - 2 * matched, nf + nq - matched, nf, nq, iou_sum, matched

    def summarize(self, ev, labels, plan):
        n = len(ev["det_flips"])
        flips, union = int(ev["det_flips"].sum()), int(ev["det_union"].sum())
        matched = int(ev["matched"].sum())
        out = contract_keys(n, rate(flips, union), detection_flip_rate=rate(flips, union), detections=union,
                            flipped_detections=flips, float_detections=int(ev["det_float"].sum()),
                            quant_detections=int(ev["det_quant"].sum()),
                            sample_flip_rate=rate(int(np.count_nonzero(ev["det_flips"])), n),
                            matched_iou_mean=float(ev["iou_sum"].sum() / matched) if matched else None)
        out.update(error_summary(ev))
        out.update(value=out["detection_flip_rate"], events=flips, trials=union)
        return out


DETECTION = register(Detection())
