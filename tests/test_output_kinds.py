"""Each output kind's metric against an independent, loop-by-loop calculation; the plans that pick kinds."""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.analysis.compare import compare_outputs
from edgeq.analysis.plan import OutputInfo, OutputSpec, plan_outputs
from edgeq.errors import ConfigError

rng = np.random.default_rng(7)


def section(ref, cand, samples=None, spec=None, outputs=None, name=None):
    report = compare_outputs(ref, cand, samples or {}, spec=spec, outputs=outputs, min_n=1)
    return report["outputs"][name or report["deciding_output"]], report


# --- multi-label ---------------------------------------------------------------------------------

def test_multilabel_flips_per_label_and_per_sample():
    ref = rng.uniform(0, 1, size=(200, 12)).astype(np.float32)
    cand = np.clip(ref + rng.normal(0, 0.05, size=ref.shape), 0, 1).astype(np.float32)
    outputs = [OutputInfo(0, "scores", (12,), "LOGISTIC")]
    s, _ = section([ref], [cand], outputs=outputs)
    assert s["kind"] == "multilabel" and "LOGISTIC" in s["reason"]
    label_flips = [[(ref[i, j] > 0.5) != (cand[i, j] > 0.5) for j in range(12)] for i in range(200)]
    per_sample = sum(any(row) for row in label_flips) / 200
    per_label = [sum(label_flips[i][j] for i in range(200)) / 200 for j in range(12)]
    found = sum((ref[i, j] > 0.5) or (cand[i, j] > 0.5) for i in range(200) for j in range(12))
    m = s["overall"]
    assert m["label_flip_rate"] == pytest.approx(sum(map(sum, label_flips)) / found) == m["value"]
    assert m["labels_found"] == found and m["trials"] == found
    assert m["sample_flip_rate"] == pytest.approx(per_sample)
    assert m["label_flip_mean"] == pytest.approx(np.mean(per_label))
    assert m["label_flip_worst"] == pytest.approx(max(per_label))
    p, q = np.clip(ref.astype(np.float64), 1e-7, 1 - 1e-7), np.clip(cand.astype(np.float64), 1e-7, 1 - 1e-7)
    kl = np.mean([sum([p[i, j] * np.log(p[i, j] / q[i, j]) + (1 - p[i, j]) * np.log((1 - p[i, j]) / (1 - q[i, j]))
                       for j in range(12)]) for i in range(200)])
    assert m["kl_mean"] == pytest.approx(kl, rel=1e-6)


def test_sigmoid_scores_are_not_softmaxed():
    """Thousands of independent scores (BirdNET-like): a softmax KL would read ~0 here."""
    ref = rng.uniform(0, 0.2, size=(20, 6522)).astype(np.float32)
    ref[:, 0] = 0.6
    cand = ref.copy()
    cand[:10, 0] = 0.4  # the one detected label disappears on half the samples
    s, _ = section([ref], [cand], outputs=[OutputInfo(0, "birds", (6522,), "LOGISTIC")])
    assert s["overall"]["sample_flip_rate"] == 0.5
    assert s["overall"]["label_flip_rate"] == pytest.approx(10 / 20)  # the one label found, lost on 10 of 20
    assert s["overall"]["kl_mean"] == pytest.approx(0.5 * (0.6 * np.log(1.5) + 0.4 * np.log(0.4 / 0.6)), rel=1e-4)


# --- regression ----------------------------------------------------------------------------------

