"""Raw SSD heads to the detections a user gets: anchor tables, box decoding, NMS.

Why: a raw head (MediaPipe face detection: 896×16 box regressors + 896×1 score logits)
scores every anchor, and one face lights up several of them. Judged anchor by anchor,
one face counts several times and a logit a hair under the threshold counts as a lost
detection even when a neighbouring anchor still finds the face. An application decodes
the regressors against the anchors and merges overlapping boxes (non-maximum
suppression) first; judging quantization on those detections needs the same steps.

The steps follow MediaPipe's calculators (written from their source, not copied):
``SsdAnchorsCalculator`` (anchor centres on a grid per stride, same strides merged),
``TensorsToDetectionsCalculator`` (offsets / input size × anchor size + anchor centre;
boxes of negative size dropped) and ``NonMaxSuppressionCalculator`` (IoU; ``weighted``
blends every box of a cluster by score as MediaPipe's face and palm graphs do,
``greedy`` keeps the top box). Pure numpy: no TensorFlow, runtime, transport or CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from edgeq.errors import ConfigError

NMS_METHODS = ("weighted", "greedy")


@dataclass(frozen=True)
class SsdAnchorOptions:
    """The SsdAnchorsCalculatorOptions fields these models use (one stride per layer)."""

    input_size: tuple[int, int]  # (height, width) in pixels
    strides: tuple[int, ...]
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    offset: tuple[float, float] = (0.5, 0.5)  # (x, y), in cells
    aspect_ratios: tuple[float, ...] = (1.0,)
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True
    reduce_boxes_in_lowest_layer: bool = False


@dataclass(frozen=True)
class Preset:
    """A known model's anchors and decoding, with the graph the numbers come from."""

    name: str
    title: str
    anchors: SsdAnchorOptions
    values: int  # regressor values per anchor (box + keypoints)
    min_score: float  # the graph's min_score_thresh (its NMS: WEIGHTED, IoU 0.3, the detection kind's defaults)
    graph: str

    @property
    def count(self) -> int:
        return len(ssd_anchors(self.anchors))

    def describe(self) -> str:
        (h, w), strides = self.anchors.input_size, strides_text(self.anchors.strides)
        return f"{self.title} ({self.count}×{self.values}, {h}×{w} input, strides {strides})"


_MP = "mediapipe/modules/"
PRESETS = {p.name: p for p in (
    Preset("mediapipe-face-short", "MediaPipe face detection, short range",
           SsdAnchorOptions((128, 128), (8, 16, 16, 16)), 16, 0.5,
           _MP + "face_detection/face_detection_short_range.pbtxt"),
    Preset("mediapipe-face-full", "MediaPipe face detection, full range",
           SsdAnchorOptions((192, 192), (4,), interpolated_scale_aspect_ratio=0.0), 16, 0.6,
           _MP + "face_detection/face_detection_full_range.pbtxt"),
    Preset("mediapipe-palm", "MediaPipe palm detection",
           SsdAnchorOptions((192, 192), (8, 16, 16, 16)), 18, 0.5,
           _MP + "palm_detection/palm_detection_cpu.pbtxt"),
)}


# --- anchors ---------------------------------------------------------------------------------

def layer_scale(opts: SsdAnchorOptions, layer: int) -> float:
    """MediaPipe's CalculateScale: linear from min_scale to max_scale over the layers."""
    n = len(opts.strides)
    if n == 1:
        return (opts.min_scale + opts.max_scale) / 2
    return opts.min_scale + (opts.max_scale - opts.min_scale) * layer / (n - 1)


def _cell_anchors(opts: SsdAnchorOptions, layers: range) -> list[tuple[float, float]]:
    """(width, height) of the anchors in one grid cell for layers that share a stride, in order."""
    sizes = []
    for layer in layers:
        scale = layer_scale(opts, layer)
        if layer == 0 and opts.reduce_boxes_in_lowest_layer:
            pairs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            pairs = [(scale, ratio) for ratio in opts.aspect_ratios]
            if opts.interpolated_scale_aspect_ratio > 0.0:
                following = 1.0 if layer == len(opts.strides) - 1 else layer_scale(opts, layer + 1)
                pairs.append((float(np.sqrt(scale * following)), opts.interpolated_scale_aspect_ratio))
        sizes += [(s * np.sqrt(r), s / np.sqrt(r)) for s, r in pairs]
    return sizes


def _stride_groups(strides: tuple[int, ...]) -> list[range]:
    """Runs of consecutive layers with one stride: MediaPipe puts their anchors in one grid."""
    groups, start = [], 0
    for k in range(1, len(strides) + 1):
        if k == len(strides) or strides[k] != strides[start]:
            groups.append(range(start, k))
            start = k
    return groups


@lru_cache(maxsize=16)
def ssd_anchors(opts: SsdAnchorOptions) -> np.ndarray:
    """(A, 4) anchors as (x_center, y_center, w, h), normalised to [0, 1], in MediaPipe's order:
    per stride group, rows then columns then the cell's anchors. Cached and read-only."""
    height, width = opts.input_size
    tables = []
    for layers in _stride_groups(opts.strides):
        stride = opts.strides[layers[0]]
        rows, cols = int(np.ceil(height / stride)), int(np.ceil(width / stride))
        sizes = np.array(_cell_anchors(opts, layers), dtype=np.float64)
        if opts.fixed_anchor_size:
            sizes = np.ones_like(sizes)
        y, x, k = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(len(sizes)), indexing="ij")
        tables.append(np.stack([(x.ravel() + opts.offset[0]) / cols, (y.ravel() + opts.offset[1]) / rows,
                                sizes[k.ravel(), 0], sizes[k.ravel(), 1]], axis=1))
    table = np.concatenate(tables)
    table.setflags(write=False)
    return table


