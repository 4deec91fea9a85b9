"""Detection: boxes with scores, judged on the detections a user gets.

Argmax over a 896×16 box regressor is meaningless; what matters is whether the same
objects are found in the same places. A detection is a box whose score passes the
threshold. A detection *flips* when it exists in one model's output but not the
other's, or when the two boxes overlap less than ``iou`` (or change class). The
verdict rate is flipped detections over all detections (float ∪ quantized).

What a detection is depends on the layout; the choice is written to
``options["anchors_reason"]`` and each summary's ``unit``:

* ``post-nms`` (TFLite_Detection_PostProcess: boxes (N, 4) as ymin, xmin, ymax, xmax,
  scores (N,), classes (N,), count): detections are matched greedily by IoU (same
  class), highest IoU first.
* ``anchors`` with a known anchor table (SSD / MediaPipe raw heads: regressors
  (A, D≥4) + scores (A,) / (A, 1) / (A, C)): the boxes are decoded against the anchors
  and overlapping ones merged by NMS as the application would (``analysis/anchors.py``:
  ``nms=weighted`` is MediaPipe's blending, ``greedy`` keeps the top box; ``nms_iou``),
  then matched like post-NMS detections. The table is recognised from the anchor count
  and regressor width (MediaPipe face short/full range, palm) or named: ``anchors=``
  (``input_size``, ``strides`` adjust it); ``threshold`` then defaults to its graph's.
* ``anchors`` without one (``anchors=none``, or a shape no table fits): anchor i of the
  float model is matched with anchor i of the quantized one; boxes are read as
  (cx, cy, w, h) at ``box_offset``. A face seen by several anchors counts several times.

Near-threshold flips are counted apart (beside the rate, not instead of it): a flip
whose *float* score lies within ``near_margin`` of the threshold, in logits
(probability scores are mapped through the logit), is one a small nudge of the score
explains. The default, 1 logit (scores 0.27–0.73 around a 0.5 threshold), is about the
99th percentile of the logit error dynamic-range quantization made on MediaPipe's face
detectors near their threshold (short range: σ 0.25, p99 0.87; full range: σ 0.11,
p99 0.37, on the drawn faces of tests/test_detection_nms.py); a flip beyond it is a
confident detection lost or invented. The float score of a detection only the
quantized model reports is the float model's best score over the anchors that make it
up; in the post-NMS layout, which has no such score, the quantized score stands in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.analysis.anchors import (NMS_METHODS, PRESETS, decode_boxes, iou, parse_strides, recognise, resolve,
                                    ssd_anchors, strides_text, suppress, valid_boxes)
from edgeq.analysis.kinds import (OutputKind, _typed, contract_keys, error_evidence, error_summary,
                                  in_unit_interval, rate, register, sigmoid)
from edgeq.errors import ConfigError

LAYOUTS = ("anchors", "post-nms")
BOX_FORMATS = ("center", "corners")
ANCHORS = ("auto", "none", *PRESETS)
ANCHOR_ONLY = ("anchors", "input_size", "strides", "nms", "nms_iou")  # options a post-NMS layout has no use for
NEAR_MARGIN = 1.0  # logits; see the module docstring
COUNTS = ("det_flips", "det_union", "det_float", "det_quant", "iou_sum", "matched", "near_flips")


def corners(boxes: np.ndarray, fmt: str) -> np.ndarray:
    """(..., 4) boxes as (lo0, lo1, hi0, hi1) with non-negative extent."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if fmt == "corners":
        a, b = boxes[..., :2], boxes[..., 2:4]
        return np.concatenate([np.minimum(a, b), np.maximum(a, b)], axis=-1)
    half = np.abs(boxes[..., 2:4]) * 0.5
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def threshold_gap(raw: np.ndarray, opts: dict) -> np.ndarray:
    """Signed distance of each score from the threshold in logits (raw units when the scores
    are neither logits nor probabilities): what ``near_margin`` is compared with."""
    t = opts["threshold"]
    if opts["logits"]:
        return raw - _logit(t)
    return _logit(raw) - _logit(t) if 0.0 < t < 1.0 else raw - t