def test_regression_tolerance_and_errors_in_own_units():
    ref = rng.uniform(0, 32, size=(100, 42)).astype(np.float32)
    cand = ref + rng.normal(0, 0.3, size=ref.shape).astype(np.float32)
    cand[:7, 5] += 20.0  # seven samples with one landmark far off
    outputs = [OutputInfo(0, "landmarks", (42,), "FULLY_CONNECTED"), OutputInfo(1, "presence", (1,), "LOGISTIC")]
    presence = rng.uniform(0.6, 1, size=(100, 1)).astype(np.float32)  # a hand in every sample: the gate is open
    s, report = section([ref, presence], [cand, presence], outputs=outputs, name="landmarks")
    assert s["when"]["open"] == 100 and s["when"]["source"] == "auto"
    assert s["kind"] == "regression"
    assert report["outputs"]["presence"]["kind"] == "classification"
    spread = float(np.std(ref.astype(np.float64)))
    atol = 0.1 * spread
    assert s["options"]["atol"] == pytest.approx(atol) and s["options"]["spread"] == pytest.approx(spread)
    fails = sum(any(abs(float(ref[i, j]) - float(cand[i, j])) > atol for j in range(42)) for i in range(100))
    err = np.abs(ref.astype(np.float64) - cand.astype(np.float64))
    m = s["overall"]
    assert m["fail_rate"] == pytest.approx(fails / 100) == m["value"]
    assert m["mean_abs_error"] == pytest.approx(err.mean(), rel=1e-5)
    assert m["p99_abs_error"] == pytest.approx(np.percentile(err, 99), rel=1e-4)
    assert m["mean_abs_error_rel"] == pytest.approx(err.mean() / spread, rel=1e-5)
    cos = [float(ref[i] @ cand[i] / np.linalg.norm(ref[i]) / np.linalg.norm(cand[i])) for i in range(100)]
    assert m["cosine_mean"] == pytest.approx(np.mean(cos), rel=1e-6)
    assert m["float_accuracy"] is None and m["kl_mean"] is None


def test_regression_atol_and_rtol_from_the_user():
    ref = np.array([[10.0, 100.0], [10.0, 100.0]])
    cand = np.array([[10.5, 104.0], [10.5, 106.5]])
    spec = OutputSpec.from_sources(flags=("0=regression:atol=1,rtol=0.05",))
    s, _ = section([ref], [cand], spec=spec)
    assert s["source"] == "--output" and s["options"]["atol"] == 1.0
    assert s["overall"]["fail_rate"] == 0.5  # 106.5 is off by 6.5 > 1 + 0.05·100; 104 is within


def test_embedding_fails_by_direction():
    ref = rng.normal(size=(50, 16))
    cand = ref * 3.0  # same direction, other length
    cand[:5] = -ref[:5]
    spec = OutputSpec.from_sources(flags=("0=embedding",))
    s, _ = section([ref], [cand], spec=spec)
    assert s["overall"]["fail_rate"] == pytest.approx(0.1)
    assert s["overall"]["cosine_min"] == pytest.approx(-1.0)


# --- detection -----------------------------------------------------------------------------------

def iou_center(a, b):
    ax0, ay0, ax1, ay1 = a[0] - abs(a[2]) / 2, a[1] - abs(a[3]) / 2, a[0] + abs(a[2]) / 2, a[1] + abs(a[3]) / 2
    bx0, by0, bx1, by1 = b[0] - abs(b[2]) / 2, b[1] - abs(b[3]) / 2, b[0] + abs(b[2]) / 2, b[1] + abs(b[3]) / 2
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 1.0


def test_anchor_detections_flip_by_score_and_iou():
    n, anchors = 40, 64
    boxes = rng.normal(0, 2, size=(n, anchors, 8)).astype(np.float32)
    boxes[..., 2:4] = rng.uniform(4, 12, size=(n, anchors, 2))
    logits = rng.normal(-3, 2.5, size=(n, anchors, 1)).astype(np.float32)
    qboxes = boxes + rng.normal(0, 1.0, size=boxes.shape).astype(np.float32)
    qlogits = logits + rng.normal(0, 0.8, size=logits.shape).astype(np.float32)
    outputs = [OutputInfo(0, "regressors", (anchors, 8), "CONCATENATION"),
               OutputInfo(1, "classificators", (anchors, 1), "CONCATENATION")]
    s, report = section([boxes, logits], [qboxes, qlogits], outputs=outputs)
    assert s["kind"] == "detection" and s["members"] == {"scores": 1} and list(report["outputs"]) == ["regressors"]
    assert s["options"]["anchors"] == "none" and "fit no known anchor table" in s["options"]["anchors_reason"]
    flips = union = near = 0
    for i in range(n):
        for a in range(anchors):
            pf = 1 / (1 + np.exp(-logits[i, a, 0])) > 0.5
            pq = 1 / (1 + np.exp(-qlogits[i, a, 0])) > 0.5
            if pf or pq:
                union += 1
                if pf != pq or iou_center(boxes[i, a, :4], qboxes[i, a, :4]) < 0.5:
                    flips += 1
                    near += abs(float(logits[i, a, 0])) <= 1.0  # within 1 logit of the 0.5 threshold
    m = s["overall"]
    assert union > 50 and 0 < flips < union and 0 < near < flips
    assert m["unit"] == "anchor" and m["detections"] == union and m["flipped_detections"] == flips
    assert (m["near_threshold_flips"], m["confident_flips"]) == (near, flips - near)
    assert m["detection_flip_rate"] == pytest.approx(flips / union) == m["value"]
    assert m["ci95"][0] < m["value"] < m["ci95"][1]