# --- which anchors ---------------------------------------------------------------------------

def recognise(count: int, values: int) -> Preset | None:
    """The known model whose anchor count and regressor width these are, if any."""
    return next((p for p in PRESETS.values() if p.count == count and p.values == values), None)


def parse_strides(text) -> tuple[int, ...]:
    """Strides from an option: "8 16 16 16", "8/16/16/16" or a TOML list (commas split --output flags)."""
    strides = tuple(int(s) for s in re.findall(r"\d+", str(text)))
    if str(text).strip() and (not strides or min(strides) < 1):
        raise ConfigError(f"strides must be positive whole numbers such as 8/16/16/16, not {text!r}")
    return strides


def strides_text(strides) -> str:
    """Strides as an option value: "8/16/16/16" (commas would split an --output flag)."""
    return "/".join(map(str, strides))


def resolve(name: str, input_size: int = 0, strides=()) -> Preset:
    """A preset, with the input size (box scale and grid) and strides the user overrode.

    A model of the same head at another input size keeps its grid: when only the input
    size changes, the strides scale with it (the old 256×256 back-camera face model is
    mediapipe-face-short at input_size=256)."""
    preset = PRESETS[name]
    base = preset.anchors
    size = (int(input_size), int(input_size)) if input_size else base.input_size
    if not strides:
        strides = tuple(s * size[0] / base.input_size[0] for s in base.strides)
        if any(s != int(s) for s in strides):
            raise ConfigError(f"input_size {input_size} does not scale {name}'s strides "
                              f"{strides_text(base.strides)} to whole pixels: give strides too")
    anchors = replace(base, input_size=size, strides=tuple(int(s) for s in strides))
    return replace(preset, anchors=anchors)


# --- decoding and NMS ------------------------------------------------------------------------

def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: tuple[int, int], offset: int = 0) -> np.ndarray:
    """(..., A, 4) corner boxes (xmin, ymin, xmax, ymax) from raw (..., A, D) regressors.

    MediaPipe's linear decoding with ``reverse_output_order`` (x, y, w, h): offsets are in
    input pixels, so divided by the input size and scaled by the anchor's size. A box of
    negative width or height keeps it here; ``valid_boxes`` tells which MediaPipe drops.
    """
    height, width = input_size
    raw = np.asarray(raw, dtype=np.float64)[..., offset:offset + 4]
    ax, ay, aw, ah = (anchors[:, k] for k in range(4))
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite outputs give invalid boxes, not warnings
        cx, cy = raw[..., 0] / width * aw + ax, raw[..., 1] / height * ah + ay
        w, h = raw[..., 2] / width * aw, raw[..., 3] / height * ah
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes MediaPipe keeps: finite, with non-negative width and height."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(boxes).all(axis=-1) & (boxes[..., 2] >= boxes[..., 0]) & (boxes[..., 3] >= boxes[..., 1])


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of corner boxes (lo0, lo1, hi0, hi1), broadcasting over leading axes; two empty boxes
    at one spot count as 1."""
    w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
    h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0)
    inter = w * h
    union = _area(a) + _area(b) - inter
    out = np.divide(inter, union, out=np.zeros(np.shape(inter)), where=union > 0)
    empty = ~(union > 0)
    if empty.any():
        out[empty] = np.asarray(np.all(a == b, axis=-1))[empty]
    return out


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


@dataclass
class Suppressed:
    """NMS result for one sample: kept boxes and scores, the candidate each came from, and
    for every candidate the kept detection that absorbed it."""

    boxes: np.ndarray  # (k, 4)
    scores: np.ndarray  # (k,)
    top: np.ndarray  # (k,) candidate index of each detection's highest-scoring box
    owner: np.ndarray  # (m,) detection index per candidate


def suppress(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, method: str = "weighted") -> Suppressed:
    """Non-maximum suppression of candidate boxes (already above the score threshold).

    Highest score first, every remaining box whose IoU with it exceeds ``iou_threshold``
    joins its cluster. ``weighted`` (MediaPipe's WEIGHTED) reports the cluster's
    score-weighted mean box, ``greedy`` the top box; both keep the top score. The top box
    always joins its own cluster (MediaPipe stops at a zero-area top box instead).
    """
    if method not in NMS_METHODS:
        raise ConfigError(f"nms must be {' or '.join(NMS_METHODS)}, not {method!r}")
    remaining = np.argsort(-scores, kind="stable")
    owner = np.full(len(scores), -1, dtype=np.int64)
    kept, top = [], []
    while len(remaining):
        first = remaining[0]
        joins = iou(boxes[remaining], boxes[first]) > iou_threshold
        joins[0] = True
        cluster = remaining[joins]
        owner[cluster] = len(kept)
        kept.append(_blend(boxes[cluster], scores[cluster]) if method == "weighted" else boxes[first])
        top.append(first)
        remaining = remaining[~joins]
    top = np.array(top, dtype=np.int64)
    return Suppressed(np.array(kept, dtype=np.float64).reshape(-1, 4), scores[top], top, owner)


def _blend(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The score-weighted mean box of a cluster (its top box when the weights do not sum to > 0)."""
    total = scores.sum()
    return (boxes * scores[:, None]).sum(axis=0) / total if total > 0 else boxes[0]