@dataclass
class Found:
    """One model's detections in one sample: corner boxes, scores as the application sees them,
    classes, and the float model's threshold gap for each (near-threshold or confident when it flips)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray | None
    gap: np.ndarray


def match_by_iou(f: Found, q: Found, iou_min: float) -> list[tuple[int, int, float]]:
    """Greedy pairs (float index, quantized index, IoU), highest IoU first, same class only."""
    if not len(f.boxes) or not len(q.boxes):
        return []
    table = iou(f.boxes[:, None, :], q.boxes[None, :, :])
    if f.classes is not None and q.classes is not None:
        table = np.where(f.classes[:, None] == q.classes[None, :], table, -1.0)
    pairs = []
    while True:
        j, k = np.unravel_index(np.argmax(table), table.shape)
        if table[j, k] < iou_min:
            return pairs
        pairs.append((int(j), int(k), float(table[j, k])))
        table[j, :], table[:, k] = -1.0, -1.0


def sample_counts(f: Found, q: Found, opts: dict) -> tuple:
    """The evidence numbers (``COUNTS``) of one sample's matched detections."""
    pairs = match_by_iou(f, q, opts["iou"])
    lost, new = np.ones(len(f.boxes), bool), np.ones(len(q.boxes), bool)
    lost[[j for j, _, _ in pairs]] = False
    new[[k for _, k, _ in pairs]] = False
    near = int(np.count_nonzero(np.abs(f.gap[lost]) <= opts["near_margin"])
               + np.count_nonzero(np.abs(q.gap[new]) <= opts["near_margin"]))
    nf, nq, matched = len(f.boxes), len(q.boxes), len(pairs)
    return nf + nq - 2 * matched, nf + nq - matched, nf, nq, sum((p[2] for p in pairs), 0.0), matched, near