def test_post_nms_detections_are_matched_by_iou():
    # sample 0: float finds A and B; quant finds B (slightly moved) and a new C -> A lost, C new, B matched
    fboxes = np.zeros((1, 10, 4), np.float32)
    qboxes = np.zeros((1, 10, 4), np.float32)
    fboxes[0, :2] = [[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]]
    qboxes[0, :2] = [[0.52, 0.5, 0.9, 0.92], [0.0, 0.6, 0.2, 0.8]]
    fscores = np.zeros((1, 10), np.float32)
    qscores = np.zeros((1, 10), np.float32)
    fscores[0, :2] = qscores[0, :2] = [0.9, 0.8]
    classes = np.zeros((1, 10), np.float32)
    count = np.array([2.0], np.float32)
    outputs = [OutputInfo(0, "TFLite_Detection_PostProcess", (10, 4)),
               OutputInfo(1, "TFLite_Detection_PostProcess:1", (10,)),
               OutputInfo(2, "TFLite_Detection_PostProcess:2", (10,)),
               OutputInfo(3, "TFLite_Detection_PostProcess:3", ())]
    s, _ = section([fboxes, classes, fscores, count], [qboxes, classes, qscores, count], outputs=outputs)
    assert s["options"]["layout"] == "post-nms" and s["members"] == {"scores": 2, "classes": 1, "count": 3}
    assert "anchors" not in s["options"] and "nms" not in s["options"]  # the model did its own NMS
    m = s["overall"]
    assert (m["float_detections"], m["quant_detections"], m["detections"], m["flipped_detections"]) == (2, 2, 3, 2)
    assert (m["near_threshold_flips"], m["confident_flips"], m["unit"]) == (0, 2, "detection")  # 0.9 and 0.8: far
    assert m["matched_iou_mean"] == pytest.approx(iou_center([0.71, 0.7, 0.38, 0.42], [0.7, 0.7, 0.4, 0.4]),
                                                  rel=1e-5)
    qscores[0, :2] = [0.9, 0.55]  # the new box C barely passes: within 1 logit of 0.5, so near the threshold
    m = section([fboxes, classes, fscores, count], [qboxes, classes, qscores, count], outputs=outputs)[0]["overall"]
    assert (m["flipped_detections"], m["near_threshold_flips"], m["confident_flips"]) == (2, 1, 1)


def test_detection_needs_matching_scores():
    outputs = [OutputInfo(0, "boxes", (64, 8)), OutputInfo(1, "scores", (32, 1))]
    spec = OutputSpec.from_sources(flags=("boxes=detection:scores=scores",))
    with pytest.raises(ConfigError, match="one score"):
        plan_outputs(outputs, spec, False)


# --- segmentation --------------------------------------------------------------------------------

def test_segmentation_mask_iou_and_pixel_agreement():
    ref = rng.uniform(0, 1, size=(30, 16, 16, 1)).astype(np.float32)
    cand = np.clip(ref + rng.normal(0, 0.1, size=ref.shape), 0, 1).astype(np.float32)
    s, _ = section([ref], [cand], outputs=[OutputInfo(0, "mask", (16, 16, 1), "LOGISTIC")])
    assert s["kind"] == "segmentation"
    ious, agree = [], []
    for i in range(30):
        a, b = ref[i, ..., 0] > 0.5, cand[i, ..., 0] > 0.5
        ious.append((a & b).sum() / (a | b).sum())
        agree.append((a == b).mean())
    m = s["overall"]
    assert m["mask_iou_mean"] == pytest.approx(np.mean(ious)) and m["pixel_agreement"] == pytest.approx(np.mean(agree))
    assert m["fail_rate"] == pytest.approx(np.mean(np.array(ious) < 0.9)) == m["value"]


