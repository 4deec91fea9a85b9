"""edgeq evaluate end to end on real multi-output models: each output judged by its kind.

The models come from tests/kind_models.py (trained in this session); the figures in
report.json are checked against independent calculations over the raw outputs the
runs pulled back (OUTDIR/runs/{float,quant}/outputs/output_K.npy).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kind_models as km
from edgeq.cli.main import main


def strict_load(path: Path) -> dict:
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Builder name -> (keras, data), built once for this module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = km.BUILDERS[name](tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def evaluate(model, data, out: Path, *extra) -> tuple[dict, str, int]:
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "-o", str(out),
                                       "--max-per-category", "24", *extra])
    report = strict_load(out / "report.json") if (out / "report.json").exists() else None
    return report, result.output, result.exit_code


def raw(out: Path, which: str, k: int) -> np.ndarray:
    return np.load(out / "runs" / which / "outputs" / f"output_{k}.npy")


def cell_mask(out: Path, category: str, severity: int | None = None) -> np.ndarray:
    with np.load(out / "inputs" / "risky.npz") as suite:
        mask = suite["category"] == category
        return mask if severity is None else mask & (suite["severity"] == severity)


def worst_cell(section: dict) -> tuple[str, int | None]:
    return section["worst_category"], int(section["worst_severity"]) if section["worst_severity"] else None


def test_detector_is_judged_detection_by_detection(built, tmp_path):
    model, data = built("detector")
    report, output, code = evaluate(model, data, tmp_path)
    assert code == 0, output
    (name, section), = report["outputs"].items()
    assert section["kind"] == "detection" and section["options"]["layout"] == "anchors"
    assert "anchor" in section["reason"] and name in output
    boxes_k, scores_k = section["index"], section["members"]["scores"]
    assert raw(tmp_path, "float", boxes_k).shape[1:] == (64, 8)
    category, severity = worst_cell(section)
    mask = cell_mask(tmp_path, category, severity)
    flips = union = 0
    for i in np.flatnonzero(mask):  # independent recount: anchor by anchor
        fb, qb = raw(tmp_path, "float", boxes_k)[i], raw(tmp_path, "quant", boxes_k)[i]
        fs, qs = raw(tmp_path, "float", scores_k)[i, :, 0], raw(tmp_path, "quant", scores_k)[i, :, 0]
        for a in range(64):
            pf, pq = fs[a] > 0, qs[a] > 0  # sigmoid(logit) > 0.5
            if pf or pq:
                union += 1
                flips += pf != pq or _iou(fb[a, :4], qb[a, :4]) < 0.5
    cell = section["categories"][category]
    cell = cell["severities"][str(severity)] if severity else cell
    assert (cell["detections"], cell["flipped_detections"]) == (union, flips)
    assert report["metric_basis"] == "detection_flip_rate" and report["deciding_output"] == name


def _iou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 1.0


def test_segmenter_is_judged_by_mask_iou(built, tmp_path):
    model, data = built("segmenter")
    report, output, code = evaluate(model, data, tmp_path)
    assert code == 0, output
    (section,) = report["outputs"].values()
    assert section["kind"] == "segmentation"
    clean = cell_mask(tmp_path, "clean")
    f, q = raw(tmp_path, "float", 0)[clean] > 0.5, raw(tmp_path, "quant", 0)[clean] > 0.5
    ious = [((a & b).sum() / (a | b).sum()) if (a | b).any() else 1.0 for a, b in zip(f, q)]
    figures = section["categories"]["clean"]
    assert figures["mask_iou_mean"] == pytest.approx(np.mean(ious))
    assert figures["pixel_agreement"] == pytest.approx(np.mean(f == q))
    assert figures["flip_rate"] == pytest.approx(np.mean(np.array(ious) < 0.9))


def test_multilabel_scores_are_not_softmaxed(built, tmp_path):
    model, data = built("multilabel")
    report, output, code = evaluate(model, data, tmp_path)
    assert code == 0, output
    (section,) = report["outputs"].values()
    assert section["kind"] == "multilabel"
    clean = cell_mask(tmp_path, "clean")
    f, q = raw(tmp_path, "float", 0)[clean] > 0.5, raw(tmp_path, "quant", 0)[clean] > 0.5
    figures = section["categories"]["clean"]
    assert figures["sample_flip_rate"] == pytest.approx(np.mean((f != q).any(axis=1)))
    assert figures["label_flip_rate"] == pytest.approx((f != q).sum() / (f | q).sum())
    assert figures["label_flip_mean"] == pytest.approx(np.mean(f != q))


def test_every_head_of_a_landmark_model_is_judged_and_the_worst_decides(built, tmp_path):
    model, data = built("landmarks")
    report, output, code = evaluate(model, data, tmp_path)
    assert code == 0, output
    kinds = sorted(s["kind"] for s in report["outputs"].values())
    assert kinds == ["classification", "classification", "regression"]
    sections = report["outputs"]
    worst = max(sections, key=lambda k: (sections[k]["worst_value"], -sections[k]["index"]))  # a tie: the first
    assert report["deciding_output"] == worst
    assert report["verdict"] == report["outputs"][worst]["verdict"]
    regression = next(s for s in report["outputs"].values() if s["kind"] == "regression")
    k = regression["index"]
    # the landmarks (and handedness) are judged only where the float model's presence says a hand is there
    gate = regression["when"]
    presence = report["outputs"]["presence"]
    assert gate["output"] == "presence" and gate["source"] == "auto" and gate["index"] == presence["index"]
    assert report["outputs"]["handedness"]["when"]["output"] == "presence"
    assert "judged only where presence>0.5" in output
    present = raw(tmp_path, "float", presence["index"]).reshape(-1) > 0.5
    assert gate["open"] == int(present.sum()) and regression["overall"]["n"] == gate["open"]
    clean = cell_mask(tmp_path, "clean") & present
    f, q = raw(tmp_path, "float", k)[clean].astype(np.float64), raw(tmp_path, "quant", k)[clean]
    assert regression["categories"]["clean"]["mean_abs_error"] == pytest.approx(np.abs(f - q).mean(), rel=1e-5)
    spread = np.std(f)
    assert regression["options"]["spread"] == pytest.approx(spread, rel=1e-6)
    assert regression["categories"]["clean"]["fail_rate"] == pytest.approx(
        np.mean((np.abs(f - q) > 0.1 * spread).any(axis=1)))


def test_labels_go_to_the_classification_head_and_flags_override(built, tmp_path):
    model, data = built("classifier_with_aux")
    report, output, code = evaluate(model, data, tmp_path, "--output", "embedding=embedding:min_cosine=0.999",
                                    "--fail-on", "min-n=10")
    assert code == 0, output
    sections = report["outputs"]
    probs = next(s for s in sections.values() if s["labels"])
    assert probs["kind"] == "classification" and "SOFTMAX" in probs["reason"]
    assert probs["categories"]["clean"]["float_accuracy"] > 0.8
    embedding = next(s for s in sections.values() if not s["labels"])
    assert embedding["kind"] == "embedding" and embedding["source"] == "--output"
    assert embedding["options"]["min_cosine"] == 0.999
    with np.load(tmp_path / "inputs" / "risky.npz") as suite:
        y, clean = suite["y"], suite["category"] == "clean"
    f = raw(tmp_path, "float", probs["index"])[clean].argmax(axis=1)
    assert probs["categories"]["clean"]["float_accuracy"] == pytest.approx(np.mean(f == y[clean]))


@pytest.mark.parametrize("extra, needle", [
    (["--output", "nope=regression"], "has no output 'nope'"),
    (["--output", "probs=segmentation"], "a segmentation output is"),
    (["--labels-for", "embedding", "--output", "embedding=regression"], "only belong to a classification"),
])
def test_bad_output_specs_exit_2_with_one_line(built, tmp_path, extra, needle):
    model, data = built("classifier_with_aux")
    _, output, code = evaluate(model, data, tmp_path, *extra)
    assert code == 2, output
    assert needle in output and "Traceback" not in output


def test_labels_that_do_not_fit_the_output_exit_2_naming_the_file(built, tmp_path):
    model, data = built("classifier_with_aux")
    with np.load(data) as d:
        x, y = d["x"], d["y"].copy()
    y[3] = 12
    bad = tmp_path / "bad_labels.npz"
    np.savez(bad, x=x, y=y)
    _, output, code = evaluate(model, bad, tmp_path / "out")
    assert code == 2 and "bad_labels.npz" in output and "10 classes" in output