class Detection(OutputKind):
    name = "detection"
    metric = "detection_flip_rate"
    description = ("boxes + scores: a detection (after decoding and NMS when the anchors are known) flips when its "
                   "score crosses the threshold or its IoU falls under iou")
    defaults = {"layout": "anchors", "threshold": None, "iou": 0.5, "box_format": None, "box_offset": 0,
                "logits": None, "anchors": "auto", "input_size": 0, "strides": "", "nms": "weighted",
                "nms_iou": 0.3, "near_margin": NEAR_MARGIN}
    roles = ("scores", "classes", "count")
    types = {"box_format": "", "logits": False}

    def options(self, given, where):
        given = dict(given)
        logits = given.pop("logits", None)  # a yes/no whose default (None: decide from the values) is no bool
        merged = super().options(given, where)
        merged["logits"] = None if logits is None else _typed(logits, False, f"{where}: logits")
        if merged["box_format"] is None:
            merged["box_format"] = "center" if merged["layout"] == "anchors" else "corners"
        for key, choices in (("layout", LAYOUTS), ("box_format", BOX_FORMATS), ("anchors", ANCHORS),
                             ("nms", NMS_METHODS)):
            if merged[key] not in choices:
                raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}, not {merged[key]!r}")
        for key in ("iou", "nms_iou"):
            if not 0.0 <= merged[key] <= 1.0:
                raise ConfigError(f"{where}: {key} must be in [0, 1], not {merged[key]}")
        if merged["near_margin"] < 0 or merged["input_size"] < 0:
            raise ConfigError(f"{where}: near_margin and input_size must not be negative")
        from edgeq.analysis.kinds import Limits

        for key in ("box_offset", "input_size"):  # row positions and pixels: whole numbers
            merged[key] = Limits(0, whole=True).check(merged[key], f"{where}: {key}")
        merged["strides"] = strides_text(parse_strides(merged["strides"]))
        if merged["layout"] == "post-nms":
            if merged["anchors"] not in ("auto", "none"):
                raise ConfigError(f"{where}: anchors={merged['anchors']} needs layout=anchors (raw SSD heads)")
            return {k: v for k, v in merged.items() if k not in ANCHOR_ONLY}
        if merged["anchors"] not in ("auto", "none"):
            resolve(merged["anchors"], merged["input_size"], parse_strides(merged["strides"]))
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
        if plan.options.get("anchors") not in (None, "auto", "none"):
            self._table(plan.options, boxes, plan.name)

    def prepare(self, ref, cand, plan, reference_mask):
        opts = plan.options
        if opts.get("logits") is None:
            opts["logits"] = not in_unit_interval(ref["scores"])
        preset = self._settle_anchors(opts, tuple(ref["output"].shape[1:]), plan.name)
        if opts.get("threshold") is None:
            opts["threshold"] = preset.min_score if preset else 0.5

    def _settle_anchors(self, opts, shape, name):
        """Resolve ``anchors`` (auto → a known table or none) once, saying why in ``anchors_reason``;
        a table's input size and strides are written out, so the options show what was used."""
        if opts["layout"] != "anchors":
            return None
        if "anchors_reason" not in opts:
            given = opts["anchors"]
            if given == "auto":
                preset = recognise(*shape)
            else:
                preset = None if given == "none" else self._table(opts, shape, name)
            opts["anchors_reason"] = self._anchors_reason(opts, shape, preset, given)
            opts["anchors"] = preset.name if preset else "none"
            if preset:
                opts["input_size"], opts["strides"] = preset.anchors.input_size[0], strides_text(preset.anchors.strides)
        return None if opts["anchors"] == "none" else self._table(opts, shape, name)

    @staticmethod
    def _table(opts, shape, name):
        preset = resolve(opts["anchors"], opts["input_size"], parse_strides(opts["strides"]))
        if len(ssd_anchors(preset.anchors)) != shape[0] or shape[1] < int(opts["box_offset"]) + 4:
            raise ConfigError(f"output {name!r} has {shape[0]} rows of {shape[1]} values, but anchors="
                              f"{opts['anchors']} has {len(ssd_anchors(preset.anchors))} anchors: "
                              f"{preset.describe()}")
        return preset

    @staticmethod
    def _anchors_reason(opts, shape, preset, given) -> str:
        rows = f"{shape[0]} rows of {shape[1]} values"
        if preset is None:
            known = ", ".join(f"{p.name} {p.count}×{p.values}" for p in PRESETS.values())
            why = "anchors=none given" if given == "none" else f"{rows} fit no known anchor table ({known})"
            return (f"{why}: judged anchor by anchor, so an object seen by several anchors counts several times; "
                    "name the anchors (anchors=NAME, input_size, strides) to judge detections after NMS")
        how = f"anchors={given} given" if given != "auto" else f"recognised from {rows}"
        h, w = preset.anchors.input_size
        threshold = (f", score threshold {preset.min_score:g} from its graph" if opts.get("threshold") is None
                     else "")
        return (f"{how}: {preset.describe()}, {preset.graph}; boxes decoded against its anchors, {opts['nms']} NMS "
                f"at IoU {opts['nms_iou']:g}{threshold}, detections matched by IoU ≥ {opts['iou']:g} "
                f"(input_size=N if the model's input is not {h}×{w}; anchors=none judges anchor by anchor)")

    def evidence(self, ref, cand, plan, labels):
        opts = plan.options
        if opts["layout"] == "post-nms":
            counts = self._post_nms_counts(ref, cand, opts)
        elif opts["anchors"] == "none":
            counts = self._anchor_counts(ref, cand, opts)
        else:
            counts = self._decoded_counts(ref, cand, opts)
        ev = {key: np.asarray(values) for key, values in zip(COUNTS, counts)}
        ev.update(error_evidence(ref["output"], cand["output"]))
        return ev

    def _anchor_counts(self, ref, cand, opts):
        """Anchor i against anchor i, vectorised over the samples."""
        (pf, _, gf, cf), (pq, _, _, cq) = scores_of(ref, opts), scores_of(cand, opts)
        offset, fmt = int(opts["box_offset"]), opts["box_format"]
        bf, bq = ref["output"][..., offset:offset + 4], cand["output"][..., offset:offset + 4]
        both = pf & pq
        overlap = np.zeros(pf.shape)
        overlap[both] = iou(corners(bf[both], fmt), corners(bq[both], fmt))
        moved = both & (overlap < opts["iou"])
        if cf is not None and cq is not None:
            moved |= both & (cf != cq)
        flipped = (pf != pq) | moved
        matched = both & ~moved
        near = flipped & (np.abs(gf) <= opts["near_margin"])
        return (flipped.sum(axis=1), (pf | pq).sum(axis=1), pf.sum(axis=1), pq.sum(axis=1),
                np.where(matched, overlap, 0.0).sum(axis=1), matched.sum(axis=1), near.sum(axis=1))

    def _post_nms_counts(self, ref, cand, opts):
        """The model's own detections; a quantized-only one has no float score, its own stands in."""
        found = []
        offset = int(opts["box_offset"])
        for outputs in (ref, cand):
            present, shown, gap, classes = scores_of(outputs, opts)
            boxes = corners(outputs["output"][..., offset:offset + 4], opts["box_format"])
            found.append([Found(boxes[i][p], shown[i][p], None if classes is None else classes[i][p], gap[i][p])
                          for i, p in enumerate(present)])
        return _stack([sample_counts(f, q, opts) for f, q in zip(*found)])

    @staticmethod
    def _decoded_counts(ref, cand, opts):
        """Both models' detections after decoding and NMS, matched; the float model's gaps judge the flips."""
        float_gap = scores_of(ref, opts)[2]
        found = (decoded_detections(outputs, opts, float_gap) for outputs in (ref, cand))
        return _stack([sample_counts(f, q, opts) for f, q in zip(*found)])

    def summarize(self, ev, labels, plan):
        n = len(ev["det_flips"])
        flips, union = int(ev["det_flips"].sum()), int(ev["det_union"].sum())
        near, matched = int(ev["near_flips"].sum()), int(ev["matched"].sum())
        per_anchor = plan.options.get("layout") == "anchors" and plan.options.get("anchors") == "none"
        out = contract_keys(n, rate(flips, union), detection_flip_rate=rate(flips, union), detections=union,
                            flipped_detections=flips, near_threshold_flips=near, confident_flips=flips - near,
                            confident_flip_rate=rate(flips - near, union), unit="anchor" if per_anchor else "detection",
                            float_detections=int(ev["det_float"].sum()),
                            quant_detections=int(ev["det_quant"].sum()),
                            sample_flip_rate=rate(int(np.count_nonzero(ev["det_flips"])), n),
                            matched_iou_mean=float(ev["iou_sum"].sum() / matched) if matched else None)
        out.update(error_summary(ev))
        out.update(value=out["detection_flip_rate"], events=flips, trials=union)
        return out


