"""The kind test models (tests/kind_models.py): documented outputs, quantized weights,
sensible float outputs. Run with ``-s`` to see the float-vs-quantized differences."""

from __future__ import annotations

import time

import numpy as np
import pytest

import kind_models as km


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def run_tflite(path, x):
    """Outputs of a .tflite, one sample at a time: list in get_output_details() order
    of arrays (n, *per-sample shape), plus the output details."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), outs = interpreter.get_input_details(), interpreter.get_output_details()
    results = [[] for _ in outs]
    for sample in x:
        interpreter.set_tensor(inp["index"], sample[None].astype(np.float32))
        interpreter.invoke()
        for r, d in zip(results, outs):
            r.append(interpreter.get_tensor(d["index"])[0].copy())
    return [np.stack(r) for r in results], outs, interpreter


def build_and_run(name, tmp_path):
    """Build, convert (dynamic-range), run both files; check the documented outputs."""
    from edgeq.models.convert import convert_model
    from edgeq.models.modelinfo import read_model

    start = time.perf_counter()
    keras_path, data_path = km.BUILDERS[name](tmp_path / name)
    seconds = time.perf_counter() - start
    assert keras_path.exists() and data_path.exists()
    with np.load(data_path, allow_pickle=False) as data:
        assert data["x"].dtype == np.float32
        assert "y" not in data.files or data["y"].dtype == np.int64
        arrays = {k: data[k] for k in data.files}
    result = convert_model(keras_path, tmp_path / f"{name}_out")
    weights = result.card["weights"]
    assert weights["quantized"] > 0
    assert all(k["cause"] == "small" for k in weights.get("kept_float") or []), weights["kept_float"]
    flt, details, interpreter = run_tflite(result.float_path, arrays["x"])
    qnt, qdetails, _ = run_tflite(result.quant_path, arrays["x"])
    expected = km.OUTPUTS[name]
    for outs in (details, qdetails):
        assert [(d["name"], tuple(int(v) for v in d["shape"])) for d in outs] == \
               [(tensor, (1, *shape)) for _, tensor, shape, _ in expected]
    by_index = {v["index"]: k for k, v in interpreter.get_signature_runner().get_output_details().items()}
    assert [by_index[d["index"]] for d in details] == [signature for signature, _, _, _ in expected]
    for path in (result.float_path, result.quant_path):
        assert read_model(path).output_producers == tuple(op for _, _, _, op in expected)
    print(f"\n[{name}] built in {seconds:.1f} s; {weights['quantized']} of {weights['total']} "
          f"weight tensors quantized")
    named = {signature: (f, q) for (signature, _, _, _), f, q in zip(expected, flt, qnt)}
    return named, arrays, km.load_truth(data_path)


def report(name, output, f, q, flips=None):
    err = np.abs(f.astype(np.float64) - q)
    line = (f"  {name}.{output}: float range [{f.min():.3g}, {f.max():.3g}], max abs err {err.max():.4g}, "
            f"mean abs err {err.mean():.3g}")
    if flips is not None:
        line += f", {flips}"
    print(line)


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return np.logical_and(a, b).sum() / union if union else 1.0


def test_detector(tmp_path):
    out, data, truth = build_and_run("detector", tmp_path)
    (fr, qr), (fc, qc) = out["regressors"], out["classificators"]
    fs, qs = sigmoid(fc[..., 0]), sigmoid(qc[..., 0])
    with_squares = truth["boxes"][:, :, 3].any(axis=1)
    above = (fs > 0.5).mean(axis=1)
    assert 0.01 <= above[with_squares].mean() <= 0.20
    assert above[~with_squares].mean() < 0.01
    positive = truth["scores"] > 0
    predicted = fs > 0.5
    recall, precision = predicted[positive].mean(), positive[predicted].mean()
    assert recall > 0.6 and precision > 0.6
    box_err = np.abs(fr[positive][:, :4] - truth["regressors"][positive][:, :4]).mean(axis=0)
    assert box_err[2:].max() < 2.0, box_err  # width/height within 2 px on average
    assert box_err[:2].max() < 2.0, box_err
    print(f"  float: {above[with_squares].mean():.1%} anchors > 0.5 on images with squares, "
          f"recall {recall:.2f}, precision {precision:.2f}, mean abs box err (cx,cy,w,h) "
          f"{[round(float(v), 2) for v in box_err]} px")
    flips = (fs > 0.5) != (qs > 0.5)
    report("detector", "classificators (logits)", fc, qc,
           f"score flips {flips.sum()} of {flips.size} anchors in {flips.any(axis=1).sum()} of {len(fs)} images")
    report("detector", "classificators (sigmoid)", fs, qs)
    report("detector", "regressors (positive anchors)", fr[positive], qr[positive])


def test_segmenter(tmp_path):
    out, data, truth = build_and_run("segmenter", tmp_path)
    f, q = out["mask"]
    assert f.min() >= 0 and f.max() <= 1
    ious = [iou(m[..., 0] > 0.5, t > 0) for m, t in zip(f, truth["mask"])]
    assert np.mean(ious) > 0.5
    print(f"  float: mean foreground IoU {np.mean(ious):.3f} (worst {np.min(ious):.3f})")
    flips = (f > 0.5) != (q > 0.5)
    report("segmenter", "mask", f, q, f"pixel flips {flips.sum()} of {flips.size} "
                                      f"({flips.mean():.3%}) in {flips.any(axis=(1, 2, 3)).sum()} of {len(f)} images")


def test_multiclass_segmenter(tmp_path):
    out, data, truth = build_and_run("multiclass_segmenter", tmp_path)
    f, q = out["segmentation"]
    np.testing.assert_allclose(f.sum(axis=-1), 1.0, atol=1e-4)
    labels, fa, qa = truth["labels"], f.argmax(-1), q.argmax(-1)
    accuracy = (fa == labels).mean()
    class_iou = [iou(fa == c, labels == c) for c in range(1, 4)]
    assert accuracy > 0.9 and min(class_iou) > 0.5
    print(f"  float: pixel accuracy {accuracy:.3f}, IoU per class 1..3 {np.round(class_iou, 3).tolist()}")
    flips = fa != qa
    report("multiclass_segmenter", "segmentation", f, q,
           f"argmax flips {flips.sum()} of {flips.size} pixels ({flips.mean():.3%}) "
           f"in {flips.any(axis=(1, 2)).sum()} of {len(f)} images")


def test_multilabel(tmp_path):
    out, data, truth = build_and_run("multilabel", tmp_path)
    f, q = out["labels"]
    y = truth["y_multi"]
    assert f.min() >= 0 and f.max() <= 1 and y.shape == f.shape
    label_accuracy = ((f > 0.5) == y).mean()
    frequency = y.mean(axis=0)
    assert label_accuracy > 0.85 and 0.05 < frequency.min() and frequency.max() < 0.6
    print(f"  float: per-label accuracy {label_accuracy:.3f}, exact-match {((f > 0.5) == y).all(1).mean():.3f}, "
          f"label frequencies {np.round(frequency, 2).tolist()}")
    flips = (f > 0.5) != (q > 0.5)
    report("multilabel", "labels", f, q,
           f"label flips {flips.sum()} of {flips.size}, samples with a flip {flips.any(1).mean():.1%}")


def test_landmarks(tmp_path):
    out, data, truth = build_and_run("landmarks", tmp_path)
    (fl, ql), (fp, qp), (fh, qh) = out["landmarks"], out["presence"], out["handedness"]
    present = truth["presence"] > 0
    mae = np.abs(fl[present] - truth["landmarks"][present]).mean()
    presence_accuracy = ((fp[:, 0] > 0.5) == present).mean()
    hand_accuracy = ((fh[present, 0] > 0.5) == truth["handedness"][present]).mean()
    print(f"  float: landmark MAE {mae:.2f} px, presence accuracy {presence_accuracy:.3f}, "
          f"handedness accuracy {hand_accuracy:.3f}")
    assert mae < 2.0 and presence_accuracy > 0.95 and hand_accuracy > 0.95
    assert -4 < fl[present].min() and fl[present].max() < 36
    err = np.abs(fl[present] - ql[present])
    report("landmarks", "landmarks (hand present)", fl[present], ql[present],
           f"points moved > 1 px: {(err > 1).sum()} of {err.size} coords")
    report("landmarks", "presence", fp, qp, f"flips {((fp > 0.5) != (qp > 0.5)).sum()} of {len(fp)}")
    report("landmarks", "handedness", fh, qh, f"flips {((fh > 0.5) != (qh > 0.5)).sum()} of {len(fh)}")


def test_classifier_with_aux(tmp_path):
    out, data, truth = build_and_run("classifier_with_aux", tmp_path)
    (fp, qp), (fe, qe) = out["probs"], out["embedding"]
    y = data["y"]
    np.testing.assert_allclose(fp.sum(axis=-1), 1.0, atol=1e-4)
    accuracy = (fp.argmax(1) == y).mean()
    distances = ((fe[:, None, :] - truth["prototypes"][None]) ** 2).sum(-1)
    prototype_accuracy = (distances.argmin(1) == y).mean()
    assert accuracy > 0.8 and prototype_accuracy > 0.8
    norms = np.linalg.norm(fe, axis=1)
    print(f"  float: accuracy {accuracy:.3f} (quantized {(qp.argmax(1) == y).mean():.3f}), "
          f"nearest-prototype accuracy of the embedding {prototype_accuracy:.3f}, "
          f"embedding norms {norms.min():.2f}..{norms.max():.2f}")
    report("classifier_with_aux", "probs", fp, qp, f"argmax flips {(fp.argmax(1) != qp.argmax(1)).sum()} of {len(fp)}")
    cosine = (fe * qe).sum(1) / (np.linalg.norm(fe, axis=1) * np.linalg.norm(qe, axis=1))
    report("classifier_with_aux", "embedding", fe, qe, f"cosine similarity min {cosine.min():.5f}, "
                                                       f"mean {cosine.mean():.5f}")


@pytest.mark.parametrize("name", ["multilabel"])
def test_builders_are_deterministic(tmp_path, name):
    import keras

    first, _ = km.BUILDERS[name](tmp_path / "a")
    second, _ = km.BUILDERS[name](tmp_path / "b")
    x = np.random.default_rng(1).normal(size=(8, 20)).astype(np.float32)
    a = keras.models.load_model(first, compile=False).predict(x, verbose=0)
    b = keras.models.load_model(second, compile=False).predict(x, verbose=0)
    np.testing.assert_allclose(a["labels"], b["labels"], atol=1e-5)