def test_multiclass_segmentation_uses_mean_iou_over_present_classes():
    ref = np.zeros((1, 8, 8, 3), np.float32)
    ref[0, :, :4, 0] = 1
    ref[0, :, 4:, 1] = 1
    cand = ref.copy()
    cand[0, :, 3] = [0, 0, 1]  # one column of class 0 becomes class 2
    s, _ = section([ref], [cand], outputs=[OutputInfo(0, "seg", (8, 8, 3), "SOFTMAX")])
    expected = np.mean([24 / 32, 32 / 32, 0 / 8])
    assert s["overall"]["mask_iou_mean"] == pytest.approx(expected)
    assert s["overall"]["pixel_agreement"] == pytest.approx(56 / 64)


# --- plans ---------------------------------------------------------------------------------------

def test_plans_recognise_a_hand_landmark_layout():
    outputs = [OutputInfo(0, "Identity", (63,), "FULLY_CONNECTED"), OutputInfo(1, "Identity_1", (1,), "LOGISTIC"),
               OutputInfo(2, "Identity_2", (1,), "LOGISTIC"), OutputInfo(3, "Identity_3", (63,), "FULLY_CONNECTED")]
    kinds = [p.kind for p in plan_outputs(outputs, None, False)]
    assert kinds == ["regression", "classification", "classification", "regression"]


def test_plans_take_labels_and_verdict_outputs_from_the_user():
    outputs = [OutputInfo(0, "emb", (16,)), OutputInfo(1, "probs", (10,), "SOFTMAX")]
    plans = plan_outputs(outputs, OutputSpec(verdict=["probs"]), True)
    assert [p.labels for p in plans] == [False, True]
    assert [p.drives_verdict for p in plans] == [False, True]
    scores = [OutputInfo(0, "tags", (16,), "LOGISTIC"), OutputInfo(1, "probs", (10,), "SOFTMAX")]
    with pytest.raises(ConfigError, match="only belong to a classification"):
        plan_outputs(scores, OutputSpec(labels="tags"), True)


@pytest.mark.parametrize("flag, needle", [
    ("nope=regression", "has no output 'nope'"),
    ("probs=segmentation", "a segmentation output is"),
    ("probs=teleport", "unknown output kind"),
    ("probs=regression:atol=big", "must be a number"),
    ("probs=regression:wiggle=1", "no option 'wiggle'"),
    ("probs", "expected NAME=KIND"),
])
def test_bad_output_flags_are_config_errors(flag, needle):
    outputs = [OutputInfo(0, "probs", (10,), "SOFTMAX")]
    with pytest.raises(ConfigError, match=needle):
        plan_outputs(outputs, OutputSpec.from_sources(flags=(flag,)), False)


def test_labels_that_do_not_fit_the_output_are_refused():
    ref = np.eye(3)[[0, 1, 2, 0]].astype(np.float32)
    with pytest.raises(ConfigError, match="3 classes"):
        compare_outputs(ref, ref, {"y": np.array([0, 1, 5, 0])})
    with pytest.raises(ConfigError, match="3 classes"):
        compare_outputs(ref, ref, {"y": np.array([0, -1, 2, 0])})


def test_spec_file(tmp_path):
    path = tmp_path / "outputs.toml"
    path.write_text('labels = "probs"\nverdict = ["boxes"]\n[outputs.boxes]\nkind = "detection"\n'
                    'scores = "scores"\niou = 0.3\n')
    outputs = [OutputInfo(0, "boxes", (64, 4)), OutputInfo(1, "scores", (64,)), OutputInfo(2, "probs", (10,))]
    plans = plan_outputs(outputs, OutputSpec.from_sources(spec_file=path), True)
    boxes = next(p for p in plans if p.index == 0)
    assert boxes.options["iou"] == 0.3 and boxes.members == {"scores": 1} and boxes.source.startswith("spec")
    assert [p.drives_verdict for p in plans] == [True, False]
    (tmp_path / "bad.toml").write_text("[outputs.boxes]\niou = 1\n")
    with pytest.raises(ConfigError, match="needs kind"):
        OutputSpec.from_sources(spec_file=tmp_path / "bad.toml")