def scores_of(outputs: dict, opts: dict) -> tuple:
    """(present, score, threshold gap, classes) per box or anchor: the score is a probability when
    the outputs are logits, thresholded as the application does."""
    scores = outputs["scores"].astype(np.float64)
    classes = outputs["classes"].astype(np.int64) if "classes" in outputs else None
    if scores.ndim == 3 and scores.shape[2] > 1:
        classes, scores = scores.argmax(axis=2), scores.max(axis=2)
    scores = scores.reshape(scores.shape[0], -1)
    shown = sigmoid(scores) if opts["logits"] else scores
    with np.errstate(invalid="ignore"):
        present = shown > opts["threshold"]
    if "count" in outputs:
        count = outputs["count"].reshape(len(scores), -1)[:, 0].astype(np.int64)
        present &= np.arange(scores.shape[1])[None, :] < count[:, None]
    return present, shown, threshold_gap(scores, opts), classes


def decoded_detections(outputs: dict, opts: dict, float_gap: np.ndarray | None = None) -> list[Found]:
    """Per sample, the detections an application gets from a raw head: boxes decoded against the
    anchors, thresholded, NMS. ``float_gap`` (per anchor) is the float model's, for judging flips
    of another model's detections; without it the outputs' own gaps are used."""
    preset = resolve(opts["anchors"], opts["input_size"], parse_strides(opts["strides"]))
    present, shown, gap, classes = scores_of(outputs, opts)
    boxes = decode_boxes(outputs["output"], ssd_anchors(preset.anchors), preset.anchors.input_size,
                         int(opts["box_offset"]))
    present &= valid_boxes(boxes)
    float_gap = gap if float_gap is None else float_gap
    return [_after_nms(boxes[i], present[i], shown[i], _row(classes, i), float_gap[i], opts)
            for i in range(len(present))]


def _after_nms(boxes, present, scores, classes, float_gap, opts) -> Found:
    """One model's detections in one sample after NMS. Each detection's float gap is the float
    model's best over the anchors it absorbed: its own top score for the float model, and for
    the quantized one how close the float model came to reporting the same object."""
    idx = np.flatnonzero(present)
    kept = suppress(boxes[idx], scores[idx], opts["nms_iou"], opts["nms"])
    gap = np.full(len(kept.top), -np.inf)
    np.maximum.at(gap, kept.owner, float_gap[idx])
    return Found(kept.boxes, kept.scores, None if classes is None else classes[idx][kept.top], gap)


def _row(a, i):
    return None if a is None else a[i]


def _stack(rows: list[tuple]) -> tuple:
    """Per-sample tuples of ``COUNTS`` → one array per count."""
    return tuple(np.array(column) for column in zip(*rows)) if rows else tuple(np.zeros(0) for _ in COUNTS)


DETECTION = register(Detection())
